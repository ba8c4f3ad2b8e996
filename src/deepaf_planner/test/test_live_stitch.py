"""Stitching during the scan: tiles frozen as their neighbourhood completes, the slide blended
and encoded before the last tile, the same slide as a replay from disk, and a failure that
only hands the work back to the end of the scan."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import tifffile
from deepaf_planner.live_stitch import LiveStitcher, SlideStream, stitch_scan
from deepaf_planner.slide_formats import slide_format
from deepaf_planner.stitching import (
    STITCH_CONFIG,
    Match,
    Mosaic,
    StitchTile,
    nominal_positions_px,
    register_tiles,
    solve_positions,
)
from deepaf_planner.stream_solve import StreamingSolver
from skimage import data

PX = 1e-6
TILE = (200, 240)
STEP = (170, 200)
ROWS, COLS = 4, 5


@pytest.fixture(scope="module")
def canvas() -> np.ndarray:
    ihc = data.immunohistochemistry()
    return cv2.resize(ihc, (1400, 1400), interpolation=cv2.INTER_CUBIC)


def _layout(canvas, skip=(), seed=3):
    """A serpentine scan: planned fields (scan order) and the captured tiles with truth."""
    rng = np.random.default_rng(seed)
    fields, tiles, truth = [], [], {}
    order = [
        (r, c) for r in range(ROWS) for c in (range(COLS) if r % 2 == 0 else reversed(range(COLS)))
    ]
    for i, (r, c) in enumerate(order):
        ny, nx = 60 + r * STEP[0], 60 + c * STEP[1]
        x, y = (nx + TILE[1] / 2) * PX, (ny + TILE[0] / 2) * PX
        fields.append(SimpleNamespace(index=i, row=r, col=c, x=x, y=y))
        ty, tx = ny + int(rng.integers(-5, 6)), nx + int(rng.integers(-5, 6))
        if i in skip:
            continue
        truth[i] = (ty, tx)
        tiles.append(StitchTile(i, r, c, x, y, canvas[ty : ty + TILE[0], tx : tx + TILE[1]].copy()))
    return fields, tiles, truth


def test_streamed_positions_freeze_as_neighbourhoods_complete_and_match_the_global_solve(canvas):
    _, tiles, truth = _layout(canvas)
    nominal = nominal_positions_px(tiles, PX, TILE)
    matches = register_tiles(tiles, nominal, TILE)
    idx = [t.index for t in tiles]
    glob, _ = solve_positions(nominal, idx, matches)
    solver = StreamingSolver(
        idx, {t.index: (t.row, t.col) for t in tiles}, dict(zip(idx, nominal, strict=True)),
        dataclasses.replace(STITCH_CONFIG, freeze_ring=1),
    )  # fmt: skip
    frozen_at = {}
    for t in tiles:
        for i in solver.add(t.index, [m for m in matches if max(m.a, m.b) == t.index]):
            frozen_at[i] = t.index
    last = solver.visit_all()
    assert len(last) < len(tiles) // 2  # most froze during the scan
    assert frozen_at[0] == 9  # field 0 (row 0, col 0) waits for (1, 0) and (1, 1): 9 and 8
    with pytest.raises(ValueError, match="comes after"):
        solver.add(3)
    pos = solver.positions(idx)
    true = np.array([truth[i] for i in idx], float)
    for est in (pos, glob):
        err = (est - est.mean(axis=0)) - (true - true.mean(axis=0))
        assert np.abs(err).max() <= 1.0
    assert np.abs((pos - pos.mean(axis=0)) - (glob - glob.mean(axis=0))).max() <= 0.5


def test_an_unmatched_tile_waits_for_the_wider_ring():
    """Field 4 (row 1, col 1) matched nothing: the stage and the still-growing similarity
    prior alone place it, so it freezes after every field within loose_ring is in."""
    rows, cols = 8, 3
    cells = {r * cols + c: (r, c) for r in range(rows) for c in range(cols)}
    nominal = {i: (100.0 * r, 120.0 * c) for i, (r, c) in cells.items()}
    pairs = [(i, i + 1) for i, (r, c) in cells.items() if c + 1 < cols]
    pairs += [(i, i + cols) for i, (r, _) in cells.items() if r + 1 < rows]
    matches = [Match(a, b, 100.0 * (b - a == cols), 120.0 * (b - a == 1), 1.0, True)
               for a, b in pairs if 4 not in (a, b)]  # fmt: skip
    config = dataclasses.replace(STITCH_CONFIG, freeze_ring=1, loose_ring=3)
    solver = StreamingSolver(list(cells), cells, nominal, config)
    frozen_at = {}
    for i in cells:
        for f in solver.add(i, [m for m in matches if max(m.a, m.b) == i]):
            frozen_at[f] = i
    solver.visit_all()
    assert frozen_at[0] == 4  # ring 1 of (0, 0): up to (1, 1)
    assert frozen_at[5] == 8  # matched: ring 1 of (1, 2), up to (2, 2)
    assert frozen_at[4] == 14  # unmatched: ring 3 of (1, 1), up to (4, 2)
    assert np.allclose(solver.positions([4]), [nominal[4]], atol=1.0)


def test_the_slide_is_blended_during_the_scan_and_equals_the_mosaic(canvas, tmp_path: Path):
    fields, tiles, _ = _layout(canvas, skip={7})
    fmt = slide_format("tiff")
    config = dataclasses.replace(STITCH_CONFIG, freeze_ring=1)
    stream = SlideStream(fields, PX, TILE, tmp_path / "slide.tiff", fmt, config=config, tile=64)
    left = []
    for t in tiles:
        left.append(stream._pyramid.missing / int(np.prod(stream._grid)))
        stream.add(t.index, t.row, t.col, t.image)
    print("share of the slide left before each tile", np.round(left, 2))
    before_last = left[-1]
    result = stream.finish()
    stream.close()
    assert before_last < 0.35  # most of the slide was blended and encoded before the last tile
    assert result.late_tiles == 0 and result.stream_s > 0
    pos = np.array([result.positions_px[t.index] for t in tiles])
    mosaic = Mosaic(tiles, pos, TILE, result.feather_px, result.bounds_px)
    level0 = tifffile.imread(result.info.path, level=0)
    ref = mosaic.render(0, 0, *mosaic.shape)
    assert level0.shape == ref.shape
    # JPEG: the same pixels up to compression
    assert np.abs(level0.astype(int) - ref.astype(int)).mean() < 3.0
    assert not list(tmp_path.glob(".pyramid*"))  # scratch removed


def test_live_stitcher_equals_a_replay_from_disk_and_falls_back_after_a_failure(
    canvas, tmp_path: Path
):
    fields, tiles, _ = _layout(canvas, skip={4})
    on_disk = []
    for t in tiles:
        p = tmp_path / f"tile_{t.index}.png"
        cv2.imwrite(str(p), cv2.cvtColor(t.image, cv2.COLOR_RGB2BGR))
        on_disk.append(dataclasses.replace(t, image=p))
    live = LiveStitcher(fields, PX, tmp_path / "live" / "slide.tiff")
    (tmp_path / "live").mkdir()
    captured = {t.index: t for t in on_disk}
    for f in fields:  # as the scanner does: each capture, and a visit for each glass field
        t = captured.get(f.index)
        if t is None:
            live.visit(f.index)
        else:
            live.add(t.index, t.row, t.col, cv2.imread(str(t.image))[..., ::-1].copy(), t.image)
    got = stitch_scan(fields, on_disk, PX, tmp_path / "live" / "slide.tiff", live=live)
    live.close()
    assert live.tiles == len(tiles) and not live.error
    (tmp_path / "disk").mkdir()
    ref = stitch_scan(fields, on_disk, PX, tmp_path / "disk" / "slide.tiff")
    np.testing.assert_array_equal(
        tifffile.imread(got.info.path, level=0), tifffile.imread(ref.info.path, level=0)
    )
    # a tile of another shape stops the stream, not the scan: the end replays from disk
    broken = LiveStitcher(fields, PX, tmp_path / "disk" / "slide.tiff")
    broken.add(0, 0, 0, tiles[0].image)
    broken.add(1, 0, 1, tiles[1].image[:-10])
    broken.add(2, 0, 2, tiles[2].image)  # ignored after the failure
    assert broken.finish() is None
    assert "tile 1" in broken.error and "(190, 240, 3)" in broken.error
    again = stitch_scan(fields, on_disk, PX, tmp_path / "disk" / "slide.tiff", live=broken)
    broken.close()
    np.testing.assert_array_equal(
        tifffile.imread(again.info.path, level=0), tifffile.imread(ref.info.path, level=0)
    )


def test_stream_bad_input(canvas, tmp_path: Path):
    fields, tiles, _ = _layout(canvas)
    fmt = slide_format("tiff")
    with pytest.raises(ValueError, match="no fields"):
        SlideStream([], PX, TILE, tmp_path / "s.tiff", fmt)
    stream = SlideStream(fields, PX, TILE, tmp_path / "s.tiff", fmt)
    with pytest.raises(ValueError, match="no tiles"):
        stream.finish()
    with pytest.raises(ValueError, match="not uint8"):
        stream.add(0, 0, 0, tiles[0].image.astype(np.float32))
    stream.add(0, 0, 0, tiles[0].image)
    with pytest.raises(ValueError, match="comes after"):
        stream.add(0, 0, 0, tiles[0].image)
    stream.close()


def test_no_slide_pixel_is_written_before_every_tile_on_it_is_placed(tmp_path: Path):
    """A rotated, scaled camera; a tissue blob in the first rows, glass fields skipped, then
    rows of featureless captures that no match places: their positions come from the
    similarity fitted to the blob, and must not move back to the raw stage after the slide
    around them is written (review of the streamed slide: 3 tiles' pixels went missing)."""
    rng = np.random.default_rng(1)
    rows, cols, step, shape = 14, 12, (170, 200), (200, 240)
    canvas = cv2.resize(
        cv2.GaussianBlur(rng.integers(0, 255, (700, 700, 3)).astype(np.uint8), (0, 0), 1.0),
        (2800, 2800),
        interpolation=cv2.INTER_CUBIC,
    )
    a = 1.03 * np.exp(1j * np.deg2rad(2.0))  # camera scale and rotation against the stage
    centre = complex(cols * step[1] / 2, rows * step[0] / 2)
    order = [
        (r, c) for r in range(rows) for c in (range(cols) if r % 2 == 0 else reversed(range(cols)))
    ]
    fields, tiles = [], []
    for i, (r, c) in enumerate(order):
        ny, nx = r * step[0], c * step[1]
        x, y = (nx + shape[1] / 2) * PX, (ny + shape[0] / 2) * PX
        fields.append(SimpleNamespace(index=i, row=r, col=c, x=x, y=y))
        if (r < 4 and c >= 4) or 4 <= r < 6:
            continue  # glass: skipped
        w = a * (complex(nx, ny) - centre) + centre
        ty, tx = round(w.imag + 300 + rng.normal(0, 5)), round(w.real + 300 + rng.normal(0, 5))
        img = canvas[ty : ty + shape[0], tx : tx + shape[1]].copy()
        if r >= 6:
            img[:] = 240  # nothing to register
        tiles.append(StitchTile(i, r, c, x, y, img))
    config = dataclasses.replace(STITCH_CONFIG, max_shift_px=30)
    stream = SlideStream(
        fields, PX, shape, tmp_path / "s.tiff", slide_format("tiff"), compression="none",
        config=config, tile=64,
    )  # fmt: skip
    for t in tiles:
        stream.add(t.index, t.row, t.col, t.image)
    result = stream.finish()
    stream.close()
    pos = np.array([result.positions_px[t.index] for t in tiles])
    mosaic = Mosaic(tiles, pos, shape, result.feather_px, result.bounds_px)
    level0 = tifffile.imread(result.info.path, level=0).astype(int)
    assert result.late_tiles == 0
    assert np.abs(level0 - mosaic.render(0, 0, *mosaic.shape)).max() <= 1


def test_glass_fields_passed_at_the_end_let_the_slide_finish_during_the_scan(
    canvas, tmp_path: Path
):
    """A last row of glass: visiting it freezes and blends the rows above before the end."""
    fields, tiles, _ = _layout(canvas, skip=set(range(15, 20)))
    stream = SlideStream(fields, PX, TILE, tmp_path / "s.tiff", slide_format("tiff"), tile=64)
    for t in tiles:
        stream.add(t.index, t.row, t.col, t.image)
    left_after_tiles = stream._pyramid.missing
    for i in range(15, 20):
        stream.visit(i)
    assert stream._pyramid.missing == 0 < left_after_tiles  # all blended before finish()
    result = stream.finish()
    stream.close()
    assert result.late_tiles == 0 and result.info.path.is_file()
