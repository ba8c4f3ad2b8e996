"""Virtual microscope: determinism, overlap agreement, focus physics, presets, bad input."""

import numpy as np
import pytest
from deepaf_driver.sim import (
    OPTICS_PROFILES,
    PROTOCOL_PRESETS,
    Protocol,
    VirtualMicroscope,
    brenner_green,
    get_profile,
    get_protocol,
    random_protocol,
)


@pytest.fixture(scope="module")
def scope20():
    return VirtualMicroscope("20x", "lab_a_standard", slide_seed=3)


@pytest.fixture(scope="module")
def field(scope20):
    return scope20.random_tissue_position(np.random.default_rng(3))


def test_public_geometry(scope20):
    w, h = scope20.slide_size_m
    assert 10e-3 <= w <= 20e-3 and 10e-3 <= h <= 20e-3
    fw, fh = scope20.field_of_view_m
    assert fw == pytest.approx(4056 * scope20.pixel_size_m)
    assert fh == pytest.approx(3040 * scope20.pixel_size_m)
    pw, _ = scope20.preview_field_of_view_m
    assert pw == pytest.approx(fw)
    assert OPTICS_PROFILES["20x"].depth_of_field_m == pytest.approx(1e-6, rel=0.3)
    assert OPTICS_PROFILES["4x"].depth_of_field_m == pytest.approx(60e-6, rel=0.1)
    assert OPTICS_PROFILES["4x"].z_step_m == pytest.approx(2e-6)


def test_best_focus_vectorised_and_varies(scope20):
    xs = np.linspace(1e-3, 14e-3, 7)
    z = scope20.best_focus_z(xs, np.full_like(xs, 7e-3))
    assert z.shape == xs.shape
    assert scope20.best_focus_z(xs[2], 7e-3) == pytest.approx(z[2])
    assert np.ptp(z) > 5e-6  # tilt + waviness: a scan must refocus


def test_deterministic(field):
    x, y = field
    a = VirtualMicroscope("20x", "lab_a_standard", slide_seed=3)
    b = VirtualMicroscope("20x", "lab_a_standard", slide_seed=3)
    z = a.best_focus_z(x, y) + 1e-6
    assert np.array_equal(a.render(x, y, z, 96, noise=False), b.render(x, y, z, 96, noise=False))
    na = a.render(x, y, z, 96, rng=np.random.default_rng(5))
    nb = b.render(x, y, z, 96, rng=np.random.default_rng(5))
    assert np.array_equal(na, nb)
    c = VirtualMicroscope("20x", "lab_a_standard", slide_seed=4)
    assert not np.array_equal(
        c.render(x, y, z, 96, noise=False), a.render(x, y, z, 96, noise=False)
    )


def test_overlapping_frames_agree(scope20, field):
    x, y = field
    p = scope20.pixel_size_m
    z = scope20.best_focus_z(x, y) + 1.5e-6
    a = scope20.render(x, y, z, (160, 128), noise=False)
    b = scope20.render(x + 40 * p, y + 24 * p, z, (160, 128), noise=False)
    ov_a, ov_b = a[24:, 40:], b[:-24, :-40]
    diff = np.abs(ov_a.astype(int) - ov_b.astype(int))
    # rendered intensities agree to float rounding and PSF-tail truncation (< 1 grey level)
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.9
    # the object itself is exactly the same function of global coordinates
    xs = np.arange(1000, 1100) * p
    ys = np.arange(2000, 2080) * p
    h1, e1 = scope20.slide.object_maps(xs, ys, scope20.protocol)
    h2, e2 = scope20.slide.object_maps(xs[30:], ys[10:], scope20.protocol)
    assert np.array_equal(h1[:, 10:, 30:], h2) and np.array_equal(e1[:, 10:, 30:], e2)


@pytest.mark.parametrize("profile,dz", [("20x", 2e-6), ("4x", 40e-6)])
def test_plus_minus_dz_differ_beyond_noise(profile, dz):
    s = VirtualMicroscope(profile, "lab_a_standard", slide_seed=1)
    x, y = s.random_tissue_position(np.random.default_rng(1))
    zb = s.best_focus_z(x, y)
    plus = s.render(x, y, zb + dz, 128, noise=False).astype(float)
    minus = s.render(x, y, zb - dz, 128, noise=False).astype(float)
    noisy = s.render(x, y, zb + dz, 128, rng=np.random.default_rng(0)).astype(float)
    asym = np.abs(plus - minus).mean()
    noise = np.abs(noisy - plus).mean()
    assert asym > 1.5 * noise

    # per-channel sharpness flips across focus (chromatic cue): R vs B ordering changes
    def sharp(img, c):
        g = img[..., c]
        return ((g[:, 2:] - g[:, :-2]) ** 2).mean()

    r_over_b_plus = sharp(plus, 0) / sharp(plus, 2)
    r_over_b_minus = sharp(minus, 0) / sharp(minus, 2)
    assert abs(np.log(r_over_b_plus / r_over_b_minus)) > 0.05


@pytest.mark.parametrize("name", list(PROTOCOL_PRESETS))
def test_best_focus_is_sharpest_by_brenner(name):
    # summed focus curve of two fields (single thick-section fields scatter by
    # their content's depth); peak within half the 20x depth of field of best focus
    dz = np.arange(-1.5, 1.51, 0.25) * 1e-6
    curves = []
    for seed in (7, 8):
        s = VirtualMicroscope("20x", name, slide_seed=seed)
        x, y = s.random_tissue_position(np.random.default_rng(seed))
        zb = s.best_focus_z(x, y)
        b = np.array([brenner_green(i) for i in s.render_stack(x, y, zb + dz, 96, noise=False)])
        curves.append(b)
    assert abs(dz[int(np.argmax(np.sum(curves, 0)))]) <= 0.5e-6 + 1e-12


def test_presets_and_random_protocols():
    assert len(PROTOCOL_PRESETS) >= 8
    assert "other_lab" in PROTOCOL_PRESETS
    params = [tuple(sorted(p.to_dict().items())) for p in PROTOCOL_PRESETS.values()]
    assert len({tuple((k, str(v)) for k, v in q if k != "name") for q in params}) == len(params)
    s_a = VirtualMicroscope("20x", "lab_a_standard", slide_seed=2)
    s_b = VirtualMicroscope("20x", "lab_b_pale_eosin", slide_seed=2)
    x, y = s_a.random_tissue_position(np.random.default_rng(2))
    a = s_a.render(x, y, s_a.best_focus_z(x, y), 64, noise=False)
    b = s_b.render(x, y, s_b.best_focus_z(x, y), 64, noise=False)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 2
    r1, r1b, r2 = random_protocol(1), random_protocol(1), random_protocol(2)
    assert r1 == r1b and r1 != r2 and r1.name not in PROTOCOL_PRESETS
    assert Protocol.from_dict(r1.to_dict()) == r1


def test_streams_shapes_and_glass():
    s = VirtualMicroscope("4x", "lab_a_standard", slide_seed=0)
    # a corner of the slide is empty glass: bright, uniform
    img = s.render(0.3e-3, 0.3e-3, 0.0, (64, 48))
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    assert img.mean() > 220
    assert s.preview(7e-3, 7e-3, 0.0, noise=False).shape == (720, 1280, 3)


def test_stage_driven_snap_reports_duration():
    s = VirtualMicroscope("20x", "lab_a_standard", slide_seed=0)
    t = s.move_to(x=7.1e-3, z=1e-6)
    assert t > 0
    f = s.snap_preview(noise=False)
    assert f.image.shape == (720, 1280, 3)
    assert f.duration_s >= s.exposure_s
    assert s.stage.clock_s == pytest.approx(t + f.duration_s)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"x_m": 20e-3}, "outside its limits"),
        ({"y_m": -1e-3}, "outside its limits"),
        ({"z_m": 1.0}, "outside its limits"),
        ({"x_m": float("nan")}, "finite"),
        ({"size": 0}, "positive"),
        ({"size": (10, -2)}, "positive"),
    ],
)
def test_bad_render_inputs(kwargs, match):
    s = VirtualMicroscope("20x", "lab_a_standard", slide_seed=0)
    args = {"x_m": 7e-3, "y_m": 7e-3, "z_m": 0.0, "size": 32} | kwargs
    with pytest.raises(ValueError, match=match):
        s.render(args["x_m"], args["y_m"], args["z_m"], args["size"])


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="lab_a_standard"):
        get_protocol("no_such_lab")
    with pytest.raises(ValueError, match="20x"):
        get_profile("100x")
    with pytest.raises(ValueError):
        VirtualMicroscope(protocol="nope")
