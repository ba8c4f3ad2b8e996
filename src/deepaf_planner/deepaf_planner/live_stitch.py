"""Stitching during the scan: each tile is registered, placed, blended and encoded into the
slide's pyramid while the stage moves on, so the end of a scan only writes the file.

The scanner hands every captured tissue tile to :class:`LiveStitcher` right after it is
written; one worker thread runs :class:`~.slide_stream.SlideStream` on it. A resumed scan
feeds its finished tiles again from their PNGs (lossless), in scan order, so it writes the
slide of an uninterrupted scan. If the stream fails (a tile of another shape, an unreadable
tile) the reason is in :attr:`LiveStitcher.error`; the scan goes on and :func:`stitch_scan`
replays the tiles from disk at the end: the scan itself never fails for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .slide_formats import slide_format
from .slide_stream import SlideStream, StitchResult
from .stitching import (
    STITCH_CONFIG,
    Mosaic,
    StitchConfig,
    StitchTile,
    _load,
)

__all__ = ["LiveStitcher", "SlideStream", "StitchResult", "stitch_scan", "stitch_slide"]


class LiveStitcher:
    """:class:`SlideStream` on one worker thread, fed during the scan.

    Args:
        fields: Every planned field, in scan order.
        pixel_size_m: Capture pixel size (m).
        out_path: The slide to write.
        slide_format_name: A name in ``SLIDE_FORMATS``.
        covered: The slide's stage rectangle (see :class:`SlideStream`).
        config: Settings.
        compression: The slide's compression (``jpeg``, what slide scanners write).
        max_pending: Tiles queued beyond this make :meth:`add` wait (bounds the memory
            held by tiles not processed yet).

    Raises:
        ValueError: for a bad pixel size or an unknown format.
    """

    def __init__(
        self,
        fields: Sequence[Any],
        pixel_size_m: float,
        out_path: Path,
        slide_format_name: str = "tiff",
        covered: tuple[tuple[float, float], tuple[float, float]] | None = None,
        config: StitchConfig = STITCH_CONFIG,
        compression: str = "jpeg",
        max_pending: int = 2,
    ) -> None:
        if not pixel_size_m > 0:
            raise ValueError(f"pixel size must be positive, got {pixel_size_m}")
        self._args = (list(fields), pixel_size_m, Path(out_path), slide_format(slide_format_name))
        self._covered, self._config, self._compression = covered, config, compression
        self._stream: SlideStream | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-stitch")
        self._pending: list[Future[None]] = []
        self._slots = threading.BoundedSemaphore(max(1, max_pending))
        self.error = ""  # why the stream stopped ("" while it runs)
        self.tiles = 0  # tiles processed

    @property
    def seconds(self) -> float:
        """Worker time spent on the tiles so far."""
        return self._stream.seconds if self._stream is not None else 0.0

    def add(
        self, index: int, row: int, col: int, image: np.ndarray, path: Path | None = None
    ) -> None:
        """Queue a captured tile (uint8 RGB) and the file it was written to; returns once it
        is queued (at most ``max_pending`` wait)."""
        if self.error:
            return
        self._slots.acquire()
        try:
            fut = self._pool.submit(self._add, index, row, col, image, path)
        except BaseException:
            self._slots.release()
            raise
        fut.add_done_callback(lambda _: self._slots.release())
        self._pending = [f for f in self._pending if not f.done()] + [fut]

    def visit(self, index: int) -> None:
        """Queue a field passed without a capture (glass), so the tiles around it can be
        placed and blended before the next capture."""
        if self.error:
            return
        self._slots.acquire()
        try:
            fut = self._pool.submit(self._visit, index)
        except BaseException:
            self._slots.release()
            raise
        fut.add_done_callback(lambda _: self._slots.release())
        self._pending = [f for f in self._pending if not f.done()] + [fut]

    def resume(self, tiles: Iterable[Any], out_dir: Path) -> None:
        """Feed the finished fields of a resumed scan (records with ``index``, ``row``,
        ``col``, ``has_tissue``, ``image_path``) in scan order: tiles from their images,
        glass as visits."""
        for t in sorted(tiles, key=lambda t: t.index):
            if self.error:
                return
            if not (t.has_tissue and t.image_path):
                self.visit(t.index)
                continue
            path = Path(out_dir) / t.image_path
            try:
                image = _load(path)
            except FileNotFoundError:
                self.error = f"cannot read the image of finished tile {t.index}"
                return
            self.add(t.index, t.row, t.col, image, path)

    def finish(self) -> StitchResult | None:
        """Write the slide once the queued tiles are in; ``None`` after a failure (see
        :attr:`error`) or when no tile came: :func:`stitch_scan` then starts over from disk.

        Raises:
            OSError: the slide cannot be written.
        """
        for fut in self._pending:
            fut.result()
        self._pending.clear()
        if self.error or self._stream is None:
            return None
        return self._pool.submit(self._stream.finish).result()

    def close(self) -> None:
        """Stop the worker (queued tiles are dropped) and delete the scratch data."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._stream is not None:
            self._stream.close()

    def _visit(self, index: int) -> None:
        if self.error or self._stream is None:  # before the first tile: nothing to place
            return
        try:
            self._stream.visit(index)
        except Exception as exc:  # reported; stitch_scan starts over from disk at the end
            self._fail(f"live stitching stopped at field {index}: {exc}")

    def _fail(self, why: str) -> None:
        self.error = why
        if self._stream is not None:  # free its cache and scratch before the replay
            self._stream.close()
            self._stream = None

    def _add(self, index: int, row: int, col: int, image: np.ndarray, path: Path | None) -> None:
        if self.error:
            return
        try:
            if self._stream is None:  # the tile shape is known at the first capture
                fields, px, out, fmt = self._args
                self._stream = SlideStream(
                    fields, px, image.shape[:2], out, fmt, self._covered, self._compression,
                    config=self._config,
                )  # fmt: skip
            self._stream.add(index, row, col, image, path)
        except Exception as exc:  # reported; stitch_scan starts over from disk at the end
            self._fail(f"live stitching stopped at tile {index}: {exc}")
        self.tiles += 1


def stitch_scan(
    fields: Sequence[Any],
    tiles: Sequence[StitchTile],
    pixel_size_m: float,
    out_path: Path,
    slide_format_name: str = "tiff",
    covered: tuple[tuple[float, float], tuple[float, float]] | None = None,
    live: LiveStitcher | None = None,
    config: StitchConfig = STITCH_CONFIG,
    compression: str = "jpeg",
) -> StitchResult:
    """The slide of a finished scan: from the stream that ran during it, or, when there was
    none or it failed, by feeding the scan's sequence (each field in scan order: its tile
    from disk, or a visit for glass) through the same :class:`SlideStream` (same slide).

    Args:
        fields: Every planned field, in scan order.
        tiles: The captured tiles (index, row, col, stage position, image or path).
        pixel_size_m: Capture pixel size (m).
        out_path: The slide to write.
        slide_format_name: A name in ``SLIDE_FORMATS``.
        covered: The slide's stage rectangle (m).
        live: The scan's :class:`LiveStitcher`, if any (made with the same settings).
        config: Settings.
        compression: The slide's compression.

    Raises:
        ValueError: for no tiles, an unknown format, tiles of different shapes.
        OSError: a tile cannot be read or the slide written.
    """
    if not tiles:
        raise ValueError("no tiles to stitch: every field was skipped or none was captured")
    if live is not None:
        done = live.finish()
        if done is not None:
            return done
    ordered = sorted(tiles, key=lambda t: t.index)
    first = _load(ordered[0].image)
    stream = SlideStream(
        fields, pixel_size_m, first.shape[:2], out_path, slide_format(slide_format_name),
        covered, compression, config=config,
    )  # fmt: skip
    by_index = {t.index: t for t in ordered}
    try:
        for f in fields:  # the scan's sequence: captures, and glass passed in between
            t = by_index.get(f.index)
            if t is None:
                stream.visit(f.index)
                continue
            img = first if t is ordered[0] else _load(t.image)
            path = Path(t.image) if isinstance(t.image, str | Path) else None
            stream.add(t.index, t.row, t.col, img, path)
        return stream.finish()
    finally:
        stream.close()


def stitch_slide(
    tiles: Sequence[StitchTile],
    pixel_size_m: float,
    out_path: str | Path,
    covered_min_xy: tuple[float, float] | None = None,
    covered_max_xy: tuple[float, float] | None = None,
    config: StitchConfig = STITCH_CONFIG,
    slide_format_name: str = "tiff",
    compression: str = "zlib",
) -> tuple[StitchResult, Mosaic]:
    """Stitch a set of tiles (scan order = index order; cells not among them count as
    absent fields) into a slide (lossless ``zlib`` by default); also return a
    :class:`~.stitching.Mosaic` of the result to render other views.

    Raises:
        ValueError: for no tiles, duplicate indices or a bad pixel size.
    """
    if not tiles:
        raise ValueError("no tiles to stitch: every field was skipped or none was captured")
    if len({t.index for t in tiles}) != len(tiles):
        raise ValueError("tile indices must be unique")
    ordered = sorted(tiles, key=lambda t: t.index)
    fields = [
        SimpleNamespace(index=t.index, row=t.row, col=t.col, x=t.x_m, y=t.y_m) for t in ordered
    ]
    covered = None
    if covered_min_xy is not None and covered_max_xy is not None:
        covered = (covered_min_xy, covered_max_xy)
    result = stitch_scan(
        fields, ordered, pixel_size_m, Path(out_path), slide_format_name, covered,
        config=config, compression=compression,
    )  # fmt: skip
    positions = np.array([result.positions_px[t.index] for t in ordered])
    mosaic = Mosaic(
        ordered, positions, result.tile_shape, result.feather_px, result.bounds_px,
        config.cache_bytes,
    )  # fmt: skip
    return result, mosaic
