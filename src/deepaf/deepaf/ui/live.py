"""The dashboard's pure logic (no ROS, no web framework): live-frame packing, the newest-frame
slot that drops frames instead of building lag, jog steps suited to the optics profile, and
the checks of a scan region typed in millimetres.
"""

from __future__ import annotations

import json
import math
import struct
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepaf.ui.dzi import encode_jpeg

#: Jog sizes the page offers; only these (bounded, relative) moves are accepted.
JOG_SIZES = ("fine", "coarse")
AXES = ("x", "y", "z")


@dataclass(frozen=True)
class Limits:
    """Soft limits of the stage [m] (the stage node enforces them; the page shows them)."""

    x_min: float = 0.0
    x_max: float = 0.015
    y_min: float = 0.0
    y_max: float = 0.015
    z_min: float = -0.0005
    z_max: float = 0.0005

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Limits:
        """From the stage node's parameters (missing keys keep the defaults)."""
        fields = {k: float(params[k]) for k in cls.__dataclass_fields__ if k in params}
        return cls(**fields)


@dataclass(frozen=True)
class JogSteps:
    """Relative move per jog [m]: x/y in fractions of the field of view, z in depth of field."""

    xy_fine: float
    xy_coarse: float
    z_fine: float
    z_coarse: float
    depth_of_field: float

    def delta(self, axis: str, direction: int, size: str) -> tuple[float, float, float]:
        """(dx, dy, dz) of one jog.

        Raises:
            ValueError: an axis, direction or size the page does not offer.
        """
        if axis not in AXES:
            raise ValueError(f"axis {axis!r} is not one of x, y, z")
        if direction not in (-1, 1):
            raise ValueError(f"direction {direction!r} must be -1 or +1")
        if size not in JOG_SIZES:
            raise ValueError(f"size {size!r} is not one of {', '.join(JOG_SIZES)}")
        step = {
            ("xy", "fine"): self.xy_fine,
            ("xy", "coarse"): self.xy_coarse,
            ("z", "fine"): self.z_fine,
            ("z", "coarse"): self.z_coarse,
        }["z" if axis == "z" else "xy", size]
        out = [0.0, 0.0, 0.0]
        out[AXES.index(axis)] = direction * step
        return (out[0], out[1], out[2])

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def _nice(value: float) -> float:
    """Round down to 1, 2 or 5 x a power of ten."""
    exp = math.floor(math.log10(value))
    base = value / 10**exp
    return (5 if base >= 5 else 2 if base >= 2 else 1) * 10**exp


def jog_steps(profile: str, field_of_view_m: float | None = None) -> JogSteps:
    """Jog steps for an optics profile: x/y a tenth and a half of the field of view (rounded to
    1-2-5), z half and two depths of field.

    Args:
        profile: "4x", "20x" (deepaf_driver.profiles).
        field_of_view_m: width of the capture field (default: a 4056-pixel sensor).
    """
    from deepaf_driver.profiles import get_profile

    optics = get_profile(profile)
    fov = field_of_view_m or 4056 * optics.pixel_size_m
    dof = optics.depth_of_field_m
    return JogSteps(_nice(fov / 10), _nice(fov / 2), 0.5 * dof, 2.0 * dof, dof)


def parse_region_mm(value: Any, limits: Limits) -> tuple[tuple[float, float], tuple[float, float]]:
    """A region [x0, y0, x1, y1] in mm (list or "x0,y0,x1,y1") -> ((x0, y0), (x1, y1)) in m.

    Raises:
        ValueError: not four finite numbers, zero area, inverted, or outside the soft limits
            (the message says which and what to give instead).
    """
    if isinstance(value, str):
        value = value.split(",")
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"region {value!r}: expected four numbers x0,y0,x1,y1 in mm") from None
    if len(values) != 4:
        raise ValueError(f"region {value!r}: expected four numbers x0,y0,x1,y1 in mm")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"region {values}: every corner must be a finite number")
    x0, y0, x1, y1 = values
    if x0 == x1 or y0 == y1:
        raise ValueError(f"region {values} has zero area: give the lower and the upper corner")
    if x1 < x0 or y1 < y0:
        raise ValueError(f"region {values} is inverted: give the lower corner first")
    lo = (limits.x_min * 1e3, limits.y_min * 1e3)
    hi = (limits.x_max * 1e3, limits.y_max * 1e3)
    if x0 < lo[0] or y0 < lo[1] or x1 > hi[0] or y1 > hi[1]:
        raise ValueError(
            f"region {values} mm leaves the stage's soft limits "
            f"x {lo[0]:g}..{hi[0]:g}, y {lo[1]:g}..{hi[1]:g} mm"
        )
    return (x0 * 1e-3, y0 * 1e-3), (x1 * 1e-3, y1 * 1e-3)


def pack_frame(meta: dict[str, Any], jpeg: bytes) -> bytes:
    """One live-view WebSocket message: 4-byte big-endian header length, JSON header, JPEG."""
    header = json.dumps(meta, separators=(",", ":")).encode()
    return struct.pack(">I", len(header)) + header + jpeg


def unpack_frame(message: bytes) -> tuple[dict[str, Any], bytes]:
    """Inverse of :func:`pack_frame`.

    Raises:
        ValueError: a message too short for its header.
    """
    if len(message) < 4:
        raise ValueError("frame message shorter than its length prefix")
    (n,) = struct.unpack(">I", message[:4])
    if len(message) < 4 + n:
        raise ValueError("frame message shorter than its header")
    return json.loads(message[4 : 4 + n]), message[4 + n :]


def encode_preview(rgb: np.ndarray, quality: int = 80, max_width: int = 1280) -> bytes:
    """JPEG of a preview frame (rgb8), downscaled to at most `max_width` pixels wide."""
    if rgb.shape[1] > max_width:
        import cv2

        h = round(rgb.shape[0] * max_width / rgb.shape[1])
        rgb = cv2.resize(rgb, (max_width, h), interpolation=cv2.INTER_AREA)
    return encode_jpeg(rgb, quality)


class LatestSlot:
    """Holds only the newest item; a reader that falls behind skips, never queues.

    `put` from any thread; `take` returns the newest item not yet taken (or None) and how many
    were overwritten unseen since the last take.
    """

    def __init__(self) -> None:
        self._item: Any = None
        self._fresh = False
        self._dropped = 0
        self._lock = threading.Lock()

    def put(self, item: Any) -> None:
        with self._lock:
            if self._fresh:
                self._dropped += 1
            self._item, self._fresh = item, True

    def take(self) -> tuple[Any, int]:
        with self._lock:
            if not self._fresh:
                return None, 0
            item, dropped = self._item, self._dropped
            self._fresh, self._dropped = False, 0
            return item, dropped

    @property
    def fresh(self) -> bool:
        return self._fresh
