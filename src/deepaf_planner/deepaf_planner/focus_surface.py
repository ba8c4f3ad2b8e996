"""Focus surface: the slide's best-focus height learnt from the tiles already scanned.

Each finished tile adds a sample ``(x, y, z_focus)``. :meth:`FocusSurface.predict` fits a
robust (Tukey-bisquare IRLS) weighted plane through the ``k`` nearest samples, falling back
to a robust plane through all samples when too few are near, then to the mean of one or two
samples, then to ``None``. The planner uses it to start each field near its likely focus
and, with :meth:`FocusSurface.is_outlier`, to re-check single-shot predictions that
disagree with the neighbours. Metres throughout.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FocusSurface"]

_TUKEY_C = 4.685  # bisquare tuning constant (95% efficiency for Gaussian residuals)
_MAD_TO_SIGMA = 1.4826


def _robust_plane(
    xy: np.ndarray, z: np.ndarray, w0: np.ndarray, query: np.ndarray, floor: float
) -> tuple[float, float]:
    """Fit ``z = a + b.(xy - c)`` robustly and return (z at ``query``, its uncertainty).

    Near-collinear samples (e.g. the first scan row) leave the slope across the line at 0.
    """
    centre = np.average(xy, axis=0, weights=w0)
    d = xy - centre
    scale = max(float(np.sqrt((d**2).sum(axis=1).mean())), 1e-12)
    a = np.column_stack([np.ones(len(z)), d / scale])
    q = np.concatenate([[1.0], (query - centre) / scale])
    w = w0.copy()
    coef = np.zeros(3)
    sigma = floor
    for _ in range(10):
        sw = np.sqrt(w)
        coef, *_ = np.linalg.lstsq(a * sw[:, None], z * sw, rcond=0.05)
        r = z - a @ coef
        sigma = max(_MAD_TO_SIGMA * float(np.median(np.abs(r[w0 > 0]))), floor)
        u = r / (_TUKEY_C * sigma)
        w_new = w0 * np.where(np.abs(u) < 1, (1 - u**2) ** 2, 0.0)
        if np.allclose(w_new, w, atol=1e-6):
            break
        w = w_new
    used = w > 1e-6
    dof = int(used.sum()) - 3
    if dof < 2:
        sigma = max(sigma, 2 * floor)
    aw = a[used] * np.sqrt(w[used])[:, None]
    cov = np.linalg.pinv(aw.T @ aw, rcond=1e-6) * float(w[used].sum())
    leverage = max(float(q @ cov @ q) / max(int(used.sum()), 1), 0.0)
    return float(q @ coef), sigma * math.sqrt(1.0 + leverage)


class FocusSurface:
    """Best-focus heights of finished tiles, with robust local prediction.

    Args:
        k: Number of nearest samples used by a local fit.
        min_local: Fewest samples within ``radius_m`` for a local fit; fewer falls back to
            the global plane.
        radius_m: Only samples this close feed the local fit (``None``: no limit).
        min_uncertainty_m: Floor of the reported uncertainty (noise of a single focus
            measurement).
        default_uncertainty_m: Uncertainty reported when fewer than three samples exist.

    Raises:
        ValueError: for ``k < 3``, ``min_local < 3`` or non-positive uncertainties.
    """

    def __init__(
        self,
        k: int = 8,
        min_local: int = 4,
        radius_m: float | None = None,
        min_uncertainty_m: float = 0.2e-6,
        default_uncertainty_m: float = 10e-6,
    ) -> None:
        if k < 3 or min_local < 3:
            raise ValueError(f"need k >= 3 and min_local >= 3, got k={k}, min_local={min_local}")
        if not (min_uncertainty_m > 0 and default_uncertainty_m > 0):
            raise ValueError("uncertainties must be positive")
        self.k, self.min_local, self.radius_m = k, min_local, radius_m
        self.min_uncertainty_m = min_uncertainty_m
        self.default_uncertainty_m = default_uncertainty_m
        self._xyz: list[tuple[float, float, float]] = []

    def __len__(self) -> int:
        return len(self._xyz)

    @property
    def points(self) -> np.ndarray:
        """The samples as an (N, 3) array of (x, y, z) in metres."""
        return np.asarray(self._xyz, dtype=float).reshape(-1, 3)

    def add(self, x: float, y: float, z_focus: float) -> None:
        """Record the best-focus height of a finished tile.

        Raises:
            ValueError: for non-finite values.
        """
        if not all(math.isfinite(v) for v in (x, y, z_focus)):
            raise ValueError(f"focus sample must be finite, got {(x, y, z_focus)}")
        self._xyz.append((float(x), float(y), float(z_focus)))

    def predict(self, x: float, y: float) -> tuple[float, float] | None:
        """Predict the best-focus height at ``(x, y)``.

        Returns:
            ``(z, uncertainty)`` in metres (uncertainty ~ one standard deviation), or
            ``None`` when the surface holds no samples.
        """
        pts = self.points
        n = len(pts)
        if n == 0:
            return None
        if n < 3:
            z = float(pts[:, 2].mean())
            spread = float(np.ptp(pts[:, 2])) if n > 1 else 0.0
            return z, max(spread, self.default_uncertainty_m)
        query = np.array([x, y], dtype=float)
        dist = np.hypot(*(pts[:, :2] - query).T)
        order = np.argsort(dist, kind="stable")[: self.k]
        if self.radius_m is not None:
            order = order[dist[order] <= self.radius_m]
        floor = self.min_uncertainty_m
        if len(order) >= self.min_local:
            near = pts[order]
            reach = max(float(dist[order].max()), 1e-12)
            w0 = np.exp(-0.5 * (dist[order] / reach) ** 2)  # nearer samples count more
            return _robust_plane(near[:, :2], near[:, 2], w0, query, floor)
        return _robust_plane(pts[:, :2], pts[:, 2], np.ones(n), query, floor)

    def is_outlier(self, x: float, y: float, z: float, tol: float, n_sigma: float = 3.0) -> bool:
        """Whether a focus height disagrees with the surface around ``(x, y)``.

        A height is an outlier when it differs from the prediction by more than
        ``max(tol, n_sigma * uncertainty)``; with no prediction nothing is an outlier.

        Args:
            x: Stage x (m).
            y: Stage y (m).
            z: Candidate best-focus height (m), e.g. from a single-shot prediction.
            tol: Smallest disagreement that counts (m), e.g. the depth of field.
            n_sigma: How many prediction uncertainties to tolerate.

        Raises:
            ValueError: for a negative ``tol`` or ``n_sigma``.
        """
        if tol < 0 or n_sigma < 0:
            raise ValueError(f"tol and n_sigma must be >= 0, got {tol}, {n_sigma}")
        pred = self.predict(x, y)
        if pred is None:
            return False
        z_pred, unc = pred
        return abs(z - z_pred) > max(tol, n_sigma * unc)
