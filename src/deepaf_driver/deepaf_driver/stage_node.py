"""Stage node `stage`: joint_states, the MoveStage action, JointTrajectory, reference, e-stop.

Topics (relative, so a namespace per microscope works):
    joint_states (sensor_msgs/JointState: stage_x, stage_y, focus_z [m], machine coordinates),
    stage/referenced (std_msgs/Bool, latched: whether the stage has an absolute reference),
    stage/joint_trajectory (trajectory_msgs/JointTrajectory, subscribed), /diagnostics.
Action: stage/move (deepaf_msgs/MoveStage). Services (std_srvs/Trigger): stage/set_reference
(the stage is now at `reference_position`), stage/home (endstops: reference; otherwise a move
to the backend's home pose), stage/stop (emergency stop: aborts motion, refuses moves),
stage/reset_stop.

Reference (`deepaf_driver.reference`): until the stage is referenced, absolute moves
(MoveStage, JointTrajectory, home) abort with CODE_NOT_REFERENCED and relative moves are
limited to `jog_limit` per axis; once referenced, the soft limits are enforced against the
referenced position on every path. A reference is saved under `state_dir` with `stage_id` and
restored at start-up only when the backend confirms its counters survived. `require_reference`
false (the default for absolute backends such as the simulator) takes the backend's positions
as absolute when nothing can be restored.

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

Motion ends with its caller and never runs unbounded: a cancel stops the move where it is;
a watchdog stops any move (a goal, a trajectory point, a move home) that runs longer than
`watchdog_factor` x the backend's expected time + `watchdog_margin` and aborts it (rclpy
cannot tell when a goal's client has gone, so this bound and the callers' cancel-on-timeout
take its place; endstop homing is bounded by `endstop_travel`); the e-stop services have
their own callback group and executor threads to spare, so they answer while a move, a
trajectory or homing runs.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from deepaf_driver.backends import stage_class
from deepaf_driver.backends.base import BackendError, Limits, MoveResult, Pose, StageBackend
from deepaf_driver.backends.sim import SCAN_SLIDE
from deepaf_driver.conversions import JOINT_NAMES, joint_state, point
from deepaf_driver.node_support import Param, declare_all, diagnostic_array, exit_with, run_node
from deepaf_driver.reference import (
    NOT_REFERENCED,
    ReferenceFile,
    StageFrame,
    check_stage_id,
    default_state_dir,
    derive_stage_id,
    three_finite,
)
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
    Param(
        "stage_id",
        "",
        "identity of this stage, names its saved reference ('' = backend + namespace)",
    ),
    Param("state_dir", "", "where references are saved ('' = $XDG_STATE_HOME/deepaf)"),
    Param(
        "reference_position",
        [0.0, 0.0, 0.0],
        "machine pose of the mechanical reference (or of the endstops) [m]",
    ),
    Param("jog_limit", 0.5e-3, "largest relative move per axis unreferenced [m]", (1e-6, 0.01)),
    Param("watchdog_factor", 3.0, "a move may take this x its expected time ...", (1.0, 100.0)),
    Param("watchdog_margin", 2.0, "... plus this, then the watchdog stops it [s]", (0.1, 600.0)),
    Param(
        "watchdog_fallback",
        300.0,
        "longest move of a backend that cannot estimate move times [s]",
        (1.0, 86400.0),
    ),
    Param("profile", "4x", "sim: optics profile (4x | 20x)"),
    Param("sim_protocol", "lab_a_standard", "sim: staining protocol preset"),
    Param("sim_slide_seed", 0, "sim: which virtual slide", (0, 2**31 - 1)),
    Param("sim_slide", SCAN_SLIDE, "sim: the virtual slide's artefacts (realistic | plain)"),
    Param("time_scale", 0.1, "sim: wall seconds slept per simulated second of motion", (0.0, 10.0)),
    Param("sim_endstops", False, "sim: simulated endstops at x min, y min, z max"),
    Param("sim_stage_fault", "", "sim: '' | stall (moves never finish; watchdog tests)"),
    Param(
        "steps_per_m",
        [2.0e5, 2.0e5, 2.0e6],
        "steppers: motor steps per metre of x, y, z (negative reverses) [1/m]",
    ),
    Param("backlash", [0.0, 0.0, 5e-6], "steppers: lost motion of x, y, z on reversal [m]"),
    Param("max_speed", [2e-3, 2e-3, 0.5e-3], "steppers: top speed of x, y, z [m/s]"),
    Param(
        "endstops",
        ["", "", ""],
        "steppers: switch of x, y, z as GPIO 'PIN:min|max[:low|high]' ('' x3 = none)",
    ),
    Param("endstop_travel", [0.03, 0.03, 0.005], "steppers: longest endstop search [m]"),
    Param("homing_speed", 0.2, "steppers: speed_scale of the endstop search", (0.001, 1.0)),
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
        stepper = {
            k: p[k]
            for k in (
                "steps_per_m",
                "backlash",
                "max_speed",
                "endstops",
                "endstop_travel",
                "homing_speed",
            )
        }
        backend_config = {
            "sim": {
                "profile": p["profile"],
                "protocol": p["sim_protocol"],
                "slide_seed": p["sim_slide_seed"],
                "slide": p["sim_slide"],
                "time_scale": p["time_scale"],
                "endstops": p["sim_endstops"],
                "fault": p["sim_stage_fault"],
            },
            "motorkit": {
                **stepper,
                "steppers": p["motorkit_steppers"],
                "step_style": p["motorkit_step_style"],
            },
            "sangaboard": {**stepper, "port": p["sangaboard_port"]},
        }
        cls = stage_class(self._backend_name)
        (require,) = declare_all(
            self,
            [
                Param(
                    "require_reference",
                    not cls.absolute,
                    "refuse absolute moves until referenced (default: true unless the backend "
                    "is absolute, like sim)",
                )
            ],
        ).values()
        self._require_reference = bool(require)
        self._reference_position = three_finite("reference_position", p["reference_position"])
        self._watchdog = (p["watchdog_factor"], p["watchdog_margin"], p["watchdog_fallback"])
        stage_id = check_stage_id(
            p["stage_id"] or derive_stage_id(self._backend_name, self.get_namespace())
        )
        self._store = ReferenceFile(p["state_dir"] or default_state_dir(), stage_id)
        for axis, (lo, hi) in zip(_AXES, soft, strict=True):
            if not lo < hi:
                raise ValueError(
                    f"soft limits of {axis}: {axis}_min={lo} must be < {axis}_max={hi}"
                )
        self._backend: StageBackend = cls(**backend_config.get(self._backend_name, {}))

        self._estop = threading.Event()
        self._motion = threading.Lock()  # one motion at a time, whoever asks
        self._last_error = ""
        self._moves = 0
        self._backend.start()
        try:
            self._frame = StageFrame(Limits(*soft), self._backend.limits(), p["jog_limit"])
            self._take_reference_at_start()
            empty = self._frame.limits.empty_axes()
            if empty:
                raise ValueError(
                    f"soft limits {soft} do not overlap the {self._backend_name} stage's travel "
                    f"{self._frame.hard_machine().axes()} on {', '.join(empty)}; fix x_min..z_max"
                )
        except ValueError:
            self._backend.stop()
            raise

        control = ReentrantCallbackGroup()  # goals answer (and abort when busy) during a move
        safety = MutuallyExclusiveCallbackGroup()  # e-stop: its own group, never queued
        hardware = MutuallyExclusiveCallbackGroup()  # home and trajectories, one at a time
        self._joint_pub = self.create_publisher(JointState, "joint_states", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._referenced_pub = self.create_publisher(Bool, "stage/referenced", latched)
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
        self.create_service(
            Trigger, "stage/set_reference", self._on_set_reference, callback_group=control
        )
        self.create_service(Trigger, "stage/stop", self._on_stop, callback_group=safety)
        self.create_service(Trigger, "stage/reset_stop", self._on_reset_stop, callback_group=safety)
        timers = MutuallyExclusiveCallbackGroup()
        self.create_timer(1.0 / rate, self._publish_joint_states, callback_group=timers)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=timers)
        self._publish_referenced()
        self.get_logger().info(
            f"stage backend {self._backend_name}, stage_id {stage_id}: "
            f"{self._reference_text()}; limits (mm) {self._frame.describe_limits()}; serving "
            f"{self.resolve_topic_name('stage/move')}"
        )

    # ------------------------------------------------------------------ reference
    def _take_reference_at_start(self) -> None:
        """Restore a saved reference the backend still vouches for, or start unreferenced."""
        saved, why = self._store.restorable(self._backend_name, self._backend.counter_session())
        if saved is not None:
            try:
                self._frame.adopt(saved.offset, f"restored from {self._store.path}")
                return
            except ValueError as exc:
                why = f"saved reference unusable: {exc}"
        if not self._require_reference:
            self._frame.adopt((0.0, 0.0, 0.0), "backend positions (require_reference false)")
            if not self._backend.absolute:
                self.get_logger().warning(
                    f"require_reference is false on the {self._backend_name} backend: soft "
                    "limits count from wherever the stage was at power-up"
                )
            return
        self.get_logger().warning(
            f"stage not referenced ({why}); absolute moves are refused until it is: "
            f"{self._frame.how_to_reference}"
        )

    def _reference_text(self) -> str:
        if self._frame.referenced:
            return f"referenced ({self._frame.source})"
        return "NOT referenced"

    def _publish_referenced(self) -> None:
        self._referenced_pub.publish(Bool(data=self._frame.referenced))

    def _set_reference(self, backend_pose: Pose, source: str) -> str:
        """Reference the stage: `backend_pose` is `reference_position`. Returns a report.

        Raises:
            ValueError: the soft limits would lie outside the travel.
        """
        offset = tuple(r - b for r, b in zip(self._reference_position, backend_pose, strict=True))
        self._frame.adopt(offset, source)
        self._publish_referenced()
        self._publish_joint_states()
        session = self._backend.counter_session()
        try:
            self._store.save(
                self._store.saved(
                    self._backend_name,
                    session,
                    self._frame.offset,
                    source,
                    self._reference_position,
                )
            )
            kept = f"saved to {self._store.path}" + (
                "" if session else " (this backend needs a new reference after every start)"
            )
        except OSError as exc:
            kept = f"NOT saved ({exc}); valid until the node stops"
        text = (
            f"referenced by {source}: the stage is at "
            f"{self._frame.describe(self._reference_position)}; limits (mm) "
            f"{self._frame.describe_limits()}; {kept}"
        )
        self.get_logger().info(text)
        return text

    def _lose_reference(self, why: str) -> None:
        """After a fault that may have lost steps: unreferenced, and forget the saved one."""
        if self._backend.absolute or not self._frame.referenced:
            return
        self._frame.invalidate()
        try:
            self._store.remove()
        except OSError as exc:
            self.get_logger().error(f"cannot remove {self._store.path}: {exc}")
        self._publish_referenced()
        self.get_logger().error(f"reference lost ({why}); reference the stage again")

    # ------------------------------------------------------------------ motion
    def _drive(
        self,
        target: Pose,
        speed_scale: float,
        stop: Callable[[], bool],
        progress: Callable[[Pose], None] | None = None,
    ) -> tuple[MoveResult, str]:
        """Move to `target` (machine coordinates) under the watchdog.

        Returns the outcome in machine coordinates and "" or the watchdog's reason.
        """
        frame = self._frame
        start = self._backend.position()
        goal = frame.to_backend(target)
        expected = self._backend.move_time(start, goal, speed_scale)
        factor, margin, fallback = self._watchdog
        bound = fallback if expected is None else factor * expected + margin
        deadline = time.monotonic() + bound
        tripped = False

        def stop_now() -> bool:
            nonlocal tripped
            if stop():
                return True
            tripped = time.monotonic() > deadline
            return tripped

        outcome = self._backend.move(
            goal,
            speed_scale,
            stop_requested=stop_now,
            progress=(lambda pose: progress(frame.to_machine(pose))) if progress else _ignore,
        )
        reached = MoveResult(frame.to_machine(outcome.position), outcome.duration, outcome.stopped)
        if not (tripped and outcome.stopped):
            return reached, ""
        reason = (
            f"watchdog: the move did not finish within {bound:.1f} s (expected "
            f"{'unknown' if expected is None else f'{expected:.1f} s'}); stopped at "
            f"{frame.describe(reached.position)}; check the motors and wiring"
        )
        self._lose_reference(reason)
        return reached, reason

    # ------------------------------------------------------------------ goals
    def _resolve(self, goal: MoveStage.Goal) -> tuple[Pose, int, str]:
        """Return (target, error code, reason) for a goal; reason "" when it may run."""
        values = (goal.x, goal.y, goal.z)
        current = self._frame.to_machine(self._backend.position())
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
        kind, reason = self._frame.check(current, target, goal.relative)
        if reason:
            code = (
                MoveStage.Result.CODE_NOT_REFERENCED
                if kind == NOT_REFERENCED
                else MoveStage.Result.CODE_OUT_OF_LIMITS
            )
            return current, code, reason + "; nothing moved"
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
        """Check the goal, move with feedback under the watchdog, report the pose reached."""
        goal = handle.request
        result = MoveStage.Result()
        if self._estop.is_set():
            return self._abort(
                handle,
                result,
                MoveStage.Result.CODE_STOPPED,
                f"goal {_goal_text(goal)}: emergency stop engaged; call stage/reset_stop first; "
                "nothing moved",
            )
        if not self._motion.acquire(blocking=False):
            return self._abort(
                handle,
                result,
                MoveStage.Result.CODE_HARDWARE_ERROR,
                f"goal {_goal_text(goal)}: stage busy with another motion; wait for it or "
                "cancel it; nothing moved",
            )
        try:
            target, code, reason = self._resolve(goal)
            if reason:
                return self._abort(handle, result, code, f"goal {_goal_text(goal)}: {reason}")
            outcome, watchdog = self._drive(
                target,
                goal.speed_scale or 1.0,
                stop=lambda: handle.is_cancel_requested or self._estop.is_set(),
                progress=lambda pose: handle.publish_feedback(
                    MoveStage.Feedback(
                        position=point(pose), distance_remaining=math.dist(pose, target)
                    )
                ),
            )
        except BackendError as exc:
            self._lose_reference(f"backend error: {exc}")
            return self._abort(handle, result, MoveStage.Result.CODE_HARDWARE_ERROR, str(exc))
        finally:
            self._motion.release()
        self._moves += 1
        self._publish_joint_states()  # the final pose is on joint_states before the result
        result.position = point(outcome.position)
        result.duration = float(outcome.duration)
        if watchdog:
            return self._abort(
                handle, result, MoveStage.Result.CODE_HARDWARE_ERROR, watchdog, outcome.position
            )
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

    def _abort(
        self,
        handle,
        result: MoveStage.Result,
        code: int,
        reason: str,
        position: Pose | None = None,
    ) -> MoveStage.Result:
        """Abort a goal with a code and reason, reporting `position` (default: the pose now)."""
        self.get_logger().error(f"MoveStage aborted: {reason}")
        self._last_error = reason
        handle.abort()
        result.error_code = code
        result.message = reason
        if position is None:
            position = self._frame.to_machine(self._backend.position())
        result.position = point(position)
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
        current = self._frame.to_machine(self._backend.position())
        pose = list(current)
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
            target = (pose[0], pose[1], pose[2])
            _, reason = self._frame.check(current, target, relative=False)
            if reason:
                raise ValueError(f"point {i}: {reason}")
            targets.append(target)
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
                outcome, watchdog = self._drive(target, 1.0, self._estop.is_set)
                if watchdog:
                    self._last_error = f"trajectory: {watchdog}"
                    self.get_logger().error(f"JointTrajectory aborted: {watchdog}")
                if outcome.stopped:
                    break
        except BackendError as exc:
            self._lose_reference(f"backend error: {exc}")
            self._last_error = f"trajectory: {exc}"
            self.get_logger().error(f"JointTrajectory failed: {exc}")
        finally:
            self._motion.release()
            self._publish_joint_states()

    # ------------------------------------------------------------------ services
    def _on_set_reference(self, _request, response: Trigger.Response) -> Trigger.Response:
        """Declare that the stage is at its mechanical reference (`reference_position`)."""
        if not self._motion.acquire(blocking=False):
            response.message = "stage busy with a motion; set the reference when it stands still"
            return response
        try:
            response.message = self._set_reference(self._backend.position(), "set_reference")
            response.success = True
        except (ValueError, BackendError) as exc:
            response.message = f"set_reference refused: {exc}"
        finally:
            self._motion.release()
        return response

    def _on_home(self, _request, response: Trigger.Response) -> Trigger.Response:
        """Home: onto the endstops (which references the stage), else to the home pose."""
        if self._estop.is_set() or not self._motion.acquire(blocking=False):
            response.message = "emergency stop engaged" if self._estop.is_set() else "stage busy"
            return response
        try:
            if self._backend.has_endstops():
                switches = self._backend.seek_endstops(stop_requested=self._estop.is_set)
                response.message = "homed: " + self._set_reference(switches, "endstops")
                response.success = True
                return response
            home = self._backend.home_target()
            if home is None:
                response.message = (
                    "home refused: this stage has no endstops; jog it to its mechanical "
                    "reference and call stage/set_reference (README: Stage reference)"
                )
                return response
            current = self._frame.to_machine(self._backend.position())
            target = self._frame.to_machine(home)
            _, reason = self._frame.check(current, target, relative=False)
            if reason:
                response.message = f"home refused: {reason}"
                return response
            outcome, watchdog = self._drive(target, 1.0, self._estop.is_set)
            response.success = not outcome.stopped
            response.message = watchdog or (
                "homed at " if response.success else "home stopped at "
            ) + self._frame.describe(outcome.position)
        except (ValueError, BackendError) as exc:
            response.message = f"home failed: {exc}"
        finally:
            self._motion.release()
            self._publish_joint_states()
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
        """Publish the current pose (machine coordinates) on joint_states."""
        try:
            pose = self._frame.to_machine(self._backend.position())
        except BackendError as exc:
            self.get_logger().error(f"cannot read position: {exc}", throttle_duration_sec=5.0)
            return
        self._joint_pub.publish(joint_state(pose, self.get_clock().now().to_msg()))

    def _publish_diagnostics(self) -> None:
        """Publish the stage's status on /diagnostics."""
        if self._estop.is_set():
            level, message = DiagnosticStatus.ERROR, "emergency stop engaged"
        elif not self._frame.referenced:
            level = DiagnosticStatus.WARN
            message = f"not referenced: absolute moves refused; {self._frame.how_to_reference}"
        elif self._last_error:
            level, message = DiagnosticStatus.WARN, self._last_error
        else:
            level, message = DiagnosticStatus.OK, "ready"
        pose = self._frame.to_machine(self._backend.position())
        values = {
            "moving": self._motion.locked(),
            "moves": self._moves,
            "referenced": self._frame.referenced,
            "reference": self._frame.source or "none",
            "stage_id": self._store.stage_id,
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


def _ignore(_pose: Pose) -> None:
    return None


def _goal_text(goal: MoveStage.Goal) -> str:
    mode = "relative" if goal.relative else "absolute"
    axes = ", ".join(
        f"{a}=unchanged" if axis_unchanged(v) else f"{a}={v}"
        for a, v in zip(_AXES, (goal.x, goal.y, goal.z), strict=True)
    )
    return f"({axes}) m {mode}"


def main(args: list[str] | None = None) -> None:
    """Run the stage node until interrupted (exit status 2 on bad configuration)."""
    # threads to spare: a move, a trajectory or homing, goals, timers, and the e-stop
    exit_with(run_node(StageNode, args, "stage", threads=6))


if __name__ == "__main__":
    main()
