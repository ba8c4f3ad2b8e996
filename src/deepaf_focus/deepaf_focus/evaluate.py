"""Evaluate a focus model (and classical baselines) on focal-stack datasets.

How to run::

    ./deepaf eval --data data/test_same data/test_heldout --json eval.json --plot eval.png \
        [--model runs/20x/best.pt] [--baselines]

Each image is handled as in deployment: tissue tiles, one prediction per tile, median.
Images are grouped into splits: a dataset or stack can name its split (``"split"`` key);
a dataset made with ``--protocols random`` is ``held-out protocol``; otherwise a stack whose
protocol the model was trained on is ``same protocol`` and any other ``held-out protocol``;
with no such information there is one split, ``all``.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .baselines import golden_section_search, grid_fit_search
from .data import FocusRecord, read_dataset, read_image
from .metrics import focus_metrics, half_dof_um
from .predictor import FocusPredictor

__all__ = [
    "assign_splits",
    "evaluate",
    "evaluate_records",
    "markdown_table",
    "plot_error_vs_distance",
    "run_baselines",
]

KEYS = ("fe_um_mean", "fe_um_std", "fd_pct", "dof_pct", "n")


def assign_splits(
    records: Sequence[FocusRecord], train_protocols: Sequence[str] | None
) -> list[str]:
    """Split name of each record (see the module docstring)."""
    seen = set(train_protocols or [])
    out = []
    for r in records:
        if r.split:
            out.append(r.split)
        elif seen:
            out.append("same protocol" if r.protocol in seen else "held-out protocol")
        else:
            out.append("all")
    return out


def markdown_table(rows: dict[str, dict[str, Any]], title: str = "split") -> str:
    """Markdown table of FE / FD / DoF rows."""
    lines = [f"| {title} | FE (um) | FD (%) | DoF (%) | n |", "|---|---|---|---|---|"]
    for name, m in rows.items():
        fd = "-" if m.get("fd_pct") is None else f"{m['fd_pct']:.2f}"
        extra = f" ({m['images_used']:.1f} images)" if "images_used" in m else ""
        lines.append(
            f"| {name}{extra} | {m['fe_um_mean']:.3f} ± {m['fe_um_std']:.3f} | {fd} | "
            f"{m['dof_pct']:.1f} | {m['n']} |"
        )
    return "\n".join(lines)


def plot_error_vs_distance(
    per_split: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = ""
) -> None:
    """The paper's Fig. 2: |error| (mean ± std per 1 um bin) against true distance from focus,
    plus predicted against true offset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, (true, pred) in per_split.items():
        if len(true) == 0:
            continue
        err = np.abs(pred - true)
        true = np.round(true, 6)  # grid labels like -10.0000001 belong to the -10 bin
        step = 1.0 if np.abs(true).max() <= 30 else 10.0
        edges = np.arange(np.floor(true.min() / step) * step, true.max() + step, step)
        centers, mean, std = [], [], []
        for lo, hi in itertools.pairwise(edges):
            sel = (true >= lo) & (true < hi)
            if sel.any():
                centers.append((lo + hi) / 2)
                mean.append(err[sel].mean())
                std.append(err[sel].std())
        centers, mean, std = map(np.asarray, (centers, mean, std))
        line = ax1.plot(centers, mean, marker="o", ms=3, label=name)[0]
        ax1.fill_between(centers, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax2.scatter(true, pred, s=3, alpha=0.4, label=name)
    ax1.set_xlabel("distance from focus (um)")
    ax1.set_ylabel("|prediction error| (um)")
    ax1.set_ylim(bottom=0)
    ax1.legend()
    ax1.grid(alpha=0.3)
    lim = max((np.abs(t).max() for t, _ in per_split.values() if len(t)), default=1.0)
    ax2.plot([-lim, lim], [-lim, lim], "k--", lw=1)
    ax2.set_xlabel("true offset (um)")
    ax2.set_ylabel("predicted offset (um)")
    ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_baselines(
    records: Sequence[FocusRecord], splits: Sequence[str], half_dof: float
) -> dict[str, dict[str, Any]]:
    """Stack searches on each focal stack: error of the found best z, images used."""
    stacks: dict[str, list[tuple[FocusRecord, str]]] = defaultdict(list)
    for r, s in zip(records, splits, strict=True):
        if r.z_m is not None and r.best_focus_z_m is not None:
            stacks[r.stack].append((r, s))

    def golden(measure):
        return lambda a, lo, hi, sn: golden_section_search(a, lo, hi, measure, snap=sn)

    def grid(measure):
        # 11 grid points over the stack (2 um steps over +-10 um at 20x), then the fit
        return lambda a, lo, hi, sn: grid_fit_search(a, lo, hi, measure, (hi - lo) / 10, sn)

    methods = {
        "golden-section (brenner)": golden("brenner"),
        "golden-section (tenengrad)": golden("tenengrad"),
        "grid 11 + fit (brenner)": grid("brenner"),
        "grid 11 + fit (tenengrad)": grid("tenengrad"),
        "grid 11 + fit (var. Laplacian)": grid("variance_of_laplacian"),
        "grid 11 + fit (norm. variance)": grid("normalized_variance"),
        "grid 11 + fit (spectral energy)": grid("spectral_energy"),
    }
    errs: dict[tuple[str, str], list[float]] = defaultdict(list)
    used: dict[tuple[str, str], list[int]] = defaultdict(list)
    for items in stacks.values():
        recs = sorted((r for r, _ in items), key=lambda r: r.z_m)
        split = items[0][1]
        zs = np.array([r.z_m for r in recs])
        cache: dict[int, np.ndarray] = {}

        def acquire(z: float, recs=recs, zs=zs, cache=cache) -> np.ndarray:
            i = int(np.argmin(np.abs(zs - z)))
            if i not in cache:
                cache[i] = read_image(recs[i].path)
            return cache[i]

        def snap(z: float, zs=zs) -> float:
            return float(zs[int(np.argmin(np.abs(zs - z)))])

        best = recs[0].best_focus_z_m
        for name, fn in methods.items():
            res = fn(acquire, float(zs[0]), float(zs[-1]), snap)
            errs[(split, name)].append((res.z_m - best) * 1e6)
            used[(split, name)].append(res.images_used)
    out = {}
    for (split, name), e in errs.items():
        m = focus_metrics(np.asarray(e), np.zeros(len(e)), half_dof)
        m["fd_pct"] = None  # a stack search has no direction to get wrong
        m["images_used"] = float(np.mean(used[(split, name)]))
        out[f"{split}: {name}"] = m
    return out


def evaluate(
    data: Sequence[str | Path],
    model: str | Path | None = None,
    json_path: str | Path | None = None,
    plot_path: str | Path | None = None,
    baselines: bool = False,
    range_um: float | None = None,
    max_patches: int = 8,
    device: str = "cpu",
    profile: str | None = None,
) -> dict[str, Any]:
    """Evaluate a model on datasets; returns (and optionally writes) the JSON report.

    Raises:
        ValueError: for unreadable datasets or models.
    """
    records = read_dataset(data)
    profile = profile or records[0].profile
    records = [r for r in records if r.profile == profile]
    if range_um is not None:
        records = [r for r in records if abs(r.label_um) <= range_um]
    if not records:
        raise ValueError(f"no {profile} images (within range) in {list(map(str, data))}")
    predictor = FocusPredictor.from_checkpoint(
        model, profile=profile, device=device, max_patches=max_patches
    )
    half = half_dof_um(profile)
    splits = assign_splits(records, predictor.checkpoint.get("train_protocols"))
    result = evaluate_records(predictor, records, splits, half)
    report: dict[str, Any] = {
        "splits": result["splits"],
        "model": str(getattr(predictor, "path", model)),
        "data": [str(d) for d in data],
    }
    if result["skipped"]:
        report["skipped"] = result["skipped"]
    if baselines:
        report["baselines"] = run_baselines(records, splits, half)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
    if plot_path:
        plot_error_vs_distance(
            result["values"], plot_path, title=f"{Path(report['model']).name} ({profile})"
        )
    return report


def evaluate_records(
    predictor: FocusPredictor,
    records: Sequence[FocusRecord],
    splits: Sequence[str] | None = None,
    half_dof: float | None = None,
) -> dict[str, Any]:
    """Deployment-style evaluation of records: each image's tissue tiles, one prediction per
    tile, the median; images the predictor does not answer ``ok`` are counted, not scored.

    Args:
        predictor: The model under test.
        records: Images with their labels.
        splits: Split name per record (default: one split, ``all``).
        half_dof: Half depth of field (um) for DoF (default: the predictor's profile's).

    Returns:
        ``{"splits": {name: FE/FD/DoF metrics}, "skipped": {status: count},
        "values": {name: (true_um, pred_um)}}``; splits ordered same protocol, held-out
        protocol, then by name.
    """
    if splits is None:
        splits = ["all"] * len(records)
    half = predictor.half_dof_um if half_dof is None else half_dof
    true_by, pred_by = defaultdict(list), defaultdict(list)
    skipped: dict[str, int] = defaultdict(int)
    for r, s in zip(records, splits, strict=True):
        res = predictor.predict(read_image(r.path))
        if res.status != "ok":
            skipped[res.status] += 1
            continue
        true_by[s].append(r.label_um)
        pred_by[s].append(res.offset_m * 1e6)
    order = [s for s in ("same protocol", "held-out protocol") if s in true_by]
    order += sorted(s for s in true_by if s not in order)
    return {
        "splits": {s: focus_metrics(pred_by[s], true_by[s], half) for s in order},
        "skipped": dict(skipped),
        "values": {s: (np.asarray(true_by[s]), np.asarray(pred_by[s])) for s in order},
    }
