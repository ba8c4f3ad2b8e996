"""Where one virtual slide's artefacts lie, and their maps on a pixel grid.

Everything is a pure function of (seed, world position): folds and bubbles are drawn once
per slide from a generator seeded by the slide seed (placed on its tissue sections); dust
and mountant debris sit on hashed lattices (:func:`.noise.hash_uniform`), so any frame
finds the same particles wherever it looks. Maps take pixel-centre coordinates ``xs``
(columns) and ``ys`` (rows) in metres; scalar geometry broadcasts over arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .artefacts import SlideArtefacts
from .noise import hash_uniform, value_noise, value_noise_at

_DUST_CELL_M = 250e-6
_DEBRIS_CELL_M = 400e-6
_FOLD_EDGE_M = 3e-6
_BUBBLE_EDGE_M = 2e-6
_PARTICLE_EDGE_M = 0.4e-6
_BOW_RADIUS_M = 7.5e-3
#: Relative optical density per R, G, B channel: grey dust, brown dust, stain precipitate.
_GREY = np.array([1.0, 1.0, 1.0])
_BROWN = np.array([0.7, 1.0, 1.35])
_PURPLE = np.array([0.95, 1.1, 0.55])


def smoothstep(x):
    """3x^2 - 2x^3 of x clipped to [0, 1]: the soft edge of every mask."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@dataclass(frozen=True)
class Particles:
    """Debris particles (one entry per particle; lengths in metres).

    ``height_m`` is above the slide's nominal section mid-plane (:meth:`VirtualSlide.
    focus_surface_m`); ``od`` the peak optical density, ``colour`` its relative density per
    R, G, B channel, shape (n, 3).
    """

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    b: np.ndarray
    angle: np.ndarray
    od: np.ndarray
    colour: np.ndarray
    height_m: np.ndarray
    shape: np.ndarray  # (n, 4): harmonic amplitudes and phases of the outline

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx) -> Particles:
        """The particles at ``idx``."""
        return Particles(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    @property
    def extent_m(self) -> np.ndarray:
        """Radius of each particle's bounding circle."""
        return self.a * 1.3

    def integrated_od(self) -> np.ndarray:
        """Area-integrated optical density per channel (m^2), shape (n, 3)."""
        return self.colour * (self.od * math.pi * self.a * self.b)[:, None]


class ArtefactField:
    """Placement of one slide's thickness variation, folds, bubbles and debris.

    Args:
        seed: slide seed.
        spec: the artefact ranges.
        sections: (centres (n, 2), radii (n, 2), angles (n,)) of the slide's sections.
    """

    def __init__(self, seed: int, spec: SlideArtefacts, sections) -> None:
        self.seed = int(seed)
        self.spec = spec
        centres, radii, angles = sections
        rng = np.random.default_rng([self.seed, 0xA27E])
        self.coverslip_m = float(rng.uniform(*spec.coverslip_height_m))

        def on_section(frac: float) -> np.ndarray:
            k = int(rng.integers(len(centres)))
            r = frac * np.sqrt(rng.uniform(0, 1))
            t = rng.uniform(0, 2 * np.pi)
            u, v = r * radii[k, 0] * np.cos(t), r * radii[k, 1] * np.sin(t)
            ca, sa = np.cos(angles[k]), np.sin(angles[k])
            return centres[k] + np.array([u * ca - v * sa, u * sa + v * ca])

        n_f = int(rng.integers(spec.folds[0], spec.folds[1] + 1))
        self.folds = []  # (centre, direction, half length, half width, salt)
        for i in range(n_f):
            c = on_section(0.7)
            ang = rng.uniform(0, np.pi)
            half_len = 0.5 * rng.uniform(*spec.fold_length_m)
            half_w = 0.5 * rng.uniform(*spec.fold_width_m)
            self.folds.append((c, np.array([np.cos(ang), np.sin(ang)]), half_len, half_w, 40 + i))
        n_b = int(rng.integers(spec.bubbles[0], spec.bubbles[1] + 1))
        self.bubbles = []  # (centre, radius)
        for _ in range(n_b):
            self.bubbles.append((on_section(1.05), float(rng.uniform(*spec.bubble_radius_m))))

    # ------------------------------------------------------------------ geometry
    def thickness_scale(self, x, y) -> np.ndarray:
        """Local section thickness / the protocol's, at points (broadcast)."""
        sp = self.spec
        if sp.thickness_rel_std <= 0:
            return np.ones(np.broadcast(x, y).shape)
        n = value_noise_at(self.seed, 60, x, y, sp.thickness_scale_m)
        return 1 + sp.thickness_rel_std * np.clip(n, -3, 3)

    def thickness_scale_grid(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray | None:
        """:meth:`thickness_scale` on a pixel grid (float32), None when constant."""
        sp = self.spec
        if sp.thickness_rel_std <= 0:
            return None
        n = value_noise(self.seed, 60, xs, ys, sp.thickness_scale_m)
        return 1 + np.float32(sp.thickness_rel_std) * np.clip(n, -3, 3)

    def fold_weight(self, x, y, which: int | None = None) -> np.ndarray:
        """Folded-flap coverage in [0, 1] at points (broadcast: x (1, n), y (m, 1) for a
        grid), of all folds or of fold ``which``."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        out = np.zeros(np.broadcast(x, y).shape)
        folds = self.folds if which is None else self.folds[which : which + 1]
        for c, d, half_len, half_w, salt in folds:
            dx, dy = x - c[0], y - c[1]
            s = dx * d[0] + dy * d[1]
            q = dy * d[0] - dx * d[1]
            w = half_w * (0.7 + 0.6 * self._noise1d(salt, s, 2.5 * half_w))
            q0 = 0.5 * half_w * (self._noise1d(salt + 1, s, 4 * half_w) - 0.5)
            across = smoothstep((w - np.abs(q - q0)) / _FOLD_EDGE_M + 0.5)
            along = smoothstep((half_len - np.abs(s)) / (2 * half_w))
            out = np.maximum(out, across * along)
        return out

    def _noise1d(self, salt: int, s: np.ndarray, spacing: float) -> np.ndarray:
        """Smooth [0, 1) noise along a line coordinate s (linear between hashed knots)."""
        u = s / spacing
        i = np.floor(u)
        t = u - i
        a = hash_uniform(self.seed, salt, i, 0).astype(np.float64)
        b = hash_uniform(self.seed, salt, i + 1, 0).astype(np.float64)
        return a + (b - a) * (t * t * (3 - 2 * t))

    def fold_shift(self, which: int) -> np.ndarray:
        """Offset (m) to where the flap of fold ``which`` came from (beside the fold)."""
        _, d, _, half_w, _ = self.folds[which]
        return 2.4 * half_w * np.array([-d[1], d[0]])

    def fold_boxes(self) -> list[tuple[float, float, float, float]]:
        """(x0, y0, x1, y1) bounding boxes of the folds."""
        boxes = []
        for c, d, half_len, half_w, _ in self.folds:
            ex = abs(d[0]) * half_len + abs(d[1]) * 2 * half_w
            ey = abs(d[1]) * half_len + abs(d[0]) * 2 * half_w
            boxes.append((c[0] - ex, c[1] - ey, c[0] + ex, c[1] + ey))
        return boxes

    def bubble_maps(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """(inside, rim) of the air bubbles at points (broadcast): inside in [0, 1]; rim the
        dark refractive ring at the bubble's edge, peak 1."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        inside = np.zeros(np.broadcast(x, y).shape)
        rim = np.zeros_like(inside)
        for c, r in self.bubbles:
            d = np.hypot(x - c[0], y - c[1])
            inside = np.maximum(inside, smoothstep((r - d) / _BUBBLE_EDGE_M + 0.5))
            w = min(max(0.05 * r, 5e-6), 20e-6)
            rim = np.maximum(rim, np.exp(-(((r - d - 0.5 * w) / (0.5 * w)) ** 2)))
        return inside, rim

    def bubble_boxes(self) -> list[tuple[float, float, float, float]]:
        """(x0, y0, x1, y1) bounding boxes of the bubbles."""
        return [(c[0] - r, c[1] - r, c[0] + r, c[1] + r) for c, r in self.bubbles]

    # ------------------------------------------------------------------ debris
    def particles(self, x0: float, y0: float, x1: float, y1: float) -> Particles:
        """Dust (on the coverslip) and mountant debris whose extent meets the rectangle."""
        sp = self.spec
        parts = []
        for cell, density, kind in (
            (_DUST_CELL_M, sp.dust_per_mm2, 0),
            (_DEBRIS_CELL_M, sp.debris_per_mm2, 1),
        ):
            if density > 0:
                parts.append(self._lattice(cell, density * (cell * 1e3) ** 2, kind, x0, y0, x1, y1))
        if not parts:
            return self._lattice(_DUST_CELL_M, 0.0, 0, x0, y0, x1, y1)
        return Particles(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in Particles.__dataclass_fields__
            )
        )

    def _lattice(self, cell, p, kind, x0, y0, x1, y1) -> Particles:
        sp = self.spec
        rmax = (sp.dust_radius_m if kind == 0 else sp.debris_radius_m)[1] * np.sqrt(10) * 1.3
        gx = np.arange(math.floor((x0 - rmax) / cell), math.floor((x1 + rmax) / cell) + 1)
        gy = np.arange(math.floor((y0 - rmax) / cell), math.floor((y1 + rmax) / cell) + 1)
        ix, iy = np.meshgrid(gx, gy)
        ix, iy = ix.ravel(), iy.ravel()
        s = self.seed * 31 + 7000 + 100 * kind
        hu = lambda k: hash_uniform(s, k, ix, iy).astype(np.float64)  # noqa: E731
        keep = hu(0) < p
        ix, iy = ix[keep], iy[keep]
        lo, hi = sp.dust_radius_m if kind == 0 else sp.debris_radius_m
        r = lo * (hi / lo) ** hu(3) if lo > 0 else hi * hu(3)
        fibre = hu(4) < (0.3 if kind == 0 else 0.1)
        aspect = np.where(fibre, 4 + 6 * hu(5), 1 + 0.8 * hu(5))
        a, b = r * np.sqrt(aspect), r / np.sqrt(aspect)
        x = (ix + 0.15 + 0.7 * hu(1)) * cell
        y = (iy + 0.15 + 0.7 * hu(2)) * cell
        od = sp.dust_od[0] + (sp.dust_od[1] - sp.dust_od[0]) * hu(6)
        mix = hu(8)[:, None]
        colour = _GREY + mix * ((_BROWN if kind == 0 else _PURPLE) - _GREY)
        if kind == 0:
            height = np.full(len(x), self.coverslip_m)
        else:
            height = sp.debris_height_m[0] + (sp.debris_height_m[1] - sp.debris_height_m[0]) * hu(7)
        shape = np.stack([0.25 * hu(9), hu(10) * 2 * np.pi, 0.2 * hu(11), hu(12) * 2 * np.pi], 1)
        inside = (x + 1.3 * a > x0) & (x - 1.3 * a < x1) & (y + 1.3 * a > y0) & (y - 1.3 * a < y1)
        return Particles(
            x[inside],
            y[inside],
            a[inside],
            b[inside],
            (hu(13) * np.pi)[inside],
            od[inside],
            colour[inside],
            height[inside],
            shape[inside],
        )


def draw_particles(parts: Particles, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Optical density (len(ys), len(xs)) float32 of the particles on a pixel grid."""
    out = np.zeros((len(ys), len(xs)), np.float32)
    pix = abs(float(xs[1] - xs[0])) if len(xs) > 1 else 1e-6
    edge = max(_PARTICLE_EDGE_M, 0.5 * pix)
    for k in range(len(parts)):
        ext = parts.extent_m[k]
        c0, c1 = np.searchsorted(xs, [parts.x[k] - ext, parts.x[k] + ext])
        r0, r1 = np.searchsorted(ys, [parts.y[k] - ext, parts.y[k] + ext])
        if c1 <= c0 or r1 <= r0:
            continue
        dx = xs[None, c0:c1] - parts.x[k]
        dy = ys[r0:r1, None] - parts.y[k]
        ca, sa = math.cos(parts.angle[k]), math.sin(parts.angle[k])
        u = (dx * ca + dy * sa) / parts.a[k]
        v = (dy * ca - dx * sa) / parts.b[k]
        th = np.arctan2(v, u)
        h1, p1, h2, p2 = parts.shape[k]
        rr = 1 + h1 * np.sin(2 * th + p1) + h2 * np.sin(3 * th + p2)
        m = smoothstep((rr - np.hypot(u, v)) * parts.b[k] / edge + 0.5)
        out[r0:r1, c0:c1] += (parts.od[k] * m).astype(np.float32)
    return out


def bow_per_m2(seed: int, spec: SlideArtefacts) -> float:
    """Curvature (m per m^2 of squared distance from the slide centre) of the slide's bow:
    ``bow_m`` high at 7.5 mm, random sign; 0 when the spec has none."""
    if spec.bow_m[1] <= 0:
        return 0.0
    rng = np.random.default_rng([int(seed), 0xB0B])
    return float(rng.choice([-1.0, 1.0]) * rng.uniform(*spec.bow_m)) / _BOW_RADIUS_M**2
