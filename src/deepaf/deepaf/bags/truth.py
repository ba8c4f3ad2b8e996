"""Ground truth for recorded images: the stage pose at each image and its best-focus z.

Poses come from the bag's `joint_states` (the last state stamped at or before the image).
Best focus comes from, in order: a known best-focus z in the bag's DeepAf context
(`best_focus_z_m`: a focal stack whose truth is known) or the simulator the bag was recorded
on (`profile`, `protocol` or `protocol_params`, `slide_seed`, `slide` (artefact spec; "plain"
when absent): `VirtualMicroscope.best_focus_z`).
"""

from __future__ import annotations

import bisect
import json
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["PoseTrack", "TruthSource", "stamp_ns", "truth_source"]

Pose = tuple[float, float, float]


def stamp_ns(header: Any) -> int:
    """Header stamp in nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class PoseTrack:
    """The most recent stage poses (bounded), looked up by image stamp."""

    def __init__(self, keep: int = 2000) -> None:
        self._stamps: deque[int] = deque(maxlen=keep)
        self._poses: deque[Pose] = deque(maxlen=keep)

    def add(self, msg: Any) -> None:
        """Add a decoded JointState (ignored when it lacks a stage joint)."""
        from deepaf_driver.conversions import joint_state_to_pose

        try:
            pose = joint_state_to_pose(msg)
        except ValueError:
            return
        t = stamp_ns(msg.header)
        if self._stamps and t < self._stamps[-1]:
            return  # out of order: keep the track sorted
        self._stamps.append(t)
        self._poses.append(pose)

    def at(self, t_ns: int) -> Pose | None:
        """Pose of the last state stamped at or before `t_ns` (else the first one), or None."""
        if not self._stamps:
            return None
        i = bisect.bisect_right(self._stamps, t_ns) - 1
        return self._poses[max(i, 0)]


class TruthSource:
    """Best-focus z (m) at a stage position, and where it comes from."""

    def __init__(self, name: str, best_z: Callable[[float, float], float]) -> None:
        self.name = name
        self._best_z = best_z

    def best_z(self, x_m: float, y_m: float) -> float:
        """Best-focus z (m) of the field centred at (x, y)."""
        return float(self._best_z(x_m, y_m))


def _protocol(info: Mapping[str, Any]) -> Any:
    params = info.get("protocol_params")
    if isinstance(params, str) and params.strip().startswith("{"):
        params = json.loads(params)
    if isinstance(params, dict) and params:
        from deepaf_driver.sim import Protocol

        return Protocol.from_dict(params)
    return str(info["protocol"])


def truth_source(info: Mapping[str, Any], profile: str) -> TruthSource | None:
    """The ground truth a bag's DeepAf context allows, or None.

    Raises:
        ValueError: for a context naming an unknown profile or protocol.
    """
    if info.get("best_focus_z_m") not in (None, ""):
        best = float(info["best_focus_z_m"])
        if math.isfinite(best):
            return TruthSource("focal stack", lambda x, y: best)
    if info.get("slide_seed") not in (None, "") and (
        info.get("protocol") or info.get("protocol_params")
    ):
        from deepaf_driver.sim import VirtualMicroscope

        scope = VirtualMicroscope(
            profile=profile,
            protocol=_protocol(info),
            slide_seed=int(info["slide_seed"]),
            slide=info.get("slide") or "plain",  # bags from before the slide specs: plain
        )
        return TruthSource("simulator", scope.best_focus_z)
    return None
