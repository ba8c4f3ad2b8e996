"""The stage node in its own process over real DDS: limits, bad goals, axes left out, cancel,
trajectories, e-stop, bad configuration; the absolute reference (refusals until referenced,
set_reference, endstops, restore across restarts) and the watchdog."""

from __future__ import annotations

import json
import math
import time

import pytest
from deepaf.testing import NodeProcess, spin_until, wait_future
from deepaf_driver.conversions import JOINT_NAMES, joint_state_to_pose
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.action import ActionClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
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
            for name in ("home", "stop", "reset_stop", "set_reference")
        }
        self.referenced: list[bool] = []
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        node.create_subscription(
            Bool, f"{namespace}/stage/referenced", lambda m: self.referenced.append(m.data), latched
        )

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

    def is_referenced(self) -> bool:
        """The latest stage/referenced (latched, so it arrives even long after a change)."""
        spin_until(self.node, lambda: bool(self.referenced), 10, "stage/referenced")
        return self.referenced[-1]

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
        ("stage_id:=../elsewhere", "stage_id '../elsewhere' must be"),
        ("reference_position:=[0.0, 0.0]", "reference_position needs three finite values"),
        ("sim_stage_fault:=melt", "unknown sim stage fault"),
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


# ---------------------------------------------------------------------------- reference
REFERENCE = (0.001, 0.002, 0.0)  # machine pose of the (virtual) mechanical reference


def _referencing_stage(namespace: str, state_dir, stage_id: str, *params: str) -> NodeProcess:
    """A sim stage that behaves like stepper hardware: unreferenced until referenced."""
    return _stage(
        namespace,
        "require_reference:=true",
        f"state_dir:={state_dir}",
        f"stage_id:={stage_id}",
        "reference_position:=[0.001, 0.002, 0.0]",
        *params,
    )


def _trajectory(names, *points) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(names))
    msg.points = [JointTrajectoryPoint(positions=list(p)) for p in points]
    return msg


def test_unreferenced_stage_refuses_absolute_moves_allows_jogs_then_set_reference(
    ros_node, namespace, tmp_path
):
    """Until referenced: absolute goals, trajectories, home and big jogs are refused with the
    procedure in the message; jogs up to jog_limit run. set_reference makes the current pose
    `reference_position`, saves it, and limits then hold against it on every path."""
    with _referencing_stage(namespace, tmp_path, "bench-1", "time_scale:=0.0") as proc:
        stage = StageClient(ros_node, namespace)
        stage.wait_ready(proc)
        codes = stage.MoveStage.Result
        assert stage.is_referenced() is False
        start = stage.settle()
        assert start == CENTRE  # the sim's counters; not machine coordinates yet
        warnings = []
        name = f"{namespace.lstrip('/')}/stage"
        ros_node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: warnings.extend(
                s for s in m.status if s.name == name and s.level == DiagnosticStatus.WARN
            ),
            10,
        )
        for goal, reason in (
            ({"x": 0.008}, "absolute moves are refused"),
            ({"z": 0.0}, "absolute moves are refused"),
            ({"x": 0.0006, "relative": True}, "limited to 0.500 mm per axis (stage_x 0.6000 mm)"),
        ):
            result = stage.run(**goal)
            assert result.error_code == codes.CODE_NOT_REFERENCED, (goal, result.message)
            assert reason in result.message, result.message
            assert "stage/set_reference" in result.message and "nothing moved" in result.message
        home = stage.call("home")
        assert not home.success and "not referenced" in home.message
        pub = ros_node.create_publisher(JointTrajectory, f"{namespace}/stage/joint_trajectory", 10)
        spin_until(ros_node, lambda: pub.get_subscription_count() > 0, 10, "trajectory sub")
        pub.publish(_trajectory(["stage_x"], [0.0076]))
        refusal = "rejected JointTrajectory: point 0: the stage is not referenced"
        spin_until(ros_node, lambda: refusal in proc.output(), 10, "trajectory refusal")
        assert stage.settle() == start
        spin_until(ros_node, lambda: bool(warnings), 5, "not-referenced warning")
        assert warnings[0].message.startswith("not referenced")
        # a jog of jog_limit runs (the reference procedure: jog onto the mechanical reference)
        jog = stage.run(x=0.0005, y=-0.0005, relative=True)
        assert jog.error_code == codes.CODE_SUCCEEDED, jog.message
        assert stage.settle()[:2] == pytest.approx((0.008, 0.007), abs=1e-12)
        # set_reference: the stage is now at reference_position
        reply = stage.call("set_reference")
        assert reply.success, reply.message
        assert "saved to" in reply.message and "after every start" not in reply.message
        spin_until(ros_node, lambda: stage.referenced[-1], 5, "stage/referenced true")
        # the joint state after the reference can trail the service's answer under load
        want = pytest.approx(REFERENCE, abs=1e-12)
        spin_until(ros_node, lambda want=want: stage.settle() == want, 20, "the referenced pose")
        saved = json.loads((tmp_path / "stage-bench-1.json").read_text())
        assert saved["stage_id"] == "bench-1" and saved["source"] == "set_reference"
        assert saved["offset"] == pytest.approx([-0.007, -0.005, 0.0], abs=1e-12)
        # absolute moves now run, in machine coordinates
        moved = stage.run(x=0.0, y=0.003)
        assert moved.error_code == codes.CODE_SUCCEEDED, moved.message
        assert (moved.position.x, moved.position.y) == pytest.approx((0.0, 0.003), abs=1e-12)
        # limits against the reference: the travel (sim x 0..15 mm) is now machine -7..8 mm,
        # so x 9 mm, inside the soft limits 0..15 mm, is out of reach on every path
        for goal in ({"x": 0.009}, {"x": 0.0085, "relative": True}, {"x": -0.0001}):
            result = stage.run(**goal)
            assert result.error_code == codes.CODE_OUT_OF_LIMITS, (goal, result.message)
            assert "outside the soft limits" in result.message
        before = stage.settle()
        pub.publish(_trajectory(["stage_x"], [0.004], [0.009]))
        spin_until(ros_node, lambda: "point 1: stage_x target 9.0000 mm" in proc.output(), 10)
        assert stage.settle() == before
        pub.publish(_trajectory(["stage_x"], [0.004], [0.0079]))
        spin_until(ros_node, lambda: math.isclose(stage.pose()[0], 0.0079, abs_tol=1e-12), 10)
        assert stage.call("home").success  # the sim's home pose, as an absolute move
        assert stage.settle() == pytest.approx((0.0005, 0.0025, 0.0), abs=1e-12)


def test_saved_reference_is_restored_at_restart_only_for_the_same_stage(
    ros_node, namespace, tmp_path
):
    with _referencing_stage(namespace, tmp_path, "scope-a", "time_scale:=0.0") as proc:
        stage = StageClient(ros_node, namespace)
        stage.wait_ready(proc)
        assert stage.run(z=0.0001, relative=True).error_code == 0
        assert stage.call("set_reference").success
    # the same stage again: referenced at once; the sim's counters (its truth) survived, so
    # its start pose, 0.1 mm below where the reference was set, reads as such
    with _referencing_stage(namespace, tmp_path, "scope-a", "time_scale:=0.0") as proc:
        stage = StageClient(ros_node, namespace)
        stage.wait_ready(proc)
        assert stage.is_referenced() is True
        assert stage.settle() == pytest.approx((0.001, 0.002, -0.0001), abs=1e-12)
        assert f"restored from {tmp_path}" in proc.output()
        moved = stage.run(x=0.0015)
        assert moved.error_code == 0, moved.message
    # another stage_id, or a corrupt file: unreferenced, and says why
    (tmp_path / "stage-scope-b.json").write_text("{not json")
    for stage_id, why in (("scope-c", "no reference saved"), ("scope-b", "is not JSON")):
        with _referencing_stage(namespace, tmp_path, stage_id, "time_scale:=0.0") as proc:
            stage = StageClient(ros_node, namespace)
            stage.referenced.clear()
            stage.wait_ready(proc)
            assert stage.is_referenced() is False
            assert why in proc.output()
            assert stage.run(x=0.008).error_code == stage.MoveStage.Result.CODE_NOT_REFERENCED


def test_homing_to_endstops_references_the_stage(ros_node, namespace, tmp_path):
    """sim_endstops: switches at x min, y min, z max; home seeks them and references there."""
    with _stage(
        namespace,
        "require_reference:=true",
        "sim_endstops:=true",
        f"state_dir:={tmp_path}",
        "stage_id:=homing",
        "reference_position:=[0.0, 0.0, 0.0005]",
        "time_scale:=0.0",
    ) as proc:
        stage = StageClient(ros_node, namespace)
        stage.wait_ready(proc)
        assert stage.is_referenced() is False
        home = stage.call("home")
        assert home.success and "referenced by endstops" in home.message, home.message
        spin_until(ros_node, lambda: stage.referenced[-1], 5, "stage/referenced true")
        # the joint state after the reference can trail the service's answer under load
        want = pytest.approx((0.0, 0.0, 0.0005), abs=1e-12)
        spin_until(ros_node, lambda want=want: stage.settle() == want, 20, "the referenced pose")
        moved = stage.run(x=0.0075, y=0.0075, z=0.0)
        assert moved.error_code == 0, moved.message
        assert json.loads((tmp_path / "stage-homing.json").read_text())["source"] == "endstops"


def test_watchdog_stops_a_move_that_runs_far_past_its_expected_time(ros_node, namespace):
    """sim_stage_fault stall: the move stops advancing half way; the watchdog stops it at
    watchdog_factor x expected + watchdog_margin and aborts the goal."""
    with _stage(
        namespace,
        "sim_stage_fault:=stall",
        "time_scale:=0.1",
        "watchdog_factor:=1.0",
        "watchdog_margin:=0.5",
    ) as proc:
        stage = StageClient(ros_node, namespace)
        stage.wait_ready(proc)
        t0 = time.monotonic()
        result = stage.run(timeout=15.0, x=0.0095)
        assert time.monotonic() - t0 < 5.0
        assert result.error_code == stage.MoveStage.Result.CODE_HARDWARE_ERROR, result.message
        assert result.message.startswith("watchdog: the move did not finish within 0.")
        assert result.position.x == pytest.approx(0.0085, abs=1e-4)  # stalled half way
        assert stage.settle()[0] == result.position.x
        assert proc.alive()


def test_emergency_stop_is_served_during_a_trajectory_and_a_flood_of_goals(ros_node, namespace):
    with _stage(namespace, "time_scale:=1.0") as proc:
        stage = StageClient(ros_node, namespace)
        stage.wait_ready(proc)
        pub = ros_node.create_publisher(JointTrajectory, f"{namespace}/stage/joint_trajectory", 10)
        spin_until(ros_node, lambda: pub.get_subscription_count() > 0, 10, "trajectory sub")
        pub.publish(_trajectory(["stage_x"], [0.0145], [0.0005]))
        spin_until(ros_node, lambda: stage.pose()[0] > 0.0077, 10, "trajectory motion")
        flood = [stage.send(x=0.001) for _ in range(8)]  # each aborts: the stage is busy
        stop = stage.services["stop"].call_async(Trigger.Request())
        t0 = time.monotonic()
        assert wait_future(ros_node, stop, 5, "e-stop").success
        assert time.monotonic() - t0 < 2.0
        for handle in flood:
            result = wait_future(ros_node, handle.get_result_async(), 10, "result").result
            assert result.error_code in (
                stage.MoveStage.Result.CODE_HARDWARE_ERROR,
                stage.MoveStage.Result.CODE_STOPPED,
            )
        stopped = stage.settle()
        time.sleep(0.5)
        assert stage.settle() == stopped and 0.0077 < stopped[0] < 0.0145  # stopped short
        assert stage.call("reset_stop").success
        assert proc.alive()
