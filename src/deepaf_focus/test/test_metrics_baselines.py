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
    with pytest.raises(ValueError, match="unknown optics profile"):
        half_dof_um("100x")


def test_half_dof_is_the_optics_profiles():
    """One definition: the metrics' DoF criterion is half the optics' depth of field."""
    from deepaf_driver.profiles import OPTICS_PROFILES
    from deepaf_focus.metrics import HALF_DOF_UM

    assert half_dof_um("20x") == pytest.approx(0.5922, abs=1e-4)
    assert half_dof_um("4x") == pytest.approx(29.44, abs=0.01)
    for name, profile in OPTICS_PROFILES.items():
        assert HALF_DOF_UM[name] == half_dof_um(name) == profile.depth_of_field_m / 2 * 1e6


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


def test_one_brenner_and_peak_refinement():
    """Brenner and the parabola refinement are the shared definitions
    (deepaf_driver.focus_measure), also in the simulator and the planner."""
    from deepaf_driver.focus_measure import brenner
    from deepaf_driver.sim import brenner_green
    from deepaf_focus.baselines import brenner as baselines_brenner

    assert baselines_brenner is brenner is brenner_green is MEASURES["brenner"]
    peak, width = 1.3e-6, 2e-6
    res = grid_fit_search(
        lambda z: z, -8e-6, 8e-6, lambda z: np.exp(-((z - peak) ** 2) / (2 * width**2)), 2e-6
    )
    assert res.z_m == pytest.approx(peak, abs=1e-12)  # log-parabola: exact for a Gaussian
