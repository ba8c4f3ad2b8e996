"""The focus node: serves `focus/predict` (deepaf_msgs/PredictFocus) with the DeepAf predictor.

Topics (relative, under the node's namespace):
- subscribes `camera/image_raw` (sensor_msgs/Image, sensor-data QoS): the latest preview;
- subscribes `joint_states` (sensor_msgs/JointState): focus_z when a frame arrives;
- publishes `focus/prediction` (deepaf_msgs/FocusPrediction): every prediction made.

A goal is either an image or "use the latest preview"; with the latter the server waits for a
frame newer than the goal (minus `max_image_age`), so a caller that just moved the stage gets a
prediction from a frame taken after the move. Empty glass gives STATUS_NO_TISSUE, an unusable
image or model output STATUS_INVALID: never a silent number.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
import time

import numpy as np
import rclpy
from deepaf_driver.conversions import joint_state_to_pose, msg_to_rgb
from deepaf_driver.node_support import exit_with, run_node
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from deepaf_focus.predictor import FocusPredictor, FocusResult
from deepaf_msgs.action import PredictFocus
from deepaf_msgs.msg import FocusPrediction

_STATUS = {
    "ok": FocusPrediction.STATUS_OK,
    "no_tissue": FocusPrediction.STATUS_NO_TISSUE,
    "invalid": FocusPrediction.STATUS_INVALID,
}


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

        self._lock = threading.Lock()
        self._latest: tuple[Image, float, float] | None = None  # msg, arrival (s), focus_z
        self._focus_z = math.nan
        self._frame_event = threading.Condition(self._lock)

        sensors = MutuallyExclusiveCallbackGroup()
        self.create_subscription(
            Image,
            "camera/image_raw",
            self._on_image,
            qos_profile_sensor_data,
            callback_group=sensors,
        )
        self.create_subscription(
            JointState, "joint_states", self._on_joints, 10, callback_group=sensors
        )
        self._pub = self.create_publisher(FocusPrediction, "focus/prediction", 10)
        self._inference = threading.Lock()  # one inference at a time; goals queue
        self._server = ActionServer(
            self,
            PredictFocus,
            "focus/predict",
            execute_callback=self._execute,
            goal_callback=self._on_goal,
            cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup(),
        )
        self.get_logger().info(f"serving focus/predict with {self._model_id} on {device}")

    def _on_image(self, msg: Image) -> None:
        """Keep the newest preview with its exposure time [s] and the focus_z at arrival.

        The exposure time is the header stamp when it is recent (a live camera stamps at
        exposure start, so a frame exposed before a stage move never counts as newer than
        it); a stamp more than a second old (a replayed bag) counts as its arrival time.
        """
        now = self.get_clock().now().nanoseconds * 1e-9
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if not 0.0 <= now - stamp < 1.0:
            stamp = now
        with self._lock:
            self._latest = (msg, stamp, self._focus_z)
            self._frame_event.notify_all()

    def _on_joints(self, msg: JointState) -> None:
        """Track focus_z."""
        with contextlib.suppress(ValueError):
            self._focus_z = joint_state_to_pose(msg)[2]

    def _on_goal(self, goal: PredictFocus.Goal) -> GoalResponse:
        """Reject goals without an image to work on."""
        if not goal.use_latest_preview and (goal.image.width == 0 or goal.image.height == 0):
            self.get_logger().warn("rejected PredictFocus goal: no image and no use_latest_preview")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _wait_for_frame(self, handle, newer_than: float) -> tuple[Image, float] | None:
        """Wait for a preview exposed after `newer_than` (ROS time, seconds)."""
        deadline = time.monotonic() + self._image_timeout
        with self._lock:
            while self._latest is None or self._latest[1] < newer_than:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or handle.is_cancel_requested or not rclpy.ok():
                    return None
                self._frame_event.wait(min(remaining, 0.1))
            msg, _, focus_z = self._latest
            return msg, focus_z

    def _execute(self, handle) -> PredictFocus.Result:
        """Predict from the goal's image or the next fresh preview."""
        goal: PredictFocus.Goal = handle.request
        result = PredictFocus.Result()
        if goal.use_latest_preview:
            handle.publish_feedback(PredictFocus.Feedback(stage="waiting_for_image"))
            age = goal.max_image_age if goal.max_image_age > 0 else 0.0
            got = self._wait_for_frame(handle, self.get_clock().now().nanoseconds * 1e-9 - age)
            if got is None:
                return self._finish(
                    handle,
                    result,
                    "canceled"
                    if handle.is_cancel_requested
                    else f"no preview on camera/image_raw within {self._image_timeout:.1f} s",
                )
            image, focus_z = got
        else:
            image = goal.image
            focus_z = goal.focus_z if math.isfinite(goal.focus_z) else self._focus_z
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
