"""VirtualMicroscope: slide + protocol + optics + camera + stage behind one facade.

Conventions (SI units everywhere):

* ``x_m, y_m``: stage position of the field-of-view centre in slide coordinates
  (metres, origin at the slide's top-left corner; image columns follow +x, rows +y).
* ``z_m``: absolute height of the objective's focal plane (metres); larger z = focal
  plane further from the slide glass (toward the objective).
* ``dz = z - best_focus_z(x, y)``; the z move that brings a frame into focus is
  ``best_focus_z - z`` (the training label of the focal-stack datasets).
* Best focus is defined once (:func:`focus_offset_m`): the local tissue's mid-plane height
  at the field centre (:meth:`.slide.VirtualSlide.section_m`: thickness variation and
  folds included, never debris) plus the optics/protocol offset that maximises Brenner
  sharpness (green, noise-free). The section is treated as locally flat over one field
  of view; artefacts (folded flaps, bubble rims, debris) are extra layers at their own
  heights (:mod:`.artefact_render`), each defocused by its own distance.
* Frames are rendered on the slide's global pixel grid for their pixel size: the field
  centre snaps to the nearest pixel, so overlapping frames show the same object samples;
  rendered intensities of overlapping frames agree to float rounding (at most one grey
  level after 8-bit quantisation, and exactly with noise off in almost every pixel).

Streams: :meth:`VirtualMicroscope.capture` is the full 4056x3040 sensor at the profile's
pixel size; :meth:`VirtualMicroscope.preview` is 1280x720, the same field width cropped
to 16:9 and binned (pixel size x 4056/1280); :meth:`VirtualMicroscope.render_patch`
renders any size at full-resolution sampling (training patches).
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.fft as sfft
from scipy.fft import next_fast_len

from ..focus_measure import brenner, refine_peak
from .artefact_render import (
    RIM_PHASE_RAD,
    LayerPlan,
    ObjectLayers,
    extra_maps,
    far_shadows,
    height_tables,
    object_layers,
    plan_layers,
    render_sprites,
)
from .artefacts import SlideArtefacts
from .camera import CameraModel
from .optics import (
    N_LAYERS,
    WAVELENGTHS_M,
    OpticsProfile,
    best_focus_offset,
    blur_radius_m,
    channel_layer_defocus,
    get_profile,
    radial_index,
    transfer_tables,
)
from .protocols import Protocol, get_protocol
from .slide import VirtualSlide
from .stage import SimStage, StageLimits

_MAX_SIDE_PX = 16384
_LN10 = math.log(10.0)
_WORKERS = 2  # FFT threads; elementwise work stays single-threaded (shared CPUs)
_OBJ_CACHE_MAX_PX = 3_000_000


def set_fft_workers(n: int) -> None:
    """Threads used by the FFTs of this process (dataset workers use 1)."""
    global _WORKERS
    _WORKERS = max(1, int(n))


@dataclass(frozen=True)
class Frame:
    """An acquired image with the pose it was taken at and its simulated duration."""

    image: np.ndarray
    x_m: float
    y_m: float
    z_m: float
    pixel_size_m: float
    duration_s: float


def _parse_size(size) -> tuple[int, int]:
    if isinstance(size, int | np.integer):
        size = (int(size), int(size))
    try:
        w, h = (int(size[0]), int(size[1]))
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"size must be an int or (width, height), got {size!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be positive, got {w}x{h}")
    if w > _MAX_SIDE_PX or h > _MAX_SIDE_PX:
        raise ValueError(f"size {w}x{h} exceeds the {_MAX_SIDE_PX}-pixel limit per side")
    return w, h


@functools.lru_cache(maxsize=16)
def _pixel_mtf(shape: tuple[int, int]) -> np.ndarray:
    """Pixel-aperture (box) transfer function on an rfft2 grid, in units of the pixel."""
    ny, nx = shape
    fy = np.fft.fftfreq(ny)
    fx = np.fft.rfftfreq(nx)
    return np.outer(np.sinc(fy), np.sinc(fx)).astype(np.float32)


_POOL: ThreadPoolExecutor | None = None


def _object_maps_threaded(
    slide: VirtualSlide, xs: np.ndarray, ys: np.ndarray, protocol: Protocol
) -> tuple[np.ndarray, np.ndarray]:
    """slide.object_maps in row strips on a small thread pool (numpy releases the GIL).

    Every value is an elementwise function of its own coordinates, so strips are exact.
    """
    ny, nx = len(ys), len(xs)
    if _WORKERS < 2 or nx * ny < 300_000:
        return slide.object_maps(xs, ys, protocol)
    n_strips = max(2, min(16, (nx * ny) // 400_000))
    edges = np.linspace(0, ny, n_strips + 1).astype(int)
    hmap = np.empty((N_LAYERS, ny, nx), np.float32)
    emap = np.empty((N_LAYERS, ny, nx), np.float32)

    def work(k: int) -> None:
        a, b = edges[k], edges[k + 1]
        hmap[:, a:b], emap[:, a:b] = slide.object_maps(xs, ys[a:b], protocol)

    list(_pool().map(work, range(n_strips)))
    return hmap, emap


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="deepaf-sim")
    return _POOL


# Best-focus calibration: 16 reference tissue fields (4 slides x 4), 256 px patches, a
# 9-point grid (a 17-point one agrees within 0.04 um at 20x). Version 1 used 6 fields of
# 96 px (one or two cells each), weighted by their Brenner: on protocols whose per-field
# sharpest plane varies (random_7007: sd 0.4 um between fields) one field dominated and best
# focus moved by up to 0.8 um, more than half the 20x depth of field, so even a perfect
# classical search looked biased against the "truth".
_CAL_SEEDS = (101, 202, 303, 404)
_CAL_FIELDS_PER_SEED = 4
_CAL_PATCH = 256
_CAL_GRID = 9
_CAL_EXTENSIONS = 3  # times the grid moves on when the peak is at one of its ends


#: Version of the best-focus definition below, recorded in every simulated stack's metadata
#: (`best_focus_version`); `deepaf sim relabel` moves older stacks' labels to it.
BEST_FOCUS_VERSION = 2


# Brenner sharpness of the green channel (mean squared 2-pixel horizontal difference): the
# one definition, shared with the baselines and the planner, in deepaf_driver.focus_measure
brenner_green = brenner


@functools.lru_cache(maxsize=256)
def focus_offset_m(profile: OpticsProfile, protocol: Protocol) -> float:
    """Best-focus z minus the section's mid-plane z (metres), for this profile and protocol.

    The one definition of best focus: the defocus maximising the mean normalised Brenner
    sharpness (green channel, noise-free 256x256 patches at capture sampling; each field's
    curve scaled to its own peak, so every field counts the same) over 16 fixed reference
    tissue fields on four reference slides; a 9-point grid over +-2 depths of field around
    the optical model's prediction (:func:`.optics.best_focus_offset`), moved on by 3 DoF
    (up to 3 times) while the peak is at one of its ends, refined by a parabola through the
    peak. Cached per (profile, protocol); about 3-5 s to compute.
    """
    guess = best_focus_offset(profile, protocol)
    dof = profile.depth_of_field_m
    grid = guess + np.linspace(-2.0 * dof, 2.0 * dof, _CAL_GRID)
    fields = []
    for seed in _CAL_SEEDS:
        scope = VirtualMicroscope(profile, protocol, slide_seed=seed, slide="plain")
        rng = np.random.default_rng(seed)
        for _ in range(_CAL_FIELDS_PER_SEED):
            x, y = scope.random_tissue_position(rng)
            fields.append((scope, x, y, float(scope.slide.focus_surface_m(x, y))))
    for _ in range(_CAL_EXTENSIONS + 1):
        total = np.zeros(len(grid))
        for scope, x, y, mid in fields:
            imgs = scope.render_stack(x, y, mid + grid, _CAL_PATCH, noise=False)
            b = np.array([brenner_green(i) for i in imgs])
            if b.max() > 0:
                total += b / b.max()
        i = int(np.argmax(total))
        if 0 < i < len(grid) - 1:
            break
        # the peak is beyond the grid (an optics far from the model's guess): move on
        grid = grid + (1 if i else -1) * 3.0 * dof
    i = int(np.clip(i, 1, len(grid) - 2))
    return round(refine_peak(grid, total / total.max(), at=i) * 1e9) / 1e9


class VirtualMicroscope:
    """A brightfield microscope looking at a virtual H&E slide.

    Args:
        profile: optics profile name ("20x", "4x") or an :class:`OpticsProfile`.
        protocol: preset name or a :class:`Protocol`.
        slide_seed: identity of the virtual slide.
        camera: camera model (default :class:`CameraModel`).
        stage: stage (default: limits = the slide area, z +-500 um, the profile's z step).
        noise_seed: seed of the default noise generator (None: unseeded).
        slide: the slide's artefact spec, "plain" (default: as the datasets and models were
            made) or "realistic" (what scans use), or a :class:`SlideArtefacts`.

    Raises:
        ValueError: unknown profile, protocol or slide spec.
    """

    def __init__(
        self,
        profile: str | OpticsProfile = "20x",
        protocol: str | Protocol = "lab_a_standard",
        slide_seed: int = 0,
        camera: CameraModel | None = None,
        stage: SimStage | None = None,
        noise_seed: int | None = 0,
        slide: str | SlideArtefacts = "plain",
    ) -> None:
        self.profile = get_profile(profile)
        self.protocol = get_protocol(protocol)
        self.slide = VirtualSlide(slide_seed, artefacts=slide)
        self.camera = camera or CameraModel()
        w, h = self.slide.size_m
        self.stage = stage or SimStage(
            StageLimits(0.0, w, 0.0, h, -500e-6, 500e-6),
            z_step_m=self.profile.z_step_m,
            backlash_m=2e-6 if self.profile.name != "4x" else 10e-6,
            position=(w / 2, h / 2, 0.0),
        )
        self._rng = np.random.default_rng(noise_seed)
        self._obj_cache = None

    # ------------------------------------------------------------------ geometry
    @property
    def slide_size_m(self) -> tuple[float, float]:
        """(width, height) of the slide in metres."""
        return self.slide.size_m

    @property
    def pixel_size_m(self) -> float:
        """Full-resolution pixel size at the sample (metres)."""
        return self.profile.pixel_size_m

    @property
    def preview_pixel_size_m(self) -> float:
        """Preview pixel size at the sample (metres)."""
        return self.profile.pixel_size_m * self.camera.preview_binning

    @property
    def field_of_view_m(self) -> tuple[float, float]:
        """(width, height) of the full-resolution capture at the sample."""
        w, h = self.camera.sensor_px
        return (w * self.pixel_size_m, h * self.pixel_size_m)

    @property
    def preview_field_of_view_m(self) -> tuple[float, float]:
        """(width, height) of the preview at the sample (same width, 16:9 crop)."""
        w, h = self.camera.preview_px
        return (w * self.preview_pixel_size_m, h * self.preview_pixel_size_m)

    @property
    def exposure_s(self) -> float:
        """Exposure time of one frame (seconds)."""
        return self.profile.exposure_s

    def best_focus_z(self, x_m, y_m):
        """Absolute stage z (m) of best focus at field centre (x, y); vectorised.

        Defined once: the local tissue's mid-plane height (folds and thickness variation
        included) plus :func:`focus_offset_m` of this profile and protocol (the calibrated
        Brenner peak).
        """
        mid = self.slide.section_m(x_m, y_m, self.protocol.thickness_m)[0]
        return mid + focus_offset_m(self.profile, self.protocol)

    def has_tissue(self, x_m: float, y_m: float) -> bool:
        """Whether the capture field at (x, y) may contain tissue (coarse, cheap)."""
        return self.slide.has_tissue(x_m, y_m, 0.5 * max(self.field_of_view_m))

    # ------------------------------------------------------------------ rendering
    def _check_pose(self, x_m: float, y_m: float, z_m: float) -> None:
        for name, v in (("x_m", x_m), ("y_m", y_m), ("z_m", z_m)):
            if not isinstance(v, int | float | np.floating | np.integer) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number of metres, got {v!r}")
        self.stage.limits.check(float(x_m), float(y_m), float(z_m))

    def render_intensity(
        self, x_m: float, y_m: float, z_m: float, size, pixel_size_m: float | None = None
    ) -> np.ndarray:
        """Noise-free optical intensity (3, h, w) float32 (1.0 = clear glass, lamp-relative).

        Args:
            x_m, y_m: field centre (m); z_m: absolute focal-plane height (m).
            size: int or (width, height) in pixels.
            pixel_size_m: sampling at the sample (default: full-resolution pixel).

        Raises:
            ValueError: non-finite or out-of-limit pose, non-positive size.
        """
        w, h = _parse_size(size)
        self._check_pose(x_m, y_m, z_m)
        pix = float(pixel_size_m or self.pixel_size_m)
        if pix <= 0:
            raise ValueError(f"pixel_size_m must be positive, got {pix}")
        prot = self.protocol
        dz_mid = float(z_m) - float(self.slide.base_mid_m(x_m, y_m, prot.thickness_m))
        plan, (margin, i0, j0, nx, ny) = self._frame_region(x_m, y_m, dz_mid, w, h, pix)
        obj = self._object(i0, j0, nx, ny, pix)
        glass = math.exp(-_LN10 * prot.background_od)
        if plan is not None:
            plan = plan.present_in(obj)
        if obj.empty and (plan is None or (plan.sprites is None and plan.far is None)):
            return np.full((3, h, w), glass, np.float32)

        if obj.empty:  # glass with debris only: nothing to transform
            fields = np.zeros((6, h, w), np.float32)
        else:
            fields = self._fields(obj, plan, dz_mid, pix, ny, nx)
            fields = fields[:, margin : margin + h, margin : margin + w]
        if plan is not None:
            self._add_debris(fields, plan, dz_mid, pix, (i0 + margin, j0 + margin, w, h))
        inten = np.exp(-fields[0::2])
        inten *= np.clip(1 + 2 * fields[1::2], 0.05, 3.0)
        inten *= np.float32(glass)
        return inten.astype(np.float32, copy=False)

    def _fields(self, obj: ObjectLayers, plan: LayerPlan | None, dz_mid, pix, ny, nx):
        """Absorption and phase fields (6, ny, nx) of a region: every layer's spectrum times
        its own transfer function (the section's depth layers, then the artefacts')."""
        prof, prot = self.profile, self.protocol
        hmap, emap = obj.h, obj.e
        layer_scale = prot.thickness_m / 4e-6
        maps = [hmap, emap]
        if obj.phase is not None:
            maps.append(obj.phase)
        n_extra = 0
        if plan is not None:
            extra = extra_maps(obj, plan)
            n_extra = len(extra)
            if extra:
                maps.append(np.stack(extra))
        maps = np.concatenate(maps, 0)  # (2L [+ L] [+ extras], ny, nx)
        spec = sfft.rfft2(maps, workers=_WORKERS)
        spec *= _pixel_mtf((ny, nx))
        fh, fe = spec[:N_LAYERS], spec[N_LAYERS : 2 * N_LAYERS]
        if obj.phase is not None:
            phase_density = spec[2 * N_LAYERS : 3 * N_LAYERS]
        else:
            phase_density = fe + np.float32(0.6) * fh
        ha, hp = transfer_tables(prof, prot, dz_mid)
        if n_extra:
            spec_x = spec[len(spec) - n_extra :]
            ha_x, hp_x = height_tables(prof, prot, dz_mid, plan.extra_heights)
        out = np.empty((6, ny, nx // 2 + 1), np.complex64)

        def channel(c: int) -> None:
            idx = radial_index((ny, nx), pix, WAVELENGTHS_M[c], prof.na, prof.condenser_sigma)
            k_phase = 2 * math.pi / WAVELENGTHS_M[c] * prot.delta_n * prot.thickness_m / N_LAYERS
            a_h = np.float32(_LN10 * layer_scale * prot.h_strength * prot.h_vector[c])
            a_e = np.float32(_LN10 * layer_scale * prot.e_strength * prot.e_vector[c])
            acc_a, acc_p = out[2 * c], out[2 * c + 1]
            acc_a[...] = 0
            acc_p[...] = 0
            for lyr in range(N_LAYERS):
                acc_a += ha[c, lyr][idx] * (a_h * fh[lyr] + a_e * fe[lyr])
                acc_p += (hp[c, lyr] * np.float32(k_phase))[idx] * phase_density[lyr]
            if n_extra:
                self._accumulate_extras(c, plan, spec_x, ha_x, hp_x, idx, acc_a, acc_p, a_h, a_e)

        if _WORKERS >= 2 and ny * nx > 300_000:
            list(_pool().map(channel, range(3)))
        else:
            for c in range(3):
                channel(c)
        return sfft.irfft2(out, s=(ny, nx), workers=_WORKERS)

    def _accumulate_extras(
        self, c: int, plan: LayerPlan, spec_x, ha_x, hp_x, idx, acc_a, acc_p, a_h, a_e
    ) -> None:
        """Add channel c of the artefact layers (folded flap, bubble rims) to the spectra."""
        prot = self.protocol
        lam = WAVELENGTHS_M[c]
        k_phase = np.float32(2 * math.pi / lam * prot.delta_n * prot.thickness_m / N_LAYERS)
        j = 0  # index into the extra spectra (a flap layer has two: h and e)
        n_flap = 0 if plan.flap_heights is None else len(plan.flap_heights)
        for lyr in range(n_flap):
            fh, fe = spec_x[j], spec_x[j + 1]
            acc_a += ha_x[c, lyr][idx] * (a_h * fh + a_e * fe)
            acc_p += (hp_x[c, lyr] * k_phase)[idx] * (fe + np.float32(0.6) * fh)
            j += 2
        lyr = n_flap
        if plan.rim_height is not None:
            a_rim = np.float32(_LN10 * self.slide.spec.bubble_rim_od)
            p_rim = np.float32(RIM_PHASE_RAD * WAVELENGTHS_M[1] / lam)
            acc_a += (ha_x[c, lyr] * a_rim)[idx] * spec_x[j]
            acc_p += (hp_x[c, lyr] * p_rim)[idx] * spec_x[j]

    def _add_debris(self, fields, plan: LayerPlan, dz_mid: float, pix: float, frame) -> None:
        """Add the debris' absorbance (exact patches and far shadows) to the frame's fields."""
        sprites = render_sprites(plan, self.profile, self.protocol, dz_mid, pix, frame, _pixel_mtf)
        if sprites is not None:
            fields[0::2] += sprites
        if plan.far is not None:
            i0, j0, w, h = frame
            xs, ys = (i0 + np.arange(w)) * pix, (j0 + np.arange(h)) * pix
            fields[0::2] += far_shadows(plan, self.profile, dz_mid, xs, ys)

    def _frame_region(self, x_m, y_m, dz_mid, w, h, pix):
        """(artefact layer plan or None, padded region) of a w x h frame at (x, y)."""
        plan = plan_layers(self.slide, self.profile, self.protocol, x_m, y_m, dz_mid, w, h, pix)
        if plan is None:
            u = channel_layer_defocus(self.profile, self.protocol, dz_mid)
            return None, self._region(x_m, y_m, w, h, pix, float(np.abs(u).max()))
        return plan, self._region(x_m, y_m, w, h, pix, plan.max_defocus_m)

    def _region(self, x_m, y_m, w, h, pix, max_defocus_m):
        """Padded pixel region (margin, i0, j0, nx, ny) on the global grid of pitch pix."""
        margin = math.ceil(blur_radius_m(self.profile, max_defocus_m) / pix) + 2
        nx = next_fast_len(w + 2 * margin, real=True)
        ny = next_fast_len(h + 2 * margin, real=True)
        i0 = round(x_m / pix - (w - 1) / 2) - margin
        j0 = round(y_m / pix - (h - 1) / 2) - margin
        return margin, i0, j0, nx, ny

    def _object(self, i0: int, j0: int, nx: int, ny: int, pix: float) -> ObjectLayers:
        """Stain maps of a pixel region, served from a one-region cache when it contains it."""
        key = (pix, self.protocol.thickness_m, self.protocol.cellularity)
        c = self._obj_cache
        if c is not None and c[0] == key:
            ci0, cj0, cobj = c[1], c[2], c[3]
            if (
                ci0 <= i0
                and cj0 <= j0
                and i0 + nx <= ci0 + cobj.h.shape[2]
                and j0 + ny <= cj0 + cobj.h.shape[1]
            ):
                return cobj.crop(slice(j0 - cj0, j0 - cj0 + ny), slice(i0 - ci0, i0 - ci0 + nx))
        xs = (i0 + np.arange(nx)).astype(np.float64) * pix
        ys = (j0 + np.arange(ny)).astype(np.float64) * pix
        obj = object_layers(
            self.slide,
            xs,
            ys,
            self.protocol,
            lambda gx, gy: _object_maps_threaded(self.slide, gx, gy, self.protocol),
        )
        if nx * ny <= _OBJ_CACHE_MAX_PX:
            self._obj_cache = (key, i0, j0, obj)
        return obj

    def render_stack(
        self,
        x_m: float,
        y_m: float,
        z_m,
        size=224,
        noise: bool = True,
        rng: np.random.Generator | None = None,
        sampling: str = "capture",
        illumination: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """Patches at one field for several focal planes (object generated once).

        Args:
            x_m, y_m: field centre (m); z_m: sequence of absolute focal-plane heights (m).
            size, noise, rng: as in :meth:`render`.
            sampling: "capture" (full-resolution pixels) or "preview" (the binned preview
                stream's pixels: what the focus model sees when it focuses from a preview).
            illumination: optional (h, w) relative illumination (non-uniform field).
        """
        if sampling not in ("capture", "preview"):
            raise ValueError(f"sampling must be 'capture' or 'preview', got {sampling!r}")
        pix = self.preview_pixel_size_m if sampling == "preview" else self.pixel_size_m
        binning = self.camera.preview_binning if sampling == "preview" else 1.0
        zs = [float(z) for z in np.atleast_1d(z_m)]
        w, h = _parse_size(size)
        for z in zs:
            self._check_pose(x_m, y_m, z)
        mid = float(self.slide.base_mid_m(x_m, y_m, self.protocol.thickness_m))
        regions = [self._frame_region(x_m, y_m, z - mid, w, h, pix)[1] for z in zs]
        _, i0, j0, nx, ny = max(regions)  # the largest margin covers every other region
        self._object(i0, j0, nx, ny, pix)  # prime the cache
        return [
            self.render(
                x_m,
                y_m,
                z,
                (w, h),
                noise,
                rng,
                pixel_size_m=pix,
                binning=binning,
                illumination=illumination,
            )
            for z in zs
        ]

    def render(
        self,
        x_m: float,
        y_m: float,
        z_m: float,
        size=224,
        noise: bool = True,
        rng: np.random.Generator | None = None,
        pixel_size_m: float | None = None,
        binning: float = 1.0,
        illumination: np.ndarray | None = None,
    ) -> np.ndarray:
        """8-bit RGB frame (h, w, 3) centred at (x, y) with the focal plane at z.

        Args:
            x_m, y_m: field centre (m); z_m: absolute focal-plane height (m).
            size: int or (width, height) in pixels.
            noise: shot + read noise (default on; off for exact comparisons).
            rng: noise generator (default: the microscope's own, seeded by noise_seed).
            pixel_size_m: sampling at the sample (default full resolution).
            binning: sensor pixels per output pixel (noise averaging).
            illumination: optional (h, w) relative illumination multiplying the intensity.

        Raises:
            ValueError: non-finite or out-of-limit pose, non-positive size.
        """
        inten = self.render_intensity(x_m, y_m, z_m, size, pixel_size_m)
        if illumination is not None:
            inten = inten * np.asarray(illumination, np.float32)[None]
        return self.camera.expose(
            inten,
            self.protocol,
            binning=binning,
            noise=noise,
            rng=rng if rng is not None else self._rng,
        )

    def render_patch(
        self,
        x_m: float,
        y_m: float,
        z_m: float,
        size=224,
        noise: bool = True,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """A patch at full-resolution sampling (the training-data stream)."""
        return self.render(x_m, y_m, z_m, size, noise, rng)

    def preview(
        self,
        x_m: float,
        y_m: float,
        z_m: float,
        noise: bool = True,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """1280x720 preview: the capture's field width, cropped to 16:9, binned."""
        return self.render(
            x_m,
            y_m,
            z_m,
            self.camera.preview_px,
            noise,
            rng,
            pixel_size_m=self.preview_pixel_size_m,
            binning=self.camera.preview_binning,
        )

    def capture(
        self,
        x_m: float,
        y_m: float,
        z_m: float,
        noise: bool = True,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """4056x3040 full-resolution capture.

        The optics are band-limited below the sensor's Nyquist frequency (20x: cut-off
        2.2 cycles/um, sensor Nyquist 3.2), so the intensity is rendered on the coarsest
        grid that still samples the green optical cut-off (20x: 1.45x coarser) and
        resampled (bicubic) to the sensor pixels before the camera model.
        """
        w, h = self.camera.sensor_px
        self._check_pose(x_m, y_m, z_m)
        pix = self.pixel_size_m
        prof = self.profile
        cutoff = prof.na * (1 + prof.condenser_sigma) / WAVELENGTHS_M[1]
        k = min(2.0, max(1.0, 1.0 / (2 * cutoff * pix)))
        if k < 1.1:
            return self.render(x_m, y_m, z_m, (w, h), noise, rng)
        pix_r = pix * k
        wr, hr = math.ceil(w / k) + 4, math.ceil(h / k) + 4
        coarse = self.render_intensity(x_m, y_m, z_m, (wr, hr), pix_r)
        i0f = round(x_m / pix - (w - 1) / 2)
        j0f = round(y_m / pix - (h - 1) / 2)
        i0c = round(x_m / pix_r - (wr - 1) / 2)
        j0c = round(y_m / pix_r - (hr - 1) / 2)
        m = np.array([[1 / k, 0, i0f / k - i0c], [0, 1 / k, j0f / k - j0c]], np.float64)
        inten = np.empty((3, h, w), np.float32)
        for c in range(3):
            inten[c] = cv2.warpAffine(
                coarse[c],
                m,
                (w, h),
                flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REFLECT,
            )
        return self.camera.expose(
            inten, self.protocol, noise=noise, rng=rng if rng is not None else self._rng
        )

    # ------------------------------------------------------------------ stage-driven
    def move_to(
        self, x: float | None = None, y: float | None = None, z: float | None = None
    ) -> float:
        """Move the stage; returns the simulated duration (s)."""
        return self.stage.move_to(x, y, z)

    def snap_preview(self, noise: bool = True) -> Frame:
        """Preview at the stage's current (actual) position; advances the stage clock."""
        x, y, _ = self.stage.position
        z = self.stage.actual_z_m
        img = self.preview(x, y, z, noise)
        dt = max(self.exposure_s, self.camera.preview_frame_s)
        self.stage.wait(dt)
        return Frame(img, x, y, z, self.preview_pixel_size_m, dt)

    def snap_capture(self, noise: bool = True) -> Frame:
        """Full-resolution capture at the stage's current (actual) position."""
        x, y, _ = self.stage.position
        z = self.stage.actual_z_m
        img = self.capture(x, y, z, noise)
        dt = self.exposure_s + self.camera.capture_readout_s
        self.stage.wait(dt)
        return Frame(img, x, y, z, self.pixel_size_m, dt)

    def random_tissue_position(
        self, rng: np.random.Generator, margin_m: float | None = None, tries: int = 200
    ) -> tuple[float, float]:
        """A random (x, y) whose capture field contains tissue.

        Raises:
            RuntimeError: no tissue found after ``tries`` attempts.
        """
        w, h = self.slide_size_m
        m = margin_m if margin_m is not None else 0.5 * max(self.field_of_view_m)
        for _ in range(tries):
            x, y = rng.uniform(m, w - m), rng.uniform(m, h - m)
            if self.slide.section_sdf_m(np.array(x), np.array(y)) > 100e-6:
                return float(x), float(y)
        raise RuntimeError(f"no tissue found on slide seed {self.slide.seed} in {tries} tries")
