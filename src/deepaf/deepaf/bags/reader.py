"""Read rosbag2 bags (mcap or sqlite3; ours or recorded by `ros2 bag record`) as a stream.

ROS-free. Messages come out in time order, one at a time, as CDR bytes; images are decoded
only by the caller. The storage is read chunk by chunk (rosbags' mcap reader decompresses one
chunk at a time; ours holds at most ~1 MiB or one image per chunk), so memory stays bounded
whatever the bag's size. Every problem (no bag, truncated or corrupt file, unknown message
type, missing topic) raises :class:`BagError` naming the file and the problem.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection, Qos
from rosbags.rosbag2 import Reader, ReaderError

from .errors import BagError
from .typestore import deepaf_typestore
from .writer import SIDECAR

__all__ = ["BagMessage", "BagReader", "TopicInfo"]


@dataclass(frozen=True)
class TopicInfo:
    """A topic of a bag: type, message count, offered QoS and RIHS01 type hash."""

    name: str
    msgtype: str
    count: int
    qos: tuple[Qos, ...]
    type_hash: str


@dataclass(frozen=True)
class BagMessage:
    """One recorded message: topic, type, receive time (ns) and CDR bytes."""

    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


class BagReader:
    """An open bag; use as a context manager.

    Args:
        path: Bag directory (holding `metadata.yaml`).

    Raises:
        BagError: when the path is no bag, or its metadata or storage file is unreadable.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(self.path, "no such bag directory")
        if self.path.is_file():
            raise BagError(self.path, "is a file; pass the bag directory (with metadata.yaml)")
        if not (self.path / "metadata.yaml").is_file():
            raise BagError(
                self.path / "metadata.yaml",
                "missing: not a rosbag2 bag, or the recording was killed before it closed",
            )
        self.typestore = deepaf_typestore()
        self._reader = Reader(self.path)
        try:
            self._reader.open()
        except ReaderError as exc:
            text = str(exc)
            if any(w in text for w in ("metadata", "YAML", "version", "plugin", "missing")):
                raise BagError(self.path / "metadata.yaml", f"invalid ({text})") from exc
            raise BagError(self._storage_file(), self._explain(exc)) from exc
        except Exception as exc:  # rosbags lets some errors of corrupt files through
            raise BagError(
                self._storage_file(), f"unreadable bag metadata or storage file ({exc!r})"
            ) from exc
        self.topics: dict[str, TopicInfo] = {}
        self._conns: dict[str, list[Connection]] = {}
        for conn in self._reader.connections:
            self._conns.setdefault(conn.topic, []).append(conn)
            old = self.topics.get(conn.topic)
            self.topics[conn.topic] = TopicInfo(
                conn.topic,
                conn.msgtype,
                conn.msgcount + (old.count if old else 0),
                tuple(getattr(conn.ext, "offered_qos_profiles", ()) or ()),
                conn.digest,
            )
        self.info = self._read_info()

    # ------------------------------------------------------------------ metadata
    def _storage_file(self) -> Path:
        files = sorted(self.path.glob("*.mcap")) + sorted(self.path.glob("*.db3"))
        return files[0] if files else self.path

    @staticmethod
    def _explain(exc: Exception) -> str:
        text = str(exc)
        if "magic" in text.lower() or "footer" in text.lower() or "not enough" in text.lower():
            return f"truncated or corrupt storage file ({text})"
        return f"unreadable bag ({text})"

    def _read_info(self) -> dict[str, Any]:
        """DeepAf context: `deepaf.json` if present, else `custom_data` `deepaf.*` keys."""
        sidecar = self.path / SIDECAR
        if sidecar.is_file():
            try:
                return dict(json.loads(sidecar.read_text()))
            except (OSError, ValueError) as exc:
                raise BagError(sidecar, f"unreadable: {exc}") from exc
        metadata = getattr(self._reader.storage, "metadata", None)
        custom = getattr(metadata, "custom", None) or {}
        return {k.removeprefix("deepaf."): v for k, v in custom.items() if k.startswith("deepaf.")}

    @property
    def start_ns(self) -> int:
        """Receive time of the first message (ns)."""
        return int(self._reader.start_time)

    @property
    def duration_s(self) -> float:
        """Time between the first and the last message (s)."""
        return max(0, int(self._reader.duration) - 1) * 1e-9 if self.message_count else 0.0

    @property
    def message_count(self) -> int:
        """Messages in the bag."""
        return int(self._reader.message_count)

    def check_topics(self, topics: Iterable[str] | None) -> list[str]:
        """The requested topics (all when None), each checked to be in the bag.

        Raises:
            BagError: naming the missing topic(s) and those the bag has.
        """
        if topics is None:
            return list(self.topics)
        wanted = list(topics)
        missing = [t for t in wanted if t not in self.topics]
        if missing:
            raise BagError(
                self.path,
                f"topic(s) {', '.join(missing)} not in the bag; it has "
                f"{', '.join(sorted(self.topics)) or 'no topics'}",
            )
        return wanted

    def find_topic(self, suffix: str, msgtypes: Iterable[str] | None = None) -> str | None:
        """The bag's topic ending with `suffix` (e.g. `camera/image_raw`), or None."""
        types = set(msgtypes or ())
        for name, info in sorted(self.topics.items()):
            if (name == suffix or name.endswith("/" + suffix.lstrip("/"))) and (
                not types or info.msgtype in types
            ):
                return name
        return None

    # ------------------------------------------------------------------ messages
    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Stream messages of `topics` (all when None) in receive-time order.

        Raises:
            BagError: for a missing topic or a corrupt chunk (naming the storage file).
        """
        wanted = self.check_topics(topics)
        conns = [c for t in wanted for c in self._conns[t]]
        if not conns:  # rosbags reads every topic for an empty filter
            return
        try:
            for conn, timestamp, data in self._reader.messages(connections=conns):
                yield BagMessage(conn.topic, conn.msgtype, int(timestamp), data)
        except ReaderError as exc:
            raise BagError(self._storage_file(), self._explain(exc)) from exc
        except Exception as exc:  # a corrupt chunk surfaces as many exception types
            raise BagError(
                self._storage_file(), f"truncated or corrupt storage file ({exc!r})"
            ) from exc

    def deserialize(self, message: BagMessage) -> Any:
        """Decode a message into a rosbags object (numpy arrays for `uint8[]` data).

        Raises:
            BagError: for a type neither standard ROS 2 nor deepaf_msgs, or undecodable bytes.
        """
        if message.msgtype not in self.typestore.types:
            raise BagError(
                self.path,
                f"unknown message type {message.msgtype} on {message.topic}: not a standard "
                "ROS 2 type nor deepaf_msgs, so it cannot be decoded here",
            )
        try:
            return self.typestore.deserialize_cdr(message.data, message.msgtype)
        except Exception as exc:  # rosbags raises several types for bad CDR
            raise BagError(
                self._storage_file(),
                f"cannot decode a {message.msgtype} on {message.topic} at "
                f"{message.timestamp_ns} ns: {exc}",
            ) from exc

    def close(self) -> None:
        """Close the storage file."""
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
