"""Stage node `stage`: joint_states, the MoveStage action, JointTrajectory, home and e-stop.

Topics (relative, so a namespace per microscope works):
    joint_states (sensor_msgs/JointState: stage_x, stage_y, focus_z [m]),
    stage/joint_trajectory (trajectory_msgs/JointTrajectory, subscribed), /diagnostics.
Action: stage/move (deepaf_msgs/MoveStage). Services (std_srvs/Trigger): stage/home,
stage/stop (emergency stop: aborts motion, refuses moves), stage/reset_stop.

Every MoveStage goal is accepted and checked when it executes, before anything moves: a bad
goal aborts with its error code and the reason in the result's message (so
`ros2 action send_goal` shows why, not just "Goal was rejected"). An axis a goal leaves at
MoveStage.Goal.UNCHANGED (the default, 1e300; any |value| >= 1e299) or NaN stays where it is,
for absolute and relative goals alike; infinities are invalid, and speed_scale must be 0
(full speed) or in [MIN_SPEED_SCALE, 1]. A relative goal's target depends on where the stage
is when it runs. One motion at a time: goals arriving while the stage moves abort with
CODE_HARDWARE_ERROR, and trajectories are refused. Backlash compensation lives in the
backends (the simulator's stage model and the stepper backends approach every target from
below).
"""

from __future__ import annotations

import math
import threading

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from deepaf_driver.backends import stage_class
from deepaf_driver.backends.base import BackendError, Limits, MoveResult, Pose, StageBackend
from deepaf_driver.conversions import JOINT_NAMES, joint_state, point
from deepaf_driver.node_support import Param, declare_all, diagnostic_array, exit_with, run_node
from deepaf_msgs.action import MoveStage

_AXES = ("x", "y", "z")
#: |value| at or above this (the interface's UNCHANGED is 1e300) leaves an axis where it is.
UNCHANGED_THRESHOLD = 1e299
#: Smallest speed_scale a goal may ask for (0 means full speed); a tinier one never arrives.
MIN_SPEED_SCALE = MoveStage.Goal.MIN_SPEED_SCALE


def axis_unchanged(value: float) -> bool:
    """True when a MoveStage axis value means "leave this axis": UNCHANGED (1e300) or NaN."""
    return math.isnan(value) or (math.isfinite(value) and abs(value) >= UNCHANGED_THRESHOLD)


PARAMETERS = (
    Param("backend", "sim", "stage backend: sim | motorkit | sangaboard | package.module:Class"),
    Param("publish_rate", 20.0, "joint_states rate [Hz]", (1.0, 1000.0)),
    Param("x_min", 0.0, "soft limit: lowest stage_x [m]", (-1.0, 1.0)),
    Param("x_max", 15e-3, "soft limit: highest stage_x [m]", (-1.0, 1.0)),
    Param("y_min", 0.0, "soft limit: lowest stage_y [m]", (-1.0, 1.0)),
    Param("y_max", 15e-3, "soft limit: highest stage_y [m]", (-1.0, 1.0)),
    Param(
        "z_min",
        -500e-6,
        "soft limit: lowest focus_z, keeps the objective off the slide [m]",
        (-1.0, 1.0),
    ),
    Param("z_max", 500e-6, "soft limit: highest focus_z [m]", (-1.0, 1.0)),
    Param("profile", "4x", "sim: optics profile (4x | 20x)"),
    Param("sim_protocol", "lab_a_standard", "sim: staining protocol preset"),
    Param("sim_slide_seed", 0, "sim: which virtual slide", (0, 2**31 - 1)),
    Param("time_scale", 0.1, "sim: wall seconds slept per simulated second of motion", (0.0, 10.0)),
    Param(
        "steps_per_m",
        [2.0e5, 2.0e5, 2.0e6],
        "steppers: motor steps per metre of x, y, z (negative reverses) [1/m]",
    ),
    Param("backlash", [0.0, 0.0, 5e-6], "steppers: lost motion of x, y, z on reversal [m]"),
    Param("max_speed", [2e-3, 2e-3, 0.5e-3], "steppers: top speed of x, y, z [m/s]"),
    Param(
        "motorkit_steppers",
        ["0x60:1", "0x60:2", "0x61:1"],
        "motorkit: I2C address:stepper (1 | 2) driving x, y, z",
    ),
    Param("motorkit_step_style", "double", "motorkit: single | double | interleave | microstep"),
    Param("sangaboard_port", "", "sangaboard: serial port ('' = autodetect)"),
)


class StageNode(Node):
    """Serve stage motion over standard interfaces; the backend moves the hardware."""

    def __init__(self) -> None:
        super().__init__("stage")
        p = declare_all(self, PARAMETERS)
        self._backend_name = p["backend"]
        rate = p["publish_rate"]
        soft = [(p[f"{axis}_min"], p[f"{axis}_max"]) for axis in _AXES]
        stepper = {k: p[k] for k in ("steps_per_m", "backlash", "max_speed")}
        backend_config = {
            "sim": {
                "profile": p["profile"],
                "protocol": p["sim_protocol"],
                "slide_seed": p["sim_slide_seed"],
                "time_scale": p["time_scale"],
            },
            "motorkit": {
                **stepper,
                "steppers": p["motorkit_steppers"],
                "step_style": p["motorkit_step_style"],
            },
            "sangaboard": {**stepper, "port": p["sangaboard_port"]},
        }
        cls = stage_class(self._backend_name)
        self._backend: StageBackend = cls(**backend_config.get(self._backend_name, {}))

        self._estop = threading.Event()
        self._motion = threading.Lock()  # one motion at a time, whoever asks
        self._last_error = ""
        self._moves = 0
        self._limits = Limits(*soft)
        for axis, (lo, hi) in zip(_AXES, soft, strict=True):
            if not lo < hi:
                raise ValueError(
                    f"soft limits of {axis}: {axis}_min={lo} must be < {axis}_max={hi}"
                )

        self._backend.start()
        hard = self._backend.limits()
        if hard is not None:
            self._limits = self._limits.intersect(hard)
            if any(lo >= hi for lo, hi in self._limits.axes()):
                self._backend.stop()
                raise ValueError(
                    f"soft limits {soft} do not overlap the {self._backend_name} stage's travel "
                    f"{hard.axes()}; fix x_min..z_max"
                )

        control = ReentrantCallbackGroup()  # actions and e-stop answer while a move runs
        hardware = MutuallyExclusiveCallbackGroup()  # home and trajectories, one at a time
        self._joint_pub = self.create_publisher(JointState, "joint_states", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._action = ActionServer(
            self,
            MoveStage,
            "stage/move",
            execute_callback=self._execute,
            goal_callback=self._on_goal,
            cancel_callback=self._on_cancel,
            callback_group=control,
        )
        self.create_subscription(
            JointTrajectory,
            "stage/joint_trajectory",
            self._on_trajectory,
            10,
            callback_group=hardware,
        )
        self.create_service(Trigger, "stage/home", self._on_home, callback_group=hardware)
        self.create_service(Trigger, "stage/stop", self._on_stop, callback_group=control)
        self.create_service(
            Trigger, "stage/reset_stop", self._on_reset_stop, callback_group=control
        )
        timers = MutuallyExclusiveCallbackGroup()
        self.create_timer(1.0 / rate, self._publish_joint_states, callback_group=timers)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=timers)
        limits_mm = ", ".join(
            f"{a} [{lo * 1e3:.3f}, {hi * 1e3:.3f}]"
            for a, (lo, hi) in zip(_AXES, self._limits.axes(), strict=True)
        )
        self.get_logger().info(
            f"stage backend {self._backend_name}: soft limits (mm) {limits_mm}; serving "
            f"{self.resolve_topic_name('stage/move')}"
        )

    # ------------------------------------------------------------------ goals
    def _resolve(self, goal: MoveStage.Goal) -> tuple[Pose, int, str]:
        """Return (target, error code, reason) for a goal; reason "" when it may run."""
        values = (goal.x, goal.y, goal.z)
        current = self._backend.position()
        invalid = MoveStage.Result.CODE_INVALID_GOAL
        bad = [f"{a}={v}" for a, v in zip(_AXES, values, strict=True) if math.isinf(v)]
        if bad:
            return (
                current,
                invalid,
                f"infinite coordinate {', '.join(bad)} (leave an axis out, or set it to "
                "UNCHANGED = 1e300, to keep it where it is); nothing moved",
            )
        scale = goal.speed_scale
        if not (scale == 0 or MIN_SPEED_SCALE <= scale <= 1):
            return (
                current,
                invalid,
                f"speed_scale {scale} must be 0 (full speed) or in [{MIN_SPEED_SCALE:g}, 1]; "
                "nothing moved",
            )
        if goal.relative:
            target = tuple(
                c if axis_unchanged(v) else c + v for c, v in zip(current, values, strict=True)
            )
        else:
            target = tuple(
                c if axis_unchanged(v) else v for c, v in zip(current, values, strict=True)
            )
        # axes that do not move are not checked: a stage parked outside new limits can leave
        checked = tuple(
            t if t != c else _inside(lim)
            for t, c, lim in zip(target, current, self._limits.axes(), strict=True)
        )
        reason = self._limits.violation(checked)
        if reason:
            return current, MoveStage.Result.CODE_OUT_OF_LIMITS, reason + "; nothing moved"
        return target, MoveStage.Result.CODE_SUCCEEDED, ""

    def _on_goal(self, _goal: MoveStage.Goal) -> GoalResponse:
        """Accept every goal: `_execute` checks it and aborts with the reason in the result.

        A rejection reaches `ros2 action send_goal` and other clients only as "Goal was
        rejected"; an aborted goal carries its error code and message.
        """
        return GoalResponse.ACCEPT

    def _on_cancel(self, _goal_handle) -> CancelResponse:
        """Accept every cancel request; the move stops where it is."""
        return CancelResponse.ACCEPT

    def _execute(self, handle) -> MoveStage.Result:
        """Check the goal again, move with feedback, and report the pose reached."""
        goal = handle.request
        result = MoveStage.Result()
        target, code, reason = self._resolve(goal)
        if not reason and self._estop.is_set():
            code = MoveStage.Result.CODE_STOPPED
            reason = "emergency stop engaged; call stage/reset_stop first; nothing moved"
        if not reason and not self._motion.acquire(blocking=False):
            code = MoveStage.Result.CODE_HARDWARE_ERROR
            reason = "stage busy with another motion; wait for it or cancel it; nothing moved"
        if reason:
            return self._abort(handle, result, code, f"goal {_goal_text(goal)}: {reason}")
        try:
            outcome = self._backend.move(
                target,
                goal.speed_scale or 1.0,
                stop_requested=lambda: handle.is_cancel_requested or self._estop.is_set(),
                progress=lambda pose: handle.publish_feedback(
                    MoveStage.Feedback(
                        position=point(pose), distance_remaining=math.dist(pose, target)
                    )
                ),
            )
        except BackendError as exc:
            return self._abort(handle, result, MoveStage.Result.CODE_HARDWARE_ERROR, str(exc))
        finally:
            self._motion.release()
        self._moves += 1
        self._publish_joint_states()  # the final pose is on joint_states before the result
        result.position = point(outcome.position)
        result.duration = float(outcome.duration)
        if not outcome.stopped:
            self._last_error = ""  # diagnostics back to OK after a good move
            handle.succeed()
            result.error_code = MoveStage.Result.CODE_SUCCEEDED
        elif self._estop.is_set():
            handle.abort()
            result.error_code = MoveStage.Result.CODE_STOPPED
            result.message = "emergency stop: motion aborted; call stage/reset_stop to clear"
        else:
            handle.canceled()
            result.error_code = MoveStage.Result.CODE_CANCELED
            result.message = "cancelled on request; position is where the stage stopped"
        return result

    def _abort(self, handle, result: MoveStage.Result, code: int, reason: str) -> MoveStage.Result:
        """Abort a goal with a code and reason, reporting the current pose."""
        self.get_logger().error(f"MoveStage aborted: {reason}")
        self._last_error = reason
        handle.abort()
        result.error_code = code
        result.message = reason
        result.position = point(self._backend.position())
        return result

    # ------------------------------------------------------------------ trajectories
    def _trajectory_targets(self, msg: JointTrajectory) -> list[Pose]:
        """Return the absolute pose of every point, or raise ValueError saying what is wrong."""
        names = list(msg.joint_names)
        if not names:
            raise ValueError("joint_names is empty")
        unknown = [n for n in names if n not in JOINT_NAMES]
        if unknown or len(set(names)) != len(names):
            raise ValueError(
                f"joint_names {names} must be distinct names out of {list(JOINT_NAMES)}"
            )
        if not msg.points:
            raise ValueError("the trajectory has no points")
        pose = list(self._backend.position())
        targets: list[Pose] = []
        for i, pt in enumerate(msg.points):
            positions = list(pt.positions)
            if len(positions) != len(names):
                raise ValueError(
                    f"point {i} has {len(positions)} positions for {len(names)} joints"
                )
            if not all(math.isfinite(p) for p in positions):
                raise ValueError(f"point {i} has a non-finite position {positions}")
            for name, value in zip(names, positions, strict=True):
                pose[JOINT_NAMES.index(name)] = value
            reason = self._limits.violation(pose)
            if reason:
                raise ValueError(f"point {i}: {reason}")
            targets.append((pose[0], pose[1], pose[2]))
        return targets

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        """Run a trajectory point by point (at full speed; time_from_start is not timed)."""
        try:
            targets = self._trajectory_targets(msg)
        except ValueError as exc:
            self.get_logger().error(f"rejected JointTrajectory: {exc}; nothing moved")
            self._last_error = f"trajectory: {exc}"
            return
        if self._estop.is_set() or not self._motion.acquire(blocking=False):
            why = "emergency stop engaged" if self._estop.is_set() else "stage busy"
            self.get_logger().error(f"rejected JointTrajectory: {why}; nothing moved")
            return
        try:
            for target in targets:
                outcome: MoveResult = self._backend.move(target, stop_requested=self._estop.is_set)
                if outcome.stopped:
                    break
        except BackendError as exc:
            self._last_error = f"trajectory: {exc}"
            self.get_logger().error(f"JointTrajectory failed: {exc}")
        finally:
            self._motion.release()
            self._publish_joint_states()

    # ------------------------------------------------------------------ services
    def _on_home(self, _request, response: Trigger.Response) -> Trigger.Response:
        """Home (sim: back to the start pose; steppers: zero the counters here)."""
        if self._estop.is_set() or not self._motion.acquire(blocking=False):
            response.message = "emergency stop engaged" if self._estop.is_set() else "stage busy"
            return response
        try:
            target = self._backend.home_target()
            reason = self._limits.violation(target) if target is not None else ""
            if reason:
                response.message = f"home refused: {reason}"
                return response
            pose = self._backend.home()
            response.success = True
            response.message = "homed at " + ", ".join(f"{v * 1e3:.4f}" for v in pose) + " mm"
        except BackendError as exc:
            response.message = f"home failed: {exc}"
        finally:
            self._motion.release()
        return response

    def _on_stop(self, _request, response: Trigger.Response) -> Trigger.Response:
        """Emergency stop: halt now and refuse moves until stage/reset_stop."""
        self._estop.set()
        self._backend.halt()
        self.get_logger().warning("emergency stop engaged")
        response.success = True
        response.message = "emergency stop engaged; moves are refused until stage/reset_stop"
        return response

    def _on_reset_stop(self, _request, response: Trigger.Response) -> Trigger.Response:
        """Clear the emergency stop."""
        self._estop.clear()
        response.success = True
        response.message = "emergency stop cleared"
        return response

    # ------------------------------------------------------------------ status
    def _publish_joint_states(self) -> None:
        """Publish the current pose on joint_states."""
        try:
            pose = self._backend.position()
        except BackendError as exc:
            self.get_logger().error(f"cannot read position: {exc}", throttle_duration_sec=5.0)
            return
        self._joint_pub.publish(joint_state(pose, self.get_clock().now().to_msg()))

    def _publish_diagnostics(self) -> None:
        """Publish the stage's status on /diagnostics."""
        if self._estop.is_set():
            level, message = DiagnosticStatus.ERROR, "emergency stop engaged"
        elif self._last_error:
            level, message = DiagnosticStatus.WARN, self._last_error
        else:
            level, message = DiagnosticStatus.OK, "ready"
        pose = self._backend.position()
        values = {
            "moving": self._motion.locked(),
            "moves": self._moves,
            **{name: f"{v:.9f}" for name, v in zip(JOINT_NAMES, pose, strict=True)},
        }
        self._diag_pub.publish(diagnostic_array(self, level, message, self._backend_name, values))

    def destroy_node(self) -> None:
        """Halt motion, release the action server and the device (if they were created)."""
        action = getattr(self, "_action", None)
        if action is not None:
            self._estop.set()
            self._backend.halt()
            action.destroy()
            self._backend.stop()
        super().destroy_node()


def _inside(limits: tuple[float, float]) -> float:
    return (limits[0] + limits[1]) / 2


def _goal_text(goal: MoveStage.Goal) -> str:
    mode = "relative" if goal.relative else "absolute"
    axes = ", ".join(
        f"{a}=unchanged" if axis_unchanged(v) else f"{a}={v}"
        for a, v in zip(_AXES, (goal.x, goal.y, goal.z), strict=True)
    )
    return f"({axes}) m {mode}"


def main(args: list[str] | None = None) -> None:
    """Run the stage node until interrupted (exit status 2 on bad configuration)."""
    exit_with(run_node(StageNode, args, "stage"))


if __name__ == "__main__":
    main()
