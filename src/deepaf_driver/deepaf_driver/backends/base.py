"""The two small interfaces every camera and stage backend implements (ROS-free).

Backends are plain Python classes. Construction only stores configuration; devices open in
`start()` and close in `stop()`. The nodes translate between ROS messages and these calls.
Units are SI: metres, seconds. A pose is `(x, y, z)` = (stage_x, stage_y, focus_z).
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

Pose = tuple[float, float, float]

#: Called with the current pose while a move runs (feedback).
ProgressCallback = Callable[[Pose], None]
#: Polled while a move runs; True stops the move where it is (cancel, e-stop).
StopRequested = Callable[[], bool]


class BackendError(RuntimeError):
    """A backend could not do what was asked (device missing, library missing, fault)."""


def import_backend_library(module: str, extra: str) -> ModuleType:
    """Import a hardware library, or fail with the install command.

    Args:
        module: module to import, e.g. "adafruit_motorkit".
        extra: what to install, e.g. "pip install adafruit-circuitpython-motorkit".

    Raises:
        BackendError: the library is missing.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(
            f"this backend needs the Python module {module!r}, which is not installed "
            f"({exc}); install it with: {extra}"
        ) from exc


@dataclass(frozen=True)
class Limits:
    """Soft limits per axis in metres: ((x_min, x_max), (y_min, y_max), (z_min, z_max))."""

    x: tuple[float, float]
    y: tuple[float, float]
    z: tuple[float, float]

    def axes(self) -> tuple[tuple[float, float], ...]:
        """Return the three (min, max) pairs in x, y, z order."""
        return (self.x, self.y, self.z)

    def intersect(self, other: Limits) -> Limits:
        """Return the limits allowed by both."""
        pairs = [
            (max(a[0], b[0]), min(a[1], b[1]))
            for a, b in zip(self.axes(), other.axes(), strict=True)
        ]
        return Limits(*pairs)

    def shifted(self, offset: Sequence[float]) -> Limits:
        """Return the limits moved by `offset` per axis (backend -> machine coordinates)."""
        pairs = [(lo + o, hi + o) for (lo, hi), o in zip(self.axes(), offset, strict=True)]
        return Limits(*pairs)

    def empty_axes(self) -> list[str]:
        """Names of the axes whose range is empty (min >= max)."""
        return [
            name
            for name, (lo, hi) in zip(("stage_x", "stage_y", "focus_z"), self.axes(), strict=True)
            if not lo < hi
        ]

    def violation(self, pose: Sequence[float]) -> str:
        """Return why `pose` is outside the limits ("" when inside)."""
        for name, value, (lo, hi) in zip(
            ("stage_x", "stage_y", "focus_z"), pose, self.axes(), strict=True
        ):
            if not math.isfinite(value):
                return f"{name} target {value} is not a finite number of metres"
            if not lo <= value <= hi:
                return (
                    f"{name} target {value * 1e3:.4f} mm is outside the soft limits "
                    f"[{lo * 1e3:.4f}, {hi * 1e3:.4f}] mm"
                )
        return ""


@dataclass(frozen=True)
class MoveResult:
    """Outcome of a move: where the stage is, how long it took, whether it was stopped."""

    position: Pose
    duration: float
    stopped: bool = False


@dataclass(frozen=True)
class CapturedFrame:
    """A full-resolution frame and its exposure plus readout time (seconds)."""

    image: np.ndarray
    exposure_time: float


def backlash_waypoints(
    start: Sequence[float],
    target: Sequence[float],
    backlash: Sequence[float],
    lower: Sequence[float] = (-math.inf, -math.inf, -math.inf),
) -> list[Pose]:
    """Return the waypoints that approach `target` from below on every axis.

    An axis moving down overshoots by its backlash and comes back up, so every target is
    reached travelling in +direction and the lead screw's play is always taken up the same
    way. The overshoot never goes below `lower` (the soft limit: the objective must never
    hit the slide); close to it the compensation is partial.

    Args:
        start, target: poses in metres.
        backlash: play per axis in metres (0 = none).
        lower: lowest allowed value per axis.
    """
    over = [
        max(t - b, lo) if (t < s and b > 0) else t
        for s, t, b, lo in zip(start, target, backlash, lower, strict=True)
    ]
    waypoints: list[Pose] = []
    if any(o != t for o, t in zip(over, target, strict=True)):
        waypoints.append((over[0], over[1], over[2]))
    waypoints.append((float(target[0]), float(target[1]), float(target[2])))
    return waypoints


class CameraBackend(ABC):
    """A camera: a preview stream and full-resolution stills.

    Args:
        preview_size: (width, height) of preview frames.
        capture_size: (width, height) of full-resolution captures.
    """

    #: True when frames depend on the pose handed in (a simulator renders the world there).
    renders_pose = False

    def __init__(self, preview_size: tuple[int, int], capture_size: tuple[int, int]) -> None:
        self.preview_size = preview_size
        self.capture_size = capture_size

    @abstractmethod
    def start(self) -> None:
        """Open the device."""

    @abstractmethod
    def stop(self) -> None:
        """Close the device; also releases any call blocked in preview() or capture()."""

    @abstractmethod
    def preview(self, pose: Pose) -> np.ndarray:
        """Return the next preview frame, uint8 HxWx3 RGB (blocks up to a frame period)."""

    @abstractmethod
    def capture(self, pose: Pose, timeout: float) -> CapturedFrame:
        """Return one full-resolution RGB frame (blocks; the node bounds it by `timeout`)."""


class StageBackend(ABC):
    """A three-axis stage (stage_x, stage_y, focus_z) in metres.

    Positions are the backend's own coordinates (step counters, a simulator's truth). The
    stage node maps them to machine coordinates with the reference it holds (see
    `deepaf_driver.reference`); a backend never re-zeroes its counters on its own.
    """

    #: True when `position()` is absolute from `start()` on (a simulator, absolute encoders):
    #: the stage node then does not require a reference procedure by default.
    absolute = False

    @abstractmethod
    def start(self) -> None:
        """Open the device."""

    @abstractmethod
    def stop(self) -> None:
        """Close the device (motors released)."""

    @abstractmethod
    def position(self) -> Pose:
        """Return the current pose; during a move, where the stage is now."""

    @abstractmethod
    def move(
        self,
        target: Pose,
        speed_scale: float = 1.0,
        stop_requested: StopRequested = lambda: False,
        progress: ProgressCallback = lambda pose: None,
    ) -> MoveResult:
        """Move to `target` (absolute, already within limits) and return where it ended.

        Polls `stop_requested` at least every 50 ms; when it returns True the motion stops
        where it is and `MoveResult.stopped` is True. Calls `progress` as it goes.
        """

    def move_time(self, start: Pose, target: Pose, speed_scale: float = 1.0) -> float | None:
        """Wall seconds a move from `start` to `target` should take (None: unknown).

        The stage node's watchdog stops a move that runs well past this (a stall, a hung
        bus, a runaway); a backend that returns None gets the node's fallback bound.
        """
        return None

    def counter_session(self) -> str | None:
        """Identify the epoch of the position counters, or None when it cannot be known.

        A persisted reference is restored at start-up only when the backend reports the same
        non-None session it was saved under: the counters then still count from the same
        origin. None (the default, and every stepper board here): the counters may not have
        survived (a restart, a power cycle, a knob turned by hand), so the stage must be
        referenced again.
        """
        return None

    def has_endstops(self) -> bool:
        """True when `seek_endstops()` can reference the stage (switches on every axis)."""
        return False

    def seek_endstops(self, stop_requested: StopRequested = lambda: False) -> Pose:
        """Drive every axis onto its endstop; return where the switches triggered.

        The returned pose (backend coordinates) is the stage's reference: the node maps it to
        its `reference_position`. Stops (raising) when `stop_requested()` becomes true.

        Raises:
            BackendError: no endstops, a switch not found within its travel, stopped.
        """
        raise BackendError(
            "this stage has no endstops; jog it to its mechanical reference and call "
            "stage/set_reference"
        )

    def home_target(self) -> Pose | None:
        """A pose `stage/home` moves to when the stage has no endstops (None: none)."""
        return None

    def halt(self) -> None:  # noqa: B027 (optional hook; moves also poll stop_requested)
        """Stop any motion now, from another thread (emergency stop)."""

    def limits(self) -> Limits | None:
        """Hard travel limits of the mechanism in backend coordinates, if it knows them."""
        return None
