"""BagPlayer: an rclpy node that publishes a bag into a running graph with the original timing.

Messages are published as the recorded CDR bytes (no decoding), each at
`start + (t - t0) / rate` on the wall clock, with the QoS the bag recorded for its topic.
Topics are renamed by `remaps` (`old:=new`, names as in the bag or relative to the recorded
namespace) or moved wholesale to another namespace.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import QosDurability, QosReliability

from .errors import BagError
from .reader import BagReader, TopicInfo
from .recorder import import_msg_type, resolve_topic

__all__ = ["BagPlayer", "PlayStats", "parse_remaps"]


@dataclass
class PlayStats:
    """What a playback did."""

    published: int
    wall_s: float
    bag_s: float
    max_lag_s: float


def parse_remaps(remaps: Sequence[str]) -> dict[str, str]:
    """`["a:=b", ...]` -> `{"a": "b"}`.

    Raises:
        ValueError: for an entry without `:=`.
    """
    out = {}
    for item in remaps:
        old, sep, new = item.partition(":=")
        if not sep or not old or not new:
            raise ValueError(f"bad remap {item!r}; write OLD:=NEW, e.g. camera/image_raw:=/x/image")
        out[old] = new
    return out


def _qos(info: TopicInfo) -> QoSProfile:
    """Publisher QoS from the first offered profile the bag recorded (reliable by default)."""
    qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST)
    if info.qos:
        offered = info.qos[0]
        if offered.reliability == QosReliability.BEST_EFFORT:
            qos.reliability = ReliabilityPolicy.BEST_EFFORT
        if offered.durability == QosDurability.TRANSIENT_LOCAL:
            qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
        qos.depth = max(1, int(offered.depth) or 10)
    return qos


class BagPlayer(Node):
    """Publishes the messages of `reader` (one pass); call :meth:`play`.

    Args:
        reader: An open bag.
        topics: Bag topics to play (absolute, or relative to the recorded namespace); all if
            empty.
        rate: Playback speed factor (2.0: twice as fast).
        remaps: Bag topic -> published topic.
        namespace: Publish the recorded namespace's topics under this one instead.

    Raises:
        BagError: for a missing topic or a type with no Python interface here.
        ValueError: for a rate <= 0.
    """

    def __init__(
        self,
        reader: BagReader,
        topics: Sequence[str] = (),
        rate: float = 1.0,
        remaps: Mapping[str, str] | None = None,
        namespace: str | None = None,
    ) -> None:
        super().__init__("bag_player")
        if not rate > 0:
            raise ValueError(f"--rate must be > 0, got {rate}")
        self._reader = reader
        self._rate = float(rate)
        recorded_ns = str(reader.info.get("namespace", "") or "")
        self.topics = reader.check_topics(
            [resolve_topic(t, recorded_ns or "/") for t in topics] or None
        )
        absolute_remaps = {
            resolve_topic(k, recorded_ns or "/"): resolve_topic(v, namespace or recorded_ns or "/")
            for k, v in (remaps or {}).items()
        }
        reader.check_topics(absolute_remaps)
        self.targets: dict[str, str] = {}
        self._pubs = {}
        for topic in self.topics:
            info = reader.topics[topic]
            target = absolute_remaps.get(topic) or self._move(topic, recorded_ns, namespace)
            try:
                msg_class = import_msg_type(info.msgtype)
            except (ImportError, ValueError) as exc:
                raise BagError(
                    reader.path,
                    f"cannot play {topic}: unknown message type {info.msgtype} here ({exc}); "
                    "leave it out with --topics",
                ) from exc
            self.targets[topic] = target
            self._pubs[topic] = self.create_publisher(msg_class, target, _qos(info))

    @staticmethod
    def _move(topic: str, recorded_ns: str, namespace: str | None) -> str:
        """`topic` moved from the recorded namespace to `namespace` (unchanged if None)."""
        if not namespace:
            return topic
        ns = "/" + namespace.strip("/")
        old = "/" + recorded_ns.strip("/") if recorded_ns.strip("/") else ""
        if old and (topic == old or topic.startswith(old + "/")):
            return ns.rstrip("/") + topic[len(old) :]
        return ns.rstrip("/") + topic

    def wait_for_subscribers(self, topics: Sequence[str], timeout: float) -> bool:
        """Wait until each of `topics` (bag names) has a matched subscriber; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._pubs[t].get_subscription_count() > 0 for t in topics):
                return True
            time.sleep(0.05)
        return False

    def play(self, delay: float = 0.0, flush_s: float = 5.0) -> PlayStats:
        """Publish every message at its original time (scaled by the rate).

        Then wait up to `flush_s` for reliable subscribers to acknowledge: a node destroyed
        right after its last publish drops what a slow reader has not fetched yet (at load,
        the bag's last message went missing).
        """
        if delay > 0:
            time.sleep(delay)
        published, max_lag = 0, 0.0
        start = time.monotonic()
        t0: int | None = None
        last_ns = 0
        for msg in self._reader.messages(self.topics):
            t0 = msg.timestamp_ns if t0 is None else t0
            due = start + (msg.timestamp_ns - t0) * 1e-9 / self._rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                max_lag = max(max_lag, now - due)
            self._publish(msg.topic, msg.data)
            published += 1
            last_ns = msg.timestamp_ns
        self.flush(flush_s)
        bag_s = (last_ns - t0) * 1e-9 if t0 is not None else 0.0
        return PlayStats(published, time.monotonic() - start, bag_s, max_lag)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every reliable publisher's messages are acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout_s
        ok = True
        for pub in self._pubs.values():
            if pub.qos_profile.reliability != ReliabilityPolicy.RELIABLE:
                continue
            left = max(0.0, deadline - time.monotonic())
            ok = pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))) and ok
        return ok

    def _publish(self, topic: str, data: bytes) -> None:
        """Publish raw bytes; retry briefly when a reliable writer's queue is full."""
        for attempt in range(20):
            try:
                self._pubs[topic].publish(data)
                return
            except Exception as exc:  # rclpy raises RCLError when the history is full
                if attempt == 19:
                    raise BagError(
                        self._reader.path, f"publishing on {topic} failed: {exc}"
                    ) from exc
                time.sleep(0.01)
