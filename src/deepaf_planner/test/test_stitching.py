"""Stitching: registration against known shifts, global solve, blending, slide output."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from deepaf_planner.live_stitch import stitch_slide
from deepaf_planner.scan_path import plan_grid
from deepaf_planner.stitching import (
    Match,
    Mosaic,
    OverlapRegistrar,
    StitchConfig,
    StitchTile,
    TileCache,
    approach_signs,
    fit_stage_map,
    nominal_positions_px,
    register_tiles,
    solve_positions,
)
from skimage import data

PX = 1e-6  # pixel size (m)
TILE = (300, 400)  # tile height, width
STEP = (250, 330)  # nominal step: 50 and 70 px overlaps
ORIGIN = 100


@pytest.fixture(scope="module")
def canvas() -> np.ndarray:
    """A 1536x1536 stained-tissue texture (the 'slide')."""
    ihc = data.immunohistochemistry()
    return cv2.resize(ihc, (1536, 1536), interpolation=cv2.INTER_CUBIC)


def make_tiles(canvas, rows=3, cols=3, jitter=6, seed=1, skip=()):
    """Crops at jittered true positions; the stage reports the nominal ones."""
    rng = np.random.default_rng(seed)
    tiles, truth = [], {}
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            ny, nx = ORIGIN + r * STEP[0], ORIGIN + c * STEP[1]
            ty, tx = (
                ny + int(rng.integers(-jitter, jitter + 1)),
                nx + int(rng.integers(-jitter, jitter + 1)),
            )
            if i in skip:
                continue
            truth[i] = (ty, tx)
            img = canvas[ty : ty + TILE[0], tx : tx + TILE[1]].copy()
            x_m, y_m = (nx + TILE[1] / 2) * PX, (ny + TILE[0] / 2) * PX
            tiles.append(StitchTile(i, r, c, x_m, y_m, img))
    return tiles, truth


def _relative(pos: np.ndarray) -> np.ndarray:
    return pos - pos.mean(axis=0)


def test_registration_recovers_known_shifts(canvas) -> None:
    tiles, truth = make_tiles(canvas)
    nominal = nominal_positions_px(tiles, PX, TILE)
    np.testing.assert_allclose(nominal[0], (ORIGIN, ORIGIN))
    matches = register_tiles(tiles, nominal, TILE)
    assert len(matches) == 12 and all(m.accepted for m in matches)
    for m in matches:
        true = np.subtract(truth[m.b], truth[m.a])
        assert np.abs(np.array([m.dy, m.dx]) - true).max() < 0.6, m
    pos, matches = solve_positions(nominal, [t.index for t in tiles], matches)
    t = np.array([truth[i] for i in sorted(truth)], float)
    assert np.abs(_relative(nominal) - _relative(t)).max() > 4  # the stage was off ...
    assert np.abs(_relative(pos) - _relative(t)).max() < 0.5  # ... registration fixes it


def test_flat_overlaps_and_bad_matches_are_rejected(canvas) -> None:
    tiles, truth = make_tiles(canvas, rows=1, cols=3)
    glass = tiles[2].image.copy()
    glass[:] = 245
    tiles[2] = StitchTile(2, 0, 2, tiles[2].x_m, tiles[2].y_m, glass)
    nominal = nominal_positions_px(tiles, PX, TILE)
    matches = register_tiles(tiles, nominal, TILE)
    assert [m.accepted for m in matches] == [True, False]
    assert "flat" in matches[1].reason
    # a wrong but "confident" match is outvoted by the stage prior and others, then dropped
    tiles, truth = make_tiles(canvas, rows=2, cols=2)
    nominal = nominal_positions_px(tiles, PX, TILE)
    matches = register_tiles(tiles, nominal, TILE)
    bad = matches[0]
    matches[0] = Match(bad.a, bad.b, bad.dy + 15, bad.dx, 0.3, True)
    pos, matches = solve_positions(nominal, [t.index for t in tiles], matches)
    assert not matches[0].accepted and matches[0].reason == "inconsistent"
    t = np.array([truth[i] for i in sorted(truth)], float)
    assert np.abs(_relative(pos) - _relative(t)).max() < 0.6


def test_mosaic_blends_seamlessly_and_skipped_fields_are_white(canvas) -> None:
    tiles, truth = make_tiles(canvas, skip={4})  # the centre field was empty glass
    nominal = nominal_positions_px(tiles, PX, TILE)
    matches = register_tiles(tiles, nominal, TILE)
    pos, _ = solve_positions(nominal, [t.index for t in tiles], matches)
    mosaic = Mosaic(tiles, pos, TILE, feather_px=50)
    assert mosaic.shape[0] == pytest.approx(2 * STEP[0] + TILE[0], abs=14)
    out = mosaic.render(0, 0, *mosaic.shape)
    # truth of the rendered area: the canvas at the true position of tile 0
    y0, x0 = np.array(truth[0]) - mosaic.tile_corners_px[0]
    ref = canvas[y0 : y0 + mosaic.shape[0], x0 : x0 + mosaic.shape[1]]
    covered = out.min(axis=2) < 255
    diff = np.abs(out.astype(int) - ref.astype(int))[covered]
    assert diff.mean() < 2.0
    cy, cx = mosaic.tile_corners_px[3] + (TILE[0] // 2, TILE[1] + 40)  # centre of the gap
    assert (out[cy - 20 : cy + 20, cx - 10 : cx + 10] == 255).all()
    # rendering a window equals the same crop of the whole
    np.testing.assert_array_equal(mosaic.render(37, 51, 100, 120), out[37:137, 51:171])


def test_tile_cache_is_bounded_and_reads_files(tmp_path: Path, canvas) -> None:
    tiles, _ = make_tiles(canvas, rows=1, cols=3)
    paths = []
    for t in tiles:
        p = tmp_path / f"t{t.index}.png"
        cv2.imwrite(str(p), t.image[..., ::-1])
        paths.append(StitchTile(t.index, t.row, t.col, t.x_m, t.y_m, p))
    one = tiles[0].image.nbytes
    cache = TileCache(paths, max_bytes=2 * one)
    for i in (0, 1, 0, 2, 0, 1):
        np.testing.assert_array_equal(cache.get(i), tiles[i].image)
    assert cache.loads == 4  # 0, 1, 2 loaded; 1 evicted by 2 and reloaded
    with pytest.raises(FileNotFoundError):
        TileCache([StitchTile(9, 0, 0, 0, 0, tmp_path / "missing.png")], one).get(9)


def test_stitch_slide_writes_an_openslide_slide(tmp_path: Path, canvas) -> None:
    openslide = pytest.importorskip("openslide")
    tiles, _ = make_tiles(canvas, skip={8})
    grid_min = (ORIGIN * PX, ORIGIN * PX)  # include the skipped corner field as glass
    grid_max = ((ORIGIN + 2 * STEP[1] + TILE[1]) * PX, (ORIGIN + 2 * STEP[0] + TILE[0]) * PX)
    result, mosaic = stitch_slide(
        tiles, PX, tmp_path / "slide.tiff", covered_min_xy=grid_min, covered_max_xy=grid_max,
        config=StitchConfig(),
    )  # fmt: skip
    info = result.info
    assert sum(m.accepted for m in result.matches) == 10
    assert result.late_tiles == 0
    assert mosaic.shape == (2 * STEP[0] + TILE[0], 2 * STEP[1] + TILE[1])
    with openslide.OpenSlide(info.path) as s:
        assert s.dimensions == (mosaic.shape[1], mosaic.shape[0])
        assert s.level_count == len(info.level_shapes) == 4
        region = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
    np.testing.assert_array_equal(region, mosaic.render(0, 0, *mosaic.shape))
    assert (region[-60:, -60:] == 255).all()  # skipped corner = white glass


def test_stitch_slide_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no tiles"):
        stitch_slide([], PX, tmp_path / "s.tiff")
    img = np.zeros((32, 32, 3), np.uint8)
    dup = [StitchTile(0, 0, 0, 0, 0, img), StitchTile(0, 0, 1, 1e-5, 0, img)]
    with pytest.raises(ValueError, match="unique"):
        stitch_slide(dup, PX, tmp_path / "s.tiff")


def test_registrar_during_a_serpentine_scan_equals_batch_registration(canvas) -> None:
    """Registering each tile as it is captured (scan order, one field skipped) = batch."""
    tiles, _ = make_tiles(canvas, skip={4})
    nominal = nominal_positions_px(tiles, PX, TILE)
    batch = register_tiles(tiles, nominal, TILE)
    # the planner knows the planned fields up front; here they match the stage positions
    grid = plan_grid(
        (ORIGIN * PX, ORIGIN * PX),
        ((ORIGIN + 2 * STEP[1] + TILE[1]) * PX, (ORIGIN + 2 * STEP[0] + TILE[0]) * PX),
        (TILE[1] * PX, TILE[0] * PX), step=(STEP[1] * PX, STEP[0] * PX),
    )  # fmt: skip
    registrar = OverlapRegistrar.for_fields(grid.fields, PX, TILE)
    by_cell = {(t.row, 2 - t.col): t for t in tiles}  # grid col 0 = highest x
    for f in grid.fields:  # serpentine order
        t = by_cell.get((f.row, f.col))
        if t is not None:
            registrar.add(t.index, f.row, f.col, t.image)
    got = sorted(registrar.matches, key=lambda m: (min(m.a, m.b), max(m.a, m.b)))
    assert len(got) == len(batch) == 8
    for m, ref in zip(got, batch, strict=True):
        sign = 1 if (m.a, m.b) == (ref.a, ref.b) else -1
        assert {m.a, m.b} == {ref.a, ref.b}
        np.testing.assert_allclose(sign * np.array([m.dy, m.dx]), [ref.dy, ref.dx], atol=0.05)


def test_virtual_microscope_tiles_stitch_and_sharpness(tmp_path: Path) -> None:
    """Overlapping fields of the simulator with stage jitter register to the pixel."""
    sim = pytest.importorskip("deepaf_driver.sim")
    from deepaf_planner.sharpness import assess_sharpness, normalized_sharpness

    scope = sim.VirtualMicroscope(profile="20x", slide_seed=0)
    px = scope.pixel_size_m
    x0, y0 = scope.random_tissue_position(np.random.default_rng(0))
    w, h = 320, 240
    step = (int(w * 0.85), int(h * 0.85))
    rng = np.random.default_rng(3)
    tiles, jitter = [], []
    for r in range(2):
        for c in range(3):
            nx, ny = x0 + c * step[0] * px, y0 + r * step[1] * px
            jy, jx = (int(v) for v in rng.integers(-5, 6, 2))
            tx, ty = nx + jx * px, ny + jy * px
            img = scope.render_patch(tx, ty, scope.best_focus_z(tx, ty), (w, h))
            tiles.append(StitchTile(r * 3 + c, r, c, nx, ny, img))
            jitter.append((jy, jx))
    result, mosaic = stitch_slide(tiles, px, tmp_path / "slide.tiff")
    assert sum(m.accepted for m in result.matches) >= 5
    nominal = nominal_positions_px(tiles, px, (h, w))
    found = mosaic.tile_corners_px - (nominal - nominal.min(axis=0))
    assert np.abs(_relative(found) - _relative(np.array(jitter, float))).max() <= 1.0
    # the sharpness check tells a defocused capture from its in-focus neighbours
    scores = [normalized_sharpness(t.image) for t in tiles[1:]]
    z0 = scope.best_focus_z(x0, y0)
    assert assess_sharpness(normalized_sharpness(tiles[0].image), scores).ok
    blurred = scope.render_patch(x0, y0, z0 + 8e-6, (w, h))
    assert not assess_sharpness(normalized_sharpness(blurred), scores).ok


def test_approach_signs_follow_the_last_move_of_each_axis() -> None:
    # a serpentine of 2 rows x 3 columns, (row, col) px: a row change moves only the row
    nominal = np.array([[0, 0], [0, 100], [0, 200], [90, 200], [90, 100], [90, 0]], float)
    signs = approach_signs(nominal)
    assert signs[:, 1].tolist() == [1, 1, 1, 1, -1, -1]  # field 3 kept field 2's direction
    assert signs[:, 0].tolist() == [1, 1, 1, 1, 1, 1]  # before the first row move: its sign


def test_the_stage_map_learns_the_rotation_and_the_backlash() -> None:
    rows, cols = 6, 8
    cells = [(r, c if r % 2 == 0 else cols - 1 - c) for r in range(rows) for c in range(cols)]
    nominal = np.array([(90.0 * r, 100.0 * c) for r, c in cells])
    signs = approach_signs(nominal)
    z = nominal[:, 1] + 1j * nominal[:, 0]
    a, backlash = np.exp(0.004j) * 1.001, 6 - 1j  # px per unit of the column sign
    w = a * (z - z.mean()) + 40 + 25j + backlash * signs[:, 1]
    truth = np.column_stack([w.imag, w.real])
    pos = {i: i for i in range(len(cells))}
    matches = [Match(i, i + 1, 0, 0, 1.0, True) for i in range(len(cells) - 1)]
    stage = fit_stage_map(nominal, truth, pos, matches, signs)
    assert stage is not None
    assert abs(stage.a - a) < 1e-9 and abs(stage.backlash[1] - backlash) < 1e-9
    assert stage.backlash[0] == 0  # the rows were all reached moving down: no measure
    assert np.allclose(stage.apply(nominal, signs), truth)
    similarity = fit_stage_map(nominal, truth, pos, matches)  # without the signs
    assert np.abs(similarity.apply(nominal, signs) - truth).max() > 5
    assert fit_stage_map(nominal, truth, pos, matches[:10], signs) is None  # 11 tiles placed
