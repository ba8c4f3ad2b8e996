"""The dashboard's pure parts: DZI tiling, token and host checks, rate limit, jog steps, region
checks, frame packing, the newest-frame slot and the pinned asset (no ROS, no browser)."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import tarfile

import numpy as np
import pytest
from deepaf.ui import assets
from deepaf.ui.dzi import DeepZoomSlide, DziLayout, SlideCache, best_pyramid_level, pyramid_read
from deepaf.ui.live import (
    LatestSlot,
    Limits,
    jog_steps,
    pack_frame,
    parse_region_mm,
    unpack_frame,
)
from deepaf.ui.security import (
    RateLimiter,
    check_request,
    is_loopback,
    presented_token,
    token_matches,
    token_required,
)


def test_dzi_levels_and_grid_match_openslides_deepzoom_generator(tmp_path, write_pyramid):
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    path = tmp_path / "slide.tiff"
    write_pyramid(path, 1000, 600)
    layout = DziLayout(1000, 600, 254, 1)
    gen = DeepZoomGenerator(openslide.OpenSlide(str(path)), 254, 1)
    assert layout.max_level + 1 == gen.level_count == 11
    levels = range(layout.max_level + 1)
    assert [layout.level_size(lv) for lv in levels] == list(gen.level_dimensions)
    assert [layout.grid(lv) for lv in levels] == list(gen.level_tiles)
    assert layout.level_size(0) == (1, 1) and layout.level_size(10) == (1000, 600)


def test_tile_boxes_share_the_overlap_and_stop_at_the_edge():
    layout = DziLayout(1000, 600, 254, 1)
    assert layout.tile_box(10, 0, 0) == (0, 0, 255, 255)
    assert layout.tile_box(10, 1, 1) == (253, 253, 509, 509)
    assert layout.tile_box(10, 3, 2) == (761, 507, 1000, 600)
    for bad in ((10, 4, 0), (10, 0, 3), (10, -1, 0)):
        with pytest.raises(ValueError, match="outside level"):
            layout.tile_box(*bad)
    with pytest.raises(ValueError, match=r"outside 0\.\.10"):
        layout.tile_box(11, 0, 0)
    with pytest.raises(ValueError):
        DziLayout(0, 10)
    assert 'TileSize="254"' in layout.xml() and 'Width="1000" Height="600"' in layout.xml()


def test_tiles_read_the_closest_finer_pyramid_level():
    downsamples = (1.0, 2.0, 4.0, 8.0)
    assert best_pyramid_level(downsamples, 1) == 0
    assert best_pyramid_level(downsamples, 2) == 1
    assert best_pyramid_level(downsamples, 3.9) == 1
    assert best_pyramid_level(downsamples, 64) == 3
    layout = DziLayout(1000, 600, 254, 1)
    plevel, loc, size, out = pyramid_read(layout, downsamples, 9, 0, 0)  # scale 2
    assert (plevel, loc, size, out) == (1, (0, 0), (255, 255), (255, 255))
    plevel, loc, size, out = pyramid_read(layout, downsamples, 7, 0, 0)  # scale 8: 125 x 75
    assert plevel == 3 and out == (125, 75) and size == (125, 75)


def test_a_slide_serves_tiles_equal_to_its_pixels_and_reports_its_mpp(tmp_path, write_pyramid):
    path = tmp_path / "slide.tiff"
    base = write_pyramid(path, 1000, 600, mpp=0.5)
    slide = DeepZoomSlide(path)
    assert slide.mpp == pytest.approx(0.5)
    top = slide.tile_rgb(10, 1, 1)
    assert np.array_equal(top, base[253:509, 253:509])
    small = slide.tile_rgb(8, 0, 0)
    assert small.shape == (150, 250, 3)
    cache = SlideCache(max_tiles=2)
    jpeg = cache.tile(path, 10, 0, 0)
    assert jpeg[:2] == b"\xff\xd8" and cache.tile(path, 10, 0, 0) is jpeg  # cached
    with pytest.raises(ValueError):
        cache.tile(path, 10, 9, 9)


def test_tokens_are_compared_in_constant_time_and_found_where_the_page_puts_them():
    assert token_matches("abc", "abc") and not token_matches("abd", "abc")
    assert not token_matches(None, "abc") and not token_matches("", "abc")
    assert presented_token({"X-DeepAf-Token": "h"}, {"token": "q"}, {}) == "h"
    assert presented_token({"Authorization": "Bearer b"}, {}, {}) == "b"
    assert presented_token({}, {"token": "q"}, {"deepaf_token": "c"}) == "q"
    assert presented_token({}, {}, {"deepaf_token": "c"}) == "c"
    assert presented_token({}, {}, {}) is None
    local = {"Host": "127.0.0.1:8080"}
    assert check_request("t", local, {"token": "t"}, {}) is None
    assert "token" in check_request("t", local, {}, {})
    assert "token" in check_request("t", local, {"token": "x"}, {})
    assert check_request(None, local, {}, {}) is None
    assert "loopback" in check_request(None, {"Host": "evil.example:8080"}, {}, {})
    assert "cross-origin" in check_request(
        None, {"Host": "127.0.0.1:8080", "Origin": "http://evil.example"}, {}, {}
    )


def test_a_token_is_required_beyond_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost:8080") and is_loopback("[::1]:80")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5:8080")
    assert token_required("127.0.0.1", None) is False
    assert token_required("127.0.0.1", "t") is True
    assert token_required("0.0.0.0", "t") is True
    with pytest.raises(ValueError, match="token is required"):
        token_required("0.0.0.0", None)


def test_the_rate_limiter_allows_a_burst_then_the_sustained_rate():
    now = [0.0]
    limiter = RateLimiter(rate=5, burst=3, clock=lambda: now[0])
    assert [limiter.check("a") for _ in range(3)] == [None, None, None]
    wait = limiter.check("a")
    assert wait == pytest.approx(0.2)
    assert limiter.check("b") is None  # per client
    now[0] += 0.2
    assert limiter.check("a") is None and limiter.check("a") is not None
    with pytest.raises(ValueError):
        RateLimiter(rate=0)


def test_jog_steps_suit_the_profile_and_only_offered_moves_are_accepted():
    from deepaf_driver.profiles import get_profile

    four = jog_steps("4x")
    dof = get_profile("4x").depth_of_field_m
    assert four.z_fine == pytest.approx(dof / 2) and four.z_coarse == pytest.approx(2 * dof)
    assert four.xy_fine == pytest.approx(100e-6) and four.xy_coarse == pytest.approx(500e-6)
    twenty = jog_steps("20x")
    assert twenty.z_fine < 1e-6 and twenty.xy_fine < four.xy_fine
    assert four.delta("z", -1, "coarse") == (0.0, 0.0, -2 * dof)
    assert four.delta("x", 1, "fine") == (100e-6, 0.0, 0.0)
    for bad in (("w", 1, "fine"), ("x", 2, "fine"), ("x", 0, "fine"), ("x", 1, "huge")):
        with pytest.raises(ValueError):
            four.delta(*bad)


def test_regions_in_mm_are_checked_against_the_soft_limits():
    limits = Limits()
    assert parse_region_mm([6, 6, 7, 7.5], limits) == ((0.006, 0.006), (0.007, 0.0075))
    assert parse_region_mm("6,6,7,8", limits)[1] == (0.007, 0.008)
    cases = {
        "four numbers": [6, 6, 7],
        "four numbers ": "a,b,c,d",
        "finite": [6, 6, math.inf, 7],
        "zero area": [6, 6, 6, 7],
        "inverted": [7, 7, 6, 6],
        "soft limits": [6, 6, 16, 7],
    }
    for reason, region in cases.items():
        with pytest.raises(ValueError, match=reason.strip()):
            parse_region_mm(region, limits)
    assert Limits.from_params({"x_max": 0.02, "other": 1}).x_max == 0.02


def test_frames_pack_and_the_slot_keeps_only_the_newest():
    packed = pack_frame({"stamp": 1.5, "n": 3}, b"\xff\xd8jpeg")
    meta, jpeg = unpack_frame(packed)
    assert meta == {"stamp": 1.5, "n": 3} and jpeg == b"\xff\xd8jpeg"
    with pytest.raises(ValueError):
        unpack_frame(packed[:6])
    slot = LatestSlot()
    assert slot.take() == (None, 0)
    for i in range(5):
        slot.put(i)
    assert slot.take() == (4, 4) and slot.take() == (None, 0)


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_the_asset_is_checked_against_its_pin_and_unpacked_safely(tmp_path):
    data = _tarball(
        {
            "package/build/openseadragon/openseadragon.min.js": b"// osd",
            "package/build/openseadragon/images/home_rest.png": b"png",
            "package/build/openseadragon/openseadragon.min.js.map": b"{}",
            "package/build/openseadragon/../../evil.js": b"x",
            "package/README.md": b"readme",
        }
    )
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    assert assets.integrity_ok(data, integrity)
    assert not assets.integrity_ok(data + b"x", integrity)
    assert not assets.integrity_ok(data)  # not the pinned tarball
    out = assets.unpack(data, tmp_path)
    assert (out / "openseadragon.min.js").read_bytes() == b"// osd"
    assert (out / "images" / "home_rest.png").is_file()
    assert not (out / "openseadragon.min.js.map").exists()
    assert not (tmp_path / "evil.js").exists() and not (tmp_path.parent / "evil.js").exists()
    assert assets.installed(tmp_path)
    assert assets.OSD_URL.endswith(f"openseadragon-{assets.OSD_VERSION}.tgz")
