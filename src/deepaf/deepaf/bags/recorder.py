"""BagRecorder: an rclpy node that records topics of a running graph into a bag.

Subscriptions are raw (`raw=True`): the CDR bytes DDS delivers go into the bag untouched, so
any standard or deepaf_msgs type is recorded without decoding. Topics are found as they
appear (a discovery timer), each with the QoS its publishers offer (best effort if any
publisher is, transient local if all are: the latched `scan/status` arrives too). With
`compress_full`, full-resolution frames (`camera/image_full`) are stored as lossless PNG
`sensor_msgs/CompressedImage` on `camera/image_full/compressed`.

When the graph's camera runs the simulator backend, the recorder asks it (parameter service)
for `profile`, `sim_protocol`, `sim_slide_seed` and `sim_slide` and stores them in the bag's
DeepAf context, so `deepaf bag eval` finds the ground truth without being told.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rcl_interfaces.srv import GetParameters
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from .images import COMPRESSED, IMAGE, compress_image
from .writer import BagWriter, make_qos

__all__ = ["DEFAULT_TOPICS", "BagRecorder", "import_msg_type", "resolve_topic"]

#: What `deepaf bag record` records by default (relative to the namespace).
DEFAULT_TOPICS = (
    "camera/image_raw",
    "camera/camera_info",
    "camera/pose",
    "camera/image_full",
    "joint_states",
    "focus/prediction",
    "scan/status",
    "scan/tiles",
)
FULL_TOPIC = "camera/image_full"
# camera parameter -> key of the bag's DeepAf context
_SIM_PARAMETERS = {
    "backend": None,
    "profile": "profile",
    "sim_protocol": "protocol",
    "sim_slide_seed": "slide_seed",
    "sim_slide": "slide",
}


def resolve_topic(name: str, namespace: str) -> str:
    """Absolute topic name: relative names are put under `namespace`."""
    if name.startswith("/"):
        return name
    return f"{namespace.rstrip('/')}/{name}" if namespace.strip("/") else f"/{name}"


class BagRecorder(Node):
    """Records `topics` (absolute names, or every topic when empty) into `writer`.

    Args:
        writer: An open :class:`BagWriter`; closed by the caller.
        topics: Absolute topic names; empty: every topic of a recordable type.
        compress_full: Store `camera/image_full` frames as PNG CompressedImage.
        namespace: Namespace of `camera/image_full` (for `compress_full`).
    """

    def __init__(
        self,
        writer: BagWriter,
        topics: Sequence[str] = (),
        compress_full: bool = False,
        namespace: str = "/microscope",
    ) -> None:
        super().__init__("bag_recorder")
        self._writer = writer
        self._wanted = set(topics)
        self._full = resolve_topic(FULL_TOPIC, namespace) if compress_full else None
        self._subs: dict[str, Any] = {}
        self._skipped: set[str] = set()
        self.discover()
        self._timer = self.create_timer(0.2, self.discover)
        self._camera = self.create_client(
            GetParameters, resolve_topic("camera/get_parameters", namespace)
        )
        self._camera_asked = False
        self._camera_timer = self.create_timer(0.5, self._ask_camera)

    @property
    def subscribed(self) -> list[str]:
        """Topics being recorded."""
        return sorted(self._subs)

    def discover(self) -> None:
        """Subscribe to wanted topics that have appeared since the last look."""
        for topic, types in self.get_topic_names_and_types():
            if topic in self._subs or topic in self._skipped or not types:
                continue
            if self._wanted and topic not in self._wanted:
                continue
            if not self._wanted and topic in ("/rosout", "/parameter_events"):
                continue
            self._subscribe(topic, types[0])

    def _ask_camera(self) -> None:
        """Once the camera's parameter service is up, ask it for the simulator's settings."""
        if self._camera_asked or not self._camera.service_is_ready():
            return
        self._camera_asked = True
        self._camera_timer.cancel()
        request = GetParameters.Request(names=list(_SIM_PARAMETERS))
        self._camera.call_async(request).add_done_callback(self._on_camera_parameters)

    def _on_camera_parameters(self, future) -> None:
        """Store profile / protocol / slide seed of a simulated camera (--meta wins)."""
        try:
            values = future.result().values
        except Exception as exc:  # the camera went away: no context, not an error
            self.get_logger().info(f"camera parameters unavailable: {exc}")
            return
        got = dict(zip(_SIM_PARAMETERS, values, strict=False))
        backend = got.get("backend")
        if backend is None or backend.string_value != "sim":
            return
        for name, key in _SIM_PARAMETERS.items():
            value = got.get(name)
            if key and value is not None and key not in self._writer.info:
                v = value.integer_value if value.type == 2 else value.string_value
                self._writer.info[key] = v
        self.get_logger().info(f"simulator context: {self._writer.info}")

    def _subscribe(self, topic: str, msgtype: str) -> None:
        """Subscribe raw to one topic with QoS compatible with its publishers."""
        infos = self.get_publishers_info_by_topic(topic)
        if not infos:
            return  # only subscribers so far: wait for a publisher to learn its QoS
        store = self._writer.typestore
        if msgtype not in store.types:
            self._skipped.add(topic)
            self.get_logger().warning(
                f"not recording {topic}: unknown message type {msgtype} (no definition)"
            )
            return
        best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
        latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        qos = QoSProfile(
            depth=100,
            reliability=ReliabilityPolicy.BEST_EFFORT
            if best_effort
            else ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )
        offered = make_qos(not best_effort, latched, depth=10)
        msg_class = import_msg_type(msgtype)
        if topic == self._full and msgtype == IMAGE:
            bag_topic = f"{topic}/compressed"
            self._writer.add_topic(bag_topic, COMPRESSED, offered)
            callback = self._compressing_callback(bag_topic)
        else:
            self._writer.add_topic(topic, msgtype, offered)
            callback = self._callback(topic)
        self._subs[topic] = self.create_subscription(msg_class, topic, callback, qos, raw=True)
        self.get_logger().info(f"recording {topic} ({msgtype})")

    def _callback(self, topic: str):
        """Write each raw message with its receive time."""

        def write(data: bytes) -> None:
            self._writer.write(topic, self.get_clock().now().nanoseconds, data)

        return write

    def _compressing_callback(self, bag_topic: str):
        """Write each full frame as a PNG CompressedImage."""
        store = self._writer.typestore

        def write(data: bytes) -> None:
            stamp = self.get_clock().now().nanoseconds
            try:
                msg = compress_image(store.deserialize_cdr(data, IMAGE), store)
            except ValueError as exc:
                self.get_logger().error(f"frame on {bag_topic} not recorded: {exc}")
                return
            self._writer.write(bag_topic, stamp, store.serialize_cdr(msg, COMPRESSED))

        return write


def import_msg_type(msgtype: str) -> Any:
    """The Python class of `pkg/kind/Name` (action parts like `X_Feedback` included).

    Raises:
        ImportError: when the package's Python interfaces are not installed.
    """
    import importlib

    pkg, kind, name = msgtype.split("/")
    module = importlib.import_module(f"{pkg}.{kind}")
    if hasattr(module, name):
        return getattr(module, name)
    base, _, part = name.partition("_")
    try:
        return getattr(getattr(module, base).Impl, part)
    except AttributeError:
        raise ImportError(f"no Python class for {msgtype} in {pkg}.{kind}") from None
