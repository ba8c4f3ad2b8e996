"""Registration during the scan: each tile is matched with its captured neighbours on a
worker thread while the stage moves on, so stitching at the end reads no tile twice.

The scanner hands every captured tissue tile to :class:`LiveRegistration` right after it is
written; a single worker thread runs :class:`~deepaf_planner.stitching.OverlapRegistrar`
on it (phase correlation releases the GIL, so it overlaps the next field's move, preview and
focus). It keeps only the overlap strips of neighbours still to come, so its memory is about
one row of strips and a tile's cost does not grow with the number of tiles. A resumed scan
re-registers its finished tiles from their PNGs (lossless): the matches, and so the slide,
are those of an uninterrupted scan. A registration that fails (an unreadable finished
tile, a tile of another shape) is reported in :attr:`LiveRegistration.error` and leaves the
registration to the stitching step: the scan itself never fails for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deepaf_planner.stitching import STITCH_CONFIG, Match, OverlapRegistrar, StitchConfig

__all__ = ["LiveRegistration"]


class LiveRegistration:
    """Registers tiles as they are captured, in capture order, on one worker thread.

    Args:
        fields: Every planned field (objects with ``index``, ``row``, ``col``, ``x``, ``y``).
        pixel_size_m: Capture pixel size (m).
        config: Registration settings (the scan's :data:`STITCH_CONFIG` by default).
        max_pending: Tiles queued beyond this make :meth:`add` wait (bounds the memory
            held by tiles not registered yet).
    """

    def __init__(
        self,
        fields: Sequence[Any],
        pixel_size_m: float,
        config: StitchConfig = STITCH_CONFIG,
        max_pending: int = 2,
    ) -> None:
        if not pixel_size_m > 0:
            raise ValueError(f"pixel size must be positive, got {pixel_size_m}")
        self._fields = list(fields)
        self._pixel_size = pixel_size_m
        self._config = config
        self._registrar: OverlapRegistrar | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-stitch")
        self._pending: list[Future[None]] = []
        self._slots = threading.BoundedSemaphore(max(1, max_pending))
        self.error = ""  # why live registration stopped ("" while it runs)
        self.seconds = 0.0  # worker time spent registering
        self.tiles = 0  # tiles registered

    def add(self, index: int, row: int, col: int, image: np.ndarray) -> None:
        """Queue a captured tile (uint8 RGB); returns once it is queued (at most
        `max_pending` wait)."""
        if self.error:
            return
        self._slots.acquire()
        try:
            fut = self._pool.submit(self._register, index, row, col, image)
        except BaseException:
            self._slots.release()
            raise
        fut.add_done_callback(lambda _: self._slots.release())
        self._pending = [f for f in self._pending if not f.done()] + [fut]

    def resume(self, tiles: Iterable[Any], out_dir: Path) -> None:
        """Re-register the tiles of a resumed scan (records with ``index``, ``row``,
        ``col``, ``has_tissue``, ``image_path``) from their images, in scan order."""
        for t in sorted(tiles, key=lambda t: t.index):
            if not (t.has_tissue and t.image_path) or self.error:
                continue
            bgr = cv2.imread(str(Path(out_dir) / t.image_path), cv2.IMREAD_COLOR)
            if bgr is None:
                self.error = f"cannot read the image of finished tile {t.index}"
                return
            self.add(t.index, t.row, t.col, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr))

    def matches(self) -> list[Match] | None:
        """Every match, once the queued tiles are registered; ``None`` after a failure
        (see :attr:`error`): the stitching step then registers the tiles itself."""
        for fut in self._pending:
            fut.result()
        self._pending.clear()
        if self.error:
            return None
        found = list(self._registrar.matches) if self._registrar else []
        return sorted(found, key=lambda m: (m.a, m.b))

    def close(self) -> None:
        """Stop the worker (queued tiles are dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _register(self, index: int, row: int, col: int, image: np.ndarray) -> None:
        if self.error:
            return
        t0 = time.perf_counter()
        try:
            if self._registrar is None:  # the tile shape is known at the first capture
                self._registrar = OverlapRegistrar.for_fields(
                    self._fields, self._pixel_size, image.shape[:2], self._config
                )
            if image.shape[:2] != self._registrar.tile_shape:
                raise ValueError(
                    f"tile {index} is {image.shape[:2]}, not {self._registrar.tile_shape}"
                )
            self._registrar.add(index, row, col, image)
        except Exception as exc:  # reported; the stitching step registers instead
            self.error = f"live registration stopped at tile {index}: {exc}"
        self.seconds += time.perf_counter() - t0
        self.tiles += 1
