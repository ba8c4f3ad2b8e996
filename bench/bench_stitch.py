"""Benchmark: tile registration against known truth, DeepAf vs ASHLAR vs m2stitch (MIST).

    ./deepaf bench stitch [--sizes 16,64,256[,1024]] [--cases dense,blank]
                          [--methods deepaf,ashlar,m2stitch] [--tile-size 640x480]
                          [--overlap 0.1] [--seed 0] [--quick] [--cache-dir DIR]

Tile sets. Per case one large canvas of the virtual microscope's slide is rendered once
(20x profile, 0.155 um/px, noise-free optical intensity, `VirtualMicroscope.render_intensity`
in 2048x2048 blocks on the slide's global pixel grid, each block at the best focus of its
centre) and cached as a float16 memory map under `runs/bench_stitch_cache/` (keyed by every
parameter). N = 16, 64, 256 (optionally 1024) fields form a serpentine grid (sqrt(N) x sqrt(N),
centred in the canvas) with `--overlap` of the tile size between neighbours. Each field's TRUE
centre is its nominal (commanded) stage position plus realistic stage error:
- backlash: rows scanned in -x lag by `--backlash-um` (2 um, the simulator's 20x stage);
- jitter: Gaussian, `--jitter-um` (1 um) per axis per field;
- rotation: the camera is rotated by `--rotation-deg` (0.2 deg) against the stage axes.
A tile is cut from the canvas by `cv2.warpAffine` (Lanczos; sub-pixel centre, rotated), then
the simulator's camera model (`CameraModel.expose`: shot + read noise, white balance, gamma,
8 bit; independent noise per tile) makes the RGB uint8 PNG. Cases: `dense` = an all-tissue
region (lab_a_standard); `blank` = a region across a section's edge (about a third tissue)
with a pale stain (H and E strength x0.35, low cellularity): mostly glass, faint tissue.

Truth. Tile pixel q samples the canvas at c + R q' (c = true centre, q' = q - tile centre, R
the rotation), so content at canvas point p sits at R^-1 p in every tile's frame: neighbours
differ by a pure translation and the true mosaic top-left of tile i is R^-1 c_i - tile centre
(camera frame). Positions are defined up to a global translation, so the error is
e_i = (est_i - true_i) - mean_i(est - true); RMS and max of |e_i| over tiles, in pixels.

Methods (each (method, case, N) in a fresh worker process; tiles are read lazily from PNG):
- `deepaf`: what a scan does. `OverlapRegistrar` fed tile by tile in scan order
  (`register_tiles`), then the streamed solve (`StreamingSolver`: each tile placed as it
  arrives and frozen once its neighbourhood is visited); the production `STITCH_CONFIG`
  except `max_shift_px`, set from the stage error (below) like the anchors'. Also reported:
  the error of the all-at-once `solve_positions` on the same matches ("global RMS"). Then
  the scan's slide path (`SlideStream`: register, place, blend and JPEG-encode tile by tile,
  then write the file) to a temporary file: seconds per megapixel of level 0 in all, and the
  time from the last tile to the written file ("after last tile", with its share).
- `ashlar`: `ashlar.reg.EdgeAligner` through its API on an in-memory `Reader`/`Metadata`
  (nominal stage positions, pixel size, green channel); `max_shift` = the stage error bound
  in um, `filter_sigma` = `--ashlar-sigma` (1.0 px; its default 0 is a bare Laplacian, tuned
  for fluorescence), no thumbnail.
- `m2stitch`: `m2stitch.stitch_images` (a Python MIST) on the green channel with the nominal
  positions as initial guess, `overlap_diff_threshold` = the stage error bound, default
  `ncc_threshold` 0.5 (0.2 if no pair passes). MIST positions are whole pixels.
Stage error bound (all methods): backlash + 4 sqrt(2) x jitter (about 7.7 um, 50 px).

Figures per (method, case, N): RMS and max error (px); seconds per tile (wall time of reading,
registering and solving, divided by N; 2 cores); peak RSS (ru_maxrss at the end of
registration, absolute) and the worker's baseline RSS (after imports and listing the tiles,
before the method) so growth is visible; for deepaf also the writer's s/MP and the worker's
peak RSS after writing (the mosaic keeps up to `cache_bytes` of decoded tiles).
Gates (MET/MISSED in the output): dense RMS <= 1 px; deepaf RMS <= the better anchor's at
every N (dense and blank); s/tile at the largest N <= 1.5x N=16; peak RSS at the largest N <=
1.3x N=16, and <= 2 GB extrapolated to 12 MP tiles.

Last stdout line, one JSON object: {"deepaf": {"rms_px": {"16": .., "64": .., "256": ..},
"max_px": {..}, "s_per_tile": {..}, "peak_rss_mb": {..}, "baseline_rss_mb": {..},
"writer_s_per_mp": {..}, "writer_peak_rss_mb": {..}, "errors": {N: why}, "blank": {same keys
for the blank case}}, "ashlar": {..}, "m2stitch": {..}, "case": "dense" (the case at the top
level), "cases": [..], "tile_shape": [h, w], "overlap": .., "stage_error": {..}, "gates":
{name: true/false}, "wall_s": ..}. A method that cannot run reports null figures and its
reason under "errors" (also printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

METHODS = ("deepaf", "ashlar", "m2stitch")
CASES = ("dense", "blank")
SIZES = (16, 64, 256)
CACHE_VERSION = 1
BLOCK = 2048  # canvas render block (px)
MARGIN = 64  # canvas margin around the nominal grid (stage error + rotation + filter)
PROFILE = "20x"
SLIDE_SEED = 0
FULL_TILE = (3040, 4056)  # (h, w) of a real capture, for the RSS extrapolation


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ tile sets
class SetSpec(NamedTuple):
    """Everything a tile set depends on (its cache key; a NamedTuple: `deepaf bench` loads this
    file by path, without a sys.modules entry, which dataclasses need)."""

    case: str
    n: int
    tile_w: int
    tile_h: int
    overlap: float
    seed: int
    backlash_um: float
    jitter_um: float
    rotation_deg: float
    canvas_n: int  # the largest N of the run: the canvas is sized for it

    @property
    def side(self) -> int:
        return math.isqrt(self.n)

    @property
    def step(self) -> tuple[float, float]:
        """(x, y) nominal step in pixels."""
        return (round(self.tile_w * (1 - self.overlap)), round(self.tile_h * (1 - self.overlap)))

    def canvas_key(self) -> str:
        d = self._asdict()
        for k in ("n", "seed", "backlash_um", "jitter_um", "rotation_deg"):
            d.pop(k)
        return _digest(d)

    def key(self) -> str:
        return _digest(self._asdict())


def _digest(d: dict) -> str:
    blob = json.dumps({**d, "v": CACHE_VERSION}, sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


def max_shift_um(spec: SetSpec) -> float:
    """Bound on a neighbour pair's deviation from nominal (um): backlash + 4 sqrt(2) jitter."""
    return spec.backlash_um + 4 * math.sqrt(2) * spec.jitter_um


def _scope(case: str):
    from deepaf_driver.sim import VirtualMicroscope
    from deepaf_driver.sim.protocols import get_protocol

    protocol = get_protocol("lab_a_standard")
    if case == "blank":
        protocol = dataclasses.replace(
            protocol,
            name="bench_stitch_pale",
            h_strength=protocol.h_strength * 0.35,
            e_strength=protocol.e_strength * 0.35,
            cellularity=0.25,
        )
    return VirtualMicroscope(PROFILE, protocol, slide_seed=SLIDE_SEED)


def _canvas_shape(spec: SetSpec) -> tuple[int, int]:
    side = math.isqrt(spec.canvas_n)
    sx, sy = spec.step
    return (
        (side - 1) * sy + spec.tile_h + 2 * MARGIN,
        (side - 1) * sx + spec.tile_w + 2 * MARGIN,
    )


def _choose_region(scope, case: str, shape: tuple[int, int], small: tuple[int, int]):
    """Top-left (x, y) in metres of the canvas and its tissue fraction (simulator truth).

    Dense: the candidate with the most tissue (over the canvas and its centre); blank: the
    one nearest a third tissue over the canvas and over ``small``, the (h, w) px extent of
    the smallest grid (centred), so every N sees glass and faint tissue.
    """
    from deepaf.sim_regions import field_tissue_fraction

    pix = scope.pixel_size_m
    fov = (shape[1] * pix, shape[0] * pix)
    small_fov = (small[1] * pix, small[0] * pix)
    w, h = scope.slide_size_m
    step = max(fov[0] / 3, fov[1] / 3, 0.3e-3)
    best, best_score = None, math.inf
    for cy in np.arange(fov[1] / 2 + 0.5e-3, h - fov[1] / 2 - 0.5e-3, step):
        for cx in np.arange(fov[0] / 2 + 0.5e-3, w - fov[0] / 2 - 0.5e-3, step):
            f_all = field_tissue_fraction(scope, cx, cy, fov)
            if case == "dense":
                if f_all < 0.9:
                    continue
                f_small = field_tissue_fraction(scope, cx, cy, small_fov)
                score = (1 - f_all) + (1 - f_small)
            else:
                if not 0.15 < f_all < 0.6:
                    continue
                f_small = field_tissue_fraction(scope, cx, cy, small_fov)
                score = abs(f_all - 0.35) + abs(f_small - 0.35)
            if score < best_score:
                best, best_score = (cx - fov[0] / 2, cy - fov[1] / 2, f_all), score
            if case == "dense" and score < 0.02:
                return best
    if best is None:
        raise RuntimeError(f"no region for the {case} case on slide {SLIDE_SEED}")
    return best


def render_canvas(spec: SetSpec, cache: Path, progress=None) -> tuple[Path, dict]:
    """Render (or reuse) the case's canvas: float16 (H, W, 3) intensity, and its metadata."""
    d = cache / f"canvas_{spec.case}_{spec.canvas_key()}"
    meta_path, data_path = d / "canvas.json", d / "canvas.npy"
    if meta_path.exists() and data_path.exists():
        return data_path, json.loads(meta_path.read_text())
    d.mkdir(parents=True, exist_ok=True)
    scope = _scope(spec.case)
    pix = scope.pixel_size_m
    shape = _canvas_shape(spec)
    small_side = math.isqrt(min(spec.n, 16))
    small = (
        (small_side - 1) * spec.step[1] + spec.tile_h,
        (small_side - 1) * spec.step[0] + spec.tile_w,
    )
    x0, y0, tissue = _choose_region(scope, spec.case, shape, small)
    i0, j0 = round(x0 / pix), round(y0 / pix)  # global pixel of the canvas' top-left
    tmp = data_path.with_suffix(".partial.npy")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(*shape, 3))
    blocks = [(r, c) for r in range(0, shape[0], BLOCK) for c in range(0, shape[1], BLOCK)]
    task = progress.add_task(f"rendering {spec.case} canvas", total=len(blocks)) if progress else 0
    t0 = time.monotonic()
    for r, c in blocks:
        h, w = min(BLOCK, shape[0] - r), min(BLOCK, shape[1] - c)
        # the frame's top-left snaps to round(x / pix - (w - 1) / 2): put it on (i0 + c, j0 + r)
        xm, ym = (i0 + c + (w - 1) / 2) * pix, (j0 + r + (h - 1) / 2) * pix
        z = float(scope.best_focus_z(xm, ym))
        inten = scope.render_intensity(xm, ym, z, (w, h))
        arr[r : r + h, c : c + w] = inten.transpose(1, 2, 0)
        if progress:
            progress.advance(task)
    arr.flush()
    del arr
    os.replace(tmp, data_path)
    meta = {
        "shape": list(shape),
        "pixel_size_m": pix,
        "origin_px": [i0, j0],
        "protocol": scope.protocol.name,
        "tissue_fraction": tissue,
        "render_s": time.monotonic() - t0,
    }
    meta_path.write_text(json.dumps(meta))
    return data_path, meta


def _rotation(deg: float) -> np.ndarray:
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


def make_tile_set(spec: SetSpec, cache: Path, progress=None) -> Path:
    """Cut (or reuse) the tile set; returns its folder holding manifest.json and PNGs."""
    import cv2

    d = cache / f"tiles_{spec.case}_n{spec.n}_{spec.key()}"
    if (d / "manifest.json").exists():
        return d
    canvas_path, meta = render_canvas(spec, cache, progress)
    canvas = np.load(canvas_path, mmap_mode="r")
    scope = _scope(spec.case)
    pix = meta["pixel_size_m"]
    d.mkdir(parents=True, exist_ok=True)
    side, (sx, sy) = spec.side, spec.step
    h, w = spec.tile_h, spec.tile_w
    qc = np.array([(w - 1) / 2, (h - 1) / 2])  # tile centre (x, y)
    ch, cw = canvas.shape[:2]
    # grid centred in the canvas: nominal centre of field (0, 0), canvas (x, y) px
    g0 = np.array([cw / 2 - (side - 1) * sx / 2, ch / 2 - (side - 1) * sy / 2])
    rng = np.random.default_rng([spec.seed, spec.n, CASES.index(spec.case), 1])
    rot = _rotation(spec.rotation_deg)
    rinv = rot.T
    backlash_px = spec.backlash_um * 1e-6 / pix
    jitter_px = spec.jitter_um * 1e-6 / pix
    tiles = []
    task = progress.add_task(f"cutting {spec.case} N={spec.n}", total=spec.n) if progress else 0
    index = 0
    for row in range(side):
        cols = range(side) if row % 2 == 0 else range(side - 1, -1, -1)  # serpentine
        for col in cols:
            nominal = g0 + np.array([col * sx, row * sy])
            err = rng.normal(0.0, jitter_px, 2)
            if row % 2 == 1:
                err[0] -= backlash_px  # moving -x: the stage stops short by the backlash
            true_c = nominal + err
            # canvas point sampled by tile pixel q: true_c + R (q - qc); crop around it
            corners = true_c + (rot @ (np.array([[0, 0], [w, 0], [0, h], [w, h]]) - qc).T).T
            lo = np.floor(corners.min(axis=0)).astype(int) - 6
            hi = np.ceil(corners.max(axis=0)).astype(int) + 6
            if lo.min() < 0 or hi[0] > cw or hi[1] > ch:
                raise RuntimeError(f"tile {index} leaves the canvas; raise MARGIN")
            crop = np.asarray(canvas[lo[1] : hi[1], lo[0] : hi[0]], dtype=np.float32)
            m = np.hstack([rot, (true_c - rot @ qc - lo)[:, None]])
            inten = cv2.warpAffine(
                crop, m, (w, h), flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REFLECT,
            )  # fmt: skip
            noise_rng = np.random.default_rng([spec.seed, spec.n, CASES.index(spec.case), 2, index])
            img = scope.camera.expose(
                np.ascontiguousarray(inten.transpose(2, 0, 1)), scope.protocol, rng=noise_rng
            )
            name = f"tile_{index:04d}.png"
            cv2.imwrite(str(d / name), img[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
            true_tl = rinv @ true_c - qc  # mosaic (camera) frame, (x, y)
            tiles.append(
                {
                    "index": index,
                    "row": row,
                    "col": col,
                    # stage reports the nominal centre (m, canvas frame)
                    "x_m": float(nominal[0] * pix),
                    "y_m": float(nominal[1] * pix),
                    "file": name,
                    "true_rc": [float(true_tl[1]), float(true_tl[0])],
                    "stage_error_px": [float(err[1]), float(err[0])],
                }
            )
            index += 1
            if progress:
                progress.advance(task)
    manifest = {
        "spec": spec._asdict(),
        "tile_shape": [h, w],
        "pixel_size_m": pix,
        "max_shift_um": max_shift_um(spec),
        "canvas": meta,
        "tiles": tiles,
    }
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def position_error(est: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(RMS, max) of |est - truth| in px after removing the mean difference (global offset)."""
    diff = np.asarray(est, float) - np.asarray(truth, float)
    diff -= diff.mean(axis=0)
    norm = np.hypot(diff[:, 0], diff[:, 1])
    return float(np.sqrt(np.mean(norm**2))), float(norm.max())


# ------------------------------------------------------------------------------ workers
def _rss_mb() -> float:
    """Peak RSS of this process (MB): VmHWM of its address space. ru_maxrss is not used where
    VmHWM exists: on Linux a child keeps its parent's high-water mark across fork + exec, so
    every worker would report at least the bench's own RSS when it was spawned."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def _stitch_config(max_shift_px: float):
    try:
        from deepaf_planner.stitching import STITCH_CONFIG
    except ImportError:  # older tree: defined in outputs
        from deepaf_planner.outputs import STITCH_CONFIG
    return dataclasses.replace(STITCH_CONFIG, max_shift_px=max_shift_px)


def _grey(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    return np.ascontiguousarray(img[..., 1])  # green (same index in BGR and RGB)


def _run_deepaf(d: Path, man: dict, nominal_rc: np.ndarray, out: dict) -> np.ndarray:
    from types import SimpleNamespace

    from deepaf_planner.slide_formats import slide_format
    from deepaf_planner.slide_stream import SlideStream
    from deepaf_planner.stitching import (
        StitchTile,
        nominal_positions_px,
        register_tiles,
        solve_positions,
    )
    from deepaf_planner.stream_solve import StreamingSolver

    pix = man["pixel_size_m"]
    shape = tuple(man["tile_shape"])
    config = _stitch_config(man["max_shift_um"] * 1e-6 / pix)
    tiles = [
        StitchTile(t["index"], t["row"], t["col"], t["x_m"], t["y_m"], d / t["file"])
        for t in man["tiles"]
    ]
    idx = [t.index for t in tiles]
    out["baseline_rss_mb"] = _rss_mb()
    t0 = time.perf_counter()
    nominal = nominal_positions_px(tiles, pix, shape, config)
    matches = register_tiles(tiles, nominal, shape, config)
    # the scan's solve: tiles in scan order, each frozen once its neighbourhood is visited
    solver = StreamingSolver(
        idx, {t.index: (t.row, t.col) for t in tiles}, dict(zip(idx, nominal, strict=True)), config
    )
    for t in tiles:
        solver.add(t.index, [m for m in matches if max(m.a, m.b) == t.index])
    solver.visit_all()
    pos = solver.positions(idx)
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = _rss_mb()
    out["matches_accepted"] = sum(m.accepted for m in solver.matches)
    out["matches_total"] = len(matches)
    out["global_est"] = solve_positions(nominal, idx, matches, config)[0].tolist()
    # the scan's slide path: registered, placed, blended and encoded tile by tile (JPEG)
    fields = [SimpleNamespace(index=t.index, row=t.row, col=t.col, x=t.x_m, y=t.y_m) for t in tiles]
    with tempfile.TemporaryDirectory(prefix="deepaf-bench-stitch-") as tmp:
        stream = SlideStream(fields, pix, shape, Path(tmp) / "slide.tiff", slide_format("tiff"),
                             config=config)  # fmt: skip
        try:
            for t in tiles:
                stream.add(t.index, t.row, t.col, _rgb(t.image), t.image)
            result = stream.finish()
        finally:
            stream.close()
    mp = stream.shape[0] * stream.shape[1] / 1e6
    out["writer_s_per_mp"] = (result.stream_s + result.final_s) / mp
    out["writer_mp"] = mp
    out["stream_s_per_tile"] = result.stream_s / len(tiles)
    out["final_s"] = result.final_s
    out["final_share"] = result.final_s / (result.stream_s + result.final_s)
    out["writer_peak_rss_mb"] = _rss_mb()
    return pos


def _rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _run_ashlar(d: Path, man: dict, nominal_rc: np.ndarray, out: dict, sigma: float):
    import warnings

    from ashlar import reg

    shape = np.array(man["tile_shape"], dtype=int)
    pix_um = man["pixel_size_m"] * 1e6
    files = [d / t["file"] for t in man["tiles"]]

    class BenchMetadata(reg.Metadata):
        """Nominal stage positions (px, (row, col)), one grey channel."""

        @property
        def _num_images(self):
            return len(files)

        @property
        def num_channels(self):
            return 1

        @property
        def pixel_size(self):
            return pix_um

        @property
        def pixel_dtype(self):
            return np.dtype(np.uint8)

        def tile_position(self, i):
            return nominal_rc[i].astype(float)

        def tile_size(self, i):
            return shape

    class BenchReader(reg.Reader):
        """Reads the green channel of each PNG on demand (ASHLAR caches them itself)."""

        def __init__(self):
            self.metadata = BenchMetadata()

        def read(self, series, c):
            return _grey(files[series])

    out["baseline_rss_mb"] = _rss_mb()
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aligner = reg.EdgeAligner(
            BenchReader(), channel=0, max_shift=man["max_shift_um"], filter_sigma=sigma,
            do_make_thumbnail=False, verbose=False,
        )  # fmt: skip
        aligner.run()
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = _rss_mb()
    finite = [e for _, e in aligner._cache.values() if np.isfinite(e)]
    out["matches_accepted"] = len(finite)
    out["matches_total"] = len(aligner._cache)
    out["settings"] = {"max_shift_um": man["max_shift_um"], "filter_sigma": sigma}
    if caught:
        out["warnings"] = sorted({str(w.message) for w in caught})[:5]
    return np.asarray(aligner.positions, float)


def _run_m2stitch(d: Path, man: dict, nominal_rc: np.ndarray, out: dict):
    import warnings

    import m2stitch

    h, w = man["tile_shape"]
    rows = [t["row"] for t in man["tiles"]]
    cols = [t["col"] for t in man["tiles"]]
    files = [d / t["file"] for t in man["tiles"]]
    max_shift_px = man["max_shift_um"] * 1e-6 / man["pixel_size_m"]
    threshold = min(100.0, 100.0 * max_shift_px / min(h, w))
    out["baseline_rss_mb"] = _rss_mb()
    t0 = time.perf_counter()
    # its API takes every image at once; standardised (zero mean, unit sd) because its NCC
    # divides by the UNcentred norms: right for fluorescence's dark background, but about
    # var/mean^2 (< 0.1) for brightfield tiles, so no pair would pass any ncc_threshold
    images = np.empty((len(files), h, w), np.float32)
    for k, f in enumerate(files):
        g = _grey(f).astype(np.float32)
        images[k] = (g - g.mean()) / max(float(g.std()), 1e-3)
    result = None
    for ncc in (0.5, 0.2):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result, props = m2stitch.stitch_images(
                    images, rows=rows, cols=cols, position_initial_guess=nominal_rc,
                    overlap_diff_threshold=threshold, ncc_threshold=ncc,
                    row_col_transpose=False,
                )  # fmt: skip
            break
        except AssertionError as exc:
            why = str(exc) or "an internal assertion (no valid peak within the window)"
            out.setdefault("notes", []).append(f"ncc_threshold {ncc} failed: {why}")
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = _rss_mb()
    if result is None:
        raise RuntimeError("m2stitch found no pair above ncc_threshold 0.2: " + str(out["notes"]))
    out["settings"] = {"overlap_diff_threshold_pct": threshold, "ncc_threshold": ncc}
    out["overlap_estimate_pct"] = [float(props["overlap_top"]), float(props["overlap_left"])]
    return result[["y_pos", "x_pos"]].to_numpy(dtype=float)


def worker(method: str, tile_dir: Path, ashlar_sigma: float) -> dict:
    """Run one method on one tile set in this process; returns its figures."""
    man = json.loads((tile_dir / "manifest.json").read_text())
    truth = np.array([t["true_rc"] for t in man["tiles"]])
    h, w = man["tile_shape"]
    pix = man["pixel_size_m"]
    nominal_rc = np.array([(t["y_m"] / pix - h / 2, t["x_m"] / pix - w / 2) for t in man["tiles"]])
    out: dict = {"method": method, "n": len(truth)}
    if method == "deepaf":
        est = _run_deepaf(tile_dir, man, nominal_rc, out)
    elif method == "ashlar":
        est = _run_ashlar(tile_dir, man, nominal_rc, out, ashlar_sigma)
    elif method == "m2stitch":
        est = _run_m2stitch(tile_dir, man, nominal_rc, out)
    else:
        raise ValueError(f"unknown method {method}")
    out["rms_px"], out["max_px"] = position_error(est, truth)
    if "global_est" in out:
        out["rms_px_global"], out["max_px_global"] = position_error(out.pop("global_est"), truth)
    out["stage_rms_px"], out["stage_max_px"] = position_error(nominal_rc, truth)
    out["s_per_tile"] = out["seconds"] / len(truth)
    return out


def _spawn(method: str, tile_dir: Path, args, timeout: float) -> dict:
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method]
    cmd += ["--tile-dir", str(tile_dir), "--ashlar-sigma", str(args.ashlar_sigma)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s (the bench's per-run budget)"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"worker exit {proc.returncode}: " + " | ".join(tail)[-400:]}
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------ report
def _gates(res: dict, sizes: list[int], cases: list[str]) -> list[tuple[str, bool | None]]:
    """(text, met) per gate; met None when the figures are missing."""

    def fig(case, method, key, n):
        return res.get(case, {}).get(method, {}).get(n, {}).get(key)

    gates: list[tuple[str, bool | None]] = []
    if "dense" in cases:
        for n in sizes:
            v = fig("dense", "deepaf", "rms_px", n)
            gates.append((f"dense N={n}: deepaf RMS <= 1 px", None if v is None else v <= 1.0))
    for case in cases:
        for n in sizes:
            ours = fig(case, "deepaf", "rms_px", n)
            anchors = [fig(case, m, "rms_px", n) for m in ("ashlar", "m2stitch")]
            anchors = [a for a in anchors if a is not None]
            if ours is None or not anchors:
                continue
            best = min(anchors)
            gates.append(
                (f"{case} N={n}: deepaf RMS <= better anchor's ({best:.2f} px)", ours <= best)
            )
    lo, hi = min(sizes), max(sizes)
    if lo != hi:
        for case in cases:
            a, b = fig(case, "deepaf", "s_per_tile", lo), fig(case, "deepaf", "s_per_tile", hi)
            ok = None if a is None or b is None else b <= 1.5 * a
            gates.append((f"{case}: deepaf s/tile N={hi} <= 1.5x N={lo}", ok))
            a, b = fig(case, "deepaf", "peak_rss_mb", lo), fig(case, "deepaf", "peak_rss_mb", hi)
            ok = None if a is None or b is None else b <= 1.3 * a
            gates.append((f"{case}: deepaf peak RSS N={hi} <= 1.3x N={lo}", ok))
    return gates


def _extrapolated_rss(res: dict, case: str, n: int, tile_shape) -> float | None:
    """Registration peak RSS for 12 MP tiles: baseline + growth x pixel ratio (an estimate)."""
    r = res.get(case, {}).get("deepaf", {}).get(n, {})
    if "peak_rss_mb" not in r:
        return None
    ratio = FULL_TILE[0] * FULL_TILE[1] / (tile_shape[0] * tile_shape[1])
    return r["baseline_rss_mb"] + (r["peak_rss_mb"] - r["baseline_rss_mb"]) * ratio


def _fmt(v, spec=".2f") -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    """Build the tile sets, run every method on each in its own process, print the table."""
    parser = argparse.ArgumentParser(prog="deepaf bench stitch", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="16,64,256", help="tile counts (squares), e.g. 16,64")
    parser.add_argument("--cases", default=",".join(CASES), help="dense and/or blank")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--tile-size", default="640x480", help="tile WxH (4056x3040: real)")
    parser.add_argument("--overlap", type=float, default=0.1, help="overlap fraction")
    parser.add_argument("--seed", type=int, default=0, help="stage error and noise seed")
    parser.add_argument("--backlash-um", type=float, default=2.0, help="x backlash (um)")
    parser.add_argument("--jitter-um", type=float, default=1.0, help="stage jitter sd (um)")
    parser.add_argument("--rotation-deg", type=float, default=0.2, help="camera rotation")
    parser.add_argument("--ashlar-sigma", type=float, default=1.0, help="ASHLAR filter_sigma")
    parser.add_argument("--quick", action="store_true", help="N=16 only (the test's mode)")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="default: runs/bench_stitch_cache/"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="per worker run (s)")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--tile-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.tile_dir, args.ashlar_sigma)))
        return 0

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    sizes = [16] if args.quick else sorted({int(s) for s in args.sizes.split(",") if s})
    bad = [n for n in sizes if math.isqrt(n) ** 2 != n or n < 4]
    if bad:
        parser.error(f"sizes must be squares >= 4, got {bad}")
    cases = [c for c in args.cases.split(",") if c]
    methods = [m for m in args.methods.split(",") if m]
    if set(cases) - set(CASES) or set(methods) - set(METHODS):
        parser.error(f"cases from {CASES}, methods from {METHODS}")
    tw, th = (int(v) for v in args.tile_size.lower().split("x"))
    cache = (args.cache_dir or _repo_root() / "runs" / "bench_stitch_cache").resolve()
    out_console = Console(width=None if sys.stdout.isatty() else 150)
    err = Console(stderr=True)
    t_start = time.monotonic()
    out_console.print(
        f"bench stitch: {PROFILE} sim, tiles {tw}x{th}, overlap {args.overlap:g}, N {sizes}, "
        f"cases {cases}, methods {methods}; stage error: backlash {args.backlash_um:g} um, "
        f"jitter {args.jitter_um:g} um sd, rotation {args.rotation_deg:g} deg; seed {args.seed}"
    )
    res: dict = {c: {m: {} for m in methods} for c in cases}
    error = (args.backlash_um, args.jitter_um, args.rotation_deg)
    specs = {
        (case, n): SetSpec(case, n, tw, th, args.overlap, args.seed, *error, max(sizes))
        for case in cases
        for n in sizes
    }
    dirs = {}
    with Progress(console=err, transient=True) as progress:
        for key, spec in specs.items():
            dirs[key] = make_tile_set(spec, cache, progress)
        runs = [(c, n, m) for c in cases for n in sizes for m in methods]
        task = progress.add_task("stitching", total=len(runs))
        for case, n, method in runs:
            progress.update(task, description=f"{method} {case} N={n}")
            r = _spawn(method, dirs[(case, n)], args, args.timeout)
            res[case][method][n] = r
            if "error" in r:
                err.print(f"  {method} {case} N={n}: FAILED: {r['error']}")
            else:
                err.print(
                    f"  {method:>8} {case:>5} N={n:<4}: RMS {r['rms_px']:.2f} px, max "
                    f"{r['max_px']:.2f} px, {r['s_per_tile'] * 1e3:.1f} ms/tile, "
                    f"{r['peak_rss_mb']:.0f} MB"
                )
            progress.advance(task)
    manifest = json.loads((dirs[(cases[0], sizes[0])] / "manifest.json").read_text())
    table = Table(
        title=f"tile registration vs truth: {tw}x{th} tiles, overlap {args.overlap:g}, "
        f"{PROFILE} ({manifest['pixel_size_m'] * 1e6:.3f} um/px), {os.cpu_count()} cores"
    )
    cols = ("case", "N", "method", "RMS px", "max px", "global RMS px", "stage RMS px",
            "ms/tile", "peak RSS MB", "base RSS MB", "pairs ok", "writer s/MP",
            "after last tile", "writer RSS MB")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="right")
    for case in cases:
        for n in sizes:
            for method in methods:
                r = res[case][method][n]
                if "error" in r:
                    table.add_row(case, str(n), method, "FAILED", *["-"] * (len(cols) - 4))
                    continue
                table.add_row(
                    case, str(n), method, _fmt(r["rms_px"]), _fmt(r["max_px"]),
                    _fmt(r.get("rms_px_global")), _fmt(r["stage_rms_px"], ".1f"),
                    _fmt(r["s_per_tile"] * 1e3, ".1f"),
                    _fmt(r["peak_rss_mb"], ".0f"), _fmt(r["baseline_rss_mb"], ".0f"),
                    f"{r.get('matches_accepted', '-')}/{r.get('matches_total', '-')}",
                    _fmt(r.get("writer_s_per_mp"), ".3f"),
                    "-" if "final_s" not in r else
                    f"{r['final_s']:.2f} s ({100 * r['final_share']:.0f} %)",
                    _fmt(r.get("writer_peak_rss_mb"), ".0f"),
                )  # fmt: skip
    out_console.print(table)
    for case in cases:
        for method in methods:
            for n in sizes:
                r = res[case][method][n]
                if "error" in r:
                    out_console.print(f"{method} {case} N={n} could not run: {r['error']}")
                for note in r.get("notes", []):
                    out_console.print(f"{method} {case} N={n}: {note}")
    gates = _gates(res, sizes, cases)
    gate_case = "dense" if "dense" in cases else cases[0]
    if "deepaf" in methods:
        est = _extrapolated_rss(res, gate_case, max(sizes), (th, tw))
        if est is not None:
            if (th, tw) == FULL_TILE:
                v = res[gate_case]["deepaf"][max(sizes)]["peak_rss_mb"]
                gates.append((f"{gate_case}: deepaf peak RSS <= 2 GB (12 MP tiles)", v <= 2048))
            else:
                gates.append(
                    (
                        f"{gate_case}: deepaf peak RSS <= 2 GB for 12 MP tiles (EXTRAPOLATED "
                        f"from {tw}x{th}: {est:.0f} MB)",
                        est <= 2048,
                    )
                )
    for text, ok in gates:
        state = "n/a   " if ok is None else ("MET   " if ok else "MISSED")
        out_console.print(f"  gate {state} {text}")
    wall = time.monotonic() - t_start
    out_console.print(f"wall time {wall:.0f} s")

    def summary(case: str, method: str) -> dict:
        keys = ("rms_px", "max_px", "s_per_tile", "peak_rss_mb", "baseline_rss_mb")
        if method == "deepaf":
            keys += ("writer_s_per_mp", "writer_peak_rss_mb", "rms_px_global", "max_px_global",
                     "stream_s_per_tile", "final_s", "final_share")  # fmt: skip
        s: dict = {k: {str(n): res[case][method][n].get(k) for n in sizes} for k in keys}
        errors = {str(n): r["error"] for n, r in res[case][method].items() if "error" in r}
        if errors:
            s["errors"] = errors
        settings = next((r["settings"] for r in res[case][method].values() if "settings" in r), 0)
        if settings:
            s["settings"] = settings
        return s

    result: dict = {}
    for method in methods:
        result[method] = summary(gate_case, method)
        for case in cases:
            if case != gate_case:
                result[method][case] = summary(case, method)
    result.update(
        case=gate_case,
        cases=cases,
        tile_shape=[th, tw],
        overlap=args.overlap,
        pixel_size_m=manifest["pixel_size_m"],
        stage_error={
            "backlash_um": args.backlash_um,
            "jitter_um": args.jitter_um,
            "rotation_deg": args.rotation_deg,
            "max_shift_um": manifest["max_shift_um"],
        },
        seed=args.seed,
        gates={text: ok for text, ok in gates},
        cores=os.cpu_count(),
        wall_s=wall,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
