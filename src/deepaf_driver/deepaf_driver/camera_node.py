"""Camera node `camera`: preview stream, full-resolution capture service, diagnostics.

Topics (relative, so a namespace per microscope works):
    camera/image_raw (sensor_msgs/Image) and camera/camera_info (CameraInfo), both reliable
    keep-last 5 (`deepaf_driver.qos.PREVIEW_QOS`: best effort loses large frames),
    camera/pose (geometry_msgs/PointStamped, `POSE_QOS`): the stage pose every preview was
    exposed at [m] (x = stage_x, y = stage_y, z = focus_z; frame_id "stage"), with the same
    header stamp as its image, published just before it; NaN until joint_states arrive,
    joint_states (subscribed: the pose the sim renders at, and stage_position of captures),
    /diagnostics.
Services: camera/capture (deepaf_msgs/CaptureImage); its `stage_position` is the pose at
exposure, as for previews.

The pose of a frame is the latest joint_states when its exposure starts (the sim renders at
exactly that pose). A frame exposed while the stage moves is tagged with a pose the stage is
passing through; consumers compare the tag with the pose they commanded and wait for a frame
that matches (the planner's `pose_tolerance_*` parameters).

Backend calls for a capture run in a worker thread bounded by the request's timeout, so a
camera that stops answering fails that request with a clear message and the node keeps
serving. One capture at a time; a second concurrent request is refused. A request's timeout
must be at most MAX_CAPTURE_TIMEOUT seconds (0 or negative: the capture_timeout parameter);
NaN, inf or a longer one is answered with success=false and the reason.
"""

from __future__ import annotations

import math
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PointStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState

from deepaf_driver.backends import camera_class
from deepaf_driver.backends.base import CameraBackend, Pose
from deepaf_driver.backends.sim import SCAN_SLIDE
from deepaf_driver.conversions import (
    NAN_POSE,
    OPTICAL_FRAME,
    camera_info,
    image_to_msg,
    joint_state_to_pose,
    point,
    pose_stamped,
)
from deepaf_driver.node_support import Param, declare_all, diagnostic_array, exit_with, run_node
from deepaf_driver.qos import POSE_QOS, PREVIEW_QOS
from deepaf_msgs.srv import CaptureImage

#: Longest capture timeout a request may ask for [s] (also the capture_timeout parameter's top).
MAX_CAPTURE_TIMEOUT = 600.0

PARAMETERS = (
    Param("backend", "sim", "camera backend: sim | opencv | picamera2 | package.module:Class"),
    Param("frame_id", OPTICAL_FRAME, "optical frame of images and camera_info"),
    Param("preview_width", 1280, "preview width [px]", (16, 8192)),
    Param("preview_height", 720, "preview height [px]", (16, 8192)),
    Param("preview_rate", 30.0, "preview frame rate [Hz]", (0.1, 120.0)),
    Param("capture_width", 4056, "capture width [px]", (16, 16384)),
    Param("capture_height", 3040, "capture height [px]", (16, 16384)),
    Param(
        "capture_timeout",
        10.0,
        "capture timeout when a request gives 0 [s]",
        (0.1, MAX_CAPTURE_TIMEOUT),
    ),
    Param("focal_length_px", 0.0, "fx = fy in camera_info [px]; 0 = uncalibrated", (0.0, 1e6)),
    Param("profile", "4x", "sim: optics profile (4x | 20x)"),
    Param("sim_protocol", "lab_a_standard", "sim: staining protocol preset"),
    Param("sim_slide_seed", 0, "sim: which virtual slide", (0, 2**31 - 1)),
    Param("sim_slide", SCAN_SLIDE, "sim: the virtual slide's artefacts (realistic | plain)"),
    Param("noise", True, "sim: shot and read noise (false: exactly reproducible frames)"),
    Param("sim_fault", "", "sim: injected fault for tests ('' | hang_capture | hang_preview)"),
    Param("device", "0", "opencv: V4L2 index or device path"),
)


class CameraNode(Node):
    """Publish previews, serve captures, track the stage pose; the backend does the I/O."""

    def __init__(self) -> None:
        super().__init__("camera")
        p = declare_all(self, PARAMETERS)
        self._backend_name = p["backend"]
        self._frame_id = p["frame_id"]
        self._rate = p["preview_rate"]
        self._default_timeout = p["capture_timeout"]
        self._focal_px = p["focal_length_px"]
        preview = (p["preview_width"], p["preview_height"])
        capture = (p["capture_width"], p["capture_height"])
        config = {"preview_size": preview, "capture_size": capture}
        if self._backend_name == "sim":
            config.update(
                profile=p["profile"],
                protocol=p["sim_protocol"],
                slide_seed=p["sim_slide_seed"],
                slide=p["sim_slide"],
                noise=p["noise"],
                fault=p["sim_fault"],
            )
        elif self._backend_name == "opencv":
            config["device"] = p["device"]
        self._backend: CameraBackend = camera_class(self._backend_name)(**config)

        self._pose: Pose = NAN_POSE
        self._closing = threading.Event()
        self._capture_lock = threading.Lock()
        self._hung: tuple[threading.Thread, float] | None = None
        self._stats = {"frames": 0, "captures_ok": 0, "captures_failed": 0, "preview_errors": 0}
        self._last_error = ""
        self._fps = 0.0

        self._image_pub = self.create_publisher(Image, "camera/image_raw", PREVIEW_QOS)
        self._info_pub = self.create_publisher(CameraInfo, "camera/camera_info", PREVIEW_QOS)
        self._pose_pub = self.create_publisher(PointStamped, "camera/pose", POSE_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointState, "joint_states", self._on_joint_states, 10)
        self.create_service(
            CaptureImage,
            "camera/capture",
            self._on_capture,
            callback_group=ReentrantCallbackGroup(),
        )
        self.create_timer(
            1.0, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup()
        )

        self._backend.start()
        self._preview_thread = threading.Thread(
            target=self._preview_loop, name="preview", daemon=True
        )
        self._preview_thread.start()
        self.get_logger().info(
            f"camera backend {self._backend_name}: preview {preview[0]}x{preview[1]} at "
            f"{self._rate:g} Hz on {self.resolve_topic_name('camera/image_raw')}, capture "
            f"{capture[0]}x{capture[1]} on {self.resolve_service_name('camera/capture')}"
        )

    def _on_joint_states(self, msg: JointState) -> None:
        """Remember the stage pose (the sim renders there; captures report it)."""
        try:
            self._pose = joint_state_to_pose(msg)
        except ValueError as exc:
            self.get_logger().warning(f"ignoring joint_states: {exc}", throttle_duration_sec=5.0)

    def _preview_loop(self) -> None:
        """Grab previews from the backend and publish them at the configured rate."""
        period = 1.0 / self._rate
        next_time = time.monotonic()
        last_frame, msg = None, None
        window_start, window_frames = time.monotonic(), 0
        while not self._closing.is_set():
            # Stamp at exposure start, with the pose it is rendered at: a frame that was being
            # rendered while the stage moved must not look newer than the move.
            pose = self._pose
            stamp = self.get_clock().now().to_msg()
            try:
                frame = self._backend.preview(pose)
            except Exception as exc:  # a failing backend must not end the stream thread
                if self._closing.is_set():
                    break
                self._stats["preview_errors"] += 1
                self._last_error = f"preview: {exc}"
                self.get_logger().error(f"preview failed: {exc}", throttle_duration_sec=5.0)
                self._closing.wait(0.5)
                continue
            if frame is not last_frame:  # unchanged frame: reuse the message, restamp only
                msg = image_to_msg(frame, stamp, self._frame_id)
                last_frame = frame
            else:
                msg.header.stamp = stamp
                msg.header.frame_id = self._frame_id
            try:
                self._pose_pub.publish(pose_stamped(pose, stamp))  # before its image: pairs
                self._image_pub.publish(msg)
                self._info_pub.publish(
                    camera_info(msg.width, msg.height, stamp, self._frame_id, self._focal_px)
                )
            except Exception:  # RCLError, InvalidHandle
                if self.context.ok() and not self._closing.is_set():
                    raise
                break  # Ctrl-C shut the context down before destroy_node stopped this thread
            self._stats["frames"] += 1
            window_frames += 1
            now = time.monotonic()
            if now - window_start >= 2.0:
                self._fps = window_frames / (now - window_start)
                window_start, window_frames = now, 0
            next_time += period
            if next_time < now:
                next_time = now
            self._closing.wait(next_time - now)

    def _on_capture(
        self, request: CaptureImage.Request, response: CaptureImage.Response
    ) -> CaptureImage.Response:
        """Capture one full-resolution frame, bounded by the request's timeout."""
        if not (math.isfinite(request.timeout) and request.timeout <= MAX_CAPTURE_TIMEOUT):
            # threading's join() overflows time_t on 1e12 or inf and would kill the node
            return self._fail(
                response,
                f"timeout {request.timeout} s is not a usable capture timeout: give 0 (the "
                f"node's default, {self._default_timeout:g} s) or at most "
                f"{MAX_CAPTURE_TIMEOUT:g} s; nothing was captured",
            )
        if not self._capture_lock.acquire(blocking=False):
            return self._fail(response, "capture already running; retry when it has finished")
        try:
            if self._hung is not None and self._hung[0].is_alive():
                age = time.monotonic() - self._hung[1]
                return self._fail(
                    response,
                    f"camera backend {self._backend_name!r} is not answering: a capture "
                    f"started {age:.1f} s ago has not returned; check the camera and restart "
                    "the node",
                )
            timeout = request.timeout if request.timeout > 0 else self._default_timeout
            pose = self._pose
            stamp = self.get_clock().now().to_msg()
            outcome: dict[str, object] = {}

            def work() -> None:
                try:
                    outcome["frame"] = self._backend.capture(pose, timeout)
                except Exception as exc:  # reported to the caller below
                    outcome["error"] = exc

            worker = threading.Thread(target=work, name="capture", daemon=True)
            started = time.monotonic()
            worker.start()
            worker.join(timeout)
            if worker.is_alive():
                self._hung = (worker, started)
                return self._fail(
                    response,
                    f"camera backend {self._backend_name!r} did not answer within "
                    f"{timeout:.1f} s; no image was captured",
                )
            if "error" in outcome:
                return self._fail(response, f"capture failed: {outcome['error']}")
            frame = outcome["frame"]
            response.image = image_to_msg(frame.image, stamp, self._frame_id)
            response.camera_info = camera_info(
                response.image.width,
                response.image.height,
                stamp,
                self._frame_id,
                self._focal_px,
            )
            response.stage_position = point(pose)
            response.exposure_time = float(frame.exposure_time)
            response.success = True
            self._stats["captures_ok"] += 1
            return response
        finally:
            self._capture_lock.release()

    def _fail(self, response: CaptureImage.Response, message: str) -> CaptureImage.Response:
        """Fill a failed capture response and log it once."""
        self._stats["captures_failed"] += 1
        self._last_error = message
        self.get_logger().error(message)
        response.success = False
        response.message = message
        response.stage_position = point(NAN_POSE)
        return response

    def _publish_diagnostics(self) -> None:
        """Publish the camera's status on /diagnostics."""
        hung = self._hung is not None and self._hung[0].is_alive()
        if hung:
            level, message = DiagnosticStatus.ERROR, "backend not answering"
        elif self._fps < 0.5 * self._rate and self._stats["frames"] > 0:
            level, message = DiagnosticStatus.WARN, f"preview at {self._fps:.1f} Hz"
        else:
            level, message = DiagnosticStatus.OK, "streaming"
        values = {
            "preview_fps": f"{self._fps:.2f}",
            "pose_known": all(math.isfinite(v) for v in self._pose),
            "last_error": self._last_error,
            **self._stats,
        }
        self._diag_pub.publish(diagnostic_array(self, level, message, self._backend_name, values))

    def destroy_node(self) -> None:
        """Stop the preview thread and close the camera (if the constructor got that far)."""
        thread = getattr(self, "_preview_thread", None)
        if thread is not None:
            self._closing.set()
            self._backend.stop()
            thread.join(timeout=2.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Run the camera node until interrupted (exit status 2 on bad configuration)."""
    exit_with(run_node(CameraNode, args, "camera"))


if __name__ == "__main__":
    main()
