"""Focus surface: a tilted wavy slide with outliers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from deepaf_planner.focus_surface import FocusSurface
from deepaf_planner.scan_path import plan_serpentine

UM = 1e-6


def true_z(x: float, y: float) -> float:
    """Tilt (2 um/mm, -1 um/mm) plus a 2 um wave with an 8 mm x 12 mm period."""
    return (
        40 * UM
        + 2e-3 * x
        - 1e-3 * y
        + 2 * UM * math.sin(2 * math.pi * x / 8e-3) * math.cos(2 * math.pi * y / 12e-3)
    )


FIELDS = plan_serpentine((0, 0), (10e-3, 8e-3), 1e-3, overlap=0.0)
OUTLIERS = {7, 23, 41, 58}  # well inside the grid


def _surface(skip: set[int] = frozenset()) -> FocusSurface:
    rng = np.random.default_rng(0)
    s = FocusSurface()
    for f in FIELDS:
        if f.index in skip:
            continue
        z = true_z(f.x, f.y) + rng.normal(0, 0.1 * UM)
        if f.index in OUTLIERS:
            z += 30 * UM * (1 if f.index % 2 else -1)
        s.add(f.x, f.y, z)
    return s


def test_empty_and_tiny_surfaces() -> None:
    s = FocusSurface(default_uncertainty_m=5 * UM)
    assert s.predict(0, 0) is None
    assert not s.is_outlier(0, 0, 1.0, tol=1 * UM)
    s.add(0, 0, 10 * UM)
    assert s.predict(1e-3, 0) == pytest.approx((10 * UM, 5 * UM))
    s.add(1e-3, 0, 12 * UM)
    z, unc = s.predict(0.5e-3, 0)
    assert z == pytest.approx(11 * UM) and unc >= 5 * UM


def test_collinear_first_row_extrapolates_along_the_row_only() -> None:
    s = FocusSurface()
    for i in range(5):
        s.add(i * 1e-3, 0.0, (10 + 2 * i) * UM)  # slope 2 um/mm along x
    z, unc = s.predict(5e-3, 0.0)
    assert z == pytest.approx(20 * UM, abs=0.05 * UM)
    z_up, _ = s.predict(2e-3, 1e-3)  # next row: no y information, so no y slope
    assert z_up == pytest.approx(14 * UM, abs=0.05 * UM)
    assert math.isfinite(unc) and unc > 0


def test_predicts_tilted_wavy_surface_despite_outliers() -> None:
    s = _surface()
    errs, uncs = [], []
    for f in FIELDS:
        if f.row in (0, 7) or f.col in (0, 9):
            continue
        x, y = f.x + 0.5e-3, f.y + 0.5e-3  # between tiles
        z, unc = s.predict(x, y)
        errs.append(abs(z - true_z(x, y)))
        uncs.append(unc)
    assert np.median(errs) < 0.3 * UM
    assert max(errs) < 1.0 * UM  # outliers of 30 um do not leak into predictions
    assert max(uncs) < 2 * UM


def test_outliers_flagged_good_tiles_not() -> None:
    rng = np.random.default_rng(1)
    flagged = {}
    for f in FIELDS:
        s = _surface(skip={f.index})  # leave one out, like a new prediction
        z = true_z(f.x, f.y) + rng.normal(0, 0.1 * UM)
        flagged[f.index] = s.is_outlier(f.x, f.y, z + 25 * UM, tol=2 * UM)
        if f.index not in OUTLIERS:
            assert not s.is_outlier(f.x, f.y, z, tol=2 * UM), f.index
    assert all(flagged.values())


def test_progressive_scan_predicts_the_next_field() -> None:
    """As in a scan: each field is predicted from the tiles finished before it."""
    s = FocusSurface()
    errs = []
    for f in FIELDS:
        pred = s.predict(f.x, f.y)
        if pred is not None and f.row >= 2:
            errs.append(abs(pred[0] - true_z(f.x, f.y)))
        s.add(f.x, f.y, true_z(f.x, f.y))
    assert np.percentile(errs, 90) < 1.0 * UM


def test_radius_falls_back_to_global_plane() -> None:
    s = FocusSurface(radius_m=0.5e-3)
    for f in FIELDS:
        s.add(f.x, f.y, 5 * UM + 1e-3 * f.x)  # a plane
    z, _ = s.predict(30e-3, 4e-3)  # far away: no sample within radius
    assert z == pytest.approx(5 * UM + 30 * UM, abs=0.05 * UM)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="k >= 3"):
        FocusSurface(k=2)
    with pytest.raises(ValueError, match="finite"):
        FocusSurface().add(0, 0, float("nan"))
    with pytest.raises(ValueError, match="tol"):
        FocusSurface().is_outlier(0, 0, 0, tol=-1)
