"""Serpentine scan path over a rectangular stage region.

The scan starts at the BOTTOM-RIGHT corner of the region: row 0 holds the lowest stage y,
column 0 the highest stage x. Row 0 is traversed right to left (decreasing x), row 1 left
to right, and so on, so consecutive fields are always neighbours. Fields are centred on
the region, so the grid covers it symmetrically (it overhangs by the same amount on both
sides when the region is not a whole number of steps).

All quantities are metres.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "Field",
    "Limits",
    "ScanGrid",
    "XYLimits",
    "check_within_limits",
    "plan_grid",
    "plan_serpentine",
]

_EPS = 1e-12  # relative tolerance when counting steps (floating-point slack)


@dataclass(frozen=True)
class Field:
    """One field of view of the scan.

    Args:
        index: Position in scan order (0-based).
        row: Grid row, 0 = lowest y.
        col: Grid column, 0 = highest x.
        x: Stage x of the field centre (m).
        y: Stage y of the field centre (m).
    """

    index: int
    row: int
    col: int
    x: float
    y: float


class XYLimits(Protocol):
    """Stage travel limits in metres (:class:`Limits` and ``deepaf_driver.sim.StageLimits``
    satisfy it)."""

    @property
    def x_min_m(self) -> float: ...
    @property
    def x_max_m(self) -> float: ...
    @property
    def y_min_m(self) -> float: ...
    @property
    def y_max_m(self) -> float: ...


@dataclass
class Limits:
    """Soft limits of the stage [m], (min, max) per axis: what a scan must stay inside."""

    x: tuple[float, float]
    y: tuple[float, float]
    z: tuple[float, float]

    @property
    def x_min_m(self) -> float:
        return self.x[0]

    @property
    def x_max_m(self) -> float:
        return self.x[1]

    @property
    def y_min_m(self) -> float:
        return self.y[0]

    @property
    def y_max_m(self) -> float:
        return self.y[1]


@dataclass(frozen=True)
class ScanGrid:
    """A planned serpentine grid: its geometry and the fields in scan order.

    Args:
        n_rows: Number of rows (along y).
        n_cols: Number of columns (along x).
        step_xy: Centre-to-centre distance of neighbouring fields (m).
        field_of_view_xy: Size of one field (m).
        fields: The fields in scan order.
    """

    n_rows: int
    n_cols: int
    step_xy: tuple[float, float]
    field_of_view_xy: tuple[float, float]
    fields: list[Field] = field(default_factory=list)

    @property
    def covered_min_xy(self) -> tuple[float, float]:
        """Lower corner of the area imaged by the grid (m)."""
        xs = [f.x for f in self.fields]
        ys = [f.y for f in self.fields]
        return (min(xs) - self.field_of_view_xy[0] / 2, min(ys) - self.field_of_view_xy[1] / 2)

    @property
    def covered_max_xy(self) -> tuple[float, float]:
        """Upper corner of the area imaged by the grid (m)."""
        xs = [f.x for f in self.fields]
        ys = [f.y for f in self.fields]
        return (max(xs) + self.field_of_view_xy[0] / 2, max(ys) + self.field_of_view_xy[1] / 2)

    def field_at(self, row: int, col: int) -> Field:
        """The field at grid ``(row, col)``.

        Raises:
            IndexError: outside the grid.
        """
        if not (0 <= row < self.n_rows and 0 <= col < self.n_cols):
            raise IndexError(f"({row}, {col}) outside the {self.n_rows}x{self.n_cols} grid")
        k = col if row % 2 == 0 else self.n_cols - 1 - col
        return self.fields[row * self.n_cols + k]


def _pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    if isinstance(value, int | float):
        return float(value), float(value)
    vals = tuple(float(v) for v in value)
    if len(vals) != 2:
        raise ValueError(f"{name} needs two values (x, y), got {len(vals)}")
    return vals[0], vals[1]


def _count(extent: float, fov: float, step: float) -> int:
    """Fields needed to cover ``extent`` with fields ``fov`` wide, ``step`` apart."""
    if extent <= fov:
        return 1
    return math.ceil((extent - fov) / step * (1 - _EPS)) + 1


def plan_grid(
    region_min_xy: Sequence[float],
    region_max_xy: Sequence[float],
    field_of_view_xy: float | Sequence[float],
    overlap: float = 0.1,
    step: float | Sequence[float] | None = None,
) -> ScanGrid:
    """Plan a serpentine grid covering a region, starting at its bottom-right corner.

    Args:
        region_min_xy: Lower (x, y) corner of the region (m).
        region_max_xy: Upper (x, y) corner (m).
        field_of_view_xy: Field of view (m): one value for square fields or (width, height).
        overlap: Fraction of the field of view shared by neighbours, in [0, 0.5).
        step: Centre-to-centre step (m), one value or (x, y); ``None`` derives it as
            ``field_of_view * (1 - overlap)``. An explicit step overrides ``overlap``.

    Returns:
        The grid, with ``fields`` in scan order.

    Raises:
        ValueError: for an empty or inverted region, a non-positive field of view or step,
            an overlap outside [0, 0.5), or a step larger than the field of view (gaps).
    """
    (x0, y0), (x1, y1) = (
        _pair(region_min_xy, "region_min_xy"),
        _pair(region_max_xy, "region_max_xy"),
    )
    if not all(map(math.isfinite, (x0, y0, x1, y1))):
        raise ValueError(f"region corners must be finite, got {(x0, y0)} and {(x1, y1)}")
    if not (x1 > x0 and y1 > y0):
        raise ValueError(
            f"empty or inverted region: min {(x0, y0)} m, max {(x1, y1)} m; "
            "region_max must exceed region_min on both axes"
        )
    fov = _pair(field_of_view_xy, "field_of_view_xy")
    if not all(math.isfinite(v) and v > 0 for v in fov):
        raise ValueError(f"field of view must be positive, got {fov} m")
    if not (math.isfinite(overlap) and 0.0 <= overlap < 0.5):
        raise ValueError(f"overlap must be in [0, 0.5), got {overlap}")
    steps = (
        (fov[0] * (1 - overlap), fov[1] * (1 - overlap)) if step is None else _pair(step, "step")
    )
    for axis, s, f in zip("xy", steps, fov, strict=True):
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"step along {axis} must be positive, got {s} m")
        if s > f * (1 + 1e-9):
            raise ValueError(
                f"step along {axis} ({s * 1e6:.1f} um) exceeds the field of view "
                f"({f * 1e6:.1f} um) and would leave gaps; use a step <= the field of view"
            )
    n_cols = _count(x1 - x0, fov[0], steps[0])
    n_rows = _count(y1 - y0, fov[1], steps[1])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    x_high = cx + (n_cols - 1) * steps[0] / 2  # column 0 (right)
    y_low = cy - (n_rows - 1) * steps[1] / 2  # row 0 (bottom)
    fields: list[Field] = []
    for row in range(n_rows):
        cols = range(n_cols) if row % 2 == 0 else range(n_cols - 1, -1, -1)
        for col in cols:
            fields.append(
                Field(len(fields), row, col, x_high - col * steps[0], y_low + row * steps[1])
            )
    return ScanGrid(n_rows, n_cols, steps, fov, fields)


def plan_serpentine(
    region_min_xy: Sequence[float],
    region_max_xy: Sequence[float],
    field_of_view_xy: float | Sequence[float],
    overlap: float = 0.1,
    step: float | Sequence[float] | None = None,
) -> list[Field]:
    """The fields of :func:`plan_grid` in scan order (same arguments and errors)."""
    return plan_grid(region_min_xy, region_max_xy, field_of_view_xy, overlap, step).fields


def check_within_limits(
    fields: Iterable[Field],
    limits: XYLimits,
    field_of_view_xy: float | Sequence[float] | None = None,
) -> None:
    """Check that every field centre (or, with a field of view, every field) is reachable.

    Args:
        fields: Fields to check.
        limits: Stage limits with ``x_min_m``, ``x_max_m``, ``y_min_m``, ``y_max_m``.
        field_of_view_xy: When given, the whole field (centre +/- half the field of view)
            must lie inside the limits, not only its centre.

    Raises:
        ValueError: naming the first offending field and the limit it violates.
    """
    hx, hy = (0.0, 0.0) if field_of_view_xy is None else _pair(field_of_view_xy, "fov")
    hx, hy = hx / 2, hy / 2
    for f in fields:
        for axis, v, h, lo, hi in (
            ("x", f.x, hx, limits.x_min_m, limits.x_max_m),
            ("y", f.y, hy, limits.y_min_m, limits.y_max_m),
        ):
            if v - h < lo - _EPS or v + h > hi + _EPS:
                raise ValueError(
                    f"field {f.index} (row {f.row}, col {f.col}) at {axis}={v * 1e3:.4f} mm "
                    f"is outside the stage limits [{lo * 1e3:.4f}, {hi * 1e3:.4f}] mm; "
                    "shrink the region or move it inside the stage travel"
                )
