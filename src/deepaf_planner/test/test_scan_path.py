"""Serpentine scan path: golden grids, coverage and bad input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from deepaf_planner.scan_path import Field, check_within_limits, plan_grid, plan_serpentine


@dataclass(frozen=True)
class Limits:
    x_min_m: float = 0.0
    x_max_m: float = 10e-3
    y_min_m: float = 0.0
    y_max_m: float = 10e-3


def _rounded(fields: list[Field]) -> list[tuple]:
    return [(f.index, f.row, f.col, round(f.x, 9), round(f.y, 9)) for f in fields]


def test_golden_3x2_no_overlap_starts_bottom_right() -> None:
    fields = plan_serpentine((0, 0), (3, 2), 1.0, overlap=0.0)
    assert _rounded(fields) == [
        (0, 0, 0, 2.5, 0.5),
        (1, 0, 1, 1.5, 0.5),
        (2, 0, 2, 0.5, 0.5),
        (3, 1, 2, 0.5, 1.5),
        (4, 1, 1, 1.5, 1.5),
        (5, 1, 0, 2.5, 1.5),
    ]


def test_golden_overlap_centres_the_grid() -> None:
    fields = plan_serpentine((0, 0), (2.5e-3, 1e-3), 1e-3, overlap=0.1)
    assert _rounded(fields) == [
        (0, 0, 0, 0.00215, 0.0005),
        (1, 0, 1, 0.00125, 0.0005),
        (2, 0, 2, 0.00035, 0.0005),
    ]


def test_golden_rectangular_field_and_explicit_step() -> None:
    grid = plan_grid((1e-3, 2e-3), (3e-3, 3.2e-3), (1e-3, 0.75e-3), step=(0.8e-3, 0.6e-3))
    assert (grid.n_rows, grid.n_cols) == (2, 3)
    assert _rounded(grid.fields) == [
        (0, 0, 0, 0.0028, 0.0023),
        (1, 0, 1, 0.002, 0.0023),
        (2, 0, 2, 0.0012, 0.0023),
        (3, 1, 2, 0.0012, 0.0029),
        (4, 1, 1, 0.002, 0.0029),
        (5, 1, 0, 0.0028, 0.0029),
    ]
    assert grid.field_at(1, 0).index == 5
    with pytest.raises(IndexError):
        grid.field_at(2, 0)


def test_exact_multiple_needs_no_extra_column() -> None:
    grid = plan_grid((0, 0), (1.9e-3, 1e-3), 1e-3, overlap=0.1)
    assert (grid.n_rows, grid.n_cols) == (1, 2)


def test_consecutive_fields_are_neighbours_and_region_is_covered() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        lo = rng.uniform(0, 5e-3, 2)
        hi = lo + rng.uniform(0.1e-3, 6e-3, 2)
        fov = rng.uniform(0.3e-3, 2e-3, 2)
        grid = plan_grid(lo, hi, fov, overlap=float(rng.uniform(0, 0.45)))
        cmin, cmax = np.array(grid.covered_min_xy), np.array(grid.covered_max_xy)
        assert np.all(cmin <= lo + 1e-12) and np.all(cmax >= hi - 1e-12)
        # symmetric overhang: the grid is centred on the region
        np.testing.assert_allclose(lo - cmin, cmax - hi, atol=1e-12)
        assert [f.index for f in grid.fields] == list(range(grid.n_rows * grid.n_cols))
        for a, b in zip(grid.fields, grid.fields[1:], strict=False):
            assert abs(a.row - b.row) + abs(a.col - b.col) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"step": 0.0}, "step along x must be positive"),
        ({"step": -1e-3}, "must be positive"),
        ({"step": (1e-3, 0.0)}, "step along y"),
        ({"step": 2e-3}, "exceeds the field of view"),
        ({"overlap": 0.5}, r"overlap must be in \[0, 0.5\)"),
        ({"overlap": -0.1}, "overlap"),
        ({"overlap": float("nan")}, "overlap"),
    ],
)
def test_bad_step_or_overlap_raises_with_reason(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_serpentine((0, 0), (5e-3, 5e-3), 1e-3, **kwargs)


@pytest.mark.parametrize(
    ("lo", "hi"),
    [((0, 0), (0, 1e-3)), ((1e-3, 0), (0, 1e-3)), ((0, 2e-3), (1e-3, 1e-3))],
)
def test_empty_or_inverted_region_raises(lo, hi) -> None:
    with pytest.raises(ValueError, match="empty or inverted region"):
        plan_serpentine(lo, hi, 1e-3)


def test_bad_field_of_view_raises() -> None:
    with pytest.raises(ValueError, match="field of view must be positive"):
        plan_serpentine((0, 0), (1e-3, 1e-3), 0.0)
    with pytest.raises(ValueError, match="two values"):
        plan_serpentine((0, 0), (1e-3, 1e-3), (1e-3, 1e-3, 1e-3))


def test_check_within_limits_names_the_offending_field() -> None:
    fields = plan_serpentine((1e-3, 1e-3), (9e-3, 9e-3), 1e-3)
    check_within_limits(fields, Limits())
    fields = plan_serpentine((8e-3, 1e-3), (11e-3, 3e-3), 1e-3, overlap=0.0)
    with pytest.raises(ValueError, match=r"field 0 \(row 0, col 0\) at x=10.5000 mm"):
        check_within_limits(fields, Limits())
    inside = plan_serpentine((0.05e-3, 0.05e-3), (2e-3, 2e-3), 1e-3)
    check_within_limits(inside, Limits())  # centres inside ...
    with pytest.raises(ValueError, match="outside the stage limits"):
        check_within_limits(inside, Limits(), field_of_view_xy=1e-3)  # ... fields are not


def test_sim_stage_limits_fit_the_protocol() -> None:
    sim = pytest.importorskip("deepaf_driver.sim")
    limits = sim.StageLimits()
    check_within_limits(plan_serpentine((1e-3, 1e-3), (3e-3, 3e-3), 1e-3), limits)


def test_scan_limits_are_xy_limits() -> None:
    """The scanner's soft limits and its request check go through `check_within_limits`."""
    from deepaf_planner.scan_path import Limits as ScanLimits
    from deepaf_planner.scanner import Limits as ScannerLimits

    assert ScannerLimits is ScanLimits
    limits = ScanLimits((0.0, 10e-3), (0.0, 10e-3), (-1e-4, 1e-4))
    assert (limits.x_min_m, limits.x_max_m, limits.y_min_m, limits.y_max_m) == (0, 10e-3, 0, 10e-3)
    check_within_limits(plan_serpentine((1e-3, 1e-3), (9e-3, 9e-3), 1e-3), limits)
    with pytest.raises(ValueError, match=r"at x=10\.5000 mm is outside the stage limits"):
        check_within_limits(plan_serpentine((8e-3, 1e-3), (11e-3, 3e-3), 1e-3, 0.0), limits)
