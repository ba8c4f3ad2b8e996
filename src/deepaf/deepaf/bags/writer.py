"""Write rosbag2 bags (mcap storage, metadata version 9) with deepaf_msgs definitions.

ROS-free: messages arrive as CDR bytes (what an rclpy raw subscription delivers) or as
rosbags message objects. The bag is what `ros2 bag record -s mcap` writes: `metadata.yaml`,
one `.mcap` file whose schemas carry every definition (ours included) and RIHS01 hashes equal
to rosidl's. DeepAf context (namespace, simulator profile, protocol, slide seed) goes both into
`metadata.yaml` `custom_data` (keys `deepaf.*`) and into a sidecar `deepaf.json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rosbags.interfaces import (
    Connection,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

from .errors import BagError
from .typestore import deepaf_typestore

__all__ = ["SIDECAR", "BagWriter", "make_qos"]

SIDECAR = "deepaf.json"
_ZERO = QosTime(0, 0)
_INFINITE = QosTime(2147483647, 4294967295)


def make_qos(reliable: bool = True, transient_local: bool = False, depth: int = 10) -> Qos:
    """A rosbag2 offered-QoS entry (what `metadata.yaml` stores per topic)."""
    return Qos(
        QosHistory.KEEP_LAST,
        depth,
        QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        _INFINITE,
        _INFINITE,
        QosLiveliness.AUTOMATIC,
        _INFINITE,
        False,
    )


class BagWriter:
    """A new rosbag2 bag in mcap storage; use as a context manager.

    Args:
        path: Bag directory to create (must not exist).
        info: DeepAf context stored in `deepaf.json` and in `custom_data`
            (e.g. `namespace`, `profile`, `protocol`, `slide_seed`).

    Raises:
        BagError: when the directory exists or cannot be created.
    """

    def __init__(self, path: str | Path, info: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.info: dict[str, Any] = dict(info or {})
        self.typestore = deepaf_typestore()
        if self.path.exists():
            raise BagError(self.path, "exists already; choose a new --out directory")
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._connections: dict[str, Connection] = {}
        self.counts: dict[str, int] = {}

    def open(self) -> BagWriter:
        """Create the directory and the mcap file."""
        try:
            self._writer.open()
        except (WriterError, OSError) as exc:
            raise BagError(self.path, f"cannot create the bag: {exc}") from exc
        return self

    def add_topic(self, topic: str, msgtype: str, qos: Qos | None = None) -> None:
        """Declare a topic and its type (`pkg/msg/Type`) before writing to it.

        Raises:
            BagError: for a type this typestore does not know (no definition to store).
        """
        if topic in self._connections:
            return
        if msgtype not in self.typestore.types:
            raise BagError(
                self.path,
                f"unknown message type {msgtype} on {topic}: no definition to store; "
                "only standard ROS 2 types and deepaf_msgs can be recorded",
            )
        self._connections[topic] = self._writer.add_connection(
            topic,
            msgtype,
            typestore=self.typestore,
            offered_qos_profiles=[qos or make_qos()],
        )
        self.counts[topic] = 0

    def has_topic(self, topic: str) -> bool:
        """True when `topic` was declared."""
        return topic in self._connections

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Append one CDR-serialised message received at `timestamp_ns`.

        Raises:
            BagError: for a topic not declared with :meth:`add_topic`.
        """
        conn = self._connections.get(topic)
        if conn is None:
            raise BagError(self.path, f"topic {topic} was not added before writing to it")
        self._writer.write(conn, int(timestamp_ns), data)
        self.counts[topic] += 1

    def write_msg(self, topic: str, timestamp_ns: int, msg: Any) -> None:
        """Append a rosbags message object (serialised here)."""
        conn = self._connections[topic]
        self.write(topic, timestamp_ns, self.typestore.serialize_cdr(msg, conn.msgtype))

    def close(self) -> None:
        """Write the mcap summary, `metadata.yaml` and `deepaf.json`."""
        if self._writer.storage is None:
            return
        for key, value in self.info.items():
            self._writer.set_custom_data(f"deepaf.{key}", str(value))
        self._writer.close()
        (self.path / SIDECAR).write_text(json.dumps(self.info, indent=2, sort_keys=True) + "\n")

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
