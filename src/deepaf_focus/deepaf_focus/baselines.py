"""Classical autofocus: focus measures and stack-search strategies.

Focus measures (higher = sharper; computed on the green channel, the sharpest one for
brightfield H&E):

* Brenner gradient (Brenner et al. 1976; horizontal differences, the one definition in
  :mod:`deepaf_driver.focus_measure`, which says why), Tenengrad (Sobel energy), variance
  of the Laplacian, normalized variance (Groen et al. 1985), spectral energy (fraction of
  power above a radial frequency).

Search strategies take a callable ``acquire(z_m) -> uint8 RGB image``, so they run on a
stored focal stack here and on the real camera/stage in the planner, and report how many
images they acquired (the cost a single-shot model saves):

* :func:`golden_section_search` on a unimodal focus curve;
* :func:`grid_fit_search`: a coarse grid, then a Gaussian (log-parabola) fit through the
  best point and its neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
from deepaf_driver.focus_measure import brenner, refine_peak

__all__ = [
    "MEASURES",
    "SearchResult",
    "brenner",
    "golden_section_search",
    "grid_fit_search",
    "normalized_variance",
    "spectral_energy",
    "tenengrad",
    "variance_of_laplacian",
]


def _green(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    g = img[..., 1] if img.ndim == 3 else img
    return g.astype(np.float32)


def tenengrad(img: np.ndarray) -> float:
    """Tenengrad: mean squared Sobel gradient magnitude."""
    g = _green(img)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return float((gx * gx + gy * gy).mean())


def variance_of_laplacian(img: np.ndarray) -> float:
    """Variance of the Laplacian."""
    return float(cv2.Laplacian(_green(img), cv2.CV_32F, ksize=3).var())


def normalized_variance(img: np.ndarray) -> float:
    """Grey-level variance divided by the mean (robust to illumination changes)."""
    g = _green(img)
    return float(g.var() / max(g.mean(), 1e-6))


def spectral_energy(img: np.ndarray, cutoff: float = 0.15) -> float:
    """Fraction of (mean-removed) spectral power above ``cutoff`` cycles/pixel."""
    g = _green(img)
    g = g - g.mean()
    p = np.abs(np.fft.rfft2(g)) ** 2
    fy = np.fft.fftfreq(g.shape[0])[:, None]
    fx = np.fft.rfftfreq(g.shape[1])[None, :]
    r = np.sqrt(fx**2 + fy**2)
    total = p.sum()
    return float(p[r > cutoff].sum() / total) if total > 0 else 0.0


MEASURES: dict[str, Callable[[np.ndarray], float]] = {
    "brenner": brenner,
    "tenengrad": tenengrad,
    "variance_of_laplacian": variance_of_laplacian,
    "normalized_variance": normalized_variance,
    "spectral_energy": spectral_energy,
}


@dataclass
class SearchResult:
    """Outcome of a stack search: best z (m), images acquired, and the (z, score) samples."""

    z_m: float
    images_used: int
    samples: list[tuple[float, float]] = field(default_factory=list)


class _Scorer:
    """Caches ``measure(acquire(z))`` so each distinct z counts as one image."""

    def __init__(self, acquire, measure, snap: Callable[[float], float] | None) -> None:
        self.acquire, self.measure, self.snap = acquire, measure, snap
        self.cache: dict[float, float] = {}

    def __call__(self, z: float) -> float:
        z = float(self.snap(z)) if self.snap else float(z)
        key = round(z, 12)
        if key not in self.cache:
            self.cache[key] = float(self.measure(self.acquire(z)))
        return self.cache[key]

    def result(self, z: float) -> SearchResult:
        return SearchResult(float(z), len(self.cache), sorted(self.cache.items()))


def _measure(measure: str | Callable) -> Callable[[np.ndarray], float]:
    if callable(measure):
        return measure
    try:
        return MEASURES[measure]
    except KeyError:
        raise ValueError(f"unknown focus measure {measure!r}; known: {sorted(MEASURES)}") from None


def golden_section_search(
    acquire: Callable[[float], np.ndarray],
    z_lo: float,
    z_hi: float,
    measure: str | Callable = "brenner",
    tol_m: float = 0.1e-6,
    snap: Callable[[float], float] | None = None,
) -> SearchResult:
    """Maximise the focus measure over [z_lo, z_hi] by golden-section search.

    Args:
        acquire: ``acquire(z_m)`` returns the image at stage height ``z_m``.
        z_lo: Lower bound of the search (m).
        z_hi: Upper bound (m).
        measure: Name in :data:`MEASURES` or a callable.
        tol_m: Stop when the bracket is narrower than this.
        snap: Optional map of a requested z to a reachable one (e.g. nearest stack image).

    Raises:
        ValueError: for an empty interval or unknown measure.
    """
    if not z_hi > z_lo:
        raise ValueError(f"need z_lo < z_hi, got {z_lo}, {z_hi}")
    f = _Scorer(acquire, _measure(measure), snap)
    inv = (math.sqrt(5) - 1) / 2
    a, b = z_lo, z_hi
    c, d = b - inv * (b - a), a + inv * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol_m:
        if fc > fd:
            b, d, fd = d, c, fc
            c = b - inv * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + inv * (b - a)
            fd = f(d)
        if snap is not None and len(f.cache) > 64:
            break
    best = max(f.cache.items(), key=lambda kv: kv[1])[0]
    return f.result(best)


def grid_fit_search(
    acquire: Callable[[float], np.ndarray],
    z_lo: float,
    z_hi: float,
    measure: str | Callable = "brenner",
    step_m: float = 2e-6,
    snap: Callable[[float], float] | None = None,
) -> SearchResult:
    """Coarse grid, then a Gaussian fit (parabola on log scores) through the peak's neighbours.

    Raises:
        ValueError: for an empty interval, a non-positive step or an unknown measure.
    """
    if not z_hi > z_lo or step_m <= 0:
        raise ValueError(f"need z_lo < z_hi and step > 0, got {z_lo}, {z_hi}, {step_m}")
    f = _Scorer(acquire, _measure(measure), snap)
    zs = np.arange(z_lo, z_hi + step_m / 2, step_m)
    scores = np.array([f(z) for z in zs])
    return f.result(refine_peak(zs, scores, log=True))
