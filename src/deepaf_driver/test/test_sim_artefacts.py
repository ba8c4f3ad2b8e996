"""Slide artefact specs: plain is bit-exact, realistic is deterministic, folds, dust, range."""

import hashlib

import numpy as np
import pytest
from deepaf_driver.backends.sim import SCAN_SLIDE, SimCamera, make_microscope
from deepaf_driver.sim import (
    SLIDE_SPECS,
    CameraModel,
    SlideArtefacts,
    VirtualMicroscope,
    VirtualSlide,
    brenner_green,
    focus_offset_m,
    get_slide_spec,
)
from deepaf_driver.sim.artefact_montage import dust_trap
from deepaf_driver.sim.artefact_render import object_layers
from deepaf_driver.sim.dataset import DatasetSpec

# Frames rendered before the artefact specs existed (commit 64784dc): sha256[:16] of the
# (96x64 render, 320x180 preview, 640x480 capture), noise off, at a fixed absolute z.
GOLDEN = {
    ("20x", 3, 7.2e-3, 6.9e-3, 0.8e-6): (
        "7821fde417b1ede7",
        "6e817f9dc43491f4",
        "180b6454f6269cbe",
    ),
    ("4x", 1, 6.5e-3, 7.4e-3, 25e-6): ("fde51783edcecf63", "3f563391fbb1b2ca", "aa88d12b9b52c965"),
}
SMALL_CAMERA = {"sensor_px": (640, 480), "preview_px": (320, 180)}


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def real20():
    return VirtualMicroscope("20x", "lab_a_standard", slide_seed=0, slide="realistic")


@pytest.mark.parametrize("key", list(GOLDEN))
def test_plain_reproduces_the_old_slide_bit_exactly(key):
    profile, seed, x, y, dz = key
    for slide in ({}, {"slide": "plain"}):  # plain is also the library default
        s = VirtualMicroscope(
            profile, "lab_a_standard", slide_seed=seed, camera=CameraModel(**SMALL_CAMERA), **slide
        )
        assert s.slide.artefacts is None
        z = float(s.slide.focus_surface_m(x, y)) + dz
        got = (
            _sha(s.render(x, y, z, (96, 64), noise=False)),
            _sha(s.preview(x, y, z, noise=False)),
            _sha(s.capture(x, y, z, noise=False)),
        )
        assert got == GOLDEN[key]
        assert float(s.slide.section_m(x, y, 4e-6)[0]) == float(s.slide.focus_surface_m(x, y))


def test_same_sections_whatever_the_spec():
    plain, real = VirtualSlide(5), VirtualSlide(5, artefacts="realistic")
    xs = np.linspace(2e-3, 13e-3, 9)
    assert np.array_equal(plain.section_sdf_m(xs, xs), real.section_sdf_m(xs, xs))
    h1, e1 = plain.object_maps(xs[:4], xs[:3], VirtualMicroscope().protocol)
    h2, e2 = real.object_maps(xs[:4], xs[:3], VirtualMicroscope().protocol)
    assert np.array_equal(h1, h2) and np.array_equal(e1, e2)


def test_realistic_is_a_pure_function_of_seed_and_position(real20):
    other = VirtualMicroscope("20x", "lab_a_standard", slide_seed=0, slide="realistic")
    art, art2 = real20.slide.artefacts, other.slide.artefacts
    assert [f[0].tolist() for f in art.folds] == [f[0].tolist() for f in art2.folds]
    assert [(b[0].tolist(), b[1]) for b in art.bubbles] == [
        (b[0].tolist(), b[1]) for b in art2.bubbles
    ]
    # a particle query of a sub-rectangle finds exactly the big query's particles there
    big = art.particles(2e-3, 2e-3, 12e-3, 12e-3)
    sub = art.particles(5e-3, 5e-3, 8e-3, 8e-3)
    inside = set(zip(big.x.tolist(), big.y.tolist(), strict=True))
    assert len(sub) > 0 and set(zip(sub.x.tolist(), sub.y.tolist(), strict=True)) <= inside
    c, r = art.bubbles[0]
    x, y, z = c[0] + r, c[1], float(real20.best_focus_z(c[0] + r, c[1]))
    a = real20.render(x, y, z, 96, noise=False)
    assert np.array_equal(a, other.render(x, y, z, 96, noise=False))
    assert not np.array_equal(
        a, VirtualMicroscope("20x", slide_seed=0).render(x, y, z, 96, noise=False)
    )


def test_overlapping_frames_agree_on_artefacts(real20):
    art = real20.slide.artefacts
    c, r = art.bubbles[0]
    x, y = c[0] + r, c[1]  # on the bubble's rim, in tissue, with a fold flap and dust maps
    p = real20.pixel_size_m
    # the artefact layers are functions of world position: overlapping regions agree exactly
    xs, ys = (
        (np.arange(4000, 4300) + round(x / p) - 4150) * p,
        (np.arange(2000, 2200) + round(y / p) - 2100) * p,
    )
    maps = lambda gx, gy: real20.slide.object_maps(gx, gy, real20.protocol)  # noqa: E731
    a = object_layers(real20.slide, xs, ys, real20.protocol, maps)
    b = object_layers(real20.slide, xs[50:], ys[30:], real20.protocol, maps)
    assert a.rim is not None and np.array_equal(a.rim[30:, 50:], b.rim)
    assert np.array_equal(a.phase[:, 30:, 50:], b.phase) and np.array_equal(a.h[:, 30:, 50:], b.h)
    # frames: the section is flat over a field, so a 6 um shift on a 5-7 um/mm tilt moves
    # its focus by ~40 nm: overlaps agree to a few grey levels, most pixels exactly
    z = float(real20.best_focus_z(x, y)) + 1e-6
    fa = real20.render(x, y, z, (160, 128), noise=False)
    fb = real20.render(x + 40 * p, y + 24 * p, z, (160, 128), noise=False)
    diff = np.abs(fa[24:, 40:].astype(int) - fb[:-24, :-40].astype(int))
    assert diff.max() <= 3 and (diff == 0).mean() > 0.6


def test_fold_doubles_thickness_and_raises_best_focus(real20):
    slide, t0 = real20.slide, real20.protocol.thickness_m
    gap = slide.spec.fold_gap
    (cx, cy), d, _, half_w, _ = slide.artefacts.folds[0]
    mid, thick = slide.section_m(cx, cy, t0)
    base = float(slide.base_mid_m(cx, cy, t0))
    t_local = t0 * float(slide.artefacts.thickness_scale(cx, cy))
    assert float(thick) == pytest.approx(2 * t_local)
    assert float(mid) - base == pytest.approx(0.5 * t_local * (1 + gap))
    offset = focus_offset_m(real20.profile, real20.protocol)
    raise_m = float(real20.best_focus_z(cx, cy)) - offset - base
    assert raise_m == pytest.approx(0.5 * t_local * (1 + gap), abs=1e-12)
    # beside the fold: one section of the local thickness, no raise
    ox, oy = cx - d[1] * 4 * half_w, cy + d[0] * 4 * half_w
    assert float(slide.section_m(ox, oy, t0)[1]) == pytest.approx(
        t0 * float(slide.artefacts.thickness_scale(ox, oy))
    )
    # the rendered flap is sharp at its own height: a Brenner peak (1 um) near it
    flap = base + t_local * (1 + gap) + offset
    zs = flap + np.arange(-1.5, 1.51, 0.5) * 1e-6
    imgs = real20.render_stack(cx, cy, zs, 128, noise=False, sampling="preview")
    b = [brenner_green(i) for i in imgs]
    assert 0 < int(np.argmax(b)) < len(zs) - 1, b


def test_dust_on_the_coverslip_is_sharpest_at_its_own_height():
    """The trap of contrast autofocus: on a field with a little tissue and coverslip dust,
    Brenner sharpness peaks at the dust, ~150-180 um above the tissue's focus."""
    s = VirtualMicroscope("4x", "lab_a_standard", slide_seed=0, slide="realistic")
    found = dust_trap(s, 128, "preview")
    assert found is not None
    x, y, zb, zd = found
    zs = np.arange(zb - 60e-6, zd + 60e-6, 10e-6)
    b = [brenner_green(i) for i in s.render_stack(x, y, zs, 128, noise=False, sampling="preview")]
    peak = zs[int(np.argmax(b))]
    assert abs(peak - zd) <= 0.5 * s.profile.depth_of_field_m, (peak - zb, zd - zb)
    assert peak - zb > 100e-6


def test_realistic_focus_changes_more_than_the_4x_depth_of_field_over_12_mm():
    dof_4x = VirtualMicroscope("4x").profile.depth_of_field_m
    g = np.linspace(1.5e-3, 13.5e-3, 13)
    x, y = np.meshgrid(g, g)
    for seed in range(8):
        mid, _ = VirtualSlide(seed, artefacts="realistic").section_m(x, y, 4e-6)
        assert np.ptp(mid) > dof_4x, seed
    assert np.ptp(VirtualSlide(0).section_m(x, y, 4e-6)[0]) < np.ptp(
        VirtualSlide(0, artefacts="realistic").section_m(x, y, 4e-6)[0]
    )


def test_bubble_dims_stain_and_has_a_dark_rim(real20):
    c, r = real20.slide.artefacts.bubbles[0]
    plain = VirtualMicroscope("20x", "lab_a_standard", slide_seed=0)
    x, y = c[0] + 0.5 * r, c[1]
    a = real20.render(x, y, float(real20.best_focus_z(x, y)), 64, noise=False).astype(float)
    b = plain.render(x, y, float(plain.best_focus_z(x, y)), 64, noise=False).astype(float)
    sat = lambda im: (im.max(axis=2) - im.min(axis=2)).mean()  # noqa: E731
    assert sat(a) < 0.8 * sat(b)
    rim = real20.render(c[0] + r - 6e-6, c[1], float(real20.best_focus_z(x, y)), 32, noise=False)
    assert rim.mean() < 0.8 * a.mean()


def test_specs_validate_and_name_the_choices():
    assert set(SLIDE_SPECS) >= {"plain", "realistic"} and SCAN_SLIDE == "realistic"
    assert not get_slide_spec("plain").has_artefacts and get_slide_spec("realistic").has_artefacts
    assert get_slide_spec("realistic").to_dict()["folds"] == [1, 2]
    with pytest.raises(ValueError, match="realistic"):
        get_slide_spec("wonky")
    with pytest.raises(ValueError, match="tilt_min"):
        SlideArtefacts(tilt=1e-3, tilt_min=5e-3)
    with pytest.raises(ValueError, match="folds"):
        SlideArtefacts(folds=(3, 1))
    with pytest.raises(ValueError, match="wonky"):
        DatasetSpec(1, ("lab_a_standard",), 1e-5, 1e-6, 32, slide="wonky").validate()
    assert "slide" not in DatasetSpec(1, ("lab_a_standard",), 1e-5, 1e-6, 32).to_args()


def test_scans_default_to_the_realistic_slide():
    assert make_microscope("4x", "lab_a_standard", 0).slide.spec.name == "realistic"
    assert make_microscope("4x", "lab_a_standard", 0, slide="plain").slide.artefacts is None
    cam = SimCamera((64, 48), (128, 96), slide="plain")
    cam.start()
    assert cam._scope.slide.spec.name == "plain"


def test_dataset_and_cli_take_the_slide(tmp_path):
    from deepaf_driver.sim import cli
    from deepaf_driver.sim.dataset import read_dataset, write_dataset

    spec = DatasetSpec(1, ("lab_a_standard",), 1e-6, 1e-6, 32, slide="realistic")
    assert spec.to_args()["slide"] == "realistic"
    write_dataset(tmp_path / "ds", spec, workers=1, progress=False)
    (stack,) = read_dataset(tmp_path / "ds")
    assert stack.meta["slide"].endswith(":realistic") and len(stack.files) == 3
    png = tmp_path / "f.png"
    args = ["render", "--size", "64x48", "--no-noise", "--out", str(png)]
    assert cli.main([*args, "--slide", "plain"]) == 0 and png.stat().st_size > 0
    assert cli.build_parser().parse_args(args).slide == "realistic"
    assert (
        cli.build_parser().parse_args(["dataset", "--out", "d", "--stacks", "1"]).slide == "plain"
    )
