"""deepaf_msgs across processes: a MoveStage round trip with feedback, and a cancelled goal."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from deepaf.testing import NodeProcess, wait_future
from rclpy.action import ActionClient

PEER = Path(__file__).with_name("interface_peer.py")


def test_every_interface_imports_with_documented_constants() -> None:
    from deepaf_msgs.action import AcquireFocalStack, MoveStage, PredictFocus, ScanSlide
    from deepaf_msgs.msg import FocusPrediction, ScanStatus, ScanTile
    from deepaf_msgs.srv import CaptureImage

    assert FocusPrediction.STATUS_NO_TISSUE != FocusPrediction.STATUS_OK
    assert ScanSlide.Goal.FOCUS_DEEPAF == "deepaf"
    assert ScanStatus.STATE_DONE == "done"
    assert MoveStage.Result.CODE_OUT_OF_LIMITS != MoveStage.Result.CODE_SUCCEEDED
    goal = PredictFocus.Goal(use_latest_preview=True)
    assert goal.image.data.tolist() == []
    assert AcquireFocalStack.Feedback().images_total == 0
    assert ScanTile().position.z == 0.0
    assert CaptureImage.Response().success is False


@pytest.mark.ros
def test_move_stage_round_trip_feedback_and_cancel(ros_node, namespace: str) -> None:
    from deepaf_msgs.action import MoveStage

    with NodeProcess([str(PEER)], ["-r", f"__ns:={namespace}", "-p", "speed:=0.002"]) as peer:
        client = ActionClient(ros_node, MoveStage, f"{namespace}/stage/move")
        assert client.wait_for_server(timeout_sec=30), peer.output()

        feedback: list[MoveStage.Feedback] = []
        goal = MoveStage.Goal(x=0.0005, y=0.0002, z=float("nan"))
        handle = wait_future(
            ros_node,
            client.send_goal_async(goal, feedback_callback=lambda m: feedback.append(m.feedback)),
            10,
            "goal acceptance",
        )
        assert handle.accepted
        result = wait_future(ros_node, handle.get_result_async(), 20, "move result").result
        assert result.error_code == MoveStage.Result.CODE_SUCCEEDED
        assert math.isclose(result.position.x, 0.0005, abs_tol=1e-9)
        assert math.isclose(result.position.y, 0.0002, abs_tol=1e-9)
        assert len(feedback) >= 3
        remaining = [f.distance_remaining for f in feedback]
        assert remaining == sorted(remaining, reverse=True)

        # A long move, cancelled part way: the result reports where it stopped.
        handle = wait_future(
            ros_node,
            client.send_goal_async(MoveStage.Goal(x=0.01, y=0.0002, z=float("nan"))),
            10,
            "second goal",
        )
        with pytest.raises(TimeoutError):  # the move is still running after 1 s
            wait_future(ros_node, handle.get_result_async(), 1.0, "long move")
        cancel = wait_future(ros_node, handle.cancel_goal_async(), 10, "cancel response")
        assert len(cancel.goals_canceling) == 1
        wrapped = wait_future(ros_node, handle.get_result_async(), 10, "cancelled result")
        assert wrapped.result.error_code == MoveStage.Result.CODE_CANCELED
        assert 0.0005 < wrapped.result.position.x < 0.01
        client.destroy()
