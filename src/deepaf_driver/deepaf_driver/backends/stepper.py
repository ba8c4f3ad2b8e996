"""What the stepper-motor stages share: metres <-> steps, backlash, step bookkeeping.

A subclass drives the motors (`_drive`: relative steps per axis, stoppable) and opens its
device in `start()`. This class turns a target pose into backlash-compensating waypoints
(`backlash_waypoints`: every target is approached from below) and those into whole steps.
Positions are step counts x metres per step, counted from wherever the stage was when the
counters started: they are not absolute, and a restart or power cycle loses them
(`counter_session()` is None), so the stage node requires a reference before absolute moves.

Endstops (optional): `endstops` names one switch per axis as "PIN:END[:ACTIVE]", e.g.
"D17:min", "D22:max:high": a Raspberry Pi GPIO pin read through Adafruit Blinka (`board`,
`digitalio`), the end of travel it sits at (min | max), and the level it reads when pressed
(low, the default: a switch closing to ground with the pull-up on; high: pull-down). All three
axes or none. `seek_endstops()` homes focus_z first (its switch belongs at max, away from the
slide), then x, then y, each at `homing_speed`, searching at most `endstop_travel`, and
returns the counter pose at which the switches closed; the counters are not re-zeroed.
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from deepaf_driver.backends.base import (
    BackendError,
    MoveResult,
    Pose,
    ProgressCallback,
    StageBackend,
    StopRequested,
    backlash_waypoints,
    import_backend_library,
)

BLINKA = "pip install adafruit-blinka"
_AXIS_NAMES = ("stage_x", "stage_y", "focus_z")
#: Distance backed off a switch after it closed (and before a search that starts on it) [m].
ENDSTOP_BACKOFF = 0.2e-3


@dataclass(frozen=True)
class Endstop:
    """One axis's switch: GPIO pin name, the end of travel it sits at, its pressed level."""

    pin: str
    end: str  # "min" | "max"
    active_high: bool = False


def parse_endstops(specs: Sequence[str]) -> list[Endstop] | None:
    """Parse three "PIN:min|max[:low|high]" entries (or three "": no endstops).

    Raises:
        ValueError: malformed, or only some axes have a switch.
    """
    specs = [str(s).strip() for s in specs]
    if len(specs) != 3:
        raise ValueError(f"endstops needs three entries (x, y, z; '' = none), got {specs}")
    if not any(specs):
        return None
    if not all(specs):
        raise ValueError(f"endstops must name a switch on all three axes or none: {specs}")
    parsed = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or parts[1] not in ("min", "max"):
            raise ValueError(f"endstop {spec!r} must look like 'D17:min' or 'D22:max:high'")
        level = parts[2] if len(parts) == 3 else "low"
        if level not in ("low", "high"):
            raise ValueError(f"endstop {spec!r}: the pressed level is low or high")
        parsed.append(Endstop(parts[0], parts[1], level == "high"))
    return parsed


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
        endstops: one "PIN:min|max[:low|high]" per axis, or three "" (no endstops).
        endstop_travel: longest distance searched for each switch [m] (> 0).
        homing_speed: speed_scale of the endstop search, in (0, 1].
        switches: callables returning True while a switch is pressed, one per axis, instead of
            GPIO pins (tests, other boards); enables homing without `endstops`.
    """

    def __init__(
        self,
        steps_per_m: Sequence[float] = (2e5, 2e5, 2e6),
        backlash: Sequence[float] = (0.0, 0.0, 5e-6),
        max_speed: Sequence[float] = (2e-3, 2e-3, 0.5e-3),
        endstops: Sequence[str] = ("", "", ""),
        endstop_travel: Sequence[float] = (30e-3, 30e-3, 5e-3),
        homing_speed: float = 0.2,
        switches: Sequence[Callable[[], bool]] | None = None,
    ) -> None:
        self.steps_per_m = _three("steps_per_m", steps_per_m)
        self.backlash = tuple(float(b) for b in backlash)
        if len(self.backlash) != 3 or any(b < 0 for b in self.backlash):
            raise ValueError(f"backlash needs three values >= 0 [m], got {list(backlash)}")
        self.max_speed = _three("max_speed", max_speed, positive=True)
        self.endstops = parse_endstops(endstops)
        self.endstop_travel = _three("endstop_travel", endstop_travel, positive=True)
        if not 0 < homing_speed <= 1:
            raise ValueError(f"homing_speed must be in (0, 1], got {homing_speed}")
        self.homing_speed = float(homing_speed)
        if switches is not None and len(switches) != 3:
            raise ValueError("switches needs one callable per axis (x, y, z)")
        self._switches: list[Callable[[], bool]] | None = list(switches) if switches else None
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

    def move_time(self, start: Pose, target: Pose, speed_scale: float = 1.0) -> float:
        """Seconds of stepping a move takes (axes one after the other, backlash included)."""
        total, here = 0.0, self.to_steps(start)
        for waypoint in backlash_waypoints(start, target, self.backlash):
            there = self.to_steps(waypoint)
            total += sum(
                abs(b - a) * self.step_period(axis, speed_scale)
                for axis, (a, b) in enumerate(zip(here, there, strict=True))
            )
            here = there
        return total

    # ------------------------------------------------------------------ endstops
    def _open_endstops(self) -> None:
        """Open the endstop GPIO pins (subclasses call this in `start()`)."""
        if self.endstops is None or self._switches is not None:
            return
        board = import_backend_library("board", BLINKA)
        digitalio = import_backend_library("digitalio", BLINKA)
        switches = []
        for stop in self.endstops:
            try:
                pin = digitalio.DigitalInOut(getattr(board, stop.pin))
            except AttributeError:
                raise BackendError(
                    f"endstop pin {stop.pin!r} does not exist on this board"
                ) from None
            pull = digitalio.Pull.DOWN if stop.active_high else digitalio.Pull.UP
            pin.switch_to_input(pull=pull)
            switches.append(lambda pin=pin, level=stop.active_high: bool(pin.value) == level)
        self._switches = switches

    def has_endstops(self) -> bool:
        """True when switches are configured on every axis."""
        return self.endstops is not None or self._switches is not None

    def seek_endstops(self, stop_requested: StopRequested = lambda: False) -> Pose:
        """Home z, then x, then y onto their switches; return the counter pose where they closed.

        Raises:
            BackendError: no endstops, a switch not reached within `endstop_travel`, stopped.
        """
        if not self.has_endstops():
            return super().seek_endstops(stop_requested)
        if self._switches is None:
            raise BackendError("endstops used before start()")
        self._halt.clear()
        trigger = list(self.position())
        for axis in (2, 0, 1):
            trigger[axis] = self._seek_axis(axis, stop_requested)
        return (trigger[0], trigger[1], trigger[2])

    def _seek_axis(self, axis: int, stop_requested: StopRequested) -> float:
        """Drive one axis onto its switch; return the position at which it closed [m]."""
        pressed = self._switches[axis]
        toward = -1.0 if self.endstops is None or self.endstops[axis].end == "min" else 1.0
        name = _AXIS_NAMES[axis]

        def steps(metres: float) -> list[int]:
            deltas = [0, 0, 0]
            deltas[axis] = round(metres * self.steps_per_m[axis])
            return deltas

        def halted() -> bool:
            return self._halt.is_set() or stop_requested()

        def quiet(_pose: Pose) -> None:
            return None

        if pressed():  # starts on the switch: back off first, so the edge is found approaching
            away = 5 * ENDSTOP_BACKOFF
            self._drive(
                steps(-toward * away), self.homing_speed, lambda: not pressed() or halted(), quiet
            )
            if not halted() and pressed():
                raise BackendError(
                    f"the {name} endstop stays closed {away * 1e3:.1f} mm away from it; check "
                    "its wiring and its pressed level (':low' or ':high' in `endstops`)"
                )
        if not halted():
            self._drive(
                steps(toward * self.endstop_travel[axis]),
                self.homing_speed,
                lambda: pressed() or halted(),
                quiet,
            )
        if halted():
            raise BackendError(f"homing stopped while seeking the {name} endstop")
        if not pressed():
            raise BackendError(
                f"the {name} endstop did not close within {self.endstop_travel[axis] * 1e3:.1f} "
                "mm of travel; check its wiring and `endstops`, or raise `endstop_travel`"
            )
        at = self.position()[axis]
        self._drive(steps(-toward * ENDSTOP_BACKOFF), self.homing_speed, halted, quiet)
        return at

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
