"""A PredictFocus goal with nothing to predict from is accepted and aborted with the reason in
its result (a rejection could not say why: `ros2 action send_goal` prints only "Goal was
rejected."), and the server keeps serving."""

from __future__ import annotations

import pytest
from action_msgs.msg import GoalStatus
from deepaf.testing import NodeProcess, wait_future
from rclpy.action import ActionClient

from deepaf_msgs.action import PredictFocus
from deepaf_msgs.msg import FocusPrediction

pytestmark = pytest.mark.ros


def test_goal_without_image_is_aborted_with_the_reason(ros_node, namespace):
    from deepaf_focus.focus_server import NO_IMAGE

    args = ["-r", f"__ns:={namespace}", "-r", "__node:=focus"]
    with NodeProcess(["-m", "deepaf_focus.focus_server"], args) as server:
        client = ActionClient(ros_node, PredictFocus, f"{namespace}/focus/predict")
        assert client.wait_for_server(timeout_sec=120), server.output()
        for _ in range(2):  # and again: the server keeps serving
            handle = wait_future(ros_node, client.send_goal_async(PredictFocus.Goal()), 60, "goal")
            assert handle.accepted
            wrapped = wait_future(ros_node, handle.get_result_async(), 60, "result")
            assert wrapped.status == GoalStatus.STATUS_ABORTED
            assert not wrapped.result.success
            assert wrapped.result.message == NO_IMAGE
            assert wrapped.result.prediction.status == FocusPrediction.STATUS_INVALID
        assert server.alive(), server.output()
