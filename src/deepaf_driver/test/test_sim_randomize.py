"""Domain randomisation: deterministic draws inside the documented ranges, camera effects,
the foreign microscope outside them, and datasets and montages made with them."""

import json

import numpy as np
import pytest
from deepaf_driver.sim import cli
from deepaf_driver.sim.dataset import DatasetSpec, read_dataset, write_dataset
from deepaf_driver.sim.optics import get_profile
from deepaf_driver.sim.randomize import (
    RANGES,
    CameraEffects,
    apply_effects,
    draw_microscope,
    foreign_microscope,
)


def test_draws_are_deterministic_and_inside_the_ranges():
    prof = get_profile("20x")
    draws = [draw_microscope(prof, np.random.default_rng([3, i]), f"m{i}") for i in range(60)]
    again = draw_microscope(prof, np.random.default_rng([3, 0]), "m0")
    assert again == draws[0]
    lim = RANGES.chromatic_factor * 0.45e-6
    signs = set()
    for d in draws:
        lo, hi = RANGES.na_factor
        assert lo * prof.na - 1e-9 <= d.optics.na <= hi * prof.na + 1e-9
        assert abs(d.optics.chromatic_offsets_m[0]) <= lim
        assert d.optics.name == "20x"
        assert RANGES.gamma[0] <= d.camera.gamma <= RANGES.gamma[1]
        signs.add(np.sign(d.optics.chromatic_offsets_m[0]))
        ratio = prof.pixel_size_m / d.optics.pixel_size_m
        assert 1 / RANGES.pixel_factor[1] - 1e-9 <= ratio <= 1 / RANGES.pixel_factor[0] + 1e-9
    assert signs == {-1.0, 1.0}  # chromatic offsets of both signs
    assert any(d.effects.mono for d in draws) and any(d.effects.bayer for d in draws)
    assert any(d.protocol.h_vector[0] <= 0.08 for d in draws)  # stains without red absorption


def test_foreign_microscope_is_outside_the_ranges():
    prof = get_profile("20x")
    f = foreign_microscope(prof)
    assert f.optics.na < RANGES.na_factor[0] * prof.na
    assert abs(f.optics.chromatic_offsets_m[2]) > RANGES.chromatic_factor * 0.45e-6
    assert f.protocol.thickness_m > RANGES.thickness_m[1]
    assert f.camera.gamma < RANGES.gamma[0]


def test_camera_effects_keep_shape_and_change_pixels():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)
    for fx in (
        CameraEffects(bayer=True),
        CameraEffects(jpeg_quality=60),
        CameraEffects(mono=True),
        CameraEffects(tone_curve=0.4),
    ):
        out = apply_effects(img, fx, rng)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert not np.array_equal(out, img)
    mono = apply_effects(img, CameraEffects(mono=True), rng)
    assert np.array_equal(mono[..., 0], mono[..., 2])


@pytest.mark.parametrize("kind", ["random", "foreign"])
def test_dataset_with_drawn_microscopes(tmp_path, kind):
    spec = DatasetSpec(2, "random", 1e-6, 1e-6, 48, seed=4, microscope=kind)
    out = write_dataset(tmp_path / kind, spec, workers=1, progress=False)
    head = json.loads((out / "dataset.json").read_text())
    assert head["args"]["microscope"] == kind
    stacks = read_dataset(out)
    assert len(stacks) == 2
    for st in stacks:
        m = st.meta["microscope"]
        assert m["kind"] == kind and "optics" in m and "camera" in m
        imgs = st.load_images()
        assert len(imgs) == 3 and imgs[0].shape == (48, 48, 3)
    if kind == "random":  # each stack draws its own microscope
        a, b = (s.meta["microscope"]["optics"]["na"] for s in stacks)
        assert a != b


def test_bad_microscope_is_refused():
    with pytest.raises(ValueError, match="--microscope"):
        DatasetSpec(1, "random", 1e-6, 1e-6, 32, microscope="martian").validate()


def test_montage_of_random_microscopes(tmp_path):
    assert cli.main(["montage", "--out", str(tmp_path / "m.png"), "--microscope", "random"]) == 0
    assert (tmp_path / "m.png").stat().st_size > 10_000
