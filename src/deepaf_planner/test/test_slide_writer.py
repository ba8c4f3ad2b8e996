"""Tile pyramid, pyramidal TIFF, thumbnail and focus map: opened back with OpenSlide and PIL."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from deepaf_planner.slide_writer import (
    TilePyramid,
    downsample2,
    tiff_encoder,
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


def test_region_source_gives_the_same_file(tmp_path: Path, image) -> None:
    calls = []

    def render(y0: int, x0: int, h: int, w: int) -> np.ndarray:
        calls.append((y0, h))
        return image[y0 : y0 + h, x0 : x0 + w]

    a = write_pyramidal_tiff(tmp_path / "a.tiff", image, 1e-6, tile=128)
    b = write_pyramidal_tiff(
        tmp_path / "b.tiff", render, 1e-6, shape=(600, 728), tile=128,
        on_strip=lambda: calls.append("strip"),
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tiff", "b.tiff"]  # no spill file


def test_bad_arguments(tmp_path: Path, image) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_pyramidal_tiff(tmp_path / "x.tiff", image.astype(np.float32), 1e-6)
    with pytest.raises(ValueError, match="shape"):
        write_pyramidal_tiff(tmp_path / "x.tiff", lambda *a: image, 1e-6)
    with pytest.raises(ValueError, match="multiple of 16"):
        write_pyramidal_tiff(tmp_path / "x.tiff", image, 1e-6, tile=100)
    with pytest.raises(ValueError, match="pixel size"):
        write_pyramidal_tiff(tmp_path / "x.tiff", image, 0.0)
    with pytest.raises(ValueError, match="compression 'lzw'"):
        write_pyramidal_tiff(tmp_path / "x.tiff", image, 1e-6, compression="lzw")
    assert not list(tmp_path.iterdir())


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


def _raw(tile: np.ndarray) -> bytes:
    return tile.tobytes()


def _reference(img: np.ndarray, tile: int) -> list[np.ndarray]:
    """Every level: a whole-level downsample2 of the one below, until one tile."""
    levels = [img]
    while max(levels[-1].shape[:2]) > tile:
        levels.append(downsample2(levels[-1]))
    return levels


def _fill(pyramid: TilePyramid, img: np.ndarray, order: list[tuple[int, int]]) -> None:
    t = pyramid.tile
    for ty, tx in order:
        pyramid.put(ty, tx, img[ty * t : (ty + 1) * t, tx * t : (tx + 1) * t])


def _row_major(pyramid: TilePyramid) -> list[tuple[int, int]]:
    rows, cols = pyramid.grid(0)
    return [(r, c) for r in range(rows) for c in range(cols)]


def _shuffled(pyramid: TilePyramid, seed: int = 0) -> list[tuple[int, int]]:
    order = _row_major(pyramid)
    np.random.default_rng(seed).shuffle(order)
    return order


def _decoded(pyramid: TilePyramid) -> list[np.ndarray]:
    """Each level's tiles (raw encoder) put back together, padding included."""
    t, out = pyramid.tile, []
    for level, tiles in pyramid.levels():
        rows, cols = pyramid.grid(level)
        img = np.empty((rows * t, cols * t, 3), np.uint8)
        for i, data in enumerate(tiles):
            r, c = divmod(i, cols)
            img[r * t : (r + 1) * t, c * t : (c + 1) * t] = np.frombuffer(data, np.uint8).reshape(
                t, t, 3
            )
        out.append(img)
    return out


@pytest.mark.parametrize(("shape", "tile"), [((300, 517), 64), ((600, 728), 128), ((37, 45), 16)])
def test_tile_pyramid_in_any_order_is_the_whole_level_pyramid(tmp_path, shape, tile) -> None:
    img = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ref = _reference(img, tile)
    with TilePyramid(shape, 1e-6, tile, _raw, tmp_path, thumbnail_px=64) as p:
        assert p.shapes == [r.shape[:2] for r in ref]
        assert p.missing == p.grid(0)[0] * p.grid(0)[1]
        _fill(p, img, _shuffled(p))
        assert p.missing == 0
        for level, got in zip(ref, _decoded(p), strict=True):
            h, w = level.shape[:2]
            np.testing.assert_array_equal(got[:h, :w], level)
            assert (got[h:] == 255).all() and (got[:, w:] == 255).all()  # edge tiles: white
        assert max(p.thumbnail.shape[:2]) <= 64
        assert p.encoded_bytes == sum(len(b) for _, tiles in p.levels() for b in tiles)
    assert not list(tmp_path.iterdir())  # the spill file is never visible, and gone


def test_shuffled_and_row_major_tiles_give_the_same_slide(tmp_path: Path, image) -> None:
    levels = []
    for order in (_row_major, _shuffled):
        with TilePyramid(image.shape[:2], 1e-6, 128, tiff_encoder("zlib", 90), tmp_path) as p:
            _fill(p, image, order(p))
            levels.append([list(tiles) for _, tiles in p.levels()])
            thumb = p.thumbnail
    assert levels[0] == levels[1] and len(levels[0]) == 4
    np.testing.assert_array_equal(thumb, downsample2(image))  # level 1: <= 2x 1024 px


def test_one_tile_image_and_edge_sized_tiles(tmp_path: Path, image) -> None:
    small = image[:50, :70]
    with TilePyramid((50, 70), 1e-6, 128, _raw, tmp_path) as p:
        assert p.shapes == [(50, 70)] and p.grid(0) == (1, 1)
        p.put(0, 0, small)  # just the image's part of the tile
        (got,) = _decoded(p)
        np.testing.assert_array_equal(got[:50, :70], small)
        assert (got[50:] == 255).all() and (got[:, 70:] == 255).all()
        np.testing.assert_array_equal(p.thumbnail, small)
    for shape in [(128, 128), (50, 100)]:  # more than the image: beyond the edge is ignored
        with TilePyramid((50, 70), 1e-6, 128, _raw, tmp_path) as p:
            p.put(0, 0, np.zeros((*shape, 3), np.uint8))
            (got,) = _decoded(p)
            assert (got[:50, :70] == 0).all()
            assert (got[50:] == 255).all() and (got[:, 70:] == 255).all()


def test_tile_pyramid_refuses_bad_puts_and_early_reads(tmp_path: Path, image) -> None:
    p = TilePyramid((300, 517), 1e-6, 64, _raw, tmp_path)
    assert p.grid(0) == (5, 9)
    tile = image[:64, :64]
    p.put(0, 0, tile)
    with pytest.raises(ValueError, match="put already"):
        p.put(0, 0, tile)
    for ty, tx in [(5, 0), (0, 9), (-1, 0)]:
        with pytest.raises(ValueError, match="outside"):
            p.put(ty, tx, tile)
    with pytest.raises(ValueError, match="uint8"):
        p.put(0, 1, tile.astype(np.float32))
    with pytest.raises(ValueError, match="44 <= h <= 64 and 5 <= w <= 64"):
        p.put(4, 8, image[:10, :10])  # the corner tile is 44 x 5 inside the image
    with pytest.raises(ValueError, match="uint8"):
        p.put(0, 1, image[:64, :64, 0])
    with pytest.raises(RuntimeError, match="44 level-0 tiles are still missing"):
        p.levels()
    with pytest.raises(RuntimeError, match="missing"):
        p.info(tmp_path / "x.tiff")
    p.close()
    with pytest.raises(RuntimeError, match="closed"):
        p.put(0, 1, tile)
    with pytest.raises(ValueError, match="multiple of 16"):
        TilePyramid((300, 517), 1e-6, 100, _raw, tmp_path)
    with pytest.raises(ValueError, match="shape"):
        TilePyramid((0, 517), 1e-6, 64, _raw, tmp_path)
    with pytest.raises(ValueError, match="pixel size"):
        TilePyramid((300, 517), float("nan"), 64, _raw, tmp_path)


def test_put_in_a_worker_read_in_another_thread(tmp_path: Path, image) -> None:
    with TilePyramid(image.shape[:2], 1e-6, 128, _raw, tmp_path) as p:
        worker = threading.Thread(target=_fill, args=(p, image, _shuffled(p, seed=3)))
        worker.start()
        worker.join()  # orders every put before the reads
        results: list[list[np.ndarray]] = []
        readers = [threading.Thread(target=lambda: results.append(_decoded(p))) for _ in range(2)]
        for r in readers:
            r.start()
        for r in readers:
            r.join()
    for got in results:
        np.testing.assert_array_equal(got[1][:300, :364], downsample2(image))
