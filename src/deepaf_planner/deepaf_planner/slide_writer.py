"""Slide output: the pyramidal tiled TIFF, its thumbnail and the focus map.

``slide.tiff`` is a generic tiled TIFF as OpenSlide reads it (and QuPath through its
OpenSlide/Bio-Formats readers): every pyramid level is a tiled RGB page in the main IFD
chain, each half the size of the one before (level 0 full resolution), deflate-compressed,
with X/YResolution in pixels per centimetre so viewers know the microns per pixel.

Level 0 is written strip by strip from a region source (the stitched mosaic renders any
rectangle on demand), so the full-resolution slide never sits in memory: only one strip
of tiles and the half-resolution level 1, which is kept in a temporary memory-mapped file
next to the output when it exceeds ``memory_limit_bytes``. :class:`PyramidStream` does
that for every slide format (``slide_formats``: OME-TIFF, DICOM WSI).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

__all__ = [
    "PyramidStream",
    "RegionSource",
    "SlideInfo",
    "downsample2",
    "tiff_options",
    "write_focus_map",
    "write_pyramidal_tiff",
    "write_thumbnail",
]

#: ``render(y0, x0, h, w) -> uint8 (h, w, 3)``: any rectangle of the level-0 image.
RegionSource = Callable[[int, int, int, int], np.ndarray]

_WHITE = 255  # glass: padding of edge tiles and empty regions


@dataclass(frozen=True)
class SlideInfo:
    """What a slide writer (:func:`write_pyramidal_tiff`, :mod:`.slide_formats`) wrote.

    Args:
        path: The slide: a TIFF file, or the folder of a DICOM slide's instances.
        level_shapes: (height, width) of each level, level 0 first.
        pixel_size_m: Level-0 pixel size (m).
        thumbnail: A small RGB overview (long side <= the requested thumbnail size).
    """

    path: Path
    level_shapes: list[tuple[int, int]]
    pixel_size_m: float
    thumbnail: np.ndarray

    @property
    def level_downsamples(self) -> list[float]:
        """Downsample factor of each level relative to level 0."""
        return [float(2**k) for k in range(len(self.level_shapes))]


def downsample2(img: np.ndarray) -> np.ndarray:
    """Halve an (H, W, C) uint8 image by 2x2 box averaging (odd edges replicated)."""
    h, w = img.shape[:2]
    if h % 2 or w % 2:
        img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    size = (img.shape[1] // 2, img.shape[0] // 2)
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)


def _array_source(a: np.ndarray) -> RegionSource:
    return lambda y0, x0, h, w: a[y0 : y0 + h, x0 : x0 + w]


def _alloc(
    shape: tuple[int, int, int], limit: int, folder: Path, stack: contextlib.ExitStack
) -> np.ndarray:
    """An uint8 array in RAM, or in a temporary memory-mapped file when larger than ``limit``."""
    if math.prod(shape) <= limit:
        return np.empty(shape, np.uint8)
    fd, name = tempfile.mkstemp(prefix=".pyramid-", suffix=".u8", dir=folder)
    os.close(fd)
    stack.callback(os.unlink, name)
    return np.memmap(name, dtype=np.uint8, mode="w+", shape=shape)


def _level_tiles(
    source: RegionSource,
    shape: tuple[int, int],
    tile: int,
    next_level: np.ndarray | None,
    on_strip: Callable[[], None] | None,
) -> Iterator[np.ndarray]:
    """Yield the tiles of one level row by row, filling ``next_level`` as strips go by."""
    h, w = shape
    n_cols = -(-w // tile)
    for y0 in range(0, h, tile):
        rows = min(tile, h - y0)
        strip = np.full((tile, n_cols * tile, 3), _WHITE, np.uint8)
        strip[:rows, :w] = source(y0, 0, rows, w)
        if next_level is not None:
            half = downsample2(strip[:rows, :w])
            next_level[y0 // 2 : y0 // 2 + half.shape[0]] = half
        if on_strip is not None:  # before yielding: the writer stops pulling after the last tile
            on_strip()
        for c in range(n_cols):
            yield strip[:, c * tile : (c + 1) * tile]


class PyramidStream:
    """The tiles of every pyramid level, streamed: what every slide format writer consumes.

    Level 0 is rendered strip by strip from the region source; each level is halved (2x2
    box) into the next while its tiles go by, in RAM or in a temporary memory-mapped file
    next to the output when larger than ``memory_limit_bytes``. Levels halve until the
    top one fits in a tile. Use as a context manager (it owns the scratch files), take the
    levels from :meth:`levels` in order, consuming each level's tiles (row-major, all
    ``tile`` x ``tile``, edge tiles padded white) before asking for the next; then
    :attr:`thumbnail` holds a small overview.

    Args:
        source: Level-0 image: an (H, W, 3) uint8 array or a :data:`RegionSource`.
        pixel_size_m: Level-0 pixel size (m).
        shape: (height, width) of level 0; required for a region source.
        tile: Tile side (multiple of 16).
        scratch_dir: Folder of the memory-mapped intermediate levels.
        memory_limit_bytes: Larger intermediate levels go to a memory map.
        on_strip: Called as each strip of level-0 tiles is rendered (progress).
        thumbnail_px: Long side of :attr:`thumbnail`.

    Raises:
        ValueError: for a bad shape, tile size, pixel size or source array.
    """

    def __init__(
        self,
        source: RegionSource | np.ndarray,
        pixel_size_m: float,
        shape: tuple[int, int] | None,
        tile: int,
        scratch_dir: Path,
        memory_limit_bytes: int = 1 << 30,
        on_strip: Callable[[], None] | None = None,
        thumbnail_px: int = 1024,
    ) -> None:
        if isinstance(source, np.ndarray):
            if source.dtype != np.uint8 or source.ndim != 3 or source.shape[2] != 3:
                raise ValueError(
                    f"expected a uint8 (H, W, 3) image, got {source.dtype} {source.shape}"
                )
            shape = source.shape[:2]
            source = _array_source(source)
        if shape is None or min(shape) < 1:
            raise ValueError(f"need a positive level-0 shape (height, width), got {shape}")
        if tile < 16 or tile % 16:
            raise ValueError(f"tile side must be a positive multiple of 16, got {tile}")
        if not (math.isfinite(pixel_size_m) and pixel_size_m > 0):
            raise ValueError(f"pixel size must be positive, got {pixel_size_m} m")
        self.pixel_size_m = pixel_size_m
        self.tile = tile
        self.shapes: list[tuple[int, int]] = [(int(shape[0]), int(shape[1]))]
        while max(self.shapes[-1]) > tile:
            h, w = self.shapes[-1]
            self.shapes.append((-(-h // 2), -(-w // 2)))
        self._source = source
        self._scratch = Path(scratch_dir)
        self._limit = memory_limit_bytes
        self._on_strip = on_strip
        self._thumbnail_px = thumbnail_px
        self._thumb: np.ndarray | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> PyramidStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def levels(self) -> Iterator[tuple[int, Iterator[np.ndarray]]]:
        """Yield ``(level, tiles)`` from level 0 up; consume each level's tiles in turn."""
        src = self._source
        for level, (h, w) in enumerate(self.shapes):
            nxt = None
            if level + 1 < len(self.shapes):
                nh, nw = self.shapes[level + 1]
                nxt = _alloc((nh, nw, 3), self._limit, self._scratch, self._stack)
            on_strip = self._on_strip if level == 0 else None
            yield level, _level_tiles(src, (h, w), self.tile, nxt, on_strip)
            if self._thumb is None and max(h, w) <= 2 * self._thumbnail_px and level > 0:
                self._thumb = np.asarray(src(0, 0, h, w)).copy()
            src = _array_source(nxt) if nxt is not None else src
        if self._thumb is None:  # only one or two levels: small image
            h, w = self.shapes[-1]
            self._thumb = np.asarray(src(0, 0, h, w)).copy()

    @property
    def thumbnail(self) -> np.ndarray:
        """A small RGB overview (long side <= ``thumbnail_px``), once the levels are done."""
        if self._thumb is None:
            raise RuntimeError("the thumbnail is known once every level has been written")
        return _fit(self._thumb, self._thumbnail_px)

    def info(self, path: Path) -> SlideInfo:
        """What was written to ``path``."""
        return SlideInfo(path, list(self.shapes), self.pixel_size_m, self.thumbnail)


def tiff_options(tile: int, compression: str, jpeg_quality: int) -> dict:
    """tifffile ``write`` options of a tiled RGB pyramid level (shared by the TIFF formats)."""
    return {
        "dtype": np.uint8,
        "tile": (tile, tile),
        "photometric": "rgb",
        "compression": compression,
        "compressionargs": {"level": jpeg_quality} if compression == "jpeg" else None,
        "resolutionunit": "CENTIMETER",
        "maxworkers": 2,
    }


def write_pyramidal_tiff(
    path: str | Path,
    source: RegionSource | np.ndarray,
    pixel_size_m: float,
    shape: tuple[int, int] | None = None,
    tile: int = 256,
    compression: str = "zlib",
    jpeg_quality: int = 90,
    thumbnail_px: int = 1024,
    memory_limit_bytes: int = 1 << 30,
    on_strip: Callable[[], None] | None = None,
) -> SlideInfo:
    """Write an RGB image as a pyramidal tiled TIFF that OpenSlide opens.

    Args:
        path: Output file (written to ``path`` via a temporary file and a rename).
        source: Level-0 image: an (H, W, 3) uint8 array or a :data:`RegionSource`.
        pixel_size_m: Level-0 pixel size (m), stored as X/YResolution in pixels per cm.
        shape: (height, width) of level 0; required for a region source.
        tile: TIFF tile side (multiple of 16; 256 or 512 are usual).
        compression: tifffile compression name (``"zlib"`` = Adobe deflate, lossless;
            ``"jpeg"``, what slide scanners write, about 10x smaller; ``"none"``).
        jpeg_quality: JPEG quality (1-100) when ``compression == "jpeg"``.
        thumbnail_px: Long side of the returned thumbnail.
        memory_limit_bytes: Larger intermediate levels go to a temporary memory map.
        on_strip: Called as each strip of level-0 tiles is rendered (progress reporting).

    Returns:
        What was written, with a thumbnail.

    Raises:
        ValueError: for a bad shape, tile size, pixel size or source array.
    """
    path = Path(path)
    pyramid = PyramidStream(
        source, pixel_size_m, shape, tile, path.parent, memory_limit_bytes, on_strip, thumbnail_px
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    options = tiff_options(tile, compression, jpeg_quality)
    with pyramid, tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for level, tiles in pyramid.levels():
            h, w = pyramid.shapes[level]
            px_per_cm = 0.01 / (pixel_size_m * 2**level)
            tif.write(
                tiles,
                shape=(h, w, 3),
                resolution=(px_per_cm, px_per_cm),
                subfiletype=0 if level == 0 else 1,  # 1 = reduced-resolution image
                metadata=None,
                **options,
            )
    os.replace(tmp, path)
    return pyramid.info(path)


def _fit(img: np.ndarray, long_side: int) -> np.ndarray:
    s = long_side / max(img.shape[:2])
    if s >= 1:
        return img
    size = (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def write_thumbnail(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG (atomically: temporary file then rename).

    Raises:
        OSError: when the file cannot be written.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f"could not write {tmp}")
    os.replace(tmp, path)
    return path


def write_focus_map(
    path: str | Path,
    n_rows: int,
    n_cols: int,
    panels: Mapping[str, Mapping[tuple[int, int], float]],
    title: str = "",
    cmaps: Sequence[str] = ("viridis", "coolwarm"),
) -> Path:
    """Draw per-tile values on the scan grid as coloured maps with colour bars (PNG).

    The grid is drawn as seen from above the stage: row 0 (lowest y) at the bottom and
    column 0 (highest x) on the right. Fields without a value (skipped glass) are grey.

    Args:
        path: Output PNG.
        n_rows: Grid rows.
        n_cols: Grid columns.
        panels: Panel label (with units) -> {(row, col): value}, e.g.
            ``{"chosen z (um)": {...}, "true focus error (um)": {...}}``.
        title: Figure title.
        cmaps: Colour maps of the panels in order; diverging maps are centred on 0.

    Raises:
        ValueError: for an empty grid, no panels or a cell outside the grid.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if n_rows < 1 or n_cols < 1 or not panels:
        raise ValueError(f"need a non-empty grid and panels, got {n_rows}x{n_cols}, {len(panels)}")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for k, (ax, (label, values)) in enumerate(zip(axes[0], panels.items(), strict=True)):
        grid = np.full((n_rows, n_cols), np.nan)
        for (r, c), v in values.items():
            if not (0 <= r < n_rows and 0 <= c < n_cols):
                raise ValueError(f"cell ({r}, {c}) of {label!r} is outside {n_rows}x{n_cols}")
            grid[r, c] = v
        cmap = plt.get_cmap(cmaps[k % len(cmaps)]).with_extremes(bad="0.85")
        finite = grid[np.isfinite(grid)]
        kw = {}
        if cmap.name in {"coolwarm", "RdBu", "RdBu_r", "bwr", "seismic"} and finite.size:
            lim = max(float(np.abs(finite).max()), 1e-12)
            kw = {"vmin": -lim, "vmax": lim}
        im = ax.imshow(grid[:, ::-1], origin="lower", cmap=cmap, **kw,
                       extent=(n_cols - 0.5, -0.5, -0.5, n_rows - 0.5))  # fmt: skip
        ax.set_xlabel("column (0 = highest x)")
        ax.set_ylabel("row (0 = lowest y)")
        ax.set_title(label)
        fig.colorbar(im, ax=ax, shrink=0.85, label=label)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
