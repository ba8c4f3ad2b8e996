"""Motion ends with its caller, over real DDS: a RosMicroscope move that times out cancels its
goal on the stage (which stops short of the target), and a stage node that goes away mid-move
fails the wait promptly instead of at the move timeout."""

from __future__ import annotations

import threading
import time

import pytest
from deepaf.testing import NodeProcess

pytestmark = pytest.mark.ros

TARGET_X = 0.0145  # from the sim's start at 7.5 mm: ~1.5 s of motion at time_scale 1


@pytest.fixture
def scope(namespace):
    """A RosMicroscope on a node in `namespace`, its callbacks served by a background executor."""
    import rclpy
    from deepaf_planner.ros_microscope import RosMicroscope
    from rclpy.executors import MultiThreadedExecutor

    rclpy.init()
    node = rclpy.create_node("planner_side", namespace=namespace)
    timeouts = {"discovery": 30.0, "move": 0.5, "preview": 3.0, "capture": 30.0, "predict": 30.0}
    microscope = RosMicroscope(node, timeouts, preview_time=0.03)
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield microscope
    finally:
        microscope.destroy()
        executor.shutdown(timeout_sec=2.0)
        thread.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown()


def _stage(namespace: str, time_scale: float) -> NodeProcess:
    return NodeProcess(
        ["-m", "deepaf_driver.stage_node"],
        ["-r", f"__ns:={namespace}", "-p", f"time_scale:={time_scale}"],
    )


def _joint_x(scope, settle: float = 0.3) -> float:
    time.sleep(settle)  # a few joint_states at 20 Hz
    return scope.position()[0]


def test_a_timed_out_move_cancels_its_goal_and_the_stage_stops_short(scope, namespace):
    from deepaf_planner.scanner import HardwareError

    with _stage(namespace, 1.0) as proc:
        assert scope._move.wait_for_server(timeout_sec=30), proc.output()
        start_x = scope.position()[0]
        t0 = time.monotonic()
        with pytest.raises(HardwareError) as failure:
            scope.move_to(x=TARGET_X)
        message = str(failure.value)
        assert message.startswith("stage/move: no result within 0.5 s; goal cancelled; stopped at")
        assert time.monotonic() - t0 < 0.5 + 2.0  # cancel confirmed and result in, promptly
        stopped = _joint_x(scope)
        assert start_x < stopped < TARGET_X - 0.002  # well short of the target
        assert _joint_x(scope, 0.5) == stopped  # and it stays there
        assert proc.alive()
        # the stage serves the next move as usual
        scope._t["move"] = 30.0
        moved = scope.move_to(x=0.008)
        assert moved.pose[0] == pytest.approx(0.008, abs=1e-12)


def test_a_stage_node_that_goes_away_mid_move_fails_the_wait_promptly(scope, namespace):
    from deepaf_planner.scanner import HardwareError

    scope._t["move"] = 60.0
    with _stage(namespace, 5.0) as proc:  # the move would take ~7 s
        assert scope._move.wait_for_server(timeout_sec=30), proc.output()
        errors: list[str] = []

        def move() -> None:
            try:
                scope.move_to(x=TARGET_X)
            except HardwareError as exc:
                errors.append(str(exc))

        mover = threading.Thread(target=move)
        mover.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.stop()
        mover.join(timeout=20.0)
        assert not mover.is_alive(), "the caller still waits for a stage that has gone"
        assert time.monotonic() - t0 < 15.0
        assert errors and (
            "the server went away while the goal ran" in errors[0] or "emergency stop" in errors[0]
        ), errors
