"""Simulated x/y/z stage: limits, trapezoidal moves, settle time, backlash, z step.

Conventions (SI): x and y are the stage positions of the field-of-view centre on the
slide (metres, slide coordinates, see :mod:`.slide`); z is the height of the objective's
focal plane (metres; larger z = focal plane further from the slide glass). Every move
returns its simulated duration in seconds and advances :attr:`SimStage.clock_s`;
later benchmarks compare focusing strategies with this clock.

Backlash: the z lead screw loses ``backlash_m`` of travel when it reverses. With
``compensate_backlash=True`` (default) the stage always approaches a z target from
below (overshooting down by the backlash first when it must move down), so the actual
z equals the commanded z at the cost of extra travel time. With compensation off the
carriage stays up to ``backlash_m`` above the command after a downward move
(a play operator; see :attr:`SimStage.actual_z_m`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class StageLimits:
    """Soft travel limits in metres."""

    x_min_m: float = 0.0
    x_max_m: float = 15e-3
    y_min_m: float = 0.0
    y_max_m: float = 15e-3
    z_min_m: float = -500e-6
    z_max_m: float = 500e-6

    def check(self, x: float | None = None, y: float | None = None, z: float | None = None) -> None:
        """Raise ``ValueError`` naming the axis if a coordinate is outside the limits."""
        for axis, v, lo, hi in (
            ("x", x, self.x_min_m, self.x_max_m),
            ("y", y, self.y_min_m, self.y_max_m),
            ("z", z, self.z_min_m, self.z_max_m),
        ):
            if v is None:
                continue
            if not math.isfinite(v) or not lo <= v <= hi:
                raise ValueError(
                    f"stage {axis}={v * 1e3:.4f} mm outside its limits "
                    f"[{lo * 1e3:.4f}, {hi * 1e3:.4f}] mm; choose a position inside them"
                )


@dataclass(frozen=True)
class AxisDynamics:
    """Motion parameters of one axis."""

    max_speed_m_s: float
    accel_m_s2: float
    settle_s: float

    def move_time_s(self, distance_m: float) -> float:
        """Trapezoidal (or triangular) profile time for a move, plus settling."""
        d = abs(distance_m)
        if d == 0:
            return 0.0
        v, a = self.max_speed_m_s, self.accel_m_s2
        t = 2 * math.sqrt(d / a) if d < v * v / a else d / v + v / a
        return t + self.settle_s


class SimStage:
    """A simulated three-axis stage.

    Args:
        limits: soft limits.
        z_step_m: smallest z increment; commanded z is rounded to a multiple of it.
        xy: dynamics of x and y (moved simultaneously).
        z: dynamics of the focus axis.
        backlash_m: lost motion of the focus axis on reversal.
        compensate_backlash: approach every z target from below.
        position: initial (x, y, z).
    """

    def __init__(
        self,
        limits: StageLimits | None = None,
        z_step_m: float = 0.1e-6,
        xy: AxisDynamics | None = None,
        z: AxisDynamics | None = None,
        backlash_m: float = 2e-6,
        compensate_backlash: bool = True,
        position: tuple[float, float, float] | None = None,
    ) -> None:
        if z_step_m <= 0:
            raise ValueError(f"z_step_m must be positive, got {z_step_m}")
        self.limits = limits or StageLimits()
        self.z_step_m = float(z_step_m)
        self.xy = xy or AxisDynamics(max_speed_m_s=5e-3, accel_m_s2=50e-3, settle_s=0.05)
        self.z = z or AxisDynamics(max_speed_m_s=0.5e-3, accel_m_s2=5e-3, settle_s=0.02)
        self.backlash_m = float(backlash_m)
        self.compensate_backlash = compensate_backlash
        lim = self.limits
        x0, y0, z0 = position or (
            (lim.x_min_m + lim.x_max_m) / 2,
            (lim.y_min_m + lim.y_max_m) / 2,
            0.0,
        )
        lim.check(x0, y0, z0)
        self._x, self._y = float(x0), float(y0)
        self._z = self._quantize(z0)
        self._actual = self._z  # carriage z; in [command, command + backlash]
        self.clock_s = 0.0

    def _quantize(self, z: float) -> float:
        return round(z / self.z_step_m) * self.z_step_m

    @property
    def position(self) -> tuple[float, float, float]:
        """Commanded (x, y, z) in metres."""
        return (self._x, self._y, self._z)

    @property
    def actual_z_m(self) -> float:
        """Where the focal plane really is (differs from the command only with backlash)."""
        return self._actual

    def move_to(
        self, x: float | None = None, y: float | None = None, z: float | None = None
    ) -> float:
        """Move to absolute coordinates (None keeps an axis); returns simulated seconds.

        Raises:
            ValueError: a target outside the limits (nothing moves).
        """
        self.limits.check(x, y, z)
        t_xy = 0.0
        if x is not None or y is not None:
            nx = self._x if x is None else float(x)
            ny = self._y if y is None else float(y)
            t_xy = max(self.xy.move_time_s(nx - self._x), self.xy.move_time_s(ny - self._y))
            self._x, self._y = nx, ny
        t_z = 0.0
        if z is not None:
            t_z = self._move_z(self._quantize(float(z)))
        dt = max(t_xy, t_z)
        self.clock_s += dt
        return dt

    def move_by(self, dx: float = 0.0, dy: float = 0.0, dz: float = 0.0) -> float:
        """Relative move; returns simulated seconds."""
        return self.move_to(self._x + dx, self._y + dy, self._z + dz)

    def _move_z(self, target: float) -> float:
        d = target - self._z
        if d == 0:
            return 0.0
        if self.compensate_backlash and d < 0:
            # overshoot below the target by the backlash, then come up onto it
            t = self.z.move_time_s(abs(d) + self.backlash_m) + self.z.move_time_s(self.backlash_m)
            self._actual = target
        else:
            t = self.z.move_time_s(abs(d))
            # play operator: the carriage sits between the command and the command + slack
            self._actual = min(max(self._actual, target), target + self.backlash_m)
        self._z = target
        return t

    def wait(self, seconds: float) -> None:
        """Advance the clock (exposure, computation)."""
        if seconds < 0:
            raise ValueError("cannot wait a negative time")
        self.clock_s += float(seconds)
