"""Slide output: the tile pyramid, the pyramidal tiled TIFF, its thumbnail and the focus map.

``slide.tiff`` is a generic tiled TIFF as OpenSlide reads it (and QuPath through its
OpenSlide/Bio-Formats readers): every pyramid level is a tiled RGB page in the main IFD
chain, each half the size of the one before (level 0 full resolution), deflate- or
JPEG-compressed, with X/YResolution in pixels per centimetre so viewers know the microns
per pixel.

Every slide format (``slide_formats``: this TIFF, OME-TIFF, DICOM WSI) is written in two
steps. A :class:`TilePyramid` takes the level-0 tiles as they become final, in any order
(during a scan, or band by band from a region source), encodes each at once into a spill
file and builds and encodes every coarser tile as soon as its children are in; then the
format's pyramid writer (:func:`write_tiff_pyramid` here) only copies the encoded tiles
into the file. The full-resolution slide never sits in memory: only the parent tiles
still waiting for children, and the thumbnail level.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import cv2
import numpy as np
import tifffile

__all__ = [
    "COMPRESSIONS",
    "PyramidWriter",
    "RegionSource",
    "SlideInfo",
    "TileEncoder",
    "TilePyramid",
    "check_compression",
    "downsample2",
    "tiff_encoder",
    "tiff_options",
    "write_focus_map",
    "write_from_source",
    "write_pyramidal_tiff",
    "write_thumbnail",
    "write_tiff_levels",
    "write_tiff_pyramid",
]

#: ``render(y0, x0, h, w) -> uint8 (h, w, 3)``: any rectangle of the level-0 image.
RegionSource = Callable[[int, int, int, int], np.ndarray]

#: Encodes one uint8 (tile, tile, 3) tile as the slide file stores it.
TileEncoder = Callable[[np.ndarray], bytes]

#: The compression names every slide format takes (each maps them to its own codec).
COMPRESSIONS = ("jpeg", "zlib", "none")

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


def check_compression(compression: str) -> None:
    """Raise ValueError unless ``compression`` is one of :data:`COMPRESSIONS`."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")


@dataclass
class _Parent:
    """A tile of a level > 0 being assembled from the halves of its children."""

    rgb: np.ndarray  # (tile, tile, 3), white where no child has landed
    left: int  # children still to come


class TilePyramid:
    """Every level of a slide pyramid, encoded tile by tile as level-0 tiles arrive.

    :meth:`put` takes each level-0 tile once, in any order, and encodes it at once into a
    spill file in ``scratch_dir`` (created at the first put; RAM keeps only each tile's
    offset and length). When every child of a coarser tile is in, that tile is built by
    2x2 box halving (:func:`downsample2`) of the children's valid regions into its
    quadrants, encoded, and so on upward. The pixels equal a whole-level ``downsample2``
    of the level below (odd edges replicated, edge tiles padded white), and levels halve
    (ceil) until the top one fits in a tile. The only pixel buffers held are the parents
    still waiting for children (about one row of tiles per level when level 0 comes in
    roughly row by row) and the thumbnail level. Use as a context manager, or call
    :meth:`close`, which deletes the spill file.

    Threads: :meth:`put` must be called from one thread at a time. Once the put that
    completed the pyramid (:attr:`missing` 0) has returned, the pyramid is read-only:
    :meth:`levels`, :attr:`thumbnail` and :meth:`info` may then be used from any thread,
    provided the caller orders them after that put (a queue, a join, an event); several
    readers may iterate :meth:`levels` at once (positional reads, no shared file offset).

    Args:
        shape: (height, width) of level 0.
        pixel_size_m: Level-0 pixel size (m).
        tile: Tile side (multiple of 16).
        encode: Encodes one uint8 (tile, tile, 3) tile (the slide format's encoder).
        scratch_dir: Folder of the spill file.
        thumbnail_px: Long side of :attr:`thumbnail`.

    Raises:
        ValueError: for a bad shape, tile size or pixel size.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        pixel_size_m: float,
        tile: int,
        encode: TileEncoder,
        scratch_dir: Path,
        thumbnail_px: int = 1024,
    ) -> None:
        if shape is None or len(shape) != 2 or min(shape) < 1:
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
        self.encoded_bytes = 0
        self._encode = encode
        self._scratch = Path(scratch_dir)
        self._file: IO[bytes] | None = None
        self._closed = False
        # per level: (rows, cols, 2) of (offset, length) in the spill file; -1 = not yet
        self._index = [np.full((*self.grid(k), 2), -1, np.int64) for k in range(len(self.shapes))]
        self._missing = math.prod(self.grid(0))
        self._pending: dict[tuple[int, int, int], _Parent] = {}
        self._thumbnail_px = thumbnail_px
        big = (k for k in range(1, len(self.shapes)) if max(self.shapes[k]) <= 2 * thumbnail_px)
        self._thumb_level = next(big, len(self.shapes) - 1)
        self._thumb: np.ndarray | None = None

    def __enter__(self) -> TilePyramid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete the spill file and drop the pending tiles (idempotent)."""
        self._closed = True
        self._pending.clear()
        if self._file is not None:
            self._file.close()
            self._file = None

    def grid(self, level: int) -> tuple[int, int]:
        """(tile rows, tile columns) of a level."""
        h, w = self.shapes[level]
        return -(-h // self.tile), -(-w // self.tile)

    @property
    def missing(self) -> int:
        """Level-0 tiles not yet put."""
        return self._missing

    def put(self, ty: int, tx: int, rgb: np.ndarray) -> None:
        """Add level-0 tile (``ty``, ``tx``) and every coarser tile it completes.

        Args:
            ty: Tile row.
            tx: Tile column.
            rgb: uint8 (tile, tile, 3), or at an edge at least the tile's part of the image
                (e.g. just that part); pixels beyond the image edge are ignored (stored white).

        Raises:
            ValueError: for a tile outside the grid, one put before, or a bad array.
            RuntimeError: once closed.
        """
        if self._closed:
            raise RuntimeError("the pyramid is closed")
        rows, cols = self.grid(0)
        if not (0 <= ty < rows and 0 <= tx < cols):
            raise ValueError(f"tile ({ty}, {tx}) is outside the {rows}x{cols} level-0 grid")
        if self._index[0][ty, tx, 0] >= 0:
            raise ValueError(f"tile ({ty}, {tx}) was put already")
        level, rgb = 0, self._level0_tile(ty, tx, rgb)
        while rgb is not None:
            self._store(level, ty, tx, rgb)
            rgb = self._into_parent(level, ty, tx, rgb)
            level, ty, tx = level + 1, ty // 2, tx // 2
        self._missing -= 1  # not if encoding failed: the pyramid then never completes
        if not self._missing:
            assert not self._pending, "every parent completes with the last level-0 tile"
            self._file.flush()  # levels() reads the file by descriptor
            self._thumb = _fit(self._thumb, self._thumbnail_px)  # now, not at the end

    def levels(self) -> Iterator[tuple[int, Iterator[bytes]]]:
        """``(level, encoded tiles in row-major order)`` from level 0 up, once complete.

        Raises:
            RuntimeError: while level-0 tiles are missing, or once closed.
        """
        self._check_complete()
        return ((k, self._level_bytes(k)) for k in range(len(self.shapes)))

    @property
    def thumbnail(self) -> np.ndarray:
        """A small RGB overview (long side <= ``thumbnail_px``), once complete.

        Raises:
            RuntimeError: while level-0 tiles are missing, or once closed.
        """
        self._check_complete()
        return self._thumb

    def info(self, path: Path) -> SlideInfo:
        """What was written to ``path``."""
        return SlideInfo(path, list(self.shapes), self.pixel_size_m, self.thumbnail)

    def _valid(self, level: int, ty: int, tx: int) -> tuple[int, int]:
        """(rows, cols) of a tile inside its level's image."""
        h, w = self.shapes[level]
        return min(self.tile, h - ty * self.tile), min(self.tile, w - tx * self.tile)

    def _level0_tile(self, ty: int, tx: int, rgb: np.ndarray) -> np.ndarray:
        """The (tile, tile, 3) tile to encode: ``rgb``, white beyond the image edge."""
        rgb = np.asarray(rgb)
        t, (vh, vw) = self.tile, self._valid(0, ty, tx)
        h, w = rgb.shape[:2] if rgb.ndim == 3 else (0, 0)
        if rgb.dtype != np.uint8 or rgb.shape[2:] != (3,) or not (vh <= h <= t and vw <= w <= t):
            raise ValueError(
                f"tile ({ty}, {tx}) must be uint8 (h, w, 3) with {vh} <= h <= {t} and "
                f"{vw} <= w <= {t}, got {rgb.dtype} {rgb.shape}"
            )
        if (vh, vw) == (t, t):
            return np.ascontiguousarray(rgb)
        out = np.full((t, t, 3), _WHITE, np.uint8)
        out[:vh, :vw] = rgb[:vh, :vw]
        return out

    def _store(self, level: int, ty: int, tx: int, rgb: np.ndarray) -> None:
        """Encode a finished tile into the spill file (and the thumbnail)."""
        if self._file is None:
            # owned by the pyramid, closed (and so deleted) by close(); never has a name on Linux
            self._file = tempfile.TemporaryFile(prefix=".pyramid-", dir=self._scratch)  # noqa: SIM115
        data = self._encode(rgb)
        self._index[level][ty, tx] = (self.encoded_bytes, len(data))
        self._file.write(data)
        self.encoded_bytes += len(data)
        if level == self._thumb_level:
            if self._thumb is None:
                self._thumb = np.empty((*self.shapes[level], 3), np.uint8)
            vh, vw = self._valid(level, ty, tx)
            y0, x0 = ty * self.tile, tx * self.tile
            self._thumb[y0 : y0 + vh, x0 : x0 + vw] = rgb[:vh, :vw]

    def _into_parent(self, level: int, ty: int, tx: int, rgb: np.ndarray) -> np.ndarray | None:
        """Halve a finished tile into its parent; the parent once it is complete."""
        if level + 1 == len(self.shapes):
            return None
        key = (level + 1, ty // 2, tx // 2)
        parent = self._pending.get(key)
        if parent is None:
            white = np.full((self.tile, self.tile, 3), _WHITE, np.uint8)
            parent = self._pending[key] = _Parent(white, self._children(level, *key[1:]))
        vh, vw = self._valid(level, ty, tx)
        half = downsample2(rgb[:vh, :vw])
        y0, x0 = (ty % 2) * self.tile // 2, (tx % 2) * self.tile // 2
        parent.rgb[y0 : y0 + half.shape[0], x0 : x0 + half.shape[1]] = half
        parent.left -= 1
        if parent.left:
            return None
        del self._pending[key]
        return parent.rgb

    def _children(self, level: int, py: int, px: int) -> int:
        """How many tiles of ``level`` make up tile (``py``, ``px``) of the next level."""
        rows, cols = self.grid(level)
        return (min(2 * py + 2, rows) - 2 * py) * (min(2 * px + 2, cols) - 2 * px)

    def _check_complete(self) -> None:
        if self._closed:
            raise RuntimeError("the pyramid is closed")
        if self._missing:
            raise RuntimeError(f"{self._missing} level-0 tiles are still missing")

    def _level_bytes(self, level: int) -> Iterator[bytes]:
        fd = self._file.fileno()
        for offset, length in self._index[level].reshape(-1, 2).tolist():
            yield os.pread(fd, length, offset)


class PyramidWriter(Protocol):
    """Writes a complete :class:`TilePyramid` built with the format's encoder."""

    def __call__(
        self, path: str | Path, pyramid: TilePyramid, compression: str, jpeg_quality: int
    ) -> SlideInfo: ...


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


def tiff_encoder(compression: str, jpeg_quality: int) -> TileEncoder:
    """Encode a tile exactly as tifffile does for :func:`tiff_options` (same codec, same args).

    JPEG: RGB in, YCbCr 2x2-subsampled out (what tifffile adds for RGB JPEG tiles);
    ``zlib``: Adobe deflate at tifffile's default level; ``none``: the raw bytes.

    Raises:
        ValueError: for a compression not in :data:`COMPRESSIONS`.
    """
    check_compression(compression)
    if compression == "none":
        return lambda rgb: np.ascontiguousarray(rgb).tobytes()
    if compression == "zlib":
        return tifffile.TIFF.COMPRESSORS[tifffile.COMPRESSION.ADOBE_DEFLATE]
    jpeg = tifffile.TIFF.COMPRESSORS[tifffile.COMPRESSION.JPEG]
    args = {"level": jpeg_quality, "subsampling": (2, 2), "colorspace": "RGB",
            "outcolorspace": "YCBCR"}  # fmt: skip
    return lambda rgb: jpeg(rgb, **args)


def write_tiff_levels(
    path: str | Path,
    pyramid: TilePyramid,
    compression: str,
    jpeg_quality: int,
    level_options: Callable[[int], dict[str, Any]],
    ome: bool = False,
) -> SlideInfo:
    """Copy a pyramid's encoded tiles into a TIFF, one page per level (via a temporary file).

    Args:
        path: Output file (written to a temporary file, then renamed).
        pyramid: Complete, built with :func:`tiff_encoder` for the same compression.
        compression: As given to :func:`tiff_encoder`.
        jpeg_quality: As given to :func:`tiff_encoder`.
        level_options: Extra ``TiffWriter.write`` options of a level (its tags).
        ome: Write an OME-TIFF.

    Raises:
        RuntimeError: for an incomplete pyramid.
        ValueError: for a compression not in :data:`COMPRESSIONS`.
    """
    check_compression(compression)
    path = Path(path)
    levels = pyramid.levels()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    options = tiff_options(pyramid.tile, compression, jpeg_quality)
    try:
        with tifffile.TiffWriter(tmp, bigtiff=True, ome=ome) as tif:
            for level, tiles in levels:
                px_per_cm = 0.01 / (pyramid.pixel_size_m * 2**level)
                shape = (*pyramid.shapes[level], 3)
                resolution = (px_per_cm, px_per_cm)
                tif.write(
                    tiles, shape=shape, resolution=resolution, **level_options(level), **options
                )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return pyramid.info(path)


def write_tiff_pyramid(
    path: str | Path, pyramid: TilePyramid, compression: str, jpeg_quality: int
) -> SlideInfo:
    """Write a complete :class:`TilePyramid` (:func:`tiff_encoder` tiles) as ``slide.tiff``.

    Levels in the main IFD chain (NewSubfileType 1 above level 0), X/YResolution in
    pixels per cm.

    Raises:
        RuntimeError: for an incomplete pyramid.
    """

    def options(level: int) -> dict[str, Any]:
        return {"subfiletype": 0 if level == 0 else 1, "metadata": None}  # 1: reduced-res

    return write_tiff_levels(path, pyramid, compression, jpeg_quality, options)


def _level0_source(
    source: RegionSource | np.ndarray, shape: tuple[int, int] | None
) -> tuple[RegionSource, tuple[int, int] | None]:
    """A region source and its shape from an (H, W, 3) uint8 array or a region source."""
    if not isinstance(source, np.ndarray):
        return source, shape
    if source.dtype != np.uint8 or source.ndim != 3 or source.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {source.dtype} {source.shape}")
    return (lambda y0, x0, h, w: source[y0 : y0 + h, x0 : x0 + w]), source.shape[:2]


def _put_bands(
    pyramid: TilePyramid, render: RegionSource, on_strip: Callable[[], None] | None
) -> None:
    """Render level 0 one band of tile rows at a time into the pyramid."""
    t, (h, w) = pyramid.tile, pyramid.shapes[0]
    rows, cols = pyramid.grid(0)
    for ty in range(rows):
        band = np.asarray(render(ty * t, 0, min(t, h - ty * t), w))
        for tx in range(cols):
            pyramid.put(ty, tx, band[:, tx * t : (tx + 1) * t])
        if on_strip is not None:
            on_strip()


def write_from_source(
    path: str | Path,
    source: RegionSource | np.ndarray,
    pixel_size_m: float,
    shape: tuple[int, int] | None,
    tile: int,
    compression: str,
    jpeg_quality: int,
    thumbnail_px: int,
    on_strip: Callable[[], None] | None,
    encoder: Callable[[str, int], TileEncoder],
    write_pyramid: PyramidWriter,
) -> SlideInfo:
    """Render level 0 band by band into a :class:`TilePyramid`, then write it.

    What every format's source writer does; arguments as :func:`write_pyramidal_tiff`,
    plus the format's ``encoder`` and ``write_pyramid``. Everything is checked before
    anything is written.

    Raises:
        ValueError: for a bad shape, tile size, pixel size, source array or compression.
    """
    path = Path(path)
    render, shape = _level0_source(source, shape)
    encode = encoder(compression, jpeg_quality)
    with TilePyramid(shape, pixel_size_m, tile, encode, path.parent, thumbnail_px) as pyramid:
        path.parent.mkdir(parents=True, exist_ok=True)
        _put_bands(pyramid, render, on_strip)
        return write_pyramid(path, pyramid, compression, jpeg_quality)


def write_pyramidal_tiff(
    path: str | Path,
    source: RegionSource | np.ndarray,
    pixel_size_m: float,
    shape: tuple[int, int] | None = None,
    tile: int = 256,
    compression: str = "zlib",
    jpeg_quality: int = 90,
    thumbnail_px: int = 1024,
    on_strip: Callable[[], None] | None = None,
) -> SlideInfo:
    """Write an RGB image as a pyramidal tiled TIFF that OpenSlide opens.

    Args:
        path: Output file (written to ``path`` via a temporary file and a rename).
        source: Level-0 image: an (H, W, 3) uint8 array or a :data:`RegionSource`,
            rendered one band of ``tile`` rows at a time.
        pixel_size_m: Level-0 pixel size (m), stored as X/YResolution in pixels per cm.
        shape: (height, width) of level 0; required for a region source.
        tile: TIFF tile side (multiple of 16; 256 or 512 are usual).
        compression: ``"zlib"`` (Adobe deflate, lossless), ``"jpeg"`` (what slide
            scanners write, about 10x smaller) or ``"none"``.
        jpeg_quality: JPEG quality (1-100) when ``compression == "jpeg"``.
        thumbnail_px: Long side of the returned thumbnail.
        on_strip: Called as each band of level-0 tiles is encoded (progress reporting).

    Returns:
        What was written, with a thumbnail.

    Raises:
        ValueError: for a bad shape, tile size, pixel size, source array or compression.
    """
    return write_from_source(
        path, source, pixel_size_m, shape, tile, compression, jpeg_quality, thumbnail_px,
        on_strip, tiff_encoder, write_tiff_pyramid,
    )  # fmt: skip


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
