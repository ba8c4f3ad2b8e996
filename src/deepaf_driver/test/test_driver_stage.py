"""The stage node in its own process over real DDS: limits, bad goals, axes left out, cancel,
trajectories, e-stop, bad configuration."""

from __future__ import annotations

import math
import time

import pytest
from deepaf.testing import NodeProcess, spin_until, wait_future
from deepaf_driver.conversions import JOINT_NAMES, joint_state_to_pose
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.action import ActionClient
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

pytestmark = pytest.mark.ros

STAGE = ["-m", "deepaf_driver.stage_node"]
CENTRE = (7.5e-3, 7.5e-3, 0.0)  # the sim stage's start pose


class StageClient:
    """Test-side handles on one stage node: action client, joint_states, services."""

    def __init__(self, node, namespace: str) -> None:
        from deepaf_msgs.action import MoveStage

        self.node = node
        self.MoveStage = MoveStage
        self.move = ActionClient(node, MoveStage, f"{namespace}/stage/move")
        self.states: list[JointState] = []
        node.create_subscription(JointState, f"{namespace}/joint_states", self.states.append, 10)
        self.services = {
            name: node.create_client(Trigger, f"{namespace}/stage/{name}")
            for name in ("home", "stop", "reset_stop")
        }

    def wait_ready(self, proc: NodeProcess) -> None:
        assert self.move.wait_for_server(timeout_sec=30), proc.output()
        spin_until(self.node, lambda: bool(self.states), 10, "joint_states")

    def pose(self) -> tuple[float, float, float]:
        return joint_state_to_pose(self.states[-1])

    def send(self, timeout: float = 10.0, **goal):
        return wait_future(
            self.node, self.move.send_goal_async(self.MoveStage.Goal(**goal)), timeout, "goal"
        )

    def run(self, timeout: float = 20.0, **goal):
        handle = self.send(**goal)
        assert handle.accepted, f"goal {goal} rejected"
        return wait_future(self.node, handle.get_result_async(), timeout, "result").result

    def call(self, name: str) -> Trigger.Response:
        client = self.services[name]
        assert client.wait_for_service(timeout_sec=10)
        return wait_future(self.node, client.call_async(Trigger.Request()), 10, name)

    def settle(self) -> tuple[float, float, float]:
        """Let a few joint_states arrive and return the latest pose."""
        count = len(self.states)
        spin_until(self.node, lambda: len(self.states) >= count + 3, 5, "joint_states")
        return self.pose()


def _stage(namespace: str, *params: str) -> NodeProcess:
    args = ["-r", f"__ns:={namespace}", "-p", "backend:=sim"]
    for p in params:
        args += ["-p", p]
    return NodeProcess(STAGE, args)


def test_bad_goals_abort_with_the_reason_and_stage_stays_put(ros_node, namespace):
    """Goals outside the limits or with bad numbers are accepted, then aborted with a code and
    a message (what `ros2 action send_goal` prints), before anything moves."""
    with _stage(namespace, "z_min:=-0.0001", "time_scale:=0.0") as proc:
        stage = StageClient(ros_node, namespace)
        stage.wait_ready(proc)
        before = stage.pose()
        codes = stage.MoveStage.Result
        for goal, code, reason in (
            ({"x": 0.02}, codes.CODE_OUT_OF_LIMITS, "stage_x target 20.0000 mm is outside"),
            ({"z": -0.0002}, codes.CODE_OUT_OF_LIMITS, "focus_z target -0.2000 mm is outside"),
            ({"z": -0.0002, "relative": True}, codes.CODE_OUT_OF_LIMITS, "soft limits"),
            ({"x": 0.02, "y": math.nan, "z": math.nan}, codes.CODE_OUT_OF_LIMITS, "outside"),
            ({"x": math.inf, "y": 0.0, "z": 0.0}, codes.CODE_INVALID_GOAL, "infinite"),
            ({"z": -math.inf, "relative": True}, codes.CODE_INVALID_GOAL, "z=-inf"),
            ({"x": 0.001, "speed_scale": 2.0}, codes.CODE_INVALID_GOAL, "speed_scale 2.0"),
            ({"x": 0.001, "speed_scale": -0.5}, codes.CODE_INVALID_GOAL, "speed_scale"),
            ({"x": 0.001, "speed_scale": math.nan}, codes.CODE_INVALID_GOAL, "speed_scale"),
        ):
            result = stage.run(**goal)
            assert result.error_code == code, (goal, result.message)
            assert reason in result.message and "nothing moved" in result.message, goal
            assert (result.position.x, result.position.y, result.position.z) == before
        assert stage.settle() == before
        assert "outside the soft limits" in proc.output()
        # inside the limits still works, NaN keeps an axis, relative adds
        result = stage.run(x=0.008, y=math.nan, z=math.nan)
        assert result.error_code == codes.CODE_SUCCEEDED, result.message
        assert (result.position.x, result.position.y) == (0.008, before[1])
        result = stage.run(x=-0.001, y=0.0, z=math.nan, relative=True)
        assert math.isclose(result.position.x, 0.007, abs_tol=1e-12)
        assert stage.settle() == (result.position.x, result.position.y, result.position.z)


def test_goal_naming_only_z_moves_only_z(ros_node, namespace):
    """Axes a goal leaves out default to UNCHANGED (1e300) and stay put; explicit 0.0 moves."""
    with _stage(namespace, "time_scale:=0.0") as proc:
        stage = StageClient(ros_node, namespace)
        stage.wait_ready(proc)
        goal = stage.MoveStage.Goal()
        assert (goal.x, goal.y, goal.z) == (1e300, 1e300, 1e300)
        assert stage.MoveStage.Goal.UNCHANGED == 1e300
        start = stage.pose()
        assert start == CENTRE
        codes = stage.MoveStage.Result
        # absolute, only z: x and y stay at the centre (they used to be driven to 0)
        result = stage.run(z=0.0001)
        assert result.error_code == codes.CODE_SUCCEEDED, result.message
        assert (result.position.x, result.position.y) == start[:2]
        assert math.isclose(result.position.z, 0.0001, abs_tol=1e-9)
        assert stage.settle()[:2] == start[:2]
        # relative, only z: x and y stay, z adds
        z0 = result.position.z
        result = stage.run(z=-0.00005, relative=True)
        assert result.error_code == codes.CODE_SUCCEEDED, result.message
        assert (result.position.x, result.position.y) == start[:2]
        assert math.isclose(result.position.z, z0 - 0.00005, abs_tol=1e-9)
        # the sentinel given explicitly, or any |value| >= 1e299, also means unchanged
        result = stage.run(x=stage.MoveStage.Goal.UNCHANGED, y=-1e299, z=0.0)
        assert result.error_code == codes.CODE_SUCCEEDED, result.message
        assert (result.position.x, result.position.y, result.position.z) == (*start[:2], 0.0)
        # an explicit x 0.0 moves x to 0, and only x
        result = stage.run(x=0.0)
        assert result.error_code == codes.CODE_SUCCEEDED, result.message
        assert (result.position.x, result.position.y, result.position.z) == (0.0, start[1], 0.0)
        assert stage.settle() == (0.0, start[1], 0.0)
        # a goal with no axis at all moves nothing and reports where the stage is
        result = stage.run()
        assert result.error_code == codes.CODE_SUCCEEDED, result.message
        assert (result.position.x, result.position.y, result.position.z) == (0.0, start[1], 0.0)


def test_tiny_speed_scale_is_refused_promptly(ros_node, namespace):
    """speed_scale 5e-324 used to hang the goal; below MIN_SPEED_SCALE it aborts at once."""
    # time_scale 0: the old code hung even without sleeping (0 s x inf simulated s = NaN)
    with _stage(namespace, "time_scale:=0.0") as proc:
        stage = StageClient(ros_node, namespace)
        stage.wait_ready(proc)
        before = stage.pose()
        assert stage.MoveStage.Goal.MIN_SPEED_SCALE == 1e-3
        for scale in (5e-324, 1e-6, 0.0009):
            t0 = time.monotonic()
            result = stage.run(timeout=5.0, x=0.008, speed_scale=scale)
            assert time.monotonic() - t0 < 3.0
            assert result.error_code == stage.MoveStage.Result.CODE_INVALID_GOAL, scale
            assert f"speed_scale {scale}" in result.message
            assert "[0.001, 1]" in result.message
        assert stage.settle() == before
        # the minimum itself runs
        result = stage.run(z=1e-5, speed_scale=1e-3)
        assert result.error_code == stage.MoveStage.Result.CODE_SUCCEEDED, result.message
        assert math.isclose(result.position.z, 1e-5, abs_tol=1e-9)
        assert result.duration > 1.0  # simulated: 1000 x slower than full speed
        assert proc.alive()


def test_cancel_mid_move_stops_with_consistent_pose(ros_node, namespace):
    with _stage(namespace, "time_scale:=1.0") as proc:
        stage = StageClient(ros_node, namespace)
        stage.wait_ready(proc)
        feedback = []
        handle = wait_future(
            ros_node,
            stage.move.send_goal_async(
                stage.MoveStage.Goal(x=0.0145, y=math.nan, z=math.nan),
                feedback_callback=lambda m: feedback.append(m.feedback),
            ),
            10,
            "goal",
        )
        assert handle.accepted
        spin_until(ros_node, lambda: len(feedback) >= 10, 10, "feedback while moving")
        wait_future(ros_node, handle.cancel_goal_async(), 10, "cancel")
        result = wait_future(ros_node, handle.get_result_async(), 10, "result").result
        assert result.error_code == stage.MoveStage.Result.CODE_CANCELED
        reached = (result.position.x, result.position.y, result.position.z)
        assert CENTRE[0] < reached[0] < 0.0145
        assert 0 < result.duration < 2.0
        assert stage.settle() == reached  # joint_states agree with the result


def test_malformed_trajectories_are_rejected_and_node_keeps_serving(ros_node, namespace):
    with _stage(namespace, "time_scale:=0.0") as proc:
        stage = StageClient(ros_node, namespace)
        stage.wait_ready(proc)
        pub = ros_node.create_publisher(JointTrajectory, f"{namespace}/stage/joint_trajectory", 10)
        spin_until(ros_node, lambda: pub.get_subscription_count() > 0, 10, "trajectory sub")

        def trajectory(names, *points):
            msg = JointTrajectory(joint_names=list(names))
            msg.points = [JointTrajectoryPoint(positions=list(p)) for p in points]
            return msg

        before = stage.pose()
        bad = [
            (trajectory(["elbow"], [0.1]), "must be distinct names"),
            (trajectory(["stage_x", "stage_x"], [0.001, 0.002]), "must be distinct names"),
            (trajectory(JOINT_NAMES), "no points"),
            (trajectory(JOINT_NAMES, [0.001, math.nan, 0.0]), "non-finite"),
            (trajectory(JOINT_NAMES, [0.001, 0.002]), "2 positions for 3 joints"),
            (trajectory(["focus_z"], [0.0], [-0.01]), "point 1: focus_z target"),
        ]
        for msg, reason in bad:
            pub.publish(msg)
            spin_until(ros_node, lambda r=reason: r in proc.output(), 10, f"rejection {reason}")
        assert stage.settle() == before
        # a good trajectory runs point by point; unnamed joints keep their positions
        pub.publish(trajectory(["focus_z", "stage_x"], [0.00001, 0.006], [0.00002, 0.005]))
        spin_until(
            ros_node,
            lambda: math.isclose(stage.pose()[0], 0.005, abs_tol=1e-12),
            10,
            "trajectory end",
        )
        assert stage.pose()[1] == before[1]
        assert math.isclose(stage.pose()[2], 0.00002, abs_tol=1e-9)
        assert proc.alive()


def test_emergency_stop_aborts_motion_and_refuses_moves_until_reset(ros_node, namespace):
    with _stage(namespace, "time_scale:=1.0") as proc:
        stage = StageClient(ros_node, namespace)
        stage.wait_ready(proc)
        handle = stage.send(x=0.0005, y=math.nan, z=math.nan)
        assert handle.accepted
        spin_until(ros_node, lambda: stage.pose()[0] < 0.0074, 10, "motion")
        assert stage.call("stop").success
        result = wait_future(ros_node, handle.get_result_async(), 10, "result").result
        assert result.error_code == stage.MoveStage.Result.CODE_STOPPED
        refused = stage.run(x=0.001)  # accepted, then aborted with the reason
        assert refused.error_code == stage.MoveStage.Result.CODE_STOPPED
        assert "emergency stop engaged" in refused.message
        assert not stage.call("home").success
        name = f"{namespace.lstrip('/')}/stage"
        errors = []
        ros_node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: errors.extend(
                s for s in m.status if s.name == name and s.level == DiagnosticStatus.ERROR
            ),
            10,
        )
        spin_until(ros_node, lambda: bool(errors), 5, "e-stop on /diagnostics")
        assert errors[0].message == "emergency stop engaged" and errors[0].hardware_id == "sim"
        assert stage.call("reset_stop").success
        home = stage.call("home")
        assert home.success, home.message
        assert stage.settle() == CENTRE


@pytest.mark.parametrize(
    ("param", "reason"),
    [
        ("backend:=warp_drive", "unknown stage backend 'warp_drive'"),
        ("publish_rate:=fast", "publish_rate"),
        ("time_scale:=-1.0", "time_scale"),
        ("backend:=motorkit", "pip install adafruit-circuitpython-motorkit"),
    ],
)
def test_bad_configuration_exits_non_zero_with_the_reason(param, reason, namespace):
    with NodeProcess(STAGE, ["-r", f"__ns:={namespace}", "-p", param]) as proc:
        proc.proc.wait(timeout=30)
        assert proc.proc.returncode == 2, proc.output()
        assert reason in proc.output()


def test_nodes_start_from_the_deployment_parameter_file(ros_node, namespace):
    from deepaf.graph import default_params_file

    files = ["--params-file", default_params_file()]
    with (
        NodeProcess(STAGE, ["-r", f"__ns:={namespace}", *files]) as proc,
        NodeProcess(["-m", "deepaf_driver.camera_node"], ["-r", f"__ns:={namespace}", *files]),
    ):
        stage = StageClient(ros_node, namespace)
        stage.wait_ready(proc)
        assert stage.pose() == CENTRE
        from deepaf_msgs.srv import CaptureImage

        capture = ros_node.create_client(CaptureImage, f"{namespace}/camera/capture")
        assert capture.wait_for_service(timeout_sec=30)
