"""The microscope as the planner sees it over ROS: stage/move, camera preview and capture,
focus/predict. Implements :class:`deepaf_planner.scanner.Microscope` for the scan engine.

Every call is blocking with a bounded wait and raises :class:`HardwareError` with the reason
(which server did not answer, which goal was rejected); it must be called from an executor
thread other than the ones serving its clients (the planner node uses a MultiThreadedExecutor
and reentrant callback groups). An action goal never outlives its wait (`_goal_result`): a
result that does not come in time is cancelled on the server, and the stage has stopped when
the HardwareError is raised; a server that goes away mid-goal fails the wait at once.

Pose-tagged frames: the camera publishes, for every preview, the stage pose it was exposed at
on camera/pose (same stamp as the image), and returns it with every capture
(`stage_position`). A preview or capture is used only when that pose matches the commanded
one (the pose the last MoveStage result reported) within `pose_tolerance` (x/y, z) [m];
otherwise the next frame is awaited (bounded by the preview timeout) and then the call fails
with both poses, so a frame rendered at the old pose, or a stage moved by another client while
a scan waits, never becomes a tile.

Predictions of a preview name it by its stamp (PredictFocus `preview_stamp`): the focus server
holds the frame already, so the 2.7 MB image does not travel back. When the server no longer
holds it (`frame_unavailable`), the image is sent after all.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import numpy as np
from deepaf_driver.conversions import (
    image_to_msg,
    joint_state_to_pose,
    msg_to_rgb,
    point_to_pose,
    stamp_ns,
)
from deepaf_driver.qos import POSE_QOS
from geometry_msgs.msg import PointStamped
from rclpy.action import ActionClient
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from deepaf_msgs.action import MoveStage, PredictFocus
from deepaf_msgs.msg import FocusPrediction
from deepaf_msgs.srv import CaptureImage
from deepaf_planner.scanner import FocusDecision, Frame, HardwareError, Limits, Moved

_STATUS = {
    FocusPrediction.STATUS_OK: "ok",
    FocusPrediction.STATUS_NO_TISSUE: "no_tissue",
    FocusPrediction.STATUS_INVALID: "invalid",
}


#: Default pose tolerance (x/y, z) [m] when the planner gives none.
DEFAULT_POSE_TOLERANCE = (0.1e-6, 0.1e-6)


def _mm(pose: tuple[float, float, float]) -> str:
    return "(" + ", ".join(f"{v * 1e3:.4f}" for v in pose) + ") mm"


def _wait(future: Any, timeout: float, what: str) -> Any:
    """Block until an rclpy future completes (executor threads complete it)."""
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    if not done.wait(timeout):
        future.cancel()
        raise HardwareError(f"{what}: no answer within {timeout:.1f} s")
    exc = future.exception()
    if exc is not None:
        raise HardwareError(f"{what}: {exc}")
    return future.result()


#: [s] how long a caller that gives up waits for its cancel to be confirmed, and then for the
#: goal's final result (the stage has stopped when it comes).
CANCEL_WAIT = 3.0
#: [s] an action server absent this long while its goal runs has gone (stopped or crashed).
SERVER_GONE = 1.0
#: [s] servers acknowledge a goal, and answer a parameter request, at once; no answer this
#: long and the request is sent again. A restarted node reappears in the ROS graph before DDS
#: has matched its endpoints with ours (the dead node's linger until their lease expires),
#: and a request sent in between is lost, not delayed. A late acknowledgement of an earlier
#: send is cancelled.
ACK_WAIT = 5.0


def resend_until_answered(
    send: Callable[[], Any], wait: Callable[[Any, float], bool], timeout: float
) -> Any | None:
    """Call `send()` (returns an rclpy future) again every ACK_WAIT until one is answered and
    return that future; None after `timeout` s without an answer (see ACK_WAIT).

    `wait(future, seconds)` waits for one future and says whether it is done: on an
    executor's thread (:func:`wait_threaded`) or by spinning the caller's own executor (the
    Python client). A goal accepted after its send was given up is cancelled then.
    """
    deadline = time.monotonic() + timeout
    while True:
        future = send()
        if wait(future, max(0.0, min(ACK_WAIT, deadline - time.monotonic()))):
            return future
        future.add_done_callback(cancel_late)
        if time.monotonic() >= deadline:
            return None


def wait_threaded(future: Any, seconds: float) -> bool:
    """Wait up to `seconds` for a future that another thread's executor completes."""
    answered = threading.Event()
    future.add_done_callback(lambda _: answered.set())
    return answered.wait(seconds)


def _answered(send: Callable[[], Any], timeout: float, what: str) -> Any:
    """:func:`resend_until_answered` on an executor's thread; HardwareError on no answer."""
    future = resend_until_answered(send, wait_threaded, timeout)
    if future is None:
        raise HardwareError(f"{what}: no answer within {timeout:.1f} s")
    return future


def cancel_late(send_future: Any) -> None:
    """Cancel a goal the server accepted after its caller stopped waiting for the answer."""
    with contextlib.suppress(Exception):
        handle = send_future.result()
        if handle is not None and handle.accepted:
            handle.cancel_goal_async()


def _cancel_goal(handle: Any, finished: threading.Event, result_future: Any) -> str:
    """Cancel a running goal and wait briefly for its end; return what happened, for messages."""
    cancel = handle.cancel_goal_async()
    answered = threading.Event()
    cancel.add_done_callback(lambda _: answered.set())
    if not answered.wait(CANCEL_WAIT):
        return f"cancel sent, not confirmed within {CANCEL_WAIT:.0f} s"
    if not finished.wait(CANCEL_WAIT):
        return f"goal cancelled; its result did not arrive within {CANCEL_WAIT:.0f} s"
    position = getattr(result_future.result().result, "position", None)
    if position is None:
        return "goal cancelled"
    return f"goal cancelled; stopped at {_mm((position.x, position.y, position.z))}"


def _goal_result(client: ActionClient, goal: Any, timeout: float, what: str) -> Any:
    """Send an action goal and return its wrapped result; the goal never outlives the wait.

    Acceptance and result are each bounded by `timeout`. A result that does not come in time
    is cancelled on the server (cancel_goal_async) and its end awaited up to CANCEL_WAIT, so
    the stage has stopped when this raises; a goal accepted after its send timed out is
    cancelled when the acceptance arrives; a server that vanishes while its goal runs fails
    the wait after SERVER_GONE instead of at the timeout. A goal not acknowledged within
    ACK_WAIT is sent again (a restarted server may have missed it).

    Raises:
        HardwareError: no answer, rejected, timed out (cancelled), or the server went away.
    """
    send = _answered(lambda: client.send_goal_async(goal), timeout, f"{what} goal")
    if send.exception() is not None:
        raise HardwareError(f"{what} goal: {send.exception()}")
    handle = send.result()
    if not handle.accepted:
        raise HardwareError(f"{what} rejected the goal")
    result = handle.get_result_async()
    finished = threading.Event()
    result.add_done_callback(lambda _: finished.set())
    deadline = time.monotonic() + timeout
    gone_since = None
    while not finished.wait(max(0.0, min(0.25, deadline - time.monotonic()))):
        now = time.monotonic()
        if now >= deadline:
            raise HardwareError(
                f"{what}: no result within {timeout:.1f} s; "
                + _cancel_goal(handle, finished, result)
            )
        if client.server_is_ready():
            gone_since = None
        elif gone_since is None:
            gone_since = now
        elif now - gone_since >= SERVER_GONE:
            raise HardwareError(f"{what}: the server went away while the goal ran")
    if result.exception() is not None:
        raise HardwareError(f"{what} result: {result.exception()}")
    return result.result()


class RosMicroscope:
    """Stage, camera and focus server reached through their ROS interfaces.

    Args:
        node: the planner node (its namespace resolves the relative names).
        timeouts: seconds for server discovery, moves, captures and predictions.
        preview_time: [s] simulated/real time one preview exposure costs.
    """

    def __init__(self, node: Node, timeouts: dict[str, float], preview_time: float) -> None:
        self._node = node
        self._t = timeouts
        self.preview_time = preview_time
        group = ReentrantCallbackGroup()
        self._move = ActionClient(node, MoveStage, "stage/move", callback_group=group)
        self._predict = ActionClient(node, PredictFocus, "focus/predict", callback_group=group)
        self._capture = node.create_client(CaptureImage, "camera/capture", callback_group=group)
        self._lock = threading.Condition()
        self._frames: deque[Image] = deque(maxlen=8)  # newest previews
        self._frame_poses: OrderedDict[int, tuple[float, float, float]] = OrderedDict()
        self._pose: tuple[float, float, float] | None = None
        self._commanded: tuple[float, float, float] | None = None  # the last move's result
        #: [m] (x/y, z): how far a frame's pose may be from the commanded one
        self.pose_tolerance = DEFAULT_POSE_TOLERANCE
        #: refer to previews by stamp in predictions (False: send the image, as before)
        self.predict_by_stamp = True
        #: PredictFocus goals sent / of them with the image, and the image bytes sent
        self.predict_stats = {"goals": 0, "with_image": 0, "image_bytes": 0, "by_stamp_miss": 0}
        self._full_pub = node.create_publisher(
            Image, "camera/image_full", QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        )
        node.create_subscription(
            Image, "camera/image_raw", self._on_frame, qos_profile_sensor_data, callback_group=group
        )
        node.create_subscription(
            PointStamped, "camera/pose", self._on_frame_pose, POSE_QOS, callback_group=group
        )
        node.create_subscription(
            JointState, "joint_states", self._on_joints, 10, callback_group=group
        )
        self.publish_full = False
        self.pose_latency = 0.15  # [s] joint_states period (20 Hz) plus delivery
        self._moved_at = 0.0
        self._param_clients: dict[str, Any] = {}

    # -- subscriptions -------------------------------------------------------------------
    def _on_frame(self, msg: Image) -> None:
        """Keep the newest previews."""
        with self._lock:
            self._frames.append(msg)
            self._lock.notify_all()

    def _on_frame_pose(self, msg: PointStamped) -> None:
        """Keep the stage pose of each preview at exposure, by the preview's stamp."""
        with self._lock:
            self._frame_poses[stamp_ns(msg.header.stamp)] = point_to_pose(msg.point)
            while len(self._frame_poses) > 64:
                self._frame_poses.popitem(last=False)
            self._lock.notify_all()

    def _on_joints(self, msg: JointState) -> None:
        """Keep the newest stage pose."""
        with contextlib.suppress(ValueError):
            self._pose = joint_state_to_pose(msg)

    # -- Microscope protocol -------------------------------------------------------------
    def check_servers(self, need_focus: bool) -> None:
        """Raise HardwareError naming every server that does not answer."""
        wait = self._t["discovery"]
        missing = []
        if not self._move.wait_for_server(timeout_sec=wait):
            missing.append("stage/move (stage node)")
        if not self._capture.wait_for_service(timeout_sec=wait):
            missing.append("camera/capture (camera node)")
        if need_focus and not self._predict.wait_for_server(timeout_sec=wait):
            missing.append("focus/predict (focus server)")
        if missing:
            raise HardwareError("not available: " + ", ".join(missing))

    def _parameters(self, node_name: str, names: list[str]) -> list[Any]:
        """Read parameters of a sibling node (same namespace) through its parameter service."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        key = f"{node_name}/get_parameters"
        client = self._param_clients.get(key)
        if client is None:
            client = self._node.create_client(
                GetParameters, key, callback_group=ReentrantCallbackGroup()
            )
            self._param_clients[key] = client
        if not client.wait_for_service(timeout_sec=self._t["discovery"]):
            raise HardwareError(f"{node_name}: node not running (no {key} service)")
        request = GetParameters.Request(names=names)
        answered = _answered(lambda: client.call_async(request), self._t["discovery"], key)
        if answered.exception() is not None:
            raise HardwareError(f"{key}: {answered.exception()}")
        response = answered.result()
        values = [parameter_value_to_python(v) for v in response.values]
        if len(values) != len(names) or any(v is None for v in values):
            raise HardwareError(f"{node_name} does not declare all of {names}")
        return values

    def limits(self) -> Limits:
        """Soft limits as the stage node declares them (one definition: the stage's)."""
        v = self._parameters("stage", ["x_min", "x_max", "y_min", "y_max", "z_min", "z_max"])
        return Limits((v[0], v[1]), (v[2], v[3]), (v[4], v[5]))

    def capture_size(self) -> tuple[int, int]:
        """(width, height) of full-resolution captures, from the camera node."""
        w, h = self._parameters("camera", ["capture_width", "capture_height"])
        return int(w), int(h)

    def position(self) -> tuple[float, float, float]:
        """The stage pose from joint_states (waits for the first message)."""
        deadline = time.monotonic() + self._t["discovery"]
        while self._pose is None:
            if time.monotonic() > deadline:
                raise HardwareError("no joint_states from the stage node")
            time.sleep(0.02)
        return self._pose

    def move_to(
        self, x: float | None = None, y: float | None = None, z: float | None = None
    ) -> Moved:
        """Move the given axes (absolute, metres) and wait for the stage to arrive."""
        goal = MoveStage.Goal(
            x=math.nan if x is None else float(x),
            y=math.nan if y is None else float(y),
            z=math.nan if z is None else float(z),
            relative=False,
            speed_scale=0.0,
        )
        if not self._move.server_is_ready() and not self._move.wait_for_server(
            timeout_sec=self._t["discovery"]
        ):
            raise HardwareError("stage/move: the stage node is not running")
        result = _goal_result(self._move, goal, self._t["move"], "stage/move").result
        if result.error_code != MoveStage.Result.CODE_SUCCEEDED:
            raise HardwareError(f"stage/move failed: {result.message}")
        p = result.position
        self._pose = (p.x, p.y, p.z)
        self._commanded = self._pose  # frames must show this pose
        self._moved_at = time.monotonic()
        return Moved((p.x, p.y, p.z), float(result.duration))

    def _at_commanded(self, pose: tuple[float, float, float]) -> bool:
        """Whether a frame's pose is the commanded one within `pose_tolerance`."""
        if self._commanded is None:  # nothing commanded yet: any pose will do
            return True
        xy, z = self.pose_tolerance
        c = self._commanded
        return abs(pose[0] - c[0]) <= xy and abs(pose[1] - c[1]) <= xy and abs(pose[2] - c[2]) <= z

    def _pose_error(self, what: str, pose: tuple[float, float, float]) -> str:
        """The message for a frame exposed away from the commanded pose."""
        xy, z = self.pose_tolerance
        return (
            f"{what} shows the stage at {_mm(pose)}, not at the commanded {_mm(self._commanded)} "
            f"(tolerance {xy * 1e6:.3g} um in x/y, {z * 1e6:.3g} um in z): another client moved "
            "the stage, or it did not stay where it reported; frame not used"
        )

    def preview(self) -> Frame:
        """Return the first preview exposed after this call at the commanded pose.

        A frame counts when its header stamp (exposure start) is not before the call and its
        camera/pose (the pose it was exposed at) matches the pose the last move reached,
        within `pose_tolerance`. Frames at another pose are skipped until the preview timeout;
        then HardwareError says where the frames were.
        """
        not_before = self._node.get_clock().now().nanoseconds
        deadline = time.monotonic() + self._t["preview"]
        fresh: set[int] = set()  # stamps of frames exposed after the call ...
        untagged: set[int] = set()  # ... of them without a camera/pose (so far)
        elsewhere = None  # the newest pose seen that is not the commanded one
        with self._lock:
            while True:
                msg, newest_elsewhere = None, None
                for frame in reversed(self._frames):
                    stamp = stamp_ns(frame.header.stamp)
                    if stamp < not_before:
                        break
                    fresh.add(stamp)
                    pose = self._frame_poses.get(stamp)
                    if pose is None:
                        untagged.add(stamp)
                    elif self._at_commanded(pose):
                        msg = frame
                        break
                    else:
                        untagged.discard(stamp)
                        newest_elsewhere = newest_elsewhere or pose
                if msg is not None:
                    break
                elsewhere = newest_elsewhere or elsewhere
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HardwareError(self._no_preview(fresh, untagged, elsewhere))
                self._check_running()
                self._lock.wait(min(left, 0.1))
        return Frame(msg_to_rgb(msg), self.preview_time, msg)

    def _check_running(self) -> None:
        """Raise once the node's context is shut down (Ctrl-C): no preview will come."""
        if not self._node.context.ok():
            raise HardwareError("the planner is shutting down (ROS context shut down)")

    def _no_preview(self, fresh: set[int], untagged: set[int], elsewhere) -> str:
        """Why preview() found no usable frame within the preview timeout."""
        wait = f"{self._t['preview']:.1f} s"
        if not fresh:
            return f"camera/image_raw: no fresh preview within {wait}"
        head = f"camera/image_raw: no preview at the commanded pose within {wait}"
        if elsewhere is not None:
            return f"{head}: {self._pose_error('the newest preview', elsewhere)}"
        if untagged == fresh:
            return (
                f"{head}: {len(fresh)} fresh previews but no stage pose for them on camera/pose "
                "(a camera node that does not tag its frames with the pose)"
            )
        return head

    def _camera_heard(self, deadline: float) -> bool:
        """Wait until the camera tags a preview with the commanded pose (or `deadline`)."""
        with self._lock:
            while not any(self._at_commanded(p) for p in list(self._frame_poses.values())[-4:]):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._check_running()
                self._lock.wait(min(left, 0.1))
        return True

    def capture(self) -> Frame:
        """Full-resolution still through camera/capture (reliable), at the commanded pose.

        The capture's `stage_position` must match the pose the last move reached within
        `pose_tolerance`. A capture exposed elsewhere (the camera had not heard the new
        joint_states yet) is retaken once the camera's previews show the commanded pose;
        still elsewhere after the preview timeout, HardwareError says where it was.
        """
        request = CaptureImage.Request(timeout=float(self._t["capture"]))
        settle = self._moved_at + self.pose_latency - time.monotonic()
        if settle > 0:  # let the camera hear the pose the stage reached
            time.sleep(settle)
        if not self._capture.service_is_ready() and not self._capture.wait_for_service(
            timeout_sec=self._t["discovery"]
        ):
            raise HardwareError("camera/capture: the camera node is not running")
        deadline = time.monotonic() + self._t["preview"]
        for attempt in range(2):
            response = _wait(
                self._capture.call_async(request), self._t["capture"] + 5.0, "camera/capture"
            )
            if not response.success:
                raise HardwareError(f"camera/capture failed: {response.message}")
            pose = point_to_pose(response.stage_position)
            if self._at_commanded(pose):
                break
            if attempt or not self._camera_heard(deadline):
                raise HardwareError("camera/capture: " + self._pose_error("the capture", pose))
        if self.publish_full:
            self._full_pub.publish(response.image)
        return Frame(msg_to_rgb(response.image), float(response.exposure_time), response.image)

    def can_predict(self, timeout: float = 2.0) -> bool:
        """Whether the focus server answers (waits at most `timeout` s for it)."""
        return self._predict.server_is_ready() or self._predict.wait_for_server(
            timeout_sec=min(timeout, self._t["discovery"])
        )

    def camera_backend(self) -> str:
        """The camera node's `backend` parameter ("sim" for the virtual microscope)."""
        (backend,) = self._parameters("camera", ["backend"])
        return str(backend)

    def predict_focus(self, frame: Frame, focus_z: float) -> FocusDecision:
        """Ask the focus server for the offset of this frame.

        A preview from camera/image_raw is named by its stamp (the server holds it); any other
        frame, or a preview the server no longer holds, travels in the goal.
        """
        if not self._predict.server_is_ready() and not self._predict.wait_for_server(
            timeout_sec=self._t["discovery"]
        ):
            raise HardwareError("focus/predict: the focus server is not running")
        start = time.monotonic()
        wrapped = None
        if self.predict_by_stamp and self._is_preview(frame):
            goal = PredictFocus.Goal(preview_stamp=frame.msg.header.stamp, focus_z=float(focus_z))
            wrapped = self._send_predict(goal)
            if wrapped.result.frame_unavailable:
                self.predict_stats["by_stamp_miss"] += 1
                self._node.get_logger().warning(
                    f"focus/predict: {wrapped.result.message}; sending the image",
                    throttle_duration_sec=10.0,
                )
                wrapped = None
        if wrapped is None:
            image = (
                frame.msg
                if frame.msg is not None
                else image_to_msg(
                    np.ascontiguousarray(frame.rgb),
                    self._node.get_clock().now().to_msg(),
                    "camera",
                )
            )
            self.predict_stats["with_image"] += 1
            self.predict_stats["image_bytes"] += len(image.data)
            goal = PredictFocus.Goal(use_latest_preview=False, image=image, focus_z=float(focus_z))
            wrapped = self._send_predict(goal)
        pred = wrapped.result.prediction
        return FocusDecision(
            status=_STATUS.get(pred.status, "invalid"),
            offset_m=float(pred.offset) if pred.status == FocusPrediction.STATUS_OK else 0.0,
            confidence=float(pred.confidence),
            seconds=time.monotonic() - start,
            message=wrapped.result.message or pred.message,
            expected_error_m=float(pred.expected_error),
        )

    def _is_preview(self, frame: Frame) -> bool:
        """Whether `frame` is a camera/image_raw preview this object received."""
        if frame.msg is None or stamp_ns(frame.msg.header.stamp) == 0:
            return False
        with self._lock:
            return any(m is frame.msg for m in self._frames) or (
                stamp_ns(frame.msg.header.stamp) in self._frame_poses
            )

    def _send_predict(self, goal: PredictFocus.Goal) -> Any:
        """Send one PredictFocus goal and wait for its wrapped result."""
        self.predict_stats["goals"] += 1
        return _goal_result(self._predict, goal, self._t["predict"], "focus/predict")

    def destroy(self) -> None:
        """Release the clients."""
        self._move.destroy()
        self._predict.destroy()
