"""The scan's slide, tile by tile: each tile is registered, placed, blended and encoded as it
arrives, so the end of a scan only writes the file (:class:`SlideStream`).

1. :class:`~.stitching.OverlapRegistrar` matches a tile with its captured neighbours;
2. :class:`~.stream_solve.StreamingSolver` places it and freezes the tiles whose
   neighbourhood is complete;
3. every 256 x 256 tile of the slide that no unfrozen or unvisited field can still reach
   (its predicted place, widened by a margin) is blended from the frozen tiles
   (:func:`~.stitching.blend`) and handed to the format's
   :class:`~.slide_writer.TilePyramid`, which encodes it and builds the coarser levels.

Memory: the overlap strips of neighbours still to come, the decoded tiles not fully blended
yet (bounded by ``cache_bytes``; evicted ones are read again from their file), the pyramid's
pending parents and the encoded tiles' offsets.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .slide_formats import SlideFormat
from .slide_writer import SlideInfo, TilePyramid
from .stitching import (
    STITCH_CONFIG,
    Match,
    OverlapRegistrar,
    StitchConfig,
    _load,
    blend,
    bounds_px,
    feather_ramps,
    planned_overlap_px,
    stage_to_px,
)
from .stream_solve import StreamingSolver

__all__ = ["SlideStream", "StitchResult"]


@dataclass
class StitchResult:
    """A written slide and how it was made.

    Args:
        info: What was written.
        positions_px: Final top-left (row, col) of each tile index, level-0 pixels.
        matches: Every registration, accepted or not.
        tile_shape: (height, width) of the tiles.
        feather_px: The blending ramp's width.
        bounds_px: The mosaic's ((row0, col0), (row1, col1)).
        stream_s: Seconds spent on tiles while they arrived (registration to encoding).
        final_s: Seconds from the last tile to the written file.
        late_tiles: Tiles frozen where a slide tile already written should have had part
            of them (their pixels there are missing; 0 unless a tile moved by more than
            the margin).
    """

    info: SlideInfo
    positions_px: dict[int, np.ndarray]
    matches: list[Match]
    tile_shape: tuple[int, int]
    feather_px: int
    bounds_px: tuple[tuple[float, float], tuple[float, float]]
    stream_s: float = 0.0
    final_s: float = 0.0
    late_tiles: int = 0


class SlideStream:
    """Registers, places, blends and encodes tiles arriving in scan order (synchronous).

    Args:
        fields: Every planned field in scan order (objects with ``index``, ``row``,
            ``col``, ``x``, ``y``; the stage centre in m).
        pixel_size_m: Capture pixel size (m).
        tile_shape: (height, width) of every tile.
        out_path: The slide to write (its folder holds the scratch file).
        fmt: The slide format.
        covered: Stage rectangle ((x0, y0), (x1, y1)) of the slide (m), e.g. the grid's
            ``covered_min_xy``/``covered_max_xy``; ``None``: the planned fields' extent.
        compression: ``jpeg``, ``zlib`` or ``none``.
        jpeg_quality: JPEG quality.
        config: Registration, solve and blending settings.
        tile: The slide's tile side.

    Raises:
        ValueError: for no fields, a bad pixel size, format or compression.
    """

    def __init__(
        self,
        fields: Sequence[Any],
        pixel_size_m: float,
        tile_shape: tuple[int, int],
        out_path: Path,
        fmt: SlideFormat,
        covered: tuple[tuple[float, float], tuple[float, float]] | None = None,
        compression: str = "jpeg",
        jpeg_quality: int = 90,
        config: StitchConfig = STITCH_CONFIG,
        tile: int = 256,
    ) -> None:
        fields = list(fields)
        if not fields:
            raise ValueError("no fields to stitch")
        self.tile_shape = (int(tile_shape[0]), int(tile_shape[1]))
        self._fmt, self._compression, self._quality = fmt, compression, jpeg_quality
        self._out = Path(out_path)
        self.config = config
        px = stage_to_px([(f.x, f.y) for f in fields], pixel_size_m, self.tile_shape, config)
        by_cell = {(f.row, f.col): p for f, p in zip(fields, px, strict=True)}
        self._registrar = OverlapRegistrar(by_cell, self.tile_shape, config)
        self._solver = StreamingSolver(
            [f.index for f in fields],
            {f.index: (f.row, f.col) for f in fields},
            {f.index: p for f, p in zip(fields, px, strict=True)},
            config,
        )
        self._order = [f.index for f in fields]
        self._cells = {f.index: (f.row, f.col) for f in fields}
        if covered is not None:
            self.bounds = bounds_px(covered[0], covered[1], pixel_size_m, config)
        else:
            lo, hi = px.min(axis=0), px.max(axis=0) + np.array(self.tile_shape)
            self.bounds = ((float(lo[0]), float(lo[1])), (float(hi[0]), float(hi[1])))
        self._origin = np.floor(np.asarray(self.bounds[0], float)).astype(np.int64)
        hi = np.ceil(np.asarray(self.bounds[1], float)).astype(np.int64)
        self.shape = (int(hi[0] - self._origin[0]), int(hi[1] - self._origin[1]))
        overlap = planned_overlap_px(by_cell, self.tile_shape)
        self.feather_px = config.feather_px or overlap
        self._ramps = feather_ramps(self.tile_shape, self.feather_px)
        shift = config.max_shift_px if config.max_shift_px is not None else overlap / 4
        self._margin = shift + 2 * config.prior_sigma_px  # how far a tile may land from its guess
        self.tile = tile
        encode = fmt.encoder(compression, jpeg_quality)
        self._pyramid = TilePyramid(self.shape, pixel_size_m, tile, encode, self._out.parent)
        self._grid = (-(-self.shape[0] // tile), -(-self.shape[1] // tile))
        self._done = np.zeros(self._grid, bool)
        self._corners: dict[int, np.ndarray] = {}  # frozen tile -> integer mosaic corner
        self._pending: list[int] = []  # frozen tiles not fully blended yet
        self._images: OrderedDict[int, np.ndarray] = OrderedDict()
        self._paths: dict[int, Path | None] = {}
        self.late_tiles = 0
        self.seconds = 0.0

    def add(self, index: int, row: int, col: int, image: np.ndarray, path: Path | None = None):
        """A captured tile (uint8 RGB), after every field before it in scan order.

        Raises:
            ValueError: for a tile of another shape, an unplanned or repeated field.
        """
        t0 = time.perf_counter()
        if image.shape != (*self.tile_shape, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"tile {index} is {image.dtype} {image.shape}, not uint8 {self.tile_shape} RGB"
            )
        self._pass(index)
        new = self._registrar.add(index, row, col, image)
        self._keep(index, image, path)
        self._freeze(self._solver.add(index, new))
        self._blend_ready()
        self.seconds += time.perf_counter() - t0

    def visit(self, index: int) -> None:
        """A field passed without a capture (glass): the tiles around it may freeze.

        Raises:
            ValueError: for an unplanned field or one out of scan order.
        """
        t0 = time.perf_counter()
        self._pass(index)
        self._registrar.forget([self._cells[index]])
        self._freeze(self._solver.visit(index))
        self._blend_ready()
        self.seconds += time.perf_counter() - t0

    def _pass(self, index: int) -> None:
        """Check the scan order; forget the strips kept for fields passed without a word."""
        self._solver.check(index)
        passed = self._order[self._solver.visited + 1 : self._solver.rank(index)]
        self._registrar.forget(self._cells[i] for i in passed)

    def finish(self) -> StitchResult:
        """Freeze every tile, blend the rest and write the slide.

        Raises:
            ValueError: no tile was added.
            OSError: the slide cannot be written.
        """
        t0 = time.perf_counter()
        if not self._solver.frozen and not self._solver.unfrozen:
            raise ValueError("no tiles to stitch: every field was skipped or none was captured")
        self._freeze(self._solver.visit_all())
        self._blend_ready()
        if self._pyramid.missing:
            raise RuntimeError(f"{self._pyramid.missing} slide tiles were never blended")
        info = self._fmt.write_pyramid(self._out, self._pyramid, self._compression, self._quality)
        frozen = self._solver.frozen
        return StitchResult(
            info, dict(frozen), list(self._solver.matches), self.tile_shape, self.feather_px,
            self.bounds, self.seconds, time.perf_counter() - t0, self.late_tiles,
        )  # fmt: skip

    def close(self) -> None:
        """Drop the scratch data (the encoded tiles not written)."""
        self._pyramid.close()
        self._images.clear()

    # ----------------------------------------------------------------------------- internals
    def _keep(self, index: int, image: np.ndarray, path: Path | None) -> None:
        self._paths[index] = path
        self._images[index] = image
        self._images.move_to_end(index)
        total = sum(a.nbytes for a in self._images.values())
        for old in list(self._images):  # oldest first; a tile without a file stays
            if total <= self.config.cache_bytes or old == index:
                break
            if self._paths.get(old) is not None:
                total -= self._images.pop(old).nbytes

    def _image(self, index: int) -> np.ndarray:
        if index in self._images:
            self._images.move_to_end(index)
            return self._images[index]
        path = self._paths.get(index)
        if path is None:
            raise RuntimeError(f"tile {index} left the cache and has no file to read again")
        img = _load(path)
        self._keep(index, img, path)
        return img

    def _freeze(self, indices: Iterable[int]) -> None:
        indices = list(indices)
        if not indices:
            return
        for i, p in zip(indices, self._solver.positions(indices), strict=True):
            corner = np.round(p).astype(np.int64) - self._origin
            self._corners[i] = corner
            y0, y1, x0, x1 = self._cells_of(corner[None].astype(float), 0.0)[0]
            if self._done[y0:y1, x0:x1].any():
                self.late_tiles += 1
            self._pending.append(i)

    def _cells_of(self, corners: np.ndarray, margin: float) -> np.ndarray:
        """(K, 4) slide-tile ranges (y0, y1, x0, x1) that rectangles at ``corners`` (mosaic
        px, tile-sized, widened by ``margin``) touch, clipped to the grid."""
        h, w = self.tile_shape
        t = self.tile
        y0 = np.floor((corners[:, 0] - margin) / t)
        x0 = np.floor((corners[:, 1] - margin) / t)
        y1 = np.ceil((corners[:, 0] + h + margin) / t)
        x1 = np.ceil((corners[:, 1] + w + margin) / t)
        out = np.stack([y0, y1, x0, x1], axis=1)
        lim = np.array([self._grid[0], self._grid[0], self._grid[1], self._grid[1]])
        return np.clip(out, 0, lim).astype(np.int64)

    def _blocked(self) -> np.ndarray:
        """Slide tiles an unfrozen tile or a field not visited yet may still reach."""
        unvisited = self._order[self._solver.visited + 1 :]
        waiting = self._solver.unfrozen + unvisited
        if not waiting:
            return np.zeros(self._grid, bool)
        guess = self._solver.predicted(waiting) - self._origin
        for k, i in enumerate(self._solver.unfrozen):
            guess[k] = self._solver.current[i] - self._origin
        r = self._cells_of(guess, self._margin)
        ny, nx = self._grid
        d = np.zeros((ny + 1, nx + 1), np.int32)  # 2-D difference array of the rectangles
        np.add.at(d, (r[:, 0], r[:, 2]), 1)
        np.add.at(d, (r[:, 0], r[:, 3]), -1)
        np.add.at(d, (r[:, 1], r[:, 2]), -1)
        np.add.at(d, (r[:, 1], r[:, 3]), 1)
        return d.cumsum(axis=0).cumsum(axis=1)[:ny, :nx] > 0

    def _blend_ready(self) -> None:
        ready = ~self._blocked() & ~self._done
        if not ready.any():
            return
        idx = list(self._corners)
        corners = np.array([self._corners[i] for i in idx], np.int64).reshape(-1, 2)
        for ty in np.flatnonzero(ready.any(axis=1)):
            row = np.concatenate([[False], ready[ty], [False]])
            edges = np.flatnonzero(row[1:] != row[:-1])
            for tx0, tx1 in zip(edges[::2], edges[1::2], strict=True):
                self._blend_run(int(ty), int(tx0), int(tx1), idx, corners)
        self._release()

    def _blend_run(self, ty: int, tx0: int, tx1: int, idx: list[int], corners: np.ndarray) -> None:
        """Blend the slide tiles (ty, tx0..tx1-1) and hand them to the pyramid."""
        t = self.tile
        y0, x0 = ty * t, tx0 * t
        h, w = min(t, self.shape[0] - y0), min((tx1 - tx0) * t, self.shape[1] - x0)
        th, tw = self.tile_shape
        near = np.flatnonzero(
            (corners[:, 0] < y0 + h) & (corners[:, 0] + th > y0)
            & (corners[:, 1] < x0 + w) & (corners[:, 1] + tw > x0)
        )  # fmt: skip
        region = blend(
            (y0, x0, h, w), corners[near], self.tile_shape, self._ramps,
            lambda k: self._image(idx[near[k]]),
        )  # fmt: skip
        strip = np.full((t, (tx1 - tx0) * t, 3), 255, np.uint8)
        strip[:h, :w] = region
        for k, tx in enumerate(range(tx0, tx1)):
            self._pyramid.put(ty, tx, strip[:, k * t : (k + 1) * t])
        self._done[ty, tx0:tx1] = True

    def _release(self) -> None:
        """Forget frozen tiles whose slide tiles are all blended (image and corner: no
        later blend can need them)."""
        keep = []
        for i in self._pending:
            y0, y1, x0, x1 = self._cells_of(self._corners[i][None].astype(float), 0.0)[0]
            if self._done[y0:y1, x0:x1].all():
                self._images.pop(i, None)
                self._paths.pop(i, None)
                del self._corners[i]
            else:
                keep.append(i)
        self._pending = keep
