"""Registration during the scan: same matches as at the end, and a failure that only hands
the work back to the stitching step."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from deepaf_planner.live_stitch import LiveRegistration
from deepaf_planner.stitching import StitchTile, nominal_positions_px, register_tiles

PX = 1e-6
TILE = (200, 240)


def _layout(rng):
    canvas = (rng.random((700, 900, 3)) * 255).astype(np.uint8)
    fields, tiles = [], []
    for i, (r, c) in enumerate([(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0)]):  # serpentine
        ny, nx = 50 + r * 170, 50 + c * 200
        ty, tx = ny + int(rng.integers(-4, 5)), nx + int(rng.integers(-4, 5))
        x, y = (nx + TILE[1] / 2) * PX, (ny + TILE[0] / 2) * PX
        fields.append(SimpleNamespace(index=i, row=r, col=c, x=x, y=y))
        img = canvas[ty : ty + TILE[0], tx : tx + TILE[1]].copy()
        tiles.append(StitchTile(i, r, c, x, y, img))
    return fields, tiles


def test_live_matches_equal_registration_at_the_end():
    fields, tiles = _layout(np.random.default_rng(3))
    live = LiveRegistration(fields, PX)
    for t in tiles:
        live.add(t.index, t.row, t.col, t.image)
    got = live.matches()
    live.close()
    want = register_tiles(tiles, nominal_positions_px(tiles, PX, TILE), TILE)
    assert len(got) == len(want) == 7 and all(m.accepted for m in got)
    for a, b in zip(got, want, strict=True):
        assert (a.a, a.b) == (b.a, b.b)
        np.testing.assert_allclose((a.dy, a.dx), (b.dy, b.dx), atol=1e-6)
    assert live.tiles == 6 and live.seconds > 0 and not live.error


def test_a_tile_of_another_shape_stops_live_registration_not_the_scan():
    fields, tiles = _layout(np.random.default_rng(4))
    live = LiveRegistration(fields, PX)
    live.add(0, 0, 0, tiles[0].image)
    live.add(1, 0, 1, tiles[1].image[:-10])
    live.add(2, 0, 2, tiles[2].image)  # ignored after the failure
    assert live.matches() is None
    assert "tile 1" in live.error and "(190, 240)" in live.error
    live.close()
