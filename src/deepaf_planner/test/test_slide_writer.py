"""Pyramidal TIFF, thumbnail and focus map: opened back with OpenSlide and PIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from deepaf_planner.slide_writer import (
    downsample2,
    write_focus_map,
    write_pyramidal_tiff,
    write_thumbnail,
)
from PIL import Image

openslide = pytest.importorskip("openslide")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (75, 91, 3), dtype=np.uint8)
    img = np.kron(base, np.ones((8, 8, 1), np.uint8))  # 600 x 728, blocky so levels differ
    return img + rng.integers(0, 4, img.shape, dtype=np.uint8)


def test_openslide_reads_levels_and_pixels(tmp_path: Path, image: np.ndarray) -> None:
    info = write_pyramidal_tiff(tmp_path / "slide.tiff", image, pixel_size_m=0.5e-6, tile=256)
    assert info.level_shapes == [(600, 728), (300, 364), (150, 182)]
    with openslide.OpenSlide(tmp_path / "slide.tiff") as s:
        assert openslide.OpenSlide.detect_format(tmp_path / "slide.tiff") == "generic-tiff"
        assert s.dimensions == (728, 600)
        assert s.level_count == 3
        assert s.level_dimensions == ((728, 600), (364, 300), (182, 150))
        np.testing.assert_allclose(s.level_downsamples, [1, 2, 4], rtol=1e-3)
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        assert float(s.properties["openslide.mpp-y"]) == pytest.approx(0.5)
        region = np.asarray(s.read_region((300, 250), 0, (300, 200)).convert("RGB"))
        np.testing.assert_array_equal(region, image[250:450, 300:600])
        level1 = np.asarray(s.read_region((0, 0), 1, (364, 300)).convert("RGB"))
        np.testing.assert_array_equal(level1, downsample2(image))
        level2 = np.asarray(s.read_region((0, 0), 2, (182, 150)).convert("RGB"))
        np.testing.assert_array_equal(level2, downsample2(downsample2(image)))
    assert info.thumbnail.shape == (300, 364, 3)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_region_source_and_memory_map_give_the_same_file(tmp_path: Path, image) -> None:
    calls = []

    def render(y0: int, x0: int, h: int, w: int) -> np.ndarray:
        calls.append((y0, h))
        return image[y0 : y0 + h, x0 : x0 + w]

    a = write_pyramidal_tiff(tmp_path / "a.tiff", image, 1e-6, tile=128)
    b = write_pyramidal_tiff(
        tmp_path / "b.tiff", render, 1e-6, shape=(600, 728), tile=128,
        memory_limit_bytes=1000, on_strip=lambda: calls.append("strip"),
    )  # fmt: skip
    assert a.level_shapes == b.level_shapes and len(a.level_shapes) == 4
    assert max(h for c in calls if c != "strip" for _, h in [c]) <= 128  # strips, not the image
    assert calls.count("strip") == 5
    with (
        openslide.OpenSlide(tmp_path / "a.tiff") as sa,
        openslide.OpenSlide(tmp_path / "b.tiff") as sb,
    ):
        for level in range(sa.level_count):
            size = sa.level_dimensions[level]
            ra = np.asarray(sa.read_region((0, 0), level, size))
            np.testing.assert_array_equal(ra, np.asarray(sb.read_region((0, 0), level, size)))
    assert not list(tmp_path.glob(".pyramid-*"))  # memory maps removed


def test_bad_arguments(tmp_path: Path, image) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_pyramidal_tiff(tmp_path / "x.tiff", image.astype(np.float32), 1e-6)
    with pytest.raises(ValueError, match="shape"):
        write_pyramidal_tiff(tmp_path / "x.tiff", lambda *a: image, 1e-6)
    with pytest.raises(ValueError, match="multiple of 16"):
        write_pyramidal_tiff(tmp_path / "x.tiff", image, 1e-6, tile=100)
    with pytest.raises(ValueError, match="pixel size"):
        write_pyramidal_tiff(tmp_path / "x.tiff", image, 0.0)


def test_thumbnail_and_focus_map(tmp_path: Path, image) -> None:
    write_thumbnail(tmp_path / "thumbnail.png", image)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "thumbnail.png")), image)
    z = {(r, c): 10.0 + r + 0.1 * c for r in range(3) for c in range(4) if (r, c) != (1, 1)}
    err = {k: (0.2 if k[0] else -0.3) for k in z}
    path = write_focus_map(
        tmp_path / "focus_map.png", 3, 4,
        {"chosen z (um)": z, "true focus error (um)": err}, title="scan",
    )  # fmt: skip
    png = np.asarray(Image.open(path))
    assert png.shape[0] > 200 and png.shape[1] > 600
    with pytest.raises(ValueError, match="outside"):
        write_focus_map(tmp_path / "f.png", 2, 2, {"z": {(2, 0): 1.0}})


def test_jpeg_slide_opens_with_close_pixels_and_is_smaller(tmp_path: Path) -> None:
    from skimage.data import immunohistochemistry

    tissue = np.ascontiguousarray(immunohistochemistry()[:480, :500])  # real stained tissue
    write_pyramidal_tiff(tmp_path / "z.tiff", tissue, 0.5e-6)
    write_pyramidal_tiff(tmp_path / "j.tiff", tissue, 0.5e-6, compression="jpeg")
    assert (tmp_path / "j.tiff").stat().st_size < (tmp_path / "z.tiff").stat().st_size / 2
    with openslide.OpenSlide(tmp_path / "j.tiff") as s:
        w, h = s.dimensions
        region = np.asarray(s.read_region((0, 0), 0, (w, h)))[..., :3].astype(float)
    assert (w, h) == (500, 480)
    assert np.abs(region - tissue).mean() < 4.0  # lossy, but close
