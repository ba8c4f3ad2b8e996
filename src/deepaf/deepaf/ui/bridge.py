"""The dashboard's ROS side: one node for the live topics and a `DeepAfClient` for the actions.

`ScopeBridge` subscribes `camera/image_raw`, `joint_states`, `focus/prediction`,
`scan/status` and `scan/tiles` on its own node (spun by its own executor thread), encodes the
newest preview to JPEG on an encoder thread (older frames are dropped, never queued), and
hands frames and events to the web server through `post` (the server passes its asyncio
loop's `call_soon_threadsafe`). Commands are blocking calls for the server's worker threads;
they go through `deepaf.client` (moves, focus, capture, scans) and the stage's standard
`stage/stop` / `stage/reset_stop` services: the dashboard adds no other path to the hardware.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from deepaf_driver.qos import PREVIEW_QOS
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from deepaf.client import DeepAfClient, Outcome, Status, Task
from deepaf.ui.live import LatestSlot, encode_preview, pack_frame
from deepaf_msgs.action import MoveStage
from deepaf_msgs.msg import FocusPrediction, ScanStatus, ScanTile

Post = Callable[..., Any]  # loop.call_soon_threadsafe(callback, *args)
JOINTS = ("stage_x", "stage_y", "focus_z")
TISSUE_EVERY_S = 0.5  # the tissue indicator is recomputed at most this often
#: The live view's preview subscription: PREVIEW_QOS (reliable: large frames need it) with a
#: queue of one, so a busy dashboard takes the newest frame instead of working through a
#: backlog (measured: with PREVIEW_QOS's depth 5 the frames arrived ~140 ms late on a loaded
#: 2-core machine (p50), with depth 1 ~30 ms).
LIVE_QOS = QoSProfile(
    history=PREVIEW_QOS.history,
    depth=1,
    reliability=PREVIEW_QOS.reliability,
    durability=PREVIEW_QOS.durability,
)


class UiClient(DeepAfClient):
    """DeepAfClient plus a non-blocking relative move, so a move can be cancelled when the
    browser that started it goes away."""

    def start_move(self, dx: float, dy: float, dz: float, timeout: float = 30.0) -> Task | Outcome:
        """Start a relative move [m]; returns the running Task (or why it did not start)."""
        goal = MoveStage.Goal(x=float(dx), y=float(dy), z=float(dz), relative=True)
        return self._start("move", goal, timeout)


def image_to_rgb(msg: Image) -> np.ndarray:
    """A sensor_msgs/Image (rgb8, bgr8 or mono8) as an RGB uint8 array (no copy for rgb8).

    Raises:
        ValueError: another encoding.
    """
    data = np.frombuffer(msg.data, np.uint8)
    if msg.encoding == "rgb8":
        return data.reshape(msg.height, msg.width, 3)
    if msg.encoding == "bgr8":
        return data.reshape(msg.height, msg.width, 3)[..., ::-1]
    if msg.encoding == "mono8":
        return np.repeat(data.reshape(msg.height, msg.width, 1), 3, axis=2)
    raise ValueError(f"image encoding {msg.encoding!r} is not rgb8, bgr8 or mono8")


def _stamp(msg: Any) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _num(value: float) -> float | None:
    """JSON-safe float (NaN/inf -> None)."""
    value = float(value)
    return value if np.isfinite(value) else None


def outcome_dict(outcome: Outcome) -> dict[str, Any]:
    """The JSON answer of a command."""
    return {"ok": outcome.ok, "status": outcome.status.value, "message": outcome.message}


@dataclass
class FrameStats:
    """Counts of the live view since start (for the page and the bench)."""

    received: int = 0
    encoded: int = 0
    encode_s: float = 0.0
    started: float = field(default_factory=time.monotonic)


class ScopeBridge:
    """The dashboard's connection to one microscope's graph.

    Args:
        namespace: the graph's namespace.
        post: thread-safe scheduler of the server's loop (`loop.call_soon_threadsafe`).
        on_frame: called through `post` with each packed live frame (bytes).
        on_event: called through `post` with each event (a JSON-able dict).
        server_timeout: seconds the actions' servers may take to appear.
    """

    def __init__(
        self,
        namespace: str,
        post: Post,
        on_frame: Callable[[bytes], None],
        on_event: Callable[[dict[str, Any]], None],
        server_timeout: float = 30.0,
    ) -> None:
        self._post, self._on_frame, self._on_event = post, on_frame, on_event
        ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
        self.namespace = ns
        self.node = rclpy.create_node("deepaf_ui", namespace=ns or "/")
        self.client = UiClient(namespace, server_timeout=server_timeout)
        self.stats = FrameStats()
        self.pose: dict[str, float] | None = None
        self.prediction: dict[str, Any] | None = None
        self.scan_status: dict[str, Any] | None = None
        self.tiles: list[dict[str, Any]] = []
        self.referenced: bool | None = None
        self.estop = False
        self.tissue: bool | None = None
        self.viewers = 0  # open live views (the server counts them); none: nothing is encoded
        self._raw = LatestSlot()
        self._raw_ready = threading.Event()
        self._last_pose_post = 0.0
        self._last_tissue = 0.0
        self._moves: dict[str, set[Task]] = {}
        self._moves_lock = threading.Lock()
        self.scan_task: Task | None = None
        self._running = True
        n = self.node
        self._preview_sub = None  # camera/image_raw, only while a live view is open
        n.create_timer(0.2, self._sync_preview)
        n.create_subscription(JointState, f"{ns}/joint_states", self._on_joints, 10)
        n.create_subscription(FocusPrediction, f"{ns}/focus/prediction", self._on_prediction, 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        n.create_subscription(ScanStatus, f"{ns}/scan/status", self._on_status, latched)
        n.create_subscription(ScanTile, f"{ns}/scan/tiles", self._on_tile, 50)
        n.create_subscription(Bool, f"{ns}/stage/referenced", self._on_referenced, latched)
        self._stop = n.create_client(Trigger, f"{ns}/stage/stop")
        self._reset_stop = n.create_client(Trigger, f"{ns}/stage/reset_stop")
        self._executor = SingleThreadedExecutor(context=n.context)
        self._executor.add_node(n)
        self._threads = [
            threading.Thread(target=self._spin_node, name="ui-node", daemon=True),
            threading.Thread(target=self._spin_client, name="ui-client", daemon=True),
            threading.Thread(target=self._encode_loop, name="ui-encoder", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # -- threads ---------------------------------------------------------------------
    def _spin_node(self) -> None:
        try:
            while self._running and rclpy.ok(context=self.node.context):
                self._executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass
        except Exception:  # the context going away at shutdown is not a crash
            if self._running:
                raise

    def _spin_client(self) -> None:
        """Keep the client's results and feedback flowing while no command waits on them."""
        while self._running and rclpy.ok():
            try:
                self.client.spin(0.05)
            except Exception:  # shutdown race
                if self._running:
                    time.sleep(0.05)

    def _encode_loop(self) -> None:
        """Encode the newest preview only; frames that arrive meanwhile replace each other."""
        from deepaf_focus.tissue import field_has_tissue

        while self._running:
            if not self._raw_ready.wait(0.2):
                continue
            self._raw_ready.clear()
            item, _dropped = self._raw.take()
            if item is None:
                continue
            msg, received = item
            if self.viewers <= 0:
                continue
            t0 = time.perf_counter()
            try:
                rgb = image_to_rgb(msg)
                jpeg = encode_preview(rgb)
                if received - self._last_tissue >= TISSUE_EVERY_S:
                    self._last_tissue = received
                    self.tissue = bool(field_has_tissue(np.ascontiguousarray(rgb)))
            except (ValueError, RuntimeError) as exc:
                self.node.get_logger().warning(f"live view: frame skipped: {exc}")
                continue
            self.stats.encoded += 1
            self.stats.encode_s += time.perf_counter() - t0
            meta = {
                "stamp": _stamp(msg),
                "received": received,
                "encoded": time.time(),
                "width": msg.width,
                "height": msg.height,
                "tissue": self.tissue,
                "n": self.stats.received,
            }
            self._post(self._on_frame, pack_frame(meta, jpeg))

    # -- topic callbacks (node thread) ---------------------------------------------------
    def _sync_preview(self) -> None:
        """Subscribe the previews while a live view is open (2.8 MB each at 30 Hz: a receiving
        dashboard nobody watches would cost ~20 % of a core)."""
        if self.viewers > 0 and self._preview_sub is None:
            self._preview_sub = self.node.create_subscription(
                Image, f"{self.namespace}/camera/image_raw", self._on_image, LIVE_QOS
            )
        elif self.viewers <= 0 and self._preview_sub is not None:
            self.node.destroy_subscription(self._preview_sub)
            self._preview_sub = None

    def _on_image(self, msg: Image) -> None:
        """Keep the newest preview for the encoder."""
        self.stats.received += 1
        self._raw.put((msg, time.time()))
        self._raw_ready.set()

    def _on_joints(self, msg: JointState) -> None:
        """Remember the pose; forward it at most 10 times a second."""
        pos = dict(zip(msg.name, msg.position, strict=False))
        if not all(j in pos for j in JOINTS):
            return
        self.pose = {"x": pos["stage_x"], "y": pos["stage_y"], "z": pos["focus_z"]}
        now = time.monotonic()
        if now - self._last_pose_post >= 0.1:
            self._last_pose_post = now
            self._emit({"type": "pose", **self.pose})

    def _on_prediction(self, msg: FocusPrediction) -> None:
        """Forward each focus prediction."""
        self.prediction = {
            "status": int(msg.status),
            "status_text": {0: "ok", 1: "no tissue", 2: "invalid"}.get(msg.status, "?"),
            "message": msg.message,
            "offset": _num(msg.offset),
            "confidence": _num(msg.confidence),
            "focus_z": _num(msg.focus_z),
            "target_z": _num(msg.target_z),
            "tissue_fraction": _num(msg.tissue_fraction),
            "expected_error": _num(msg.expected_error),
            "stamp": _stamp(msg),
        }
        self._emit({"type": "prediction", **self.prediction})

    def _on_status(self, msg: ScanStatus) -> None:
        """Forward the planner's progress; a new scan id starts a new tile map."""
        if self.scan_status and self.scan_status.get("scan_id") != msg.scan_id:
            self.tiles = []
        self.scan_status = {
            "scan_id": msg.scan_id,
            "state": msg.state,
            "tile_index": msg.tile_index,
            "tiles_total": msg.tiles_total,
            "tiles_done": msg.tiles_done,
            "tiles_tissue": msg.tiles_tissue,
            "tiles_skipped": msg.tiles_skipped,
            "elapsed": _num(msg.elapsed),
            "eta": _num(msg.eta),
            "message": msg.message,
            "region_area": _num(msg.region_area),
        }
        self._emit({"type": "scan_status", **self.scan_status})

    def _on_tile(self, msg: ScanTile) -> None:
        """Forward each finished field of a scan."""
        tile = {
            "scan_id": msg.scan_id,
            "index": msg.index,
            "row": msg.row,
            "col": msg.col,
            "x": msg.position.x,
            "y": msg.position.y,
            "z": msg.position.z,
            "has_tissue": msg.has_tissue,
            "focus_quality": msg.focus_quality,
            "sharpness": _num(msg.sharpness),
            "predicted_offset": _num(msg.predicted_offset),
            "true_focus_error": _num(msg.true_focus_error),
        }
        self.tiles.append(tile)
        self._emit({"type": "tile", **tile})

    def _on_referenced(self, msg: Bool) -> None:
        self.referenced = bool(msg.data)
        self._emit({"type": "referenced", "referenced": self.referenced})

    def _emit(self, event: dict[str, Any]) -> None:
        self._post(self._on_event, event)

    # -- commands (blocking: call them from worker threads) -------------------------------
    def jog(self, owner: str, delta: tuple[float, float, float], timeout: float = 30.0) -> Outcome:
        """One bounded relative move, cancelled if `owner`'s connection closes meanwhile."""
        task = self.client.start_move(*delta, timeout=timeout)
        if isinstance(task, Outcome):
            return task
        with self._moves_lock:
            self._moves.setdefault(owner, set()).add(task)
        try:
            return task.wait(timeout)
        finally:
            with self._moves_lock:
                self._moves.get(owner, set()).discard(task)

    def focus(self, owner: str) -> tuple[Outcome, dict[str, Any] | None]:
        """PredictFocus on the latest preview, then the z move it asks for."""
        predicted = self.client.predict_focus(timeout=20.0)
        if not predicted.ok:
            return predicted, None
        p = predicted.result.prediction
        info = {
            "offset": _num(p.offset),
            "confidence": _num(p.confidence),
            "tissue_fraction": _num(p.tissue_fraction),
        }
        if p.status != FocusPrediction.STATUS_OK:
            why = p.message or ("no tissue in the field" if p.status == 1 else "invalid image")
            return Outcome(Status.REJECTED, None, f"no prediction: {why}"), info
        return self.jog(owner, (0.0, 0.0, float(p.offset))), info

    def cancel_moves(self, owner: str | None = None) -> int:
        """Cancel the in-flight moves of `owner` (every owner when None); return how many."""
        with self._moves_lock:
            if owner is None:
                tasks = [t for ts in self._moves.values() for t in ts]
            else:
                tasks = list(self._moves.pop(owner, set()))
        for task in tasks:
            task.cancel(timeout=2.0)
        return len(tasks)

    def capture_png(self) -> tuple[Outcome, bytes | None]:
        """A full-resolution capture at the current pose, as PNG bytes."""
        import cv2

        outcome = self.client.capture(timeout=30.0)
        if not outcome.ok:
            return outcome, None
        rgb = image_to_rgb(outcome.result.image)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            return Outcome(Status.FAILED, None, "PNG encoding failed"), None
        return outcome, buf.tobytes()

    def set_estop(self, engage: bool, timeout: float = 5.0) -> Outcome:
        """Engage (and cancel every move and the scan) or clear the stage's emergency stop."""
        client = self._stop if engage else self._reset_stop
        name = "stage/stop" if engage else "stage/reset_stop"
        if not client.wait_for_service(timeout_sec=timeout):
            return Outcome(Status.UNAVAILABLE, None, f"{name}: stage node not running")
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done():
            return Outcome(Status.TIMED_OUT, None, f"{name}: no answer")
        response = future.result()
        if engage and response.success:
            self.estop = True
            self.cancel_moves()
            if self.scan_task is not None and not self.scan_task.done():
                self.scan_task.cancel(timeout=2.0)
        elif response.success:
            self.estop = False
        self._emit({"type": "estop", "engaged": self.estop, "message": response.message})
        status = Status.SUCCEEDED if response.success else Status.FAILED
        return Outcome(status, None, response.message)

    def start_scan(self, **kwargs: Any) -> Outcome:
        """Start a ScanSlide goal (kwargs of DeepAfClient.start_scan); one scan at a time."""
        if self.scan_task is not None and not self.scan_task.done():
            return Outcome(Status.REJECTED, None, "a scan is already running: cancel it first")
        self.tiles = []
        task = self.client.start_scan(timeout=30.0, **kwargs)
        if isinstance(task, Outcome):
            return task
        self.scan_task = task
        threading.Thread(target=self._watch_scan, args=(task,), daemon=True).start()
        return Outcome(Status.SUCCEEDED, None, "scan started")

    def _watch_scan(self, task: Task) -> None:
        while self._running and not task.done():
            time.sleep(0.2)
        if not self._running:
            return
        outcome = task.wait(5.0)
        result = outcome.result
        self._emit(
            {
                "type": "scan_result",
                **outcome_dict(outcome),
                "output_dir": getattr(result, "output_dir", ""),
                "tiles_tissue": getattr(result, "tiles_tissue", 0),
                "within_dof_pct": _num(getattr(result, "within_dof_pct", float("nan"))),
            }
        )

    def cancel_scan(self) -> Outcome:
        """Cancel the running scan (it can be resumed)."""
        if self.scan_task is None or self.scan_task.done():
            return Outcome(Status.REJECTED, None, "no scan is running")
        ok = self.scan_task.cancel(timeout=10.0)
        return Outcome(
            Status.SUCCEEDED if ok else Status.FAILED,
            None,
            "cancel requested" if ok else "the planner did not accept the cancel",
        )

    def snapshot(self) -> dict[str, Any]:
        """What a freshly opened page needs."""
        up = max(1e-9, time.monotonic() - self.stats.started)
        return {
            "pose": self.pose,
            "prediction": self.prediction,
            "scan_status": self.scan_status,
            "tiles": list(self.tiles),
            "referenced": self.referenced,
            "estop": self.estop,
            "tissue": self.tissue,
            "scan_running": self.scan_task is not None and not self.scan_task.done(),
            "frames_received": self.stats.received,
            "camera_fps": self.stats.received / up,
        }

    def close(self) -> None:
        """Cancel this dashboard's moves, stop the threads, release the nodes."""
        self.cancel_moves()
        self._running = False
        for t in self._threads:
            t.join(timeout=2.0)
        self.client.close()
        self._executor.remove_node(self.node)
        self.node.destroy_node()


def new_client_id() -> str:
    """An id for one live connection (the owner of its moves)."""
    return uuid.uuid4().hex
