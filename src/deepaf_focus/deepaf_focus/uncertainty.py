"""Calibrated confidence: the expected |error| of one focus prediction (ROS-free).

A prediction is the median of per-tile offsets. How far off it may be is read from the
tiles themselves: their spread (median absolute deviation), the share of tiles that point
the other way, the offset's size (errors grow with the distance from focus) and the number
of tiles. :class:`ErrorModel` maps those features linearly, with non-negative weights, to
the expected |error| in micrometres; :func:`fit_error_model` fits the weights on held-out
predictions (protocols and microscopes not used in training) by non-negative least squares,
so that predictions binned by their expected error have, on average, that error.
:func:`reliability` and :func:`plot_reliability` measure and draw it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURES = ("bias", "mad_um", "abs_offset_um", "disagree_abs_um", "inv_sqrt_tiles")


def tile_features(tiles_um: np.ndarray) -> np.ndarray:
    """Features (len(FEATURES),) of one prediction from its per-tile offsets (um)."""
    t = np.asarray(tiles_um, np.float64).ravel()
    if t.size == 0:
        raise ValueError("a prediction needs at least one tile offset")
    med = float(np.median(t))
    mad = float(np.median(np.abs(t - med)))
    disagree = float(np.mean(np.sign(t) != np.sign(med))) if med != 0 else 0.5
    return np.array([1.0, mad, abs(med), disagree * abs(med), 1.0 / np.sqrt(t.size)])


@dataclass(frozen=True)
class ErrorModel:
    """Expected |error| (um) = weights . features (see :data:`FEATURES`).

    Attributes:
        weights: one non-negative weight per feature.
        source: where the weights come from ("default" or the fit's data).
    """

    weights: tuple[float, ...]
    source: str = "default"

    def __post_init__(self) -> None:
        if len(self.weights) != len(FEATURES) or not all(
            np.isfinite(w) and w >= 0 for w in self.weights
        ):
            raise ValueError(
                f"error model needs {len(FEATURES)} finite non-negative weights, got "
                f"{self.weights}"
            )

    @classmethod
    def default(cls, half_dof_um: float) -> ErrorModel:
        """Uncalibrated prior: a quarter DoF, plus 1.25 x the spread and 4 % of the offset."""
        return cls((0.5 * half_dof_um, 1.25, 0.04, 1.0, 0.5 * half_dof_um), "default")

    def expected_error_um(self, tiles_um: np.ndarray) -> float:
        """Expected |error| (um) of the prediction made from these tile offsets."""
        return float(np.dot(self.weights, tile_features(tiles_um)))

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "weights": list(self.weights), "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> ErrorModel:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: other features or bad weights.
        """
        if not isinstance(d, dict) or list(d.get("features", [])) != list(FEATURES):
            raise ValueError(f"error model features must be {FEATURES}, got {d!r}")
        return cls(tuple(float(w) for w in d["weights"]), str(d.get("source", "")))


def fit_error_model(
    tiles: list[np.ndarray], errors_um: np.ndarray, source: str = "fit"
) -> ErrorModel:
    """Fit the weights to held-out predictions by non-negative least squares.

    Args:
        tiles: per prediction, its tile offsets (um).
        errors_um: per prediction, |predicted - true| (um).
        source: description stored with the weights.

    Raises:
        ValueError: fewer than 20 predictions, or lengths that differ.
    """
    from scipy.optimize import nnls

    err = np.abs(np.asarray(errors_um, np.float64))
    if len(tiles) != len(err) or len(err) < 20:
        raise ValueError(f"need >= 20 predictions with errors, got {len(tiles)} / {len(err)}")
    x = np.stack([tile_features(t) for t in tiles])
    w, _ = nnls(x, err)
    return ErrorModel(tuple(float(v) for v in w), source)


def reliability(expected_um: np.ndarray, errors_um: np.ndarray, bins: int = 8) -> list[dict]:
    """Predictions binned by expected error (equal counts): mean expected vs mean actual."""
    e = np.asarray(expected_um, np.float64)
    a = np.abs(np.asarray(errors_um, np.float64))
    order = np.argsort(e)
    out = []
    for idx in np.array_split(order, max(1, min(bins, len(e)))):
        if len(idx) == 0:
            continue
        out.append(
            {
                "n": int(len(idx)),
                "expected_um": float(e[idx].mean()),
                "actual_um": float(a[idx].mean()),
                "actual_p90_um": float(np.percentile(a[idx], 90)),
            }
        )
    return out


def plot_reliability(rows_by_split: dict[str, list[dict]], out: str | Path, title: str) -> Path:
    """Reliability plot (PNG): mean actual |error| against the expected |error| per bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=110)
    top = 0.0
    for name, rows in rows_by_split.items():
        ex = [r["expected_um"] for r in rows]
        ac = [r["actual_um"] for r in rows]
        ax.plot(ex, ac, "o-", label=name)
        top = max(top, *ex, *ac)
    ax.plot([0, top * 1.05], [0, top * 1.05], "k--", lw=1, label="calibrated")
    ax.set_xlabel("expected |error| (um), binned")
    ax.set_ylabel("actual mean |error| (um)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out
