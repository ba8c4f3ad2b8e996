"""What the stepper-motor stages share: metres <-> steps, backlash, step bookkeeping.

A subclass drives the motors (`_drive`: relative steps per axis, stoppable) and opens its
device in `start()`. This class turns a target pose into backlash-compensating waypoints
(`backlash_waypoints`: every target is approached from below) and those into whole steps.
Positions are step counts x metres per step; `home()` zeroes the counters where the stage is
(the stepper stages have no end stops).
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from collections.abc import Sequence

from deepaf_driver.backends.base import (
    MoveResult,
    Pose,
    ProgressCallback,
    StageBackend,
    StopRequested,
    backlash_waypoints,
)


def _three(name: str, values: Sequence[float], positive: bool = False) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"{name} needs three values (x, y, z), got {list(values)}")
    if any(v == 0 for v in values) or (positive and any(v < 0 for v in values)):
        raise ValueError(f"{name} must be {'positive' if positive else 'non-zero'}: {values}")
    return values


class StepperStage(StageBackend):
    """Base of stages moved by steppers with an integer step count per axis.

    Args:
        steps_per_m: motor steps per metre of x, y, z (negative reverses an axis).
        backlash: lost motion of x, y, z on reversal [m] (>= 0).
        max_speed: top speed of x, y, z [m/s].
    """

    def __init__(
        self,
        steps_per_m: Sequence[float] = (2e5, 2e5, 2e6),
        backlash: Sequence[float] = (0.0, 0.0, 5e-6),
        max_speed: Sequence[float] = (2e-3, 2e-3, 0.5e-3),
    ) -> None:
        self.steps_per_m = _three("steps_per_m", steps_per_m)
        self.backlash = tuple(float(b) for b in backlash)
        if len(self.backlash) != 3 or any(b < 0 for b in self.backlash):
            raise ValueError(f"backlash needs three values >= 0 [m], got {list(backlash)}")
        self.max_speed = _three("max_speed", max_speed, positive=True)
        self._steps = [0, 0, 0]
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def to_steps(self, pose: Sequence[float]) -> list[int]:
        """Return the step counts of a pose (rounded to whole steps)."""
        return [round(v * s) for v, s in zip(pose, self.steps_per_m, strict=True)]

    def to_pose(self, steps: Sequence[int]) -> Pose:
        """Return the pose of step counts, in metres."""
        x, y, z = (n / s for n, s in zip(steps, self.steps_per_m, strict=True))
        return (x, y, z)

    def position(self) -> Pose:
        """Return the pose of the step counters."""
        with self._lock:
            return self.to_pose(self._steps)

    def _count(self, axis: int, steps: int) -> None:
        """Record steps taken on one axis (called by `_drive` as the motors move)."""
        with self._lock:
            self._steps[axis] += steps

    def halt(self) -> None:
        """Stop the running move after the current step."""
        self._halt.set()

    def move(
        self,
        target: Pose,
        speed_scale: float = 1.0,
        stop_requested: StopRequested = lambda: False,
        progress: ProgressCallback = lambda pose: None,
    ) -> MoveResult:
        """Move through the backlash waypoints, step by step, stoppable."""
        self._halt.clear()
        t0 = time.monotonic()

        def stop() -> bool:
            return self._halt.is_set() or stop_requested()

        for waypoint in backlash_waypoints(self.position(), target, self.backlash):
            with self._lock:
                deltas = [w - n for w, n in zip(self.to_steps(waypoint), self._steps, strict=True)]
            if any(deltas):
                self._drive(deltas, speed_scale, stop, progress)
            if stop():
                return MoveResult(self.position(), time.monotonic() - t0, stopped=True)
        progress(self.position())
        return MoveResult(self.position(), time.monotonic() - t0)

    def home(self) -> Pose:
        """Zero the step counters at the current position."""
        with self._lock:
            self._steps = [0, 0, 0]
        return self.position()

    def step_period(self, axis: int, speed_scale: float) -> float:
        """Seconds per step of `axis` at `speed_scale` x its top speed."""
        return 1.0 / (abs(self.steps_per_m[axis]) * self.max_speed[axis] * speed_scale)

    @abstractmethod
    def _drive(
        self,
        deltas: list[int],
        speed_scale: float,
        stop: StopRequested,
        progress: ProgressCallback,
    ) -> None:
        """Move each axis by `deltas` steps; count steps with `_count`; return when done or
        as soon as `stop()` is true."""
