"""The focus node: serves `focus/predict` (deepaf_msgs/PredictFocus) with the DeepAf predictor.

Topics (relative, under the node's namespace):
- subscribes `camera/image_raw` (sensor_msgs/Image): the previews, of which the last
  `preview_history` are kept by header stamp. Reliable (`PREVIEW_QOS`) while every publisher
  of the topic is reliable, as the camera node is: a best-effort reader loses large frames,
  among them ones the planner then names by stamp. Best effort as soon as a best-effort
  publisher (another camera driver, a replayed bag) appears, so it matches too; checked
  every second;
- subscribes `camera/pose` (geometry_msgs/PointStamped): the stage pose of each preview at
  exposure (same stamp as the image), so a kept frame knows its focus_z;
- subscribes `joint_states` (sensor_msgs/JointState): focus_z when a frame has no pose;
- publishes `focus/prediction` (deepaf_msgs/FocusPrediction): every prediction made.

A goal is an image, "use the latest preview", or "the preview with this stamp"
(`preview_stamp`: the planner names the preview it already holds instead of sending it back,
2.7 MB per field). With "latest" the server waits for a frame newer than the goal (minus
`max_image_age`), so a caller that just moved the stage gets a prediction from a frame taken
after the move. A stamp the server does not hold fails at once with `frame_unavailable`; one
newer than its newest frame waits up to 1 s for it. Empty glass gives STATUS_NO_TISSUE, an
unusable image or model output STATUS_INVALID: never a silent number.

Goals waiting for a frame hold no executor thread: they are queued when accepted and started
(`execute`) by the image callback once their frame is there, or by a 10 Hz timer when they
time out or are cancelled. So any number of concurrent "latest preview" goals cannot starve
the image subscription. Inference runs one goal at a time; goals queue.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np
import rclpy
from deepaf_driver.conversions import joint_state_to_pose, msg_to_rgb, stamp_ns
from deepaf_driver.node_support import exit_with, run_node
from deepaf_driver.qos import POSE_QOS, PREVIEW_QOS
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from deepaf_focus.predictor import FocusPredictor, FocusResult
from deepaf_msgs.action import PredictFocus
from deepaf_msgs.msg import FocusPrediction

_STATUS = {
    "ok": FocusPrediction.STATUS_OK,
    "no_tissue": FocusPrediction.STATUS_NO_TISSUE,
    "invalid": FocusPrediction.STATUS_INVALID,
}


#: [s] longest wait for a `preview_stamp` frame newer than the newest one held.
STAMP_WAIT = 1.0


@dataclass
class _Kept:
    """A preview held by the server: message, stamp [ns], exposure time [s] for "newer than"
    comparisons, and focus_z from joint_states when it arrived."""

    msg: Image
    stamp_ns: int
    exposure: float
    joint_z: float


@dataclass
class _Waiting:
    """An accepted goal waiting for its frame: the stamp it names (0: the latest), the
    exposure time a latest frame must reach [s], and its deadline (monotonic s)."""

    handle: object
    stamp_ns: int
    newer_than: float
    deadline: float


@dataclass
class _Bound:
    """What a waiting goal starts with: its frame and focus_z, or why there is none."""

    image: Image | None = None
    focus_z: float = math.nan
    error: str = ""
    unavailable: bool = False


def _goal_key(handle) -> bytes:
    return bytes(handle.goal_id.uuid)


#: Why a goal with neither an image nor a preview to use fails.
NO_IMAGE = (
    "no image to predict from: set use_latest_preview: true, a preview_stamp, or an image "
    "(rgb8, bgr8 or mono8)"
)


def _wants_stream(goal: PredictFocus.Goal) -> bool:
    """Whether a goal predicts from a camera/image_raw frame (latest or by stamp)."""
    return goal.use_latest_preview or stamp_ns(goal.preview_stamp) != 0


def prediction_msg(
    result: FocusResult, header, focus_z: float, model_id: str, seconds: float
) -> FocusPrediction:
    """Convert a predictor result to a FocusPrediction message (SI units)."""
    msg = FocusPrediction()
    msg.header = header
    msg.status = _STATUS[result.status]
    msg.message = result.message
    msg.offset = float(result.offset_m) if result.ok else math.nan
    msg.confidence = float(result.confidence)
    msg.expected_error = float(result.expected_error_m) if result.ok else math.nan
    msg.focus_z = float(focus_z)
    msg.target_z = msg.focus_z + msg.offset if result.ok else math.nan
    msg.patch_offsets = [float(v) for v in np.asarray(result.patch_offsets_m, dtype=float)]
    msg.tissue_fraction = float(result.tissue_fraction)
    msg.model = model_id
    msg.inference_time = float(seconds)
    return msg


class FocusServer(Node):
    """Serve single-shot focus predictions."""

    def __init__(self) -> None:
        super().__init__("focus")
        p = self.declare_parameter
        model = p(
            "model",
            "",
            ParameterDescriptor(
                description="checkpoint path; empty = the shipped model for `profile`",
                read_only=True,
            ),
        ).value
        profile = p(
            "profile",
            "4x",
            ParameterDescriptor(
                description="optics profile of the shipped model: 4x | 20x", read_only=True
            ),
        ).value
        device = p(
            "device",
            "cpu",
            ParameterDescriptor(description="torch device: cpu | cuda", read_only=True),
        ).value
        max_patches = p(
            "max_patches",
            8,
            ParameterDescriptor(
                description="tissue patches evaluated per image (latency bound)",
                integer_range=[IntegerRange(from_value=1, to_value=256, step=1)],
            ),
        ).value
        self._image_timeout = p(
            "image_timeout",
            5.0,
            ParameterDescriptor(
                description="[s] how long a use_latest_preview goal waits for a fresh frame"
            ),
        ).value
        self._history = p(
            "preview_history",
            32,
            ParameterDescriptor(
                description="camera/image_raw frames kept for preview_stamp goals (2.8 MB each "
                "at 1280x720; 32 = about 1 s at 30 Hz, so 90 MB)",
                integer_range=[IntegerRange(from_value=1, to_value=300, step=1)],
                read_only=True,
            ),
        ).value
        threads = p(
            "num_threads",
            1,
            ParameterDescriptor(
                description="torch CPU threads (1: the decision on 8 small tiles does not gain "
                "from more, and 2 threads on a busy 2-core machine took 20x longer)",
                read_only=True,
            ),
        ).value

        try:
            self._predictor = FocusPredictor.from_checkpoint(
                model or None,
                profile=profile,
                device=device,
                max_patches=max_patches,
                num_threads=threads,
            )
        except FileNotFoundError as exc:  # a configuration error: exit status 2
            raise ValueError(f"cannot load the focus model: {exc}") from exc
        path = self._predictor.path
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        self._model_id = f"{path.name}@{digest}"
        self._default_patches = max_patches

        self._lock = threading.Lock()  # guards the frames, poses, waiting and bound goals
        self._frames: deque[_Kept] = deque(maxlen=self._history)
        self._poses: OrderedDict[int, float] = OrderedDict()  # stamp [ns] -> focus_z [m]
        self._waiting: list[_Waiting] = []
        self._bound: dict[bytes, _Bound] = {}
        self._focus_z = math.nan

        self._sensors = sensors = MutuallyExclusiveCallbackGroup()
        self._image_sub = None
        self._image_reliable: bool | None = None
        self._match_image_qos()
        self.create_timer(1.0, self._match_image_qos, MutuallyExclusiveCallbackGroup())
        self.create_subscription(
            PointStamped, "camera/pose", self._on_pose, POSE_QOS, callback_group=sensors
        )
        self.create_subscription(
            JointState, "joint_states", self._on_joints, 10, callback_group=sensors
        )
        self.create_timer(0.1, self._expire_waiting, MutuallyExclusiveCallbackGroup())
        self._pub = self.create_publisher(FocusPrediction, "focus/prediction", 10)
        self._inference = threading.Lock()  # one inference at a time; goals queue
        self._server = ActionServer(
            self,
            PredictFocus,
            "focus/predict",
            execute_callback=self._execute,
            goal_callback=self._on_goal,
            handle_accepted_callback=self._on_accepted,
            cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup(),
        )
        self.get_logger().info(f"serving focus/predict with {self._model_id} on {device}")

    def _match_image_qos(self) -> None:
        """Subscribe camera/image_raw reliable unless one of its publishers is best effort."""
        topic = self.resolve_topic_name("camera/image_raw")
        reliable = all(
            info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
            for info in self.get_publishers_info_by_topic(topic)
        )
        if reliable == self._image_reliable:
            return
        if self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
            why = "every publisher is reliable" if reliable else "a publisher is best effort"
            self.get_logger().info(
                f"{topic}: {why}; subscribing {'reliable' if reliable else 'best effort'}"
            )
        self._image_reliable = reliable
        self._image_sub = self.create_subscription(
            Image,
            "camera/image_raw",
            self._on_image,
            PREVIEW_QOS if reliable else qos_profile_sensor_data,
            callback_group=self._sensors,
        )

    def _on_image(self, msg: Image) -> None:
        """Keep the preview with its exposure time [s] and focus_z; start the goals it serves.

        The exposure time is the header stamp when it is recent (a live camera stamps at
        exposure start, so a frame exposed before a stage move never counts as newer than
        it); a stamp more than a second old (a replayed bag) counts as its arrival time.
        """
        now = self.get_clock().now().nanoseconds * 1e-9
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if not 0.0 <= now - stamp < 1.0:
            stamp = now
        with self._lock:
            self._frames.append(_Kept(msg, stamp_ns(msg.header.stamp), stamp, self._focus_z))
            ready = self._resolve_waiting()
        self._start(ready)

    def _on_pose(self, msg: PointStamped) -> None:
        """Remember the pose each preview was exposed at, by its stamp."""
        with self._lock:
            self._poses[stamp_ns(msg.header.stamp)] = float(msg.point.z)
            while len(self._poses) > 4 * self._history:
                self._poses.popitem(last=False)

    def _on_joints(self, msg: JointState) -> None:
        """Track focus_z."""
        with contextlib.suppress(ValueError):
            self._focus_z = joint_state_to_pose(msg)[2]

    def _on_goal(self, _goal: PredictFocus.Goal) -> GoalResponse:
        """Accept every goal: a bad one is aborted with the reason in its result's message
        (a rejection could not say why; `ros2 action send_goal` prints the result)."""
        return GoalResponse.ACCEPT

    def _on_accepted(self, handle) -> None:
        """Start image goals at once; queue stream goals until their frame is there."""
        goal: PredictFocus.Goal = handle.request
        if not _wants_stream(goal):
            handle.execute()
            return
        handle.publish_feedback(PredictFocus.Feedback(stage="waiting_for_image"))
        wanted = stamp_ns(goal.preview_stamp)
        now = self.get_clock().now().nanoseconds * 1e-9
        age = goal.max_image_age if math.isfinite(goal.max_image_age) else 0.0
        wait = min(STAMP_WAIT, self._image_timeout) if wanted else self._image_timeout
        waiting = _Waiting(handle, wanted, now - max(age, 0.0), time.monotonic() + wait)
        with self._lock:
            self._waiting.append(waiting)
            ready = self._resolve_waiting()
        self._start(ready)

    def _expire_waiting(self) -> None:
        """Start waiting goals that timed out or were cancelled (they fail with the reason)."""
        with self._lock:
            ready = self._resolve_waiting() if self._waiting else []
        self._start(ready)

    def _resolve_waiting(self) -> list:
        """Bind every waiting goal that can start now; return their handles (lock held)."""
        ready, still = [], []
        now = time.monotonic()
        for w in self._waiting:
            bound = self._match(w, now)
            if bound is None:
                still.append(w)
            else:
                self._bound[_goal_key(w.handle)] = bound
                ready.append(w.handle)
        self._waiting = still
        return ready

    def _match(self, w: _Waiting, now: float) -> _Bound | None:
        """The frame a waiting goal gets, the reason it gets none, or None to keep waiting."""
        if w.handle.is_cancel_requested or not rclpy.ok():
            return _Bound(error="canceled")
        if w.stamp_ns:
            for kept in self._frames:
                if kept.stamp_ns == w.stamp_ns:
                    return self._bind(kept)
            newest = self._frames[-1].stamp_ns if self._frames else 0
            if newest > w.stamp_ns or now >= w.deadline:
                return _Bound(error=self._unavailable(w.stamp_ns), unavailable=True)
            return None
        if self._frames and self._frames[-1].exposure >= w.newer_than:
            return self._bind(self._frames[-1])
        if now >= w.deadline:
            return _Bound(
                error=f"no preview on camera/image_raw within {self._image_timeout:.1f} s"
            )
        return None

    def _bind(self, kept: _Kept) -> _Bound:
        """A held frame with its focus_z: its camera/pose z, else joint_states at arrival."""
        return _Bound(kept.msg, self._poses.get(kept.stamp_ns, kept.joint_z))

    def _unavailable(self, wanted: int) -> str:
        """Why the frame stamped `wanted` [ns] is not held (lock held)."""
        what = f"preview stamped {wanted // 1_000_000_000}.{wanted % 1_000_000_000:09d}"
        if not self._frames:
            return f"{what} is not held: no frame received on camera/image_raw; send the image"
        lo, hi = self._frames[0].stamp_ns, self._frames[-1].stamp_ns
        if wanted < lo and len(self._frames) < (self._frames.maxlen or 0):
            why = (
                "this server did not receive it (it came before the server subscribed, "
                "or was dropped)"
            )
        elif wanted < lo:
            why = (
                f"it is older than the {len(self._frames)} frames kept (preview_history), "
                f"{(hi - wanted) * 1e-9:.2f} s before the newest"
            )
        elif wanted > hi:
            why = f"it did not arrive within {STAMP_WAIT:.1f} s"
        else:
            why = "this server did not receive it (dropped on camera/image_raw)"
        return f"{what} is not held: {why}; send the image instead"

    def _start(self, handles: list) -> None:
        """Execute goals whose frame (or failure) is bound."""
        for handle in handles:
            handle.execute()

    def _execute(self, handle) -> PredictFocus.Result:
        """Predict from the goal's image or the next fresh preview."""
        goal: PredictFocus.Goal = handle.request
        result = PredictFocus.Result()
        with self._lock:
            bound = self._bound.pop(_goal_key(handle), None)
        if _wants_stream(goal):
            if bound is None:  # not started through _on_accepted
                bound = _Bound(error="internal error: the goal started without its frame")
            if bound.error or handle.is_cancel_requested:
                result.frame_unavailable = bound.unavailable
                return self._finish(handle, result, bound.error or "canceled")
            image, focus_z = bound.image, bound.focus_z
        else:
            image = goal.image
            focus_z = goal.focus_z if math.isfinite(goal.focus_z) else self._focus_z
            if image.width == 0 or image.height == 0:
                return self._finish(handle, result, NO_IMAGE)
        try:
            rgb = msg_to_rgb(image)
        except ValueError as exc:
            return self._finish(handle, result, f"bad image: {exc}", invalid=True, header=image)
        handle.publish_feedback(PredictFocus.Feedback(stage="inference"))
        with self._inference:
            if handle.is_cancel_requested:
                return self._finish(handle, result, "canceled")
            t0 = time.monotonic()
            try:
                if goal.max_patches:
                    self._predictor.max_patches = int(goal.max_patches)
                out = self._predictor.predict(rgb)
            except ValueError as exc:
                return self._finish(handle, result, f"bad image: {exc}", invalid=True, header=image)
            finally:
                self._predictor.max_patches = self._default_patches
            seconds = time.monotonic() - t0
        result.prediction = prediction_msg(out, image.header, focus_z, self._model_id, seconds)
        self._pub.publish(result.prediction)
        result.success = out.status != "invalid"
        result.message = out.message
        if result.success:
            handle.succeed()
        else:
            handle.abort()
        return result

    def _finish(
        self,
        handle,
        result: PredictFocus.Result,
        message: str,
        invalid: bool = False,
        header: Image | None = None,
    ) -> PredictFocus.Result:
        """End a goal that produced no prediction, with the reason."""
        result.success = False
        result.message = message
        result.prediction.status = FocusPrediction.STATUS_INVALID
        result.prediction.message = message
        result.prediction.offset = math.nan
        result.prediction.target_z = math.nan
        result.prediction.focus_z = math.nan
        result.prediction.model = self._model_id
        if header is not None:
            result.prediction.header = header.header
        if invalid:
            self._pub.publish(result.prediction)
        if handle.is_cancel_requested:
            handle.canceled()
        else:
            handle.abort()
        self.get_logger().warn(f"PredictFocus failed: {message}")
        return result

    def destroy_node(self) -> None:
        """Release the action server before the node."""
        self._server.destroy()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Run the focus node until interrupted (exit status 2 on bad configuration)."""
    exit_with(run_node(FocusServer, args, "focus", threads=4))


if __name__ == "__main__":
    main()
