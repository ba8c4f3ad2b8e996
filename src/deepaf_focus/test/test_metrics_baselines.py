"""Metrics definitions and classical focus search on a synthetic stack."""

import numpy as np
import pytest
from deepaf_focus.baselines import MEASURES, golden_section_search, grid_fit_search
from deepaf_focus.metrics import focus_metrics, half_dof_um
from deepaf_focus.synthetic import render, texture


def test_focus_metrics_values():
    m = focus_metrics([1.0, -1.2, 0.4, 2.0], [1.2, 1.0, 0.0, 2.0], half_dof=0.5)
    assert m["n"] == 4
    assert m["fe_um_mean"] == pytest.approx((0.2 + 2.2 + 0.4 + 0.0) / 4)
    assert m["fd_pct"] == pytest.approx(25.0)  # true 0 never counts as wrong sign
    assert m["dof_pct"] == pytest.approx(75.0)
    assert focus_metrics([], [])["n"] == 0
    with pytest.raises(ValueError):
        focus_metrics([1.0], [1.0, 2.0])
    assert half_dof_um("20x") == 0.5 and half_dof_um("4x") == 30.0
    with pytest.raises(ValueError, match="unknown profile"):
        half_dof_um("100x")


@pytest.fixture(scope="module")
def stack():
    tex = texture(np.random.default_rng(3), 96)
    best = 1.3e-6
    zs = np.round(np.arange(-8e-6, 8.01e-6, 0.25e-6), 12)
    images = {float(z): render(tex, (best - z) * 1e6) for z in zs}
    return best, zs, images


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_measures_peak_near_focus(stack, name):
    best, zs, images = stack
    scores = [MEASURES[name](images[float(z)]) for z in zs]
    assert abs(zs[int(np.argmax(scores))] - best) <= 1.0e-6


def test_searches_find_focus_with_few_images(stack):
    best, zs, images = stack

    def acquire(z):
        return images[float(zs[np.argmin(np.abs(zs - z))])]

    def snap(z):
        return float(zs[np.argmin(np.abs(zs - z))])

    g = golden_section_search(acquire, zs[0], zs[-1], "brenner", snap=snap)
    assert abs(g.z_m - best) < 0.5e-6 and g.images_used < 20
    f = grid_fit_search(acquire, zs[0], zs[-1], "tenengrad", step_m=2e-6)
    assert abs(f.z_m - best) < 0.6e-6 and f.images_used == 9
    with pytest.raises(ValueError):
        golden_section_search(acquire, 1.0, 0.0)
    with pytest.raises(ValueError, match="unknown focus measure"):
        grid_fit_search(acquire, 0.0, 1e-6, "sharpness")
