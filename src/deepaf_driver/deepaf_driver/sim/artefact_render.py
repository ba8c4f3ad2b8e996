"""The artefacts' part of image formation: extra layers at their own heights.

:func:`object_layers` turns a region's stain maps into :class:`ObjectLayers`: the section
scaled by its local thickness, dimmed and made refractile under bubbles, plus the folded
flap (the section's depth layers again, a fold gap higher) and the bubbles' rims.
:func:`plan_layers` decides, per frame, which layers it needs and at what heights; every
layer is defocused by its own distance from the focal plane, like the section's layers
(:mod:`.optics`). Debris is an absorbing layer at the particle's height: rendered exactly
on a small patch of the global pixel grid around each particle (:func:`render_sprites`),
or, when its blur would exceed :data:`SPRITE_MARGIN_PX` pixels, as its geometric shadow
(:func:`far_shadows`: a Gaussian matched to the exact rendering). Both are pure functions
of the particles' world positions, so overlapping frames agree.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import scipy.fft as sfft
from scipy.fft import next_fast_len

from .artefact_maps import Particles, draw_particles
from .optics import (
    LOOKUP_N,
    WAVELENGTHS_M,
    OpticsProfile,
    blur_radius_m,
    channel_layer_defocus,
    layer_heights_m,
    quantize_defocus,
    radial_index,
    radial_transfer,
    sa_waves,
)
from .protocols import Protocol

#: Largest blur margin (pixels) of a debris particle rendered exactly (beyond: its shadow).
SPRITE_MARGIN_PX = 384
_STRIP_ROWS = 128
#: rms radius of a far-defocused particle's shadow / (defocus x tan(asin(condenser NA))),
#: matched to the exact rendering (20x, 157 um: rms radius within 2 %, peak within 30 %).
_SHADOW_SCALE = 0.85
#: Peak phase (rad) of a bubble's refractive rim.
RIM_PHASE_RAD = 0.8


@dataclass
class ObjectLayers:
    """Stain maps of one pixel region, (layers, rows, columns) float32.

    ``h``, ``e``: the section's depth layers; ``phase``: their phase density where it is
    not ``e + 0.6 h`` (under bubbles), else None; ``flap_h``, ``flap_e``: folded flaps, or
    None; ``rim``: bubble rims (rows, columns), or None.
    """

    h: np.ndarray
    e: np.ndarray
    phase: np.ndarray | None = None
    flap_h: np.ndarray | None = None
    flap_e: np.ndarray | None = None
    rim: np.ndarray | None = None

    def crop(self, rows: slice, cols: slice) -> ObjectLayers:
        """The same maps on a sub-region."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = None if v is None else v[..., rows, cols]
        return ObjectLayers(**out)

    @property
    def empty(self) -> bool:
        """No stain and no artefact anywhere in the region."""
        return not (self.h.any() or self.e.any() or self.flap_h is not None or self.rim is not None)


def _overlap(box, x0, y0, x1, y1) -> bool:
    return box[0] < x1 and box[2] > x0 and box[1] < y1 and box[3] > y0


def object_layers(
    slide, xs: np.ndarray, ys: np.ndarray, protocol: Protocol, maps: Callable
) -> ObjectLayers:
    """The region's :class:`ObjectLayers`.

    Args:
        slide: the :class:`~.slide.VirtualSlide`.
        xs, ys: pixel-centre coordinates (m) of the region's columns and rows.
        protocol: the staining protocol.
        maps: ``maps(xs, ys) -> (h, e)``, the slide's stain maps (possibly threaded).
    """
    h, e = maps(xs, ys)
    art = slide.artefacts
    if art is None:
        return ObjectLayers(h, e)
    sp = slide.spec
    scale = art.thickness_scale_grid(xs, ys)
    if scale is not None:
        h *= scale
        e *= scale
    out = ObjectLayers(h, e)
    x0, x1, y0, y1 = xs[0], xs[-1], ys[0], ys[-1]
    for k, box in enumerate(art.fold_boxes()):
        if _overlap(box, x0, y0, x1, y1):
            _add_flap(out, art, k, box, xs, ys, maps, scale)
    inside = rim = None
    for box in art.bubble_boxes():
        if _overlap(box, x0, y0, x1, y1):
            c0, c1 = np.searchsorted(xs, [box[0], box[2]])
            r0, r1 = np.searchsorted(ys, [box[1], box[3]])
            b, r = art.bubble_maps(xs[None, c0:c1], ys[r0:r1, None])
            if inside is None:
                inside = np.zeros(h.shape[1:], np.float32)
                rim = np.zeros(h.shape[1:], np.float32)
            sub = (slice(r0, r1), slice(c0, c1))
            inside[sub] = np.maximum(inside[sub], b)
            rim[sub] = np.maximum(rim[sub], r)
    if inside is not None:
        out.phase = (e + np.float32(0.6) * h) * (1 + np.float32(sp.bubble_phase_gain - 1) * inside)
        dim = 1 - np.float32(1 - sp.bubble_stain) * inside
        h *= dim
        e *= dim
        out.rim = rim
    return out


def _add_flap(out: ObjectLayers, art, k, box, xs, ys, maps, scale) -> None:
    """Add fold k's flap (the tissue beside the fold, laid over it) in row strips."""
    c0, c1 = np.searchsorted(xs, [box[0], box[2]])
    r0, r1 = np.searchsorted(ys, [box[1], box[3]])
    dx, dy = art.fold_shift(k)
    for a in range(r0, r1, _STRIP_ROWS):
        b = min(a + _STRIP_ROWS, r1)
        w = art.fold_weight(xs[None, c0:c1], ys[a:b, None], which=k)
        cols = np.flatnonzero(w.max(axis=0) > 1e-3)
        if cols.size == 0:
            continue
        j0, j1 = c0 + cols[0], c0 + cols[-1] + 1
        fh, fe = maps(xs[j0:j1] + dx, ys[a:b] + dy)
        wk = w[:, cols[0] : cols[-1] + 1].astype(np.float32)
        if scale is not None:
            wk = wk * scale[a:b, j0:j1]
        if out.flap_h is None:
            out.flap_h = np.zeros_like(out.h)
            out.flap_e = np.zeros_like(out.e)
        out.flap_h[:, a:b, j0:j1] += fh * wk
        out.flap_e[:, a:b, j0:j1] += fe * wk


@dataclass
class LayerPlan:
    """Artefact layers of one frame; heights relative to the section's base mid-plane.

    Attributes:
        flap_heights: heights of the folded flap's depth layers (None: no fold near).
        rim_height: height of the bubble rims (None: no bubble near).
        sprites: debris rendered exactly, each on its own small patch; ``sprite_heights``
            their heights.
        far: debris rendered as geometric shadows; ``far_heights`` their heights.
        max_defocus_m: the largest defocus of the section's and the extra layers.
    """

    flap_heights: np.ndarray | None
    rim_height: float | None
    sprites: Particles | None
    sprite_heights: np.ndarray | None
    far: Particles | None
    far_heights: np.ndarray | None
    max_defocus_m: float

    @property
    def extra_heights(self) -> list[float]:
        """Heights of the extra full-frame layers, in render order (flap, rim)."""
        out = [] if self.flap_heights is None else [float(v) for v in self.flap_heights]
        return out + ([] if self.rim_height is None else [self.rim_height])

    def present_in(self, obj: ObjectLayers) -> LayerPlan:
        """The plan without the full-frame layers the region turned out not to contain."""
        flap = self.flap_heights if obj.flap_h is not None else None
        rim = self.rim_height if obj.rim is not None else None
        return dataclasses.replace(self, flap_heights=flap, rim_height=rim)


def plan_layers(
    slide, profile: OpticsProfile, protocol: Protocol, x_m, y_m, dz_mid, w, h, pix
) -> LayerPlan | None:
    """Which artefact layers a w x h frame at (x, y), dz_mid from the base mid-plane, needs
    (None for a slide without artefacts)."""
    art = slide.artefacts
    if art is None:
        return None
    sp = slide.spec
    t0 = protocol.thickness_m
    chroma = np.asarray(profile.chromatic_offsets_m)
    u_max = float(np.abs(channel_layer_defocus(profile, protocol, dz_mid)).max())
    fw, fh = 0.5 * w * pix, 0.5 * h * pix
    frame = (x_m - fw, y_m - fh, x_m + fw, y_m + fh)
    pad = blur_radius_m(profile, u_max + 3 * t0)  # folds and rims just outside blur in
    near = (frame[0] - pad, frame[1] - pad, frame[2] + pad, frame[3] + pad)

    def defocus(height: float) -> float:
        return float(np.abs(dz_mid + chroma - height).max())

    flap = None
    if any(_overlap(b, *near) for b in art.fold_boxes()):
        t = t0 * float(art.thickness_scale(x_m, y_m))
        flap = t * (1 + sp.fold_gap) + layer_heights_m(t0)
        u_max = max(u_max, max(defocus(v) for v in flap))
    rim = None
    if any(_overlap(b, *near) for b in art.bubble_boxes()):
        rim = sp.bubble_rim_height_m
        u_max = max(u_max, defocus(rim))
    # particles' heights are above the nominal surface: make them relative to the base mid
    shift = float(slide.base_mid_m(x_m, y_m, t0) - slide.focus_surface_m(x_m, y_m))
    top = sp.coverslip_height_m[1] + sp.debris_height_m[1] + abs(dz_mid) + np.abs(chroma).max()
    reach = max(blur_radius_m(profile, top), top * _tan_condenser(profile))
    parts = art.particles(x_m - fw - reach, y_m - fh - reach, x_m + fw + reach, y_m + fh + reach)
    sprites = far = s_h = f_h = None
    if len(parts):
        rel = parts.height_m - shift
        u = np.abs(dz_mid - rel[:, None] + chroma[None, :]).max(axis=1)
        blur = np.array([blur_radius_m(profile, v) for v in u])
        reach_k = parts.extent_m + blur
        inside = (
            (parts.x + reach_k > frame[0])
            & (parts.x - reach_k < frame[2])
            & (parts.y + reach_k > frame[1])
            & (parts.y - reach_k < frame[3])
        )
        exact = blur <= SPRITE_MARGIN_PX * pix
        if (inside & exact).any():
            sprites, s_h = parts.take(inside & exact), rel[inside & exact]
        if (~exact).any():
            far, f_h = parts.take(~exact), rel[~exact]
    return LayerPlan(flap, rim, sprites, s_h, far, f_h, u_max)


def _tan_condenser(profile: OpticsProfile) -> float:
    s = profile.condenser_sigma * profile.na / profile.immersion_n
    return s / math.sqrt(max(1 - s * s, 1e-6))


def height_tables(
    profile: OpticsProfile, protocol: Protocol, dz_m: float, heights: list[float]
) -> tuple[np.ndarray, np.ndarray]:
    """(hA, hP) lookup tables, shape (3, len(heights), LOOKUP_N), of thin layers at
    ``heights`` above the base mid-plane when the stage is dz_m from it."""
    w040 = round(sa_waves(profile, protocol), 6)
    n = len(heights)
    ha = np.empty((3, n, LOOKUP_N), np.float32)
    hp = np.empty_like(ha)
    fine = np.linspace(0.0, 1.0, LOOKUP_N)
    for c in range(3):
        for j, hgt in enumerate(heights):
            a, p = radial_transfer(
                profile.na,
                profile.condenser_sigma,
                profile.immersion_n,
                WAVELENGTHS_M[c],
                quantize_defocus(dz_m + profile.chromatic_offsets_m[c] - hgt),
                w040,
            )
            coarse = np.linspace(0.0, 1.0, len(a))
            ha[c, j] = np.interp(fine, coarse, a)
            hp[c, j] = np.interp(fine, coarse, p)
    return ha, hp


def extra_maps(obj: ObjectLayers, plan: LayerPlan) -> list:
    """Real-space maps of the plan's extra layers, in :attr:`LayerPlan.extra_heights` order
    (a flap layer contributes its h and e maps)."""
    out = []
    n_flap = 0 if plan.flap_heights is None else len(plan.flap_heights)
    for lyr in range(n_flap):
        if obj.flap_h is None:
            out += [np.zeros_like(obj.h[0]), np.zeros_like(obj.e[0])]
        else:
            out += [obj.flap_h[lyr], obj.flap_e[lyr]]
    if plan.rim_height is not None:
        out.append(obj.rim if obj.rim is not None else np.zeros_like(obj.h[0]))
    return out


def far_shadows(
    plan: LayerPlan, profile: OpticsProfile, dz_mid: float, xs: np.ndarray, ys: np.ndarray
) -> np.ndarray | None:
    """Absorbance (3, len(ys), len(xs)) of the far-defocused particles' shadows, or None."""
    parts = plan.far
    if parts is None:
        return None
    out = np.zeros((3, len(ys), len(xs)), np.float32)
    tan_c = _tan_condenser(profile)
    mu = math.log(10) * parts.integrated_od()
    for k in range(len(parts)):
        u = abs(dz_mid - plan.far_heights[k])
        rms = math.hypot(_SHADOW_SCALE * u * tan_c, 0.5 * math.hypot(parts.a[k], parts.b[k]))
        sig2 = 0.5 * rms * rms
        r = 3 * math.sqrt(sig2)
        c0, c1 = np.searchsorted(xs, [parts.x[k] - r, parts.x[k] + r])
        r0, r1 = np.searchsorted(ys, [parts.y[k] - r, parts.y[k] + r])
        if c1 <= c0 or r1 <= r0:
            continue
        gx = np.exp(-((xs[c0:c1] - parts.x[k]) ** 2) / (2 * sig2))
        gy = np.exp(-((ys[r0:r1] - parts.y[k]) ** 2) / (2 * sig2))
        blob = np.outer(gy, gx) / (2 * math.pi * sig2)
        for c in range(3):
            out[c, r0:r1, c0:c1] += (mu[k, c] * blob).astype(np.float32)
    return out


def render_sprites(
    plan: LayerPlan,
    profile: OpticsProfile,
    protocol: Protocol,
    dz_mid: float,
    pix: float,
    frame: tuple[int, int, int, int],
    mtf: Callable,
) -> np.ndarray | None:
    """Absorbance (3, h, w) of the exactly rendered debris on frame (i0, j0, w, h) (global
    pixel indices), or None. Each particle is drawn and defocused on its own patch of the
    global pixel grid, so any frame that sees it gets the same values."""
    parts = plan.sprites
    if parts is None:
        return None
    i0, j0, w, h = frame
    out = np.zeros((3, h, w), np.float32)
    chroma = np.abs(np.asarray(profile.chromatic_offsets_m)).max()
    for k in range(len(parts)):
        hgt = float(plan.sprite_heights[k])
        m = math.ceil(blur_radius_m(profile, abs(dz_mid - hgt) + chroma) / pix) + 2
        ext = parts.extent_m[k] / pix
        pi0 = math.floor(parts.x[k] / pix - ext) - m
        pj0 = math.floor(parts.y[k] / pix - ext) - m
        nx = next_fast_len(math.ceil(2 * ext) + 2 * m + 2, real=True)
        ny = next_fast_len(math.ceil(2 * ext) + 2 * m + 2, real=True)
        a0, a1 = max(pi0, i0), min(pi0 + nx, i0 + w)
        b0, b1 = max(pj0, j0), min(pj0 + ny, j0 + h)
        if a1 <= a0 or b1 <= b0:
            continue
        one = parts.take([k])
        od = draw_particles(one, (pi0 + np.arange(nx)) * pix, (pj0 + np.arange(ny)) * pix)
        spec = sfft.rfft2(od) * mtf((ny, nx))
        ha, _ = height_tables(profile, protocol, dz_mid, [hgt])
        for c in range(3):
            idx = radial_index((ny, nx), pix, WAVELENGTHS_M[c], profile.na, profile.condenser_sigma)
            a_c = np.float32(math.log(10) * one.colour[0, c])
            field = sfft.irfft2((ha[c, 0] * a_c)[idx] * spec, s=(ny, nx))
            out[c, b0 - j0 : b1 - j0, a0 - i0 : a1 - i0] += field[
                b0 - pj0 : b1 - pj0, a0 - pi0 : a1 - pi0
            ]
    return out
