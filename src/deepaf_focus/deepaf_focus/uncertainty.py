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
                f"error model needs {len(FEATURES)} finite non-negative weights, got {self.weights}"
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
                "n": len(idx),
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


def collect_predictions(predictor, records) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Run ``predictor`` on every record's image (tissue only).

    Returns:
        (tile offsets per prediction in um, predicted offsets in um, true offsets in um).
    """
    from .data import read_image

    tiles, pred, true = [], [], []
    for r in records:
        res = predictor.predict(read_image(r.path))
        if not res.ok:
            continue
        tiles.append(np.asarray(res.patch_offsets_m, np.float64) * 1e6)
        pred.append(res.offset_m * 1e6)
        true.append(r.label_um)
    return tiles, np.asarray(pred), np.asarray(true)


def fit_confidence(
    model: str | Path | None,
    fit_data: list[str | Path],
    out: str | Path,
    check_data: dict[str, list[str | Path]] | None = None,
    plot: str | Path | None = None,
    profile: str = "20x",
) -> dict:
    """Fit the error model of a checkpoint on held-out data and write the checkpoint with it.

    Args:
        model: checkpoint (None: the shipped model of ``profile``).
        fit_data: datasets the weights are fitted on (never the training data).
        out: the checkpoint written with its ``error_model`` and reliability table.
        check_data: named datasets the reliability is measured on (other than ``fit_data``).
        plot: reliability plot (PNG).

    Returns:
        ``{"error_model": ..., "reliability": {split: rows}}``.
    """
    import torch

    from .checkpoint import load_checkpoint
    from .data import read_dataset
    from .predictor import FocusPredictor

    predictor = FocusPredictor.from_checkpoint(model, profile=profile)
    tiles, pred, true = collect_predictions(predictor, read_dataset(fit_data))
    em = fit_error_model(tiles, pred - true, f"fit on {[Path(d).name for d in fit_data]}")
    predictor.error_model = em
    rel = {
        "fit: " + ", ".join(Path(d).name for d in fit_data): reliability(
            [em.expected_error_um(t) for t in tiles], pred - true
        )
    }
    for name, dirs in (check_data or {}).items():
        t2, p2, y2 = collect_predictions(predictor, read_dataset(dirs))
        if len(t2):
            rel[name] = reliability([em.expected_error_um(t) for t in t2], p2 - y2)
    ckpt = load_checkpoint(predictor.path)
    ckpt["error_model"] = em.to_dict()
    ckpt["reliability"] = rel
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(out)
    if plot:
        plot_reliability(rel, plot, f"{out.name}: expected vs actual |error|")
    return {"error_model": em.to_dict(), "reliability": rel}
