"""A procedural H&E slide: tissue sections on glass, in depth layers, with a focus surface.

Coordinates (SI, metres): the slide spans x in [0, width], y in [0, height], origin at
the top-left corner seen by the camera; image columns follow +x and rows follow +y.
Heights z follow the focus axis, larger z = further from the slide glass, toward the
objective. ``focus_surface_m(x, y)`` is the height of the mid-plane of a section of the
protocol's thickness; ``base_mid_m`` adds the local thickness variation (the section's
depth layers sit at ``optics.layer_heights_m(thickness)`` around it) and ``section_m``
also folds: the tissue's true mid-plane and thickness.

The slide is a pure function of (seed, x, y) (and the protocol's cellularity): every
value comes from :mod:`.noise`, so overlapping frames sampled on the same pixel grid
agree exactly. Tissue: 2-4 irregular sections with ragged edges and holes (lumens,
tears), cellular and stromal regions, eosinophilic fibres and cytoplasm, and nuclei
(ellipsoids cut by the section, with chromatin texture) on two jittered cell grids.

Its focus surface and artefacts (thickness variation, folds, bubbles, debris) follow a
:class:`~.artefacts.SlideArtefacts` spec: "plain" (the default here: a clean section of
constant thickness, exactly as before the specs existed) or "realistic"; the artefacts'
placement and maps are in :mod:`.artefact_maps`.
"""

from __future__ import annotations

import numpy as np

from .artefact_maps import ArtefactField, bow_per_m2
from .artefact_maps import smoothstep as _smoothstep
from .artefacts import SlideArtefacts, get_slide_spec
from .noise import fractal_noise, hash_uniform, interp_lattice, value_noise
from .optics import N_LAYERS, layer_heights_m
from .protocols import Protocol

SLIDE_SIZE_M = (15e-3, 15e-3)
_COARSE_M = 4e-6  # lattice of the slowly varying fields (tissue, holes, regions)


class VirtualSlide:
    """One deterministic virtual slide.

    Args:
        seed: slide identity; equal seeds give identical slides (and the same sections
            whatever the spec).
        size_m: (width, height) of the slide area in metres.
        artefacts: spec name ("plain", "realistic") or a :class:`SlideArtefacts`.

    Raises:
        ValueError: non-positive size, unknown spec name.
    """

    def __init__(
        self,
        seed: int = 0,
        size_m: tuple[float, float] = SLIDE_SIZE_M,
        artefacts: str | SlideArtefacts = "plain",
    ) -> None:
        if size_m[0] <= 0 or size_m[1] <= 0:
            raise ValueError(f"slide size must be positive, got {size_m}")
        self.seed = int(seed)
        self.size_m = (float(size_m[0]), float(size_m[1]))
        self.spec = sp = get_slide_spec(artefacts)
        rng = np.random.default_rng([self.seed, 0x511DE])
        w, h = self.size_m
        # focus surface: offset + tilt + waviness (+ bow); plain draws exactly as it always did
        self._z0 = rng.uniform(-sp.offset_m, sp.offset_m)
        self._tilt = rng.uniform(-sp.tilt, sp.tilt, 2)
        norm = float(np.hypot(*self._tilt))
        if norm < sp.tilt_min:
            self._tilt = (
                self._tilt * (sp.tilt_min / norm) if norm > 0 else np.array([sp.tilt_min, 0])
            )
        n_w = 3
        self._wave_amp = rng.uniform(*sp.wave_amp_m, n_w)
        ang = rng.uniform(0, np.pi, n_w)
        lam = rng.uniform(*sp.wave_length_m, n_w)
        self._wave_k = np.stack([np.cos(ang), np.sin(ang)], 1) * (2 * np.pi / lam)[:, None]
        self._wave_phase = rng.uniform(0, 2 * np.pi, n_w)
        # tissue sections: irregular ellipses
        n_s = int(rng.integers(2, 5))
        self._sec_c = np.stack(
            [rng.uniform(0.28 * w, 0.72 * w, n_s), rng.uniform(0.28 * h, 0.72 * h, n_s)], 1
        )
        self._sec_r = rng.uniform(1.3e-3, 3.0e-3, (n_s, 2))
        self._sec_a = rng.uniform(0, np.pi, n_s)
        self._bow = bow_per_m2(self.seed, sp)
        self.artefacts: ArtefactField | None = None
        if sp.has_artefacts:
            self.artefacts = ArtefactField(self.seed, sp, (self._sec_c, self._sec_r, self._sec_a))

    # ------------------------------------------------------------------ geometry
    def focus_surface_m(self, x_m, y_m):
        """Height (m) of the mid-plane of a section of nominal thickness at (x, y) (the glass
        surface + half the protocol's thickness); vectorised over arrays."""
        x = np.asarray(x_m, float) - self.size_m[0] / 2
        y = np.asarray(y_m, float) - self.size_m[1] / 2
        z = self._z0 + self._tilt[0] * x + self._tilt[1] * y
        for a, k, ph in zip(self._wave_amp, self._wave_k, self._wave_phase, strict=True):
            z = z + a * np.cos(k[0] * x + k[1] * y + ph)
        if self._bow:
            z = z + self._bow * (x * x + y * y)
        return z

    def base_mid_m(self, x_m, y_m, thickness_m: float):
        """Mid-plane height (m) of the section itself (thickness variation, no folds): the
        plane its depth layers are rendered around; vectorised."""
        z = self.focus_surface_m(x_m, y_m)
        if self.artefacts is None or self.spec.thickness_rel_std <= 0:
            return z
        return z + 0.5 * thickness_m * (self.artefacts.thickness_scale(x_m, y_m) - 1)

    def section_m(self, x_m, y_m, thickness_m: float):
        """(mid-plane height, thickness) in metres of the local tissue at (x, y), folds
        included (in a fold: twice as thick, mid-plane raised by (1 + fold_gap) / 2
        thicknesses); vectorised. ``thickness_m`` is the protocol's nominal thickness."""
        if self.artefacts is None:
            z = self.focus_surface_m(x_m, y_m)
            return z, np.full(np.shape(z), float(thickness_m))
        t = thickness_m * self.artefacts.thickness_scale(x_m, y_m)
        fold = self.artefacts.fold_weight(x_m, y_m)
        mid = self.base_mid_m(x_m, y_m, thickness_m) + fold * 0.5 * t * (1 + self.spec.fold_gap)
        return mid, t * (1 + fold)

    def section_sdf_m(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Approximate signed distance (m, positive inside) to the nearest section edge."""
        best = np.full(np.broadcast(x, y).shape, -1.0)
        for c, r, a in zip(self._sec_c, self._sec_r, self._sec_a, strict=True):
            dx, dy = x - c[0], y - c[1]
            u = (dx * np.cos(a) + dy * np.sin(a)) / r[0]
            v = (-dx * np.sin(a) + dy * np.cos(a)) / r[1]
            best = np.maximum(best, (1 - np.sqrt(u * u + v * v)) * min(r))
        return best

    def _coarse_fields(self, xs: np.ndarray, ys: np.ndarray, cellularity: float):
        """Tissue coverage (with holes) and cellular-region weight on a grid.

        Evaluated exactly; callers sample it on a world-aligned 4 um lattice.
        """
        edge = self.section_sdf_m(xs[None, :], ys[:, None]).astype(np.float32)
        if edge.max() < -300e-6:
            z = np.zeros_like(edge)
            return z, z
        edge += 120e-6 * fractal_noise(self.seed, 1, xs, ys, 400e-6, octaves=3)
        edge += 12e-6 * value_noise(self.seed, 2, xs, ys, 30e-6)
        tissue = _smoothstep(edge / 10e-6 + 0.5)
        holes = fractal_noise(self.seed, 3, xs, ys, 70e-6, octaves=2)
        tissue *= 1 - _smoothstep((holes - 1.25) / 0.25)
        cf = 1 / (
            1
            + np.exp(
                -3.5 * (fractal_noise(self.seed, 4, xs, ys, 250e-6, 2) + (cellularity - 0.5) * 2.0)
            )
        )
        return tissue, cf.astype(np.float32)

    def tissue_fraction(self, xs: np.ndarray, ys: np.ndarray, cellularity: float = 0.5):
        """(tissue, cellular) fields in [0, 1] on the pixel grid (xs columns, ys rows)."""
        sp = _COARSE_M
        cache = {}

        def field(k):
            def values(gx, gy):
                key = (gx[0], gx[-1], gy[0], gy[-1])
                if key not in cache:
                    cache[key] = self._coarse_fields(gx * sp, gy * sp, cellularity)
                return cache[key][k]

            return values

        tissue = interp_lattice(field(0), xs, ys, sp, order=1)
        if not tissue.any():
            return tissue, tissue
        return tissue, interp_lattice(field(1), xs, ys, sp, order=1)

    def has_tissue(self, x_m: float, y_m: float, radius_m: float = 0.0) -> bool:
        """Whether any tissue lies within ``radius_m`` of (x, y) (cheap, coarse test)."""
        g = np.linspace(-radius_m, radius_m, 9) if radius_m > 0 else np.zeros(1)
        return bool(self.section_sdf_m(x_m + g[None, :], y_m + g[:, None]).max() > -150e-6)

    # ------------------------------------------------------------------ object
    def object_maps(
        self, xs: np.ndarray, ys: np.ndarray, protocol: Protocol
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stain densities on the pixel grid, per depth layer.

        Args:
            xs, ys: pixel-centre coordinates (m) of columns and rows (regular grid).
            protocol: gives section thickness (layer heights) and cellularity.

        Returns:
            (H, E): float32 arrays of shape (N_LAYERS, len(ys), len(xs)); 1.0 is a fully
            stained layer of the reference thickness (4 um / N_LAYERS).
        """
        ny, nx = len(ys), len(xs)
        hmap = np.zeros((N_LAYERS, ny, nx), np.float32)
        emap = np.zeros((N_LAYERS, ny, nx), np.float32)
        tissue, cf = self.tissue_fraction(xs, ys, protocol.cellularity)
        if not tissue.any():
            return hmap, emap
        s = self.seed
        cyto = 0.55 + 0.12 * value_noise(s, 5, xs, ys, 3e-6)
        shared = 0.6 * value_noise(s, 9, xs, ys, 7e-6)
        fine = value_noise(s, 8, xs, ys, 5e-6)
        for lyr in range(N_LAYERS):
            n1 = value_noise(s, 10 + lyr, xs, ys, 14e-6) + shared
            fib = np.exp(-((n1 / 0.25) ** 2))
            fib = np.maximum(fib, 0.6 * np.exp(-(((fine + 0.7 * lyr - 0.7) / 0.25) ** 2)))
            stroma = 0.18 + 0.82 * fib
            emap[lyr] = tissue * (stroma + cf * (cyto - stroma))
            hmap[lyr] = tissue * np.float32(0.05)
        heights = layer_heights_m(protocol.thickness_m)
        chrom = value_noise(s, 30, xs, ys, 0.7e-6)
        for grid, (cs, off) in enumerate(((9e-6, (0.0, 0.0)), (11e-6, (4.3e-6, 6.1e-6)))):
            self._add_nuclei(hmap, emap, xs, ys, tissue, protocol, heights, grid, cs, off, chrom)
        return hmap, emap

    def _add_nuclei(self, hmap, emap, xs, ys, tissue, protocol, heights, grid, cs, off, chrom):
        s = self.seed * 7 + 1000 + grid * 50
        ux = (np.asarray(xs) - off[0]) / cs
        uy = (np.asarray(ys) - off[1]) / cs
        icx = np.floor(ux).astype(np.int64)
        icy = np.floor(uy).astype(np.int64)
        gx = np.arange(icx.min(), icx.max() + 1)
        gy = np.arange(icy.min(), icy.max() + 1)
        cxg, cyg = gx[None, :], gy[:, None]
        hu = lambda k: hash_uniform(s, k, cxg, cyg)  # noqa: E731
        centres_x = (gx + 0.5) * cs + off[0]
        centres_y = (gy + 0.5) * cs + off[1]
        cf = 1 / (
            1
            + np.exp(
                -3.5
                * (
                    fractal_noise(self.seed, 4, centres_x, centres_y, 250e-6, 2)
                    + (protocol.cellularity - 0.5) * 2.0
                )
            )
        )
        # nucleus type: cellular regions -> round, dense; stroma -> sparse, elongated
        p_present = (0.08 + 0.62 * cf) * (0.5 + protocol.cellularity) * (0.85 if grid else 1.0)
        present = hu(0) < p_present
        if not present.any():
            return
        elong = 1.0 + hu(1) * 0.5 + (1 - cf) * (1.0 + 1.5 * hu(2))
        r = (2.0e-6 + 1.6e-6 * hu(3)) * np.where(cf > 0.5, 1.0, 1.1)
        a = np.minimum(r * np.sqrt(elong), 0.48 * cs)
        b = r / np.sqrt(elong)
        room = 0.5 * cs - a
        jx = (hu(4) * 2 - 1) * room
        jy = (hu(5) * 2 - 1) * room
        th = hu(6) * np.pi
        dark = (0.75 + 0.5 * hu(7)) * present
        zc = (hu(8) - 0.5) * 0.3 * protocol.thickness_m
        params = [
            jx,
            jy,
            np.cos(th),
            np.sin(th),
            1 / a,
            1 / b,
            dark,
            *[1 - ((h - zc) / r) ** 2 for h in heights],
        ]
        flat = [np.ascontiguousarray(p, dtype=np.float32).ravel() for p in params]
        cid = ((icy - gy[0]) * len(gx))[:, None] + (icx - gx[0])[None, :]
        # dark is 0 where no nucleus: skip those cells' pixels before the geometry
        live = np.flatnonzero(np.take(flat[6], cid).ravel() > 0)
        if live.size == 0:
            return
        cid_l = cid.ravel()[live]
        nx = len(xs)
        rows, cols = np.divmod(live, nx)
        lx = ((ux - icx - 0.5) * cs).astype(np.float32)
        ly = ((uy - icy - 0.5) * cs).astype(np.float32)
        dx = lx[cols] - flat[0][cid_l]
        dy = ly[rows] - flat[1][cid_l]
        cos_t, sin_t = flat[2][cid_l], flat[3][cid_l]
        u = (dx * cos_t + dy * sin_t) * flat[4][cid_l]
        v = (dy * cos_t - dx * sin_t) * flat[5][cid_l]
        d2 = u * u + v * v
        inside = d2 < 1.0  # every layer's cross-section lies inside the unit ellipse
        live, cid_l, d2 = live[inside], cid_l[inside], d2[inside]
        dark = flat[6][cid_l] * tissue.ravel()[live]
        base = dark * (0.75 + 0.22 * chrom.ravel()[live])
        has = (dark > 0).astype(np.float32)
        for lyr in range(len(heights)):
            s2 = flat[7 + lyr][cid_l]
            prof = _smoothstep((s2 - d2) * np.float32(1 / 0.18))
            rim = np.exp(-(((d2 - s2 * 0.85) * np.float32(1 / 0.12)) ** 2))
            hm = hmap[lyr].reshape(-1)
            em = emap[lyr].reshape(-1)
            hm[live] += 1.6 * prof * (base + 0.35 * dark * rim)
            em[live] *= 1 - 0.6 * prof * has
