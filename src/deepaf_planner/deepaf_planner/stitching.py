"""Stitching: register overlapping tiles, refine their positions, blend them into a slide.

1. **Pairwise registration.** For every pair of grid neighbours the overlap predicted by
   the stage positions is cut from both tiles (green channel, optionally downsampled),
   Hann-windowed and phase correlated (``cv2.phaseCorrelate``); the peak response is the
   match confidence. Matches with a low confidence, a flat overlap (glass) or a shift
   larger than ``max_shift_px`` are rejected. :class:`OverlapRegistrar` does this tile by
   tile while the scan runs, so no tile has to be decoded twice.
2. **Position solve.** Tile positions minimise the weighted squared disagreement with the
   accepted pairwise shifts plus a weak prior pulling every tile to its stage position
   (so tiles without matches stay where the stage put them). Matches whose residual is
   implausibly large are dropped and the solve is repeated (:func:`solve_robust`). A scan
   solves as it goes and freezes each tile once its neighbours are in
   (:mod:`.stream_solve`); :func:`solve_positions` solves all tiles at once.
3. **Blending.** :func:`blend` renders any rectangle with linear feathering (weights ramp
   down toward each tile's edges); :class:`Mosaic` does it for a finished set of tiles,
   loading them lazily through a small cache, and :mod:`.live_stitch` for the tiles frozen
   so far during a scan. Areas without tiles (skipped fields) are white glass.

Mosaic pixel coordinates: column = +x, row = +y (the virtual microscope's convention);
``flip_x``/``flip_y`` adapt other cameras.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from rich.progress import Progress

__all__ = [
    "STITCH_CONFIG",
    "Match",
    "Mosaic",
    "OverlapRegistrar",
    "StageMap",
    "StitchConfig",
    "StitchTile",
    "TileCache",
    "approach_signs",
    "blend",
    "bounds_px",
    "feather_ramps",
    "fit_stage_map",
    "nominal_positions_px",
    "planned_overlap_px",
    "register_tiles",
    "solve_positions",
    "solve_robust",
    "solve_weighted",
    "stage_to_px",
]

ImageLike = np.ndarray | str | Path | Callable[[], np.ndarray]


@dataclass(frozen=True)
class StitchTile:
    """A captured tile and where the stage put it.

    Args:
        index: Scan index (unique).
        row: Grid row.
        col: Grid column.
        x_m: Stage x of the tile centre (m).
        y_m: Stage y of the tile centre (m).
        image: The RGB uint8 image, a path to it (PNG/TIFF) or a loader callable.
    """

    index: int
    row: int
    col: int
    x_m: float
    y_m: float
    image: ImageLike


@dataclass(frozen=True)
class StitchConfig:
    """Registration and blending settings.

    Args:
        downsample: Registration works on tiles downsampled by this factor (faster, but
            less precise: about 1-2 px at 2).
        min_confidence: Phase-correlation peak response below which a match is rejected.
        min_overlap_std: Grey-level standard deviation (0..255) below which an overlap is
            too flat (glass) to register.
        max_shift_px: Largest accepted correction of a stage offset (level-0 pixels);
            ``None``: a quarter of the overlap width.
        prior_sigma_px: Standard deviation of the stage positioning error (pixels).
        match_sigma_px: Standard deviation of a confident match (pixels).
        residual_px: Matches disagreeing with the solve by more are dropped.
        feather_px: Width of the blending ramp (pixels); ``None``: the overlap width.
        flip_x: Mosaic columns run along -x.
        flip_y: Mosaic rows run along -y.
        cache_bytes: Decoded tiles kept in memory while rendering.
        freeze_ring: During a scan a tile's position is final once every field within this
            many grid steps of it (8-connected) has been visited (:mod:`.stream_solve`)...
        loose_matches: ... if it has at least this many accepted matches; one with fewer
            (1: none; faint tissue) is placed by the stage through the stage map
            alone, which the rows to come still refine, and waits for ``loose_ring``.
        loose_ring: The freeze ring of a tile with fewer than ``loose_matches`` matches.
    """

    downsample: int = 1
    min_confidence: float = 0.15
    min_overlap_std: float = 2.0
    max_shift_px: float | None = None
    prior_sigma_px: float = 20.0
    match_sigma_px: float = 0.5
    residual_px: float = 3.0
    feather_px: int | None = None
    flip_x: bool = False
    flip_y: bool = False
    cache_bytes: int = 1536 << 20
    freeze_ring: int = 2
    loose_matches: int = 1
    loose_ring: int = 6


#: A scan's settings: image columns run along +x and rows along +y in the virtual
#: microscope's frames; registration at full resolution (within 0.2 px; 2x downsampling was
#: off by up to 1.6 px).
STITCH_CONFIG = StitchConfig(downsample=1)


@dataclass(frozen=True)
class Match:
    """A pairwise registration: tile ``b`` sits ``(dy, dx)`` pixels from tile ``a``.

    Args:
        a: Index of the first tile.
        b: Index of the second tile.
        dy: Measured row offset of ``b`` relative to ``a`` (pixels).
        dx: Measured column offset (pixels).
        confidence: Phase-correlation peak response (0..1).
        accepted: Whether the match feeds the global solve.
        reason: Why it was rejected ("" when accepted).
    """

    a: int
    b: int
    dy: float
    dx: float
    confidence: float
    accepted: bool
    reason: str = ""


def _load(image: ImageLike) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    if callable(image):
        return np.asarray(image())
    bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read tile image {image}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)


class TileCache:
    """Least-recently-used cache of decoded tiles, bounded in bytes.

    Args:
        tiles: The tiles, by index.
        max_bytes: Evict the oldest tiles beyond this size (the newest always stays).
    """

    def __init__(self, tiles: Sequence[StitchTile], max_bytes: int) -> None:
        self._tiles = {t.index: t for t in tiles}
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.max_bytes = max_bytes
        self.loads = 0

    def get(self, index: int) -> np.ndarray:
        """The RGB image of tile ``index``.

        Raises:
            FileNotFoundError: when its file cannot be read.
            ValueError: when it is not uint8 RGB.
        """
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        img = _load(self._tiles[index].image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"tile {index}: expected uint8 (H, W, 3), got {img.dtype} {img.shape}")
        self.loads += 1
        self._cache[index] = img
        while len(self._cache) > 1 and sum(a.nbytes for a in self._cache.values()) > self.max_bytes:
            self._cache.popitem(last=False)
        return img


def nominal_positions_px(
    tiles: Sequence[StitchTile], pixel_size_m: float, tile_shape: tuple[int, int],
    config: StitchConfig = StitchConfig(),
) -> np.ndarray:  # fmt: skip
    """Top-left corner (row, col) of each tile in level-0 pixels from its stage position.

    Raises:
        ValueError: for a non-positive pixel size.
    """
    return stage_to_px([(t.x_m, t.y_m) for t in tiles], pixel_size_m, tile_shape, config)


def stage_to_px(
    xy_m: Sequence[tuple[float, float]], pixel_size_m: float, tile_shape: tuple[int, int],
    config: StitchConfig,
) -> np.ndarray:  # fmt: skip
    """(N, 2) top-left (row, col) pixels of tiles centred at stage points ``xy_m`` (m).

    Raises:
        ValueError: for a non-positive pixel size.
    """
    if not pixel_size_m > 0:
        raise ValueError(f"pixel size must be positive, got {pixel_size_m}")
    sx = -1.0 if config.flip_x else 1.0
    sy = -1.0 if config.flip_y else 1.0
    h, w = tile_shape
    return np.array(
        [(sy * y / pixel_size_m - h / 2, sx * x / pixel_size_m - w / 2) for x, y in xy_m],
        dtype=float,
    ).reshape(-1, 2)


def _overlap(d: np.ndarray, shape: tuple[int, int]) -> tuple[slice, slice, slice, slice] | None:
    """Slices of the overlap in tile a and tile b for b at integer offset ``d`` from a."""
    h, w = shape
    dy, dx = round(float(d[0])), round(float(d[1]))
    r0, r1 = max(0, dy), min(h, h + dy)
    c0, c1 = max(0, dx), min(w, w + dx)
    if r1 - r0 < 16 or c1 - c0 < 16:
        return None
    return slice(r0, r1), slice(c0, c1), slice(r0 - dy, r1 - dy), slice(c0 - dx, c1 - dx)


def _grey_small(img: np.ndarray, factor: int) -> np.ndarray:
    g = np.ascontiguousarray(img[..., 1])
    if factor > 1:
        g = cv2.resize(
            g, (g.shape[1] // factor, g.shape[0] // factor), interpolation=cv2.INTER_AREA
        )
    return g


def _neighbours(rc: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    r, c = rc
    return (r - 1, c), (r, c - 1), (r, c + 1), (r + 1, c)


class OverlapRegistrar:
    """Registers tiles with their grid neighbours as they arrive, one image at a time.

    Feed it each tile while its image is in memory (during the scan, or from disk in
    :func:`register_tiles`); it keeps only the overlap strips of neighbours still to come,
    so nothing is decoded twice and memory stays at about one row of strips.

    Args:
        nominal_px: Grid cell (row, col) -> expected top-left (row, col) pixel of its tile,
            for every field that may be captured (see :func:`nominal_positions_px`).
        tile_shape: (height, width) of every tile.
        config: Settings.
    """

    def __init__(
        self,
        nominal_px: Mapping[tuple[int, int], Sequence[float]],
        tile_shape: tuple[int, int],
        config: StitchConfig = StitchConfig(),
    ) -> None:
        self._nominal = {rc: np.asarray(p, dtype=float) for rc, p in nominal_px.items()}
        self.tile_shape = tile_shape
        self.config = config
        self._seen: dict[tuple[int, int], int] = {}
        self._strips: dict[tuple[tuple[int, int], tuple[int, int]], np.ndarray] = {}
        self.matches: list[Match] = []

    @classmethod
    def for_fields(
        cls, fields: Iterable[Any], pixel_size_m: float, tile_shape: tuple[int, int],
        config: StitchConfig = StitchConfig(),
    ) -> OverlapRegistrar:  # fmt: skip
        """A registrar for planned scan fields (objects with ``row``, ``col``, ``x``, ``y``).

        Raises:
            ValueError: for a non-positive pixel size.
        """
        fields = list(fields)
        px = stage_to_px([(f.x, f.y) for f in fields], pixel_size_m, tile_shape, config)
        return cls({(f.row, f.col): p for f, p in zip(fields, px, strict=True)}, tile_shape, config)

    def add(self, index: int, row: int, col: int, image: np.ndarray) -> list[Match]:
        """Register a tile with the neighbours already added.

        Args:
            index: Scan index of the tile.
            row: Grid row.
            col: Grid column.
            image: Its RGB uint8 image.

        Returns:
            The new matches (also appended to :attr:`matches`).

        Raises:
            KeyError: for a cell that is not in the layout.
        """
        rc = (row, col)
        f = max(1, int(self.config.downsample))
        g = _grey_small(image, f)
        new = []
        for nb in _neighbours(rc):
            if nb not in self._nominal:
                continue
            a, b = sorted((rc, nb))
            d_nom = np.round(self._nominal[b] - self._nominal[a])
            sl = _overlap(d_nom, self.tile_shape)
            if sl is None:
                continue
            rs, cs = sl[:2] if rc == a else sl[2:]
            strip = g[rs.start // f : rs.stop // f, cs.start // f : cs.stop // f].copy()
            if nb in self._seen:
                other = self._strips.pop((nb, rc))
                sa, sb = (strip, other) if rc == a else (other, strip)
                ia, ib = (index, self._seen[nb]) if rc == a else (self._seen[nb], index)
                new.append(_match(ia, ib, sa, sb, d_nom, self.tile_shape, f, self.config))
            else:
                self._strips[(rc, nb)] = strip
        self._seen[rc] = index
        self.matches.extend(new)
        return new

    def forget(self, cells: Iterable[tuple[int, int]]) -> None:
        """Drop the strips kept for neighbours at ``cells`` (fields passed without a
        capture: glass), so memory follows the scan's front, not the tissue's outline."""
        gone = set(cells)
        for key in [k for k in self._strips if k[1] in gone]:
            del self._strips[key]


def register_tiles(
    tiles: Sequence[StitchTile],
    nominal_px: np.ndarray,
    tile_shape: tuple[int, int],
    config: StitchConfig = StitchConfig(),
    progress: Progress | None = None,
) -> list[Match]:
    """Phase-correlate the overlaps of grid neighbours (each tile is loaded once).

    Args:
        tiles: The tiles.
        nominal_px: (N, 2) top-left (row, col) per tile from :func:`nominal_positions_px`.
        tile_shape: (height, width) of every tile.
        config: Settings.
        progress: Optional rich progress to advance per tile.

    Returns:
        One :class:`Match` per neighbour pair with an overlap, accepted or not.
    """
    layout = {(t.row, t.col): p for t, p in zip(tiles, nominal_px, strict=True)}
    registrar = OverlapRegistrar(layout, tile_shape, config)
    task = progress.add_task("registering tiles", total=len(tiles)) if progress else None
    for t in tiles:
        registrar.add(t.index, t.row, t.col, _load(t.image))
        if progress is not None:
            progress.advance(task)
    return sorted(registrar.matches, key=lambda m: (m.a, m.b))


def _match(
    ia: int, ib: int, a: np.ndarray, b: np.ndarray, d_nom: np.ndarray,
    tile_shape: tuple[int, int], f: int, config: StitchConfig,
) -> Match:  # fmt: skip
    """Register two overlap strips; ``b`` should equal ``a`` when the offset is nominal."""
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    a, b = a[:h, :w].astype(np.float32), b[:h, :w].astype(np.float32)
    if min(a.std(), b.std()) < config.min_overlap_std:
        return Match(ia, ib, *d_nom, 0.0, False, "flat overlap (glass)")
    # without this the windowed background (glass), the same in both strips, peaks at zero
    # shift: a confident match at the nominal offset on strips with little tissue
    a -= a.mean()
    b -= b.mean()
    win = cv2.createHanningWindow((w, h), cv2.CV_32F)
    (sx, sy), resp = cv2.phaseCorrelate(a, b, win)
    # b(u) = a(u + s) means b's content sits s further along, so b lies -s*f from nominal
    d = d_nom - np.array([sy, sx]) * f
    overlap_w = min(abs(tile_shape[0] - abs(d_nom[0])), abs(tile_shape[1] - abs(d_nom[1])))
    max_shift = config.max_shift_px if config.max_shift_px is not None else overlap_w / 4
    if resp < config.min_confidence:
        return Match(ia, ib, *d, float(resp), False, f"low confidence {resp:.2f}")
    if math.hypot(sx * f, sy * f) > max_shift:
        reason = f"shift {math.hypot(sx, sy) * f:.0f} px too large"
        return Match(ia, ib, *d, float(resp), False, reason)
    return Match(ia, ib, float(d[0]), float(d[1]), float(resp), True)


def solve_positions(
    nominal_px: np.ndarray, indices: Sequence[int], matches: Sequence[Match],
    config: StitchConfig = StitchConfig(),
) -> tuple[np.ndarray, list[Match]]:  # fmt: skip
    """Least-squares tile positions from accepted matches and the stage-position prior, all
    tiles at once (the scan freezes them as it goes instead: :mod:`.stream_solve`).

    1. Solve with the stage positions as the prior; drop the match with the worst residual
       (above ``residual_px``) and solve again, until every residual is within it.
    2. Map the stage positions through the :class:`StageMap` (rotation, scale,
       translation: a camera turned on its mount, a pixel size off by a little; and the
       stage's backlash per approach direction) that best fits the tiles the matches
       placed, and solve once more with that prior, so tiles with no match (glass all
       round) follow the registered ones instead of the raw stage.

    Args:
        nominal_px: (N, 2) stage-derived top-left positions, in the order the stage visited
            them (for the approach directions).
        indices: Tile index of each row of ``nominal_px``.
        matches: Pairwise matches (only accepted ones are used).
        config: Settings (prior/match sigmas, residual threshold).

    Returns:
        The refined (N, 2) positions and the matches, with those dropped by the residual
        check marked as rejected ("inconsistent").
    """
    pos = {idx: i for i, idx in enumerate(indices)}
    nominal = nominal_px.astype(float)
    out, matches = solve_robust(nominal, pos, matches, config)
    signs = approach_signs(nominal)
    stage = fit_stage_map(nominal, out, pos, matches, signs)
    if stage is not None:
        out = solve_weighted(stage.apply(nominal, signs), pos, matches, config)
    return out, matches


def solve_robust(
    prior: np.ndarray, pos: Mapping[int, int], matches: Sequence[Match], config: StitchConfig,
    fixed: Mapping[int, np.ndarray] | None = None,
) -> tuple[np.ndarray, list[Match]]:  # fmt: skip
    """:func:`solve_weighted`, dropping the accepted match with the worst residual (above
    ``residual_px``, among those touching a free tile) until every residual is within it.

    Returns:
        The positions of the free tiles (rows of ``prior``) and the matches, those dropped
        marked rejected ("inconsistent").
    """
    fixed = fixed or {}
    matches = list(matches)
    out = solve_weighted(prior, pos, matches, config, fixed)
    while True:
        worst, worst_r = -1, config.residual_px
        for k, m in enumerate(matches):
            if not m.accepted or (m.a not in pos and m.b not in pos):
                continue
            pa = out[pos[m.a]] if m.a in pos else fixed.get(m.a)
            pb = out[pos[m.b]] if m.b in pos else fixed.get(m.b)
            if pa is None or pb is None:
                continue
            r = math.hypot(*(pb - pa - np.array([m.dy, m.dx])))
            if r > worst_r:
                worst, worst_r = k, r
        if worst < 0:
            return out, matches
        m = matches[worst]
        matches[worst] = Match(m.a, m.b, m.dy, m.dx, m.confidence, False, "inconsistent")
        out = solve_weighted(prior, pos, matches, config, fixed)


def solve_weighted(
    prior: np.ndarray, pos: Mapping[int, int], matches: Sequence[Match], config: StitchConfig,
    fixed: Mapping[int, np.ndarray] | None = None,
) -> np.ndarray:  # fmt: skip
    """One weighted sparse least-squares solve: accepted matches plus a weak prior.

    ``pos`` maps each free tile's index to its row in ``prior``; ``fixed`` holds the
    positions of tiles already placed for good (a match to one is a constraint on the
    other); matches to tiles in neither are ignored.
    """
    fixed = fixed or {}
    n = len(prior)
    wp = 1.0 / config.prior_sigma_px**2
    rows, cols, vals = list(range(n)), list(range(n)), [wp] * n
    rhs = wp * prior.copy()
    for m in matches:
        if not m.accepted:
            continue
        i, j = pos.get(m.a), pos.get(m.b)
        d = np.array([m.dy, m.dx])
        wm = max(m.confidence, 1e-3) / config.match_sigma_px**2
        if i is not None and j is not None:
            rows += [i, j, i, j]
            cols += [i, j, j, i]
            vals += [wm, wm, -wm, -wm]
            rhs[i] -= wm * d
            rhs[j] += wm * d
        elif i is not None and m.b in fixed:  # b = a + d, b fixed
            rows.append(i)
            cols.append(i)
            vals.append(wm)
            rhs[i] += wm * (fixed[m.b] - d)
        elif j is not None and m.a in fixed:
            rows.append(j)
            cols.append(j)
            vals.append(wm)
            rhs[j] += wm * (fixed[m.a] + d)
    solve = spla.factorized(sp.csc_matrix((vals, (rows, cols)), shape=(n, n)))
    return np.column_stack([solve(rhs[:, 0]), solve(rhs[:, 1])])


#: The stage map is used only for a plausible mount (|scale - 1|, |rotation| below) and
#: enough evidence to measure it: at least _MIN_PLACED tiles placed by matches, spanning at
#: least _MIN_LEVER of the grid along some axis. (In bench stitch's blank case a transform
#: fitted to ~8 tiles and extrapolated to the glass tiles was worse than the raw stage
#: positions: 6.6 vs 5.0 px RMS; from 35 tiles on it is better.) A backlash term is fitted
#: for an axis once _MIN_BACKLASH placed tiles were reached from each direction along it.
_MAX_SIMILARITY = 0.05
_MIN_PLACED = 16
_MIN_LEVER = 0.5
_MIN_BACKLASH = 4


def approach_signs(nominal: np.ndarray, moved_px: float = 0.5) -> np.ndarray:
    """(N, 2) direction (+1 or -1) of the last move along each axis (row, col) before each
    position of ``nominal``, given in visiting order: a stepper stage with backlash stops
    short by an amount that depends on the direction it came from (a serpentine scan
    alternates it row by row). Before an axis first moves, its first move's sign counts."""
    nominal = np.asarray(nominal, float).reshape(-1, 2)
    signs = np.zeros(nominal.shape)
    last = np.zeros(2)
    for k in range(1, len(nominal)):
        step = nominal[k] - nominal[k - 1]
        last = np.where(np.abs(step) > moved_px, np.sign(step), last)
        signs[k] = last
    for ax in range(2):
        moved = signs[:, ax] != 0
        first = signs[moved, ax][0] if moved.any() else 1.0
        signs[~moved, ax] = first  # only positions before the axis first moved
    return signs


@dataclass(frozen=True)
class StageMap:
    """Stage-derived positions to mosaic pixels: a similarity (a camera turned on its mount,
    a pixel size off by a little) plus a backlash offset per approach direction. With
    positions as complex ``col + 1j * row``: ``w = a (z - z0) + b + c_row s_row + c_col s_col``,
    ``s`` the :func:`approach_signs`."""

    a: complex
    z0: complex
    b: complex
    backlash: tuple[complex, complex] = (0j, 0j)  # per sign axis (row, col)

    def apply(self, nominal: np.ndarray, signs: np.ndarray) -> np.ndarray:
        """(N, 2) mapped (row, col) positions of stage-derived ``nominal`` positions."""
        nominal = np.asarray(nominal, float).reshape(-1, 2)
        signs = np.asarray(signs, float).reshape(-1, 2)
        z = nominal[:, 1] + 1j * nominal[:, 0]
        w = self.a * (z - self.z0) + self.b
        w = w + self.backlash[0] * signs[:, 0] + self.backlash[1] * signs[:, 1]
        return np.column_stack([w.imag, w.real])


def fit_stage_map(
    nominal: np.ndarray,
    solved: np.ndarray,
    pos: Mapping[int, int],
    matches: Sequence[Match],
    signs: np.ndarray | None = None,
) -> StageMap | None:
    """The :class:`StageMap` that best takes the stage positions (rows of ``nominal``, with
    their approach ``signs``; None: no backlash term) to the solved positions of the
    matched tiles; None with too few matched tiles, a cluster too small to measure a
    rotation, or an implausible transform."""
    used = [m for m in matches if m.accepted]
    placed = sorted({pos[m.a] for m in used} | {pos[m.b] for m in used})
    if len(placed) < _MIN_PLACED:
        return None
    extent = np.ptp(nominal, axis=0)
    lever = np.ptp(nominal[placed], axis=0)
    if not np.any((extent > 0) & (lever >= _MIN_LEVER * extent)):
        return None
    z = nominal[placed, 1] + 1j * nominal[placed, 0]  # (col, row) as complex numbers
    w = solved[placed, 1] + 1j * solved[placed, 0]
    z0 = z.mean()
    zc = z - z0
    if float(np.vdot(zc, zc).real) <= 0:
        return None
    cols, axes = [zc, np.ones(len(z), complex)], []
    if signs is not None:
        s = np.asarray(signs, float)[placed]
        for ax in range(2):
            if min(np.sum(s[:, ax] > 0), np.sum(s[:, ax] < 0)) >= _MIN_BACKLASH:
                cols.append(s[:, ax].astype(complex))
                axes.append(ax)
    coef = np.linalg.lstsq(np.column_stack(cols), w, rcond=None)[0]
    a = complex(coef[0])
    if abs(a - 1) > _MAX_SIMILARITY:
        return None
    backlash = [0j, 0j]
    for ax, c in zip(axes, coef[2:], strict=True):
        backlash[ax] = complex(c)
    return StageMap(a, complex(z0), complex(coef[1]), (backlash[0], backlash[1]))


def _ramp(n: int, width: int) -> np.ndarray:
    i = np.arange(n, dtype=np.float32)
    return np.clip((np.minimum(i, n - 1 - i) + 0.5) / max(width, 1), 0.0, 1.0)


@dataclass
class Mosaic:
    """Tiles at refined positions, rendered on demand with linear feathering.

    Args:
        tiles: The tiles.
        positions_px: (N, 2) top-left (row, col) per tile in level-0 pixels.
        tile_shape: (height, width) of every tile.
        feather_px: Width of the blending ramp at each tile edge.
        bounds_px: ((row0, col0), (row1, col1)) extent of the mosaic; ``None``: the tiles'.
        cache_bytes: Decoded tiles kept in memory.
    """

    tiles: Sequence[StitchTile]
    positions_px: np.ndarray
    tile_shape: tuple[int, int]
    feather_px: int
    bounds_px: tuple[tuple[float, float], tuple[float, float]] | None = None
    cache_bytes: int = 1536 << 20
    _origin: np.ndarray = field(init=False, repr=False)
    _corners: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        h, w = self.tile_shape
        corners = np.round(np.asarray(self.positions_px, dtype=float)).astype(np.int64)
        if self.bounds_px is None:
            lo = corners.min(axis=0) if len(corners) else np.zeros(2, np.int64)
            hi = corners.max(axis=0) + np.array([h, w]) if len(corners) else np.array([h, w])
        else:
            lo = np.floor(np.asarray(self.bounds_px[0], dtype=float)).astype(np.int64)
            hi = np.ceil(np.asarray(self.bounds_px[1], dtype=float)).astype(np.int64)
        self._origin = lo
        self._corners = corners - lo
        self.shape = (int(hi[0] - lo[0]), int(hi[1] - lo[1]))
        self._cache = TileCache(self.tiles, self.cache_bytes)
        self._wy, self._wx = feather_ramps((h, w), self.feather_px)

    @property
    def tile_corners_px(self) -> np.ndarray:
        """(N, 2) integer top-left corners of the tiles in mosaic pixels."""
        return self._corners.copy()

    def render(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """Blend the region ``[y0, y0+h) x [x0, x0+w)`` of the mosaic (uint8 RGB)."""
        return blend(
            (y0, x0, h, w), self._corners, self.tile_shape, (self._wy, self._wx),
            lambda k: self._cache.get(self.tiles[k].index),
        )  # fmt: skip


def feather_ramps(tile_shape: tuple[int, int], feather_px: int) -> tuple[np.ndarray, np.ndarray]:
    """The blending weights along a tile's rows and columns (linear ramps at the edges)."""
    return _ramp(tile_shape[0], feather_px), _ramp(tile_shape[1], feather_px)


def blend(
    region: tuple[int, int, int, int], corners: np.ndarray, tile_shape: tuple[int, int],
    ramps: tuple[np.ndarray, np.ndarray], image: Callable[[int], np.ndarray],
) -> np.ndarray:  # fmt: skip
    """Feather-blend the tiles over ``region`` = (y0, x0, h, w) of the mosaic (uint8 RGB).

    Args:
        region: The rectangle, in mosaic pixels.
        corners: (N, 2) integer top-left corners of the tiles in mosaic pixels.
        tile_shape: (height, width) of every tile.
        ramps: :func:`feather_ramps`.
        image: The RGB image of tile ``k`` (the row of ``corners``), read only if it overlaps.

    Areas no tile covers are white (glass).
    """
    y0, x0, h, w = region
    th, tw = tile_shape
    wy_all, wx_all = ramps
    acc = np.zeros((h, w, 3), np.float32)
    wsum = np.zeros((h, w), np.float32)
    tmp = np.empty((min(h, th), min(w, tw), 3), np.float32)
    for k, (ty, tx) in enumerate(corners):
        r0, r1 = max(y0, ty), min(y0 + h, ty + th)
        c0, c1 = max(x0, tx), min(x0 + w, tx + tw)
        if r0 >= r1 or c0 >= c1:
            continue
        img = image(k)
        wt = wy_all[r0 - ty : r1 - ty, None] * wx_all[None, c0 - tx : c1 - tx]
        part = tmp[: r1 - r0, : c1 - c0]
        np.multiply(img[r0 - ty : r1 - ty, c0 - tx : c1 - tx], wt[..., None], out=part)
        acc[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0] += part
        wsum[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0] += wt
    empty = wsum == 0
    wsum[empty] = 1.0
    acc[empty] = 255.0  # no tile: white glass
    acc /= wsum[..., None]
    acc += 0.5  # round; a weighted mean of uint8 values stays <= 255.5
    return acc.astype(np.uint8)


def bounds_px(
    covered_min_xy: tuple[float, float], covered_max_xy: tuple[float, float],
    pixel_size_m: float, config: StitchConfig,
) -> tuple[tuple[float, float], tuple[float, float]]:  # fmt: skip
    """((row0, col0), (row1, col1)) in level-0 pixels of a stage rectangle (m)."""
    sx = -1.0 if config.flip_x else 1.0
    sy = -1.0 if config.flip_y else 1.0
    ys = sorted(sy * v / pixel_size_m for v in (covered_min_xy[1], covered_max_xy[1]))
    xs = sorted(sx * v / pixel_size_m for v in (covered_min_xy[0], covered_max_xy[0]))
    return (ys[0], xs[0]), (ys[1], xs[1])


def planned_overlap_px(
    nominal_px: Mapping[tuple[int, int], Sequence[float]], tile_shape: tuple[int, int]
) -> int:
    """Narrowest overlap (pixels) between grid neighbours at their stage positions: the
    default feather width (a tenth of the tile without neighbours)."""
    widths = []
    for (r, c), p in nominal_px.items():
        for nb in ((r, c + 1), (r + 1, c)):
            if nb in nominal_px:
                d = np.abs(np.asarray(nominal_px[nb], float) - np.asarray(p, float))
                widths.append(min(tile_shape[0] - d[0], tile_shape[1] - d[1]))
    widths = [w for w in widths if w > 0]
    return int(min(widths)) if widths else max(1, min(tile_shape) // 10)
