"""The definitions every package shares: optics profiles and depth of field, Brenner and
peak refinement, the focal-stack dataset files (ROS-free library tests)."""

from __future__ import annotations

import json

import deepaf_driver.dataset_format as fmt
import numpy as np
import pytest
from deepaf_driver.focus_measure import brenner, parabola_vertex, refine_peak
from deepaf_driver.profiles import OPTICS_PROFILES, get_profile, half_dof_m, half_dof_um


# ------------------------------------------------------------------ profiles, DoF
def test_half_dof_is_half_the_optics_depth_of_field():
    for name, p in OPTICS_PROFILES.items():
        assert half_dof_m(name) == p.half_dof_m == p.depth_of_field_m / 2
        assert half_dof_um(p) == pytest.approx(p.depth_of_field_m / 2 * 1e6)
    assert half_dof_um("20x") == pytest.approx(0.592, abs=1e-3)
    assert half_dof_um("4x") == pytest.approx(29.44, abs=0.01)
    with pytest.raises(ValueError, match="unknown optics profile '60x'; valid: 20x, 4x"):
        half_dof_m("60x")


def test_the_simulator_uses_the_same_profiles():
    import deepaf_driver.sim as sim
    import deepaf_driver.sim.optics as optics

    assert sim.OPTICS_PROFILES is optics.OPTICS_PROFILES is OPTICS_PROFILES
    assert sim.get_profile is get_profile and sim.OpticsProfile is type(get_profile("4x"))


# ------------------------------------------------------------------------ Brenner
def test_brenner_is_horizontal_on_green():
    x = np.arange(32, dtype=np.float32)
    cols = np.tile((x % 4 < 2) * 100.0, (16, 1))  # varies along x: 2-px differences of 100
    rows = cols[:16, :16].T  # varies along y only
    assert brenner(cols) == pytest.approx(100.0**2)
    assert brenner(rows) == 0.0  # vertical structure does not count (documented choice)
    rgb = np.zeros((16, 32, 3), np.uint8)
    rgb[..., 1] = cols.astype(np.uint8)
    rgb[..., 0] = 255 - rgb[..., 1]  # red and blue are ignored
    assert brenner(rgb) == brenner(cols)
    with pytest.raises(ValueError, match="3 pixels wide"):
        brenner(np.zeros((8, 2, 3), np.uint8))


# --------------------------------------------------------------- peak refinement
def test_parabola_vertex_any_spacing():
    f = lambda z: 3.0 - 2.0 * (z - 0.37) ** 2  # noqa: E731
    z = [0.0, 0.25, 1.0]
    assert parabola_vertex(z, [f(v) for v in z]) == pytest.approx(0.37)
    assert parabola_vertex([0.0, 1.0, 2.0], [1.0, 0.0, 1.0]) is None  # convex
    assert parabola_vertex([0.0, 1.0, 2.0], [1.0, 1.0, 1.0]) is None  # flat


def test_refine_peak_cases():
    zs = np.array([2.0, 0.0, 1.0, 3.0, 4.0])  # any order
    assert refine_peak(zs, -((zs - 1.8) ** 2)) == pytest.approx(1.8)
    gauss = np.exp(-((zs - 2.3) ** 2) / 2.0)
    assert refine_peak(zs, gauss, log=True) == pytest.approx(2.3)  # exact for a Gaussian
    assert refine_peak(zs, gauss) != pytest.approx(2.3, abs=1e-3)  # a parabola is not
    assert refine_peak(zs, zs) == 4.0  # peak at an end: the sample, no extrapolation
    assert refine_peak([0.0, 1.0, 2.0], [0.0, 1.0, 0.999999]) <= 2.0  # kept within
    spike = np.array([0.0, 0.0, 1.0, 10.0, 0.0])  # at z = 3; sharp: vertex near it
    assert 2.0 <= refine_peak(zs, spike) <= 4.0
    assert refine_peak([0.0, 1.0, 2.0], [5.0, 1.0, 0.0], at=1) == 1.0  # not concave there
    with pytest.raises(ValueError, match="as many scores"):
        refine_peak([0.0, 1.0], [1.0])


def test_refine_peak_is_the_classic_three_point_formula_on_a_grid():
    """On a uniform grid it is the textbook vertex the simulator's best focus and the grid
    fit used before they shared it: z_i + step * (s0 - s2) / (2 (s0 - 2 s1 + s2)), clipped to
    one step (so the simulator's truth did not move)."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        grid = rng.uniform(-5, 5) + rng.uniform(0.1, 2) * np.arange(13)
        s = rng.random(13)
        i = int(np.clip(np.argmax(s), 1, 11))
        y0, y1, y2 = s[i - 1 : i + 2]
        den = y0 - 2 * y1 + y2
        shift = 0.5 * (y0 - y2) / den if den < 0 else 0.0
        classic = grid[i] + np.clip(shift, -1, 1) * (grid[1] - grid[0])
        assert refine_peak(grid, s, at=i) == pytest.approx(classic, rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------- dataset files
def _meta(best: float, images: list[dict]) -> dict:
    return {"profile": "20x", "pixel_size_m": 1e-6, "protocol": "p", "best_focus_z_m": best,
            "images": images}  # fmt: skip


def test_dataset_round_trip(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    head = fmt.write_index(root, [fmt.stack_name(0), fmt.stack_name(1)], "test", {"a": 1})
    assert json.loads((root / "dataset.json").read_text()) == head == fmt.read_index(root)
    assert head["format"] == "deepaf-focal-stack" and head["version"] == 1
    sdir = root / "stack_00000"
    sdir.mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (8, 10, 3), dtype=np.uint8)
    names = [fmt.dz_file_name(-1e-6), fmt.dz_file_name(2.5e-6), fmt.dz_file_name(2.5e-6, 1)]
    assert names == ["z_-0001.000um.png", "z_+0002.500um.png", "z_+0002.500um_1.png"]
    for n in names:
        fmt.write_image(sdir / n, rgb)
    zs = [4e-6, 7.5e-6, 7.5e-6]
    images = [{"file": n, "z_m": z} for n, z in zip(names, zs, strict=True)]
    doc = fmt.write_stack_meta(sdir, _meta(5e-6, images))
    assert list(doc)[:2] == ["format", "version"]
    (root / "stack_00001").mkdir()  # listed but not finished: skipped
    (stack,) = fmt.read_dataset(root)
    assert stack.name == "stack_00000" and stack.meta == doc
    np.testing.assert_allclose(stack.labels_m, [1e-6, -2.5e-6, -2.5e-6])
    assert all((img == rgb).all() for img in stack.load_images())  # PNG is lossless
    with pytest.raises(ValueError, match="stack_00001 is incomplete"):
        fmt.read_dataset(root, complete_only=False)
    assert fmt.read_stack_meta(root / "stack_00001") is None


def test_index_edits_and_refusals(tmp_path):
    fmt.add_to_index(tmp_path, "stack_00003", "live")
    fmt.add_to_index(tmp_path, "stack_00004", "other")
    fmt.add_to_index(tmp_path, "stack_00003", "other")  # listed once
    head = fmt.read_index(tmp_path)
    assert head["stacks"] == ["stack_00003", "stack_00004"] and head["created_by"] == "live"
    fmt.remove_from_index(tmp_path, "stack_00003")
    assert fmt.read_index(tmp_path)["stacks"] == ["stack_00004"]
    fmt.remove_from_index(tmp_path / "none", "x")  # no dataset: nothing to do
    with pytest.raises(ValueError, match="lacks best_focus_z_m, images"):
        fmt.write_stack_meta(tmp_path, {"profile": "20x", "pixel_size_m": 1e-6, "protocol": "p"})
    (tmp_path / "dataset.json").write_text(
        json.dumps({"format": "deepaf-focal-stack", "version": 2})
    )
    with pytest.raises(ValueError, match="version 2 is not 1"):
        fmt.read_index(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format is 'other'"):
        fmt.add_to_index(tmp_path, "stack_00005", "live")
    (tmp_path / "dataset.json").write_text("{broken")
    with pytest.raises(ValueError, match="cannot read"):
        fmt.read_index(tmp_path)
    with pytest.raises(ValueError, match=r"has no dataset\.json"):
        fmt.read_index(tmp_path / "none")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "meta.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(ValueError, match="unexpected format 'x'"):
        fmt.read_stack_meta(tmp_path / "s")
    with pytest.raises(ValueError, match="cannot read image"):
        fmt.read_image(tmp_path / "missing.png")
