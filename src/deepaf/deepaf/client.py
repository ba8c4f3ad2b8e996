"""A Python client for DeepAf's actions, for other robots' code (in the spirit of nav2's
simple commander): verbs, a result enum, error messages, and a total timeout on every wait.

    import rclpy
    from deepaf.client import DeepAfClient

    rclpy.init()
    scope = DeepAfClient(namespace="microscope")
    scope.move_stage(x=0.0075, y=0.0075)                 # metres; unset axes stay put
    offset = scope.predict_focus().prediction.offset      # from the latest preview
    scope.move_stage(z=offset, relative=True)
    frame = scope.capture().image                         # sensor_msgs/Image, 4056x3040
    outcome = scope.scan_region((0.006, 0.006), (0.009, 0.008), output_dir="/tmp/scan")
    print(outcome.status, outcome.result.slide_path)
    scope.close(); rclpy.shutdown()

Non-blocking use: `start_scan(...)` returns a task; poll `task.done()`, read
`task.feedback`, `task.cancel()`; `task.wait(timeout)` gives the :class:`Outcome`.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rclpy
from deepaf_planner.ros_microscope import CANCEL_WAIT, resend_until_answered
from geometry_msgs.msg import Point
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from deepaf_msgs.action import AcquireFocalStack, MoveStage, PredictFocus, ScanSlide
from deepaf_msgs.srv import CaptureImage


def _point(x: float, y: float, z: float = 0.0) -> Point:
    """A geometry_msgs/Point from numbers of any kind (ints where floats are natural)."""
    return Point(x=float(x), y=float(y), z=float(z))


#: Longest wait any call accepts [s] (a day): every wait is finite.
MAX_TIMEOUT = 86400.0
# CANCEL_WAIT: how long a timed-out wait then waits for its cancel to be confirmed and for
# the goal's final result; ACK_WAIT: how long an unacknowledged goal waits before it is sent
# again. One definition each, shared with the planner's side of the same calls.


def _timeout(value: float, name: str = "timeout") -> float:
    """Return `value` as seconds in [0, MAX_TIMEOUT] (ints welcome).

    Raises:
        ValueError: NaN, infinite, negative or longer than MAX_TIMEOUT.
    """
    seconds = float(value)
    if not 0 <= seconds <= MAX_TIMEOUT:
        raise ValueError(
            f"{name} {value!r} must be a finite number of seconds in [0, {MAX_TIMEOUT:g}]"
        )
    return seconds


def _absolute(path: str | Path) -> str:
    """A goal's output directory resolved here, on the caller's side ("" stays empty: the
    server then says what is missing); the planner refuses relative paths."""
    return str(Path(path).expanduser().resolve()) if str(path) else ""


class Status(enum.Enum):
    """How a request ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the server ran it and reported failure (see message)
    REJECTED = "rejected"  # the server refused the goal before doing anything
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"  # no answer in time; a running goal is cancelled
    UNAVAILABLE = "unavailable"  # the server is not running


@dataclass
class Outcome:
    """Result of a request: status, the server's result message (or None) and a message."""

    status: Status
    result: Any = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status is Status.SUCCEEDED


class Task:
    """A running action goal: poll, read feedback, cancel, wait."""

    def __init__(self, client: DeepAfClient, handle: Any, name: str) -> None:
        self._client, self._handle, self._name = client, handle, name
        self.feedback: Any = None
        self._result_future = handle.get_result_async()

    def done(self) -> bool:
        """True when the goal has finished."""
        self._client._spin(0.0)
        return self._result_future.done()

    def cancel(self, timeout: float = 10.0) -> bool:
        """Request cancellation; True when the server accepted it."""
        future = self._handle.cancel_goal_async()
        if not self._client._wait(future, _timeout(timeout)):
            return False
        return len(future.result().goals_canceling) > 0

    def wait(self, timeout: float) -> Outcome:
        """Wait up to `timeout` seconds; a goal still running then is cancelled.

        The cancel is confirmed and the goal's end awaited (up to CANCEL_WAIT each), so a
        stage move has stopped when TIMED_OUT returns; `result` is then the cancelled goal's
        result (where the stage stopped), or None when it did not arrive.
        """
        timeout = _timeout(timeout)
        if not self._client._wait(self._result_future, timeout):
            confirmed = self.cancel(CANCEL_WAIT)
            ended = confirmed and self._client._wait(self._result_future, CANCEL_WAIT)
            what = (
                "cancelled" if ended else "cancelled, no result yet" if confirmed else "cancel sent"
            )
            return Outcome(
                Status.TIMED_OUT,
                self._result_future.result().result if ended else None,
                f"{self._name}: no result within {timeout:.0f} s ({what})",
            )
        wrapped = self._result_future.result()
        result = wrapped.result
        message = getattr(result, "message", "")
        status = {4: Status.SUCCEEDED, 5: Status.CANCELED, 6: Status.FAILED}.get(
            wrapped.status, Status.FAILED
        )
        return Outcome(status, result, message)


class DeepAfClient:
    """Client of one microscope's DeepAf graph.

    Args:
        namespace: the graph's namespace (launch argument `namespace`).
        node: an existing node to attach to (default: a private one).
        server_timeout: seconds to wait for a server to appear.
    """

    def __init__(
        self, namespace: str = "microscope", node: Node | None = None, server_timeout: float = 10.0
    ) -> None:
        self._own_node = node is None
        self.node = node or rclpy.create_node("deepaf_client")
        ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
        self.namespace = ns  # "/microscope" ("" for the root namespace)
        self._server_timeout = server_timeout
        self._executor = SingleThreadedExecutor(context=self.node.context)
        self._executor.add_node(self.node)
        self._lock = threading.Lock()
        self._actions = {
            "move": ActionClient(self.node, MoveStage, f"{ns}/stage/move"),
            "predict": ActionClient(self.node, PredictFocus, f"{ns}/focus/predict"),
            "stack": ActionClient(self.node, AcquireFocalStack, f"{ns}/acquire_focal_stack"),
            "scan": ActionClient(self.node, ScanSlide, f"{ns}/scan_slide"),
        }
        self._capture = self.node.create_client(CaptureImage, f"{ns}/camera/capture")

    # -- plumbing (one place) ------------------------------------------------------------
    def spin(self, seconds: float) -> None:
        """Process incoming messages (feedback, results) for up to `seconds`."""
        self._spin(seconds)

    def _spin(self, seconds: float) -> None:
        with self._lock:
            self._executor.spin_once(timeout_sec=seconds)

    def _wait(self, future: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not future.done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._spin(min(left, 0.05))
        return True

    def _start(self, key: str, goal: Any, timeout: float) -> Task | Outcome:
        timeout = _timeout(timeout)
        client = self._actions[key]
        deadline = time.monotonic() + min(timeout, self._server_timeout)
        while not client.server_is_ready():
            if time.monotonic() > deadline:
                return Outcome(
                    Status.UNAVAILABLE, None, f"{client._action_name}: server not running"
                )
            self._spin(0.05)
        task: list[Task] = []

        def send() -> Any:
            return client.send_goal_async(
                goal,
                feedback_callback=lambda m: (
                    setattr(task[0], "feedback", m.feedback) if task else None
                ),
            )

        # a goal not acknowledged within ACK_WAIT is sent again (see ACK_WAIT)
        future = resend_until_answered(send, self._wait, timeout)
        if future is None:
            return Outcome(Status.TIMED_OUT, None, f"{client._action_name}: goal not answered")
        handle = future.result()
        if not handle.accepted:
            return Outcome(Status.REJECTED, None, f"{client._action_name}: goal rejected")
        task.append(Task(self, handle, client._action_name))
        return task[0]

    def _run(self, key: str, goal: Any, timeout: float) -> Outcome:
        timeout = _timeout(timeout)
        started = time.monotonic()
        task = self._start(key, goal, timeout)
        if isinstance(task, Outcome):
            return task
        return task.wait(max(0.0, timeout - (time.monotonic() - started)))

    # -- verbs ---------------------------------------------------------------------------
    def run_goal(self, action: str, goal: Any, timeout: float = 60.0) -> Outcome:
        """Send a goal built by the caller, every field as given and unchecked, to `action`
        ("move", "predict", "stack" or "scan") and wait for it as the verbs do (a goal still
        running at `timeout` is cancelled)."""
        if action not in self._actions:
            raise ValueError(f"action {action!r} is not one of {', '.join(self._actions)}")
        return self._run(action, goal, timeout)

    def move_stage(
        self,
        x: float | None = None,
        y: float | None = None,
        z: float | None = None,
        relative: bool = False,
        timeout: float = 60.0,
    ) -> Outcome:
        """Move the stage [m]; axes left None do not move (absolute or relative).

        A goal the stage refuses (outside the soft limits, emergency stop, busy) ends FAILED
        with the stage's reason in `message` and `result.error_code`; nothing moved.
        """

        def axis(v: float | None) -> float:
            return MoveStage.Goal.UNCHANGED if v is None else float(v)

        goal = MoveStage.Goal(x=axis(x), y=axis(y), z=axis(z), relative=relative)
        return self._run("move", goal, timeout)

    def predict_focus(
        self, image: Any = None, focus_z: float = math.nan, timeout: float = 15.0
    ) -> Outcome:
        """Predict the offset to best focus of `image` (sensor_msgs/Image) or the next preview."""
        goal = PredictFocus.Goal(use_latest_preview=image is None, focus_z=float(focus_z))
        if image is not None:
            goal.image = image
        return self._run("predict", goal, timeout)

    def capture(self, timeout: float = 30.0) -> Outcome:
        """Full-resolution capture at the current pose."""
        timeout = _timeout(timeout)
        if not self._capture.wait_for_service(timeout_sec=min(timeout, self._server_timeout)):
            return Outcome(Status.UNAVAILABLE, None, "camera/capture: camera node not running")
        future = self._capture.call_async(CaptureImage.Request(timeout=float(timeout)))
        if not self._wait(future, timeout + 5.0):
            return Outcome(Status.TIMED_OUT, None, "camera/capture: no answer")
        response = future.result()
        status = Status.SUCCEEDED if response.success else Status.FAILED
        return Outcome(status, response, response.message)

    def acquire_focal_stack(
        self,
        output_dir: str,
        z_range: float,
        z_step: float,
        position: tuple[float, float, float] | None = None,
        crop_size: int = 0,
        full_resolution: bool = False,
        protocol: str = "",
        timeout: float = 600.0,
        stack_name: str = "",
    ) -> Outcome:
        """Capture a z stack into the training dataset format (`stack_name`: one plain
        folder name inside `output_dir`; "" = the next free stack_NNNNN)."""
        goal = AcquireFocalStack.Goal(
            use_current_position=position is None,
            z_range=float(z_range),
            z_step=float(z_step),
            crop_size=int(crop_size),
            full_resolution=bool(full_resolution),
            output_dir=_absolute(output_dir),
            protocol=str(protocol),
            stack_name=str(stack_name),
        )
        if position is not None:
            goal.position = _point(*position)
        return self._run("stack", goal, timeout)

    def start_scan(
        self,
        region_min: tuple[float, float],
        region_max: tuple[float, float],
        output_dir: str,
        focus_method: str = "deepaf",
        overlap: float = 0.0,
        step: float = 0.0,
        start_z: float | None = None,
        resume: bool = False,
        keep_empty_fields: bool = False,
        whole_slide: bool = False,
        timeout: float = 30.0,
    ) -> Task | Outcome:
        """Start a scan; returns a :class:`Task` (or an Outcome when it could not start).

        `whole_slide`: sweep the region (the whole stage when region_min == region_max)
        with previews first and scan only the tissue's bounding box.
        """
        goal = ScanSlide.Goal(
            region_min=_point(*region_min),
            region_max=_point(*region_max),
            overlap=float(overlap),
            step=float(step),
            focus_method=focus_method,
            use_start_z=start_z is not None,
            start_z=float(start_z or 0.0),
            output_dir=_absolute(output_dir),
            resume=bool(resume),
            keep_empty_fields=bool(keep_empty_fields),
            whole_slide=bool(whole_slide),
        )
        return self._start("scan", goal, timeout)

    def scan_region(
        self,
        region_min: tuple[float, float],
        region_max: tuple[float, float],
        output_dir: str,
        timeout: float = 3600.0,
        **kwargs: Any,
    ) -> Outcome:
        """Scan a region and wait for the result (see :meth:`start_scan` for options)."""
        started = time.monotonic()
        task = self.start_scan(region_min, region_max, output_dir, **kwargs)
        if isinstance(task, Outcome):
            return task
        return task.wait(max(0.0, timeout - (time.monotonic() - started)))

    def calibrate(self, out: str, stacks: int = 16, **kwargs: Any) -> dict:
        """Teach the focus model this microscope: acquire `stacks` focal stacks at tissue
        fields, fine-tune on half, keep the result only if better on the other half.

        `./deepaf calibrate --live` in a call (:func:`deepaf.calibrate_command.calibrate_live`
        documents the keyword arguments: range_m, step_m, fields, model, config, ...).
        Returns the report (`report["kept"]`: whether `out` was written).

        Raises:
            deepaf_focus.calibrate.CalibrationError: too few usable stacks, bad input.
            RuntimeError: the graph failed.
        """
        from deepaf.calibrate_command import calibrate_live

        return calibrate_live(self, out, stacks, **kwargs)

    def close(self) -> None:
        """Release the clients (and the private node)."""
        for client in self._actions.values():
            client.destroy()
        self._executor.remove_node(self.node)
        if self._own_node:
            self.node.destroy_node()
