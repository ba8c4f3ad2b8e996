"""The microscope as the planner sees it over ROS: stage/move, camera preview and capture,
focus/predict. Implements :class:`deepaf_planner.scanner.Microscope` for the scan engine.

Every call is blocking with a bounded wait and raises :class:`HardwareError` with the reason
(which server did not answer, which goal was rejected); it must be called from an executor
thread other than the ones serving its clients (the planner node uses a MultiThreadedExecutor
and reentrant callback groups).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import Any

import numpy as np
from deepaf_driver.conversions import image_to_msg, joint_state_to_pose, msg_to_rgb
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


def _stamp_ns(msg: Image) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


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
        self._frame: Image | None = None
        self._frame_time = 0.0
        self._pose: tuple[float, float, float] | None = None
        self._full_pub = node.create_publisher(
            Image, "camera/image_full", QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        )
        node.create_subscription(
            Image, "camera/image_raw", self._on_frame, qos_profile_sensor_data, callback_group=group
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
        """Keep the newest preview."""
        with self._lock:
            self._frame, self._frame_time = msg, time.monotonic()
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
        response = _wait(
            client.call_async(GetParameters.Request(names=names)), self._t["discovery"], key
        )
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
        handle = _wait(self._move.send_goal_async(goal), self._t["move"], "stage/move goal")
        if not handle.accepted:
            raise HardwareError(
                f"stage/move rejected the goal to {(x, y, z)} (outside the "
                "soft limits or stage stopped)"
            )
        result = _wait(handle.get_result_async(), self._t["move"], "stage/move result").result
        if result.error_code != MoveStage.Result.CODE_SUCCEEDED:
            raise HardwareError(f"stage/move failed: {result.message}")
        p = result.position
        self._pose = (p.x, p.y, p.z)
        self._moved_at = time.monotonic()
        return Moved((p.x, p.y, p.z), float(result.duration))

    def preview(self) -> Frame:
        """Return the first preview exposed after this call (so after any move it follows).

        A frame counts when its header stamp (exposure start) is later than the call by
        `pose_latency`, the time the camera needs to hear the stage's new joint_states.
        """
        requested = time.monotonic()
        not_before = self._node.get_clock().now().nanoseconds + int(self.pose_latency * 1e9)
        deadline = requested + self._t["preview"]
        with self._lock:
            while self._frame is None or _stamp_ns(self._frame) < not_before:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HardwareError(
                        f"camera/image_raw: no fresh preview within {self._t['preview']:.1f} s"
                    )
                self._lock.wait(min(left, 0.1))
            msg = self._frame
        return Frame(msg_to_rgb(msg), self.preview_time, msg)

    def capture(self) -> Frame:
        """Full-resolution still through camera/capture (reliable)."""
        request = CaptureImage.Request(timeout=self._t["capture"])
        settle = self._moved_at + self.pose_latency - time.monotonic()
        if settle > 0:  # let the camera hear the pose the stage reached
            time.sleep(settle)
        if not self._capture.service_is_ready() and not self._capture.wait_for_service(
            timeout_sec=self._t["discovery"]
        ):
            raise HardwareError("camera/capture: the camera node is not running")
        response = _wait(
            self._capture.call_async(request), self._t["capture"] + 5.0, "camera/capture"
        )
        if not response.success:
            raise HardwareError(f"camera/capture failed: {response.message}")
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
        """Ask the focus server for the offset of this preview."""
        image = (
            frame.msg
            if frame.msg is not None
            else image_to_msg(
                np.ascontiguousarray(frame.rgb), self._node.get_clock().now().to_msg(), "camera"
            )
        )
        goal = PredictFocus.Goal(use_latest_preview=False, image=image, focus_z=float(focus_z))
        if not self._predict.server_is_ready() and not self._predict.wait_for_server(
            timeout_sec=self._t["discovery"]
        ):
            raise HardwareError("focus/predict: the focus server is not running")
        start = time.monotonic()
        handle = _wait(
            self._predict.send_goal_async(goal), self._t["predict"], "focus/predict goal"
        )
        if not handle.accepted:
            raise HardwareError("focus/predict rejected the goal")
        wrapped = _wait(handle.get_result_async(), self._t["predict"], "focus/predict result")
        pred = wrapped.result.prediction
        return FocusDecision(
            status=_STATUS.get(pred.status, "invalid"),
            offset_m=float(pred.offset) if pred.status == FocusPrediction.STATUS_OK else 0.0,
            confidence=float(pred.confidence),
            seconds=time.monotonic() - start,
            message=wrapped.result.message or pred.message,
            expected_error_m=float(pred.expected_error),
        )

    def destroy(self) -> None:
        """Release the clients."""
        self._move.destroy()
        self._predict.destroy()
