"""DeepAfClient.move_stage against the real stage node over DDS: axes left out stay put, and a
refused goal comes back FAILED with the stage's reason."""

from __future__ import annotations

import math

import pytest
from deepaf.testing import NodeProcess

pytestmark = pytest.mark.ros


def test_move_stage_moves_only_the_axes_named_and_reports_refusals(ros_node, namespace):
    from deepaf.client import DeepAfClient, Status

    from deepaf_msgs.action import MoveStage

    stage_args = ["-r", f"__ns:={namespace}", "-p", "backend:=sim", "-p", "time_scale:=0.0"]
    with NodeProcess(["-m", "deepaf_driver.stage_node"], stage_args) as proc:
        client = DeepAfClient(namespace, server_timeout=30.0)
        try:
            here = client.move_stage(timeout=30.0)  # no axes: nothing moves, reports the pose
            assert here.ok, (here.message, proc.output())
            start = here.result.position
            moved = client.move_stage(z=0.0001)
            assert moved.ok, moved.message
            p = moved.result.position
            assert (p.x, p.y) == (start.x, start.y) and math.isclose(p.z, 0.0001, abs_tol=1e-9)
            moved = client.move_stage(z=-0.00005, relative=True)
            assert moved.ok, moved.message
            p = moved.result.position
            assert (p.x, p.y) == (start.x, start.y) and math.isclose(p.z, 5e-5, abs_tol=1e-9)
            moved = client.move_stage(x=0.0)
            assert moved.ok and moved.result.position.x == 0.0, moved.message
            assert moved.result.position.y == start.y
            refused = client.move_stage(x=0.02)
            assert refused.status is Status.FAILED
            assert refused.result.error_code == MoveStage.Result.CODE_OUT_OF_LIMITS
            assert "outside the soft limits" in refused.message
            assert refused.result.position.x == 0.0
        finally:
            client.close()


def test_a_timed_out_move_is_cancelled_and_the_stage_stops_short(ros_node, namespace):
    """A caller that gives up cancels its goal: TIMED_OUT comes back once the stage stopped,
    with the cancelled goal's result (where it stopped). Timeouts must be finite."""
    from deepaf.client import DeepAfClient, Status

    from deepaf_msgs.action import MoveStage

    stage_args = ["-r", f"__ns:={namespace}", "-p", "backend:=sim", "-p", "time_scale:=1.0"]
    with NodeProcess(["-m", "deepaf_driver.stage_node"], stage_args) as proc:
        client = DeepAfClient(namespace, server_timeout=30.0)
        try:
            start = client.move_stage(timeout=30.0)
            assert start.ok, (start.message, proc.output())
            timed_out = client.move_stage(x=0.0145, timeout=0.5)
            assert timed_out.status is Status.TIMED_OUT, timed_out.message
            assert timed_out.message.endswith("(cancelled)")
            assert timed_out.result.error_code == MoveStage.Result.CODE_CANCELED
            stopped = timed_out.result.position.x
            assert start.result.position.x < stopped < 0.0125
            here = client.move_stage(timeout=30)  # an int timeout is fine
            assert here.ok and here.result.position.x == stopped  # it stayed where it stopped
            for bad in (float("inf"), float("nan"), -1.0, 1e9):
                with pytest.raises(ValueError, match="finite number of seconds"):
                    client.move_stage(x=0.008, timeout=bad)
        finally:
            client.close()
