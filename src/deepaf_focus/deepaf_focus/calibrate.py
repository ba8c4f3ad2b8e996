"""Calibrate a focus model to one microscope: fine-tune on its own focal stacks, keep the
result only if it is better on stacks it never saw (ROS-free core of ``./deepaf calibrate``).

How to run::

    ./deepaf calibrate --data my_stacks --out runs/my_scope.pt [--model M] [--minutes 10]
    ./deepaf calibrate --live --stacks 16 --out runs/my_scope.pt     # acquire, then the same

Steps (:func:`calibrate`):

1. Read the stacks (any layout ``./deepaf eval --data`` reads) and refuse bad input with a
   clear message: mixed or foreign profiles, a pixel size more than 25 % off the model's,
   stacks without a usable label (best focus missing, not inside the stack, or no sharpness
   peak), no tissue, fewer than 2 usable stacks, an unreadable checkpoint.
2. Split BY STACK (deterministic in ``seed``) into fine-tune and held-back stacks (default
   half each, at least one of each). All stacks may come from one slide, so slides are
   never the unit here.
3. Evaluate the current model on the held-back stacks as ``./deepaf eval`` does (tissue
   tiles, median): FE, FD, DoF "before".
4. Fine-tune from the current model's weights (``TrainConfig.init_checkpoint``) on the
   fine-tune stacks only, for at most ``minutes`` of training, with a small learning rate
   (cosine after a short warm-up), the model's own augmentations and random crops from the
   whole image; the last epoch is kept (``val_fraction`` can make a part of the fine-tune
   stacks validate and keep the best epoch instead).
5. Evaluate "after" on the same held-back stacks. The new model is written only when it is
   better: FE lower by more than ``min_gain_um`` and FD not higher by more than
   ``fd_margin_pct`` percentage points. Otherwise nothing is written and the previous model
   stays in use. The written checkpoint carries a ``calibration`` entry (before/after
   metrics, the stacks of each role, minutes, source model and its checksum).
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .data import FocusRecord, read_dataset, read_image, split_records
from .metrics import half_dof_um

__all__ = [
    "NOMINAL_PIXEL_SIZE_M",
    "CalibrationConfig",
    "CalibrationError",
    "calibrate",
    "check_stacks",
    "format_report",
    "stack_label_problem",
]

NOMINAL_PIXEL_SIZE_M = {"20x": 4.9115625e-07, "4x": 1.227890625e-06}
"""Preview-stream pixel size the shipped models were trained at (used when a checkpoint does
not record its own ``pixel_size_m``; see MODEL_CARD.md)."""

PIXEL_TOLERANCE = 0.25
"""Largest relative difference between the data's and the model's pixel size."""

MIN_PEAK_RATIO = 1.1
"""A ``sharpness_peak`` stack's Brenner maximum must exceed its minimum by this factor."""


class CalibrationError(ValueError):
    """Calibration refused (bad input); nothing was written, the previous model stays."""


@dataclass
class CalibrationConfig:
    """Knobs of one calibration run.

    Args:
        minutes: Fine-tuning budget (training time; the evaluations come on top).
        holdout: Fraction of the stacks held back for the before/after comparison (at
            least one stack each way).
        seed: Seed of the split, the order and the augmentations.
        lr: Peak learning rate (cosine decay after a linear warm-up).
        warmup_steps: Linear warm-up steps.
        batch_size: Patches per step (fewer when the fine-tune stacks hold fewer images).
        epochs: At most this many passes over the fine-tune patches (the minutes usually
            end training first; set it for reproducible runs).
        crop_jitter: Pixels of random-crop translation around each tile (None: as much as
            the images allow, up to 128; the model's own training used 16).
        val_fraction: Fraction of the fine-tune stacks that validate (best epoch kept);
            used only with at least ``min_val_stacks`` fine-tune stacks, else the last
            epoch is kept. Default 0: train on every fine-tune stack and keep the last epoch
            (measured on 8 + 8 stacks of a foreign microscope: held-back FE 0.34 um without
            validation, 0.64 um with 2 of the 8 stacks validating).
        min_val_stacks: See ``val_fraction``.
        min_gain_um: The new model must lower the held-back FE by more than this.
        fd_margin_pct: ... and may raise FD by at most this many percentage points.
        max_patches: Tissue tiles per image in the evaluations (as deployed).
        num_threads: Torch CPU threads.
        device: ``cpu`` or ``cuda``.
    """

    minutes: float = 10.0
    holdout: float = 0.5
    seed: int = 0
    lr: float = 4e-4
    warmup_steps: int = 20
    batch_size: int = 32
    epochs: int = 1000
    crop_jitter: int | None = None
    val_fraction: float = 0.0
    min_val_stacks: int = 5
    min_gain_um: float = 0.0
    fd_margin_pct: float = 1.0
    max_patches: int = 8
    num_threads: int = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise CalibrationError(f"--minutes must be a positive number, got {self.minutes}")
        if not 0 < self.holdout < 1:
            raise CalibrationError(f"--holdout must be between 0 and 1, got {self.holdout}")
        if not self.lr > 0:
            raise CalibrationError(f"--lr must be positive, got {self.lr}")
        if self.batch_size < 1 or self.epochs < 1:
            raise CalibrationError("batch_size and epochs must be >= 1")
        if self.crop_jitter is not None and self.crop_jitter < 0:
            raise CalibrationError(f"--crop-jitter must be >= 0, got {self.crop_jitter}")


def _noop(*_a: Any, **_k: Any) -> None:
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stacks(records: Sequence[FocusRecord]) -> dict[str, list[FocusRecord]]:
    by: dict[str, list[FocusRecord]] = defaultdict(list)
    for r in records:
        by[r.stack].append(r)
    return dict(by)


def _check_meta_files(roots: Sequence[Path]) -> None:
    """Refuse deepaf-focal-stack stacks whose meta.json has no numeric best focus (the
    reader would fail on them with a bare KeyError/TypeError)."""
    for root in roots:
        index = root / "dataset.json"
        if not index.is_file():
            continue
        try:
            names = json.loads(index.read_text()).get("stacks", [])
        except (OSError, json.JSONDecodeError, AttributeError):
            continue  # the reader reports it
        for name in names:
            meta_path = root / str(name) / "meta.json"
            if not meta_path.is_file():
                continue
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise CalibrationError(f"cannot read {meta_path}: {exc}") from None
            best = meta.get("best_focus_z_m") if isinstance(meta, dict) else None
            if not isinstance(best, int | float) or not math.isfinite(best):
                raise CalibrationError(
                    f"stack {root.name}/{name} has no usable label: best_focus_z_m is "
                    f"{best!r} (no sharpness peak found when it was acquired); remove it "
                    "or re-acquire it centred on focus"
                )
            if not isinstance(meta.get("images"), list) or not meta["images"]:
                raise CalibrationError(f"{meta_path} lists no images")


def _best_focus_source(recs: Sequence[FocusRecord]) -> str | None:
    meta = recs[0].path.parent / "meta.json"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text()).get("best_focus_source")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def stack_label_problem(recs: Sequence[FocusRecord]) -> str | None:
    """Why a stack's labels cannot be trusted, or None when they can.

    The best focus must lie strictly inside the stack (some images above it, some below),
    and a stack labelled by its sharpness peak must have a real peak (Brenner maximum at
    least :data:`MIN_PEAK_RATIO` times its minimum).
    """
    labels = np.array([r.label_um for r in recs], np.float64)
    if len(labels) < 2:
        return f"only {len(labels)} image"
    if not np.all(np.isfinite(labels)):
        return "labels are not finite (no best focus)"
    if not (labels.min() < 0 < labels.max()):
        return (
            f"best focus is not inside the stack (distances to focus {labels.min():+.2f} .. "
            f"{labels.max():+.2f} um): no sharpness peak within its range; re-acquire it "
            "centred closer to focus"
        )
    if _best_focus_source(recs) == "sharpness_peak":
        from .baselines import brenner

        scores = np.array([brenner(read_image(r.path)) for r in recs])
        if not scores.min() > 0 or scores.max() < MIN_PEAK_RATIO * scores.min():
            return (
                f"no sharpness peak (Brenner max/min {scores.max() / max(scores.min(), 1e-12):.3f}"
                f" < {MIN_PEAK_RATIO}): glass, or a stack too short to pass through focus"
            )
    return None


def _nearest_focus(recs: Sequence[FocusRecord]) -> FocusRecord:
    return min(recs, key=lambda r: abs(r.label_um))


def check_stacks(
    records: Sequence[FocusRecord], predictor: Any, log: Callable[..., None] = _noop
) -> tuple[list[FocusRecord], dict[str, str]]:
    """Keep the stacks that can calibrate: usable labels, and tissue where the predictor
    looks (its image nearest focus is not ``no_tissue``).

    Returns:
        (records of the kept stacks, {dropped stack: reason}).

    Raises:
        CalibrationError: a stack without a usable label, or no tissue in any stack.
    """
    by = _stacks(records)
    bad = {name: p for name, recs in by.items() if (p := stack_label_problem(recs))}
    if bad:
        lines = "\n".join(f"  {name}: {why}" for name, why in sorted(bad.items()))
        raise CalibrationError(
            f"{len(bad)} of {len(by)} stacks have no usable label:\n{lines}\n"
            "remove them (or re-acquire them) and run again"
        )
    dropped: dict[str, str] = {}
    for name, recs in by.items():
        res = predictor.predict(read_image(_nearest_focus(recs).path))
        if res.status == "no_tissue":
            dropped[name] = f"no tissue ({res.message})"
    if len(dropped) == len(by):
        raise CalibrationError(
            f"no tissue in the stacks: the tissue test finds no tissue tile in any of the "
            f"{len(by)} stacks (empty glass, blank or black frames); acquire the stacks on "
            "tissue fields"
        )
    for name, why in sorted(dropped.items()):
        log(f"dropping stack {name}: {why}")
    kept = [r for r in records if r.stack not in dropped]
    return kept, dropped


def _read(data: Sequence[str | Path]) -> list[FocusRecord]:
    roots = [Path(d) for d in data]
    if not roots:
        raise CalibrationError("no --data given")
    _check_meta_files(roots)
    try:
        return read_dataset(roots)
    except (ValueError, KeyError, TypeError) as exc:
        raise CalibrationError(
            f"cannot read the stacks in {[str(r) for r in roots]}: {exc}"
        ) from None


def _source_model(model: str | Path | None, profile: str) -> tuple[Path, dict]:
    from .checkpoint import load_checkpoint
    from .predictor import default_model_path

    try:
        path = default_model_path(profile) if model is None else Path(model)
        ckpt = load_checkpoint(path)
    except (FileNotFoundError, ValueError) as exc:
        raise CalibrationError(f"cannot use the model: {exc}") from None
    mprofile = ckpt["model_config"].get("profile")
    if mprofile != profile:
        raise CalibrationError(
            f"{path} is a {mprofile} model but the stacks are {profile}; calibrate a "
            f"{profile} model (default: the shipped one, leave out --model)"
        )
    return path, ckpt


def _check_pixel_size(records: Sequence[FocusRecord], ckpt: dict, path: Path, profile: str):
    sizes = [float(r.pixel_size_m) for r in records if r.pixel_size_m]
    if not sizes:
        return None, None
    data_px = float(np.median(sizes))
    model_px = ckpt["model_config"].get("pixel_size_m") or NOMINAL_PIXEL_SIZE_M.get(profile)
    if model_px and abs(data_px / model_px - 1) > PIXEL_TOLERANCE + 1e-6:
        raise CalibrationError(
            f"the stacks' pixel size {data_px * 1e6:.4f} um/px differs from the model's "
            f"{model_px * 1e6:.4f} um/px by {100 * (data_px / model_px - 1):+.0f} % (more than "
            f"{100 * PIXEL_TOLERANCE:.0f} %): {path.name} cannot adapt that far; acquire at the "
            "sampling the focus server sees (the preview stream) or train a model for it"
        )
    return data_px, model_px


def _evaluate(predictor: Any, records: Sequence[FocusRecord], half: float) -> dict[str, Any]:
    from .evaluate import evaluate_records

    res = evaluate_records(predictor, records, None, half)
    m = dict(res["splits"].get("all") or {})
    if not m:
        raise CalibrationError(
            "no tissue in the held-back stacks: the predictor answered no_tissue for all "
            f"{len(records)} images ({res['skipped']})"
        )
    m["skipped"] = res["skipped"]
    return m


def _fine_tune_config(cfg: CalibrationConfig, src: dict, path: Path, jitter: int, batch: int):
    from .train import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    base = {k: v for k, v in (src.get("train_config") or {}).items() if k in known}
    model_cfg = dict(src["model_config"])
    return TrainConfig(
        **{
            **base,
            "model": model_cfg,
            "augment": dict(base.get("augment") or {}),
            "epochs": cfg.epochs,
            "batch_size": batch,
            "lr": cfg.lr,
            "schedule": "cosine",
            "warmup_steps": cfg.warmup_steps,
            "min_lr_ratio": 0.05,
            "seed": cfg.seed,
            "split_by": "stack",
            "load_margin": jitter,
            "num_threads": cfg.num_threads,
            "checkpoint_minutes": 1e9,  # the run is short and throw-away; last.pt per epoch
            "max_minutes": cfg.minutes,
            "init_checkpoint": str(path),
            "log_every": 10,
        }
    )


def format_report(report: dict[str, Any]) -> str:
    """The before/after table (markdown) with a one-line verdict."""
    from .evaluate import markdown_table

    c = report
    title = f"held-back stacks ({len(c['held_back_stacks'])})"
    rows = {f"before ({Path(c['source_model']).name})": c["before"]}
    if c.get("after"):
        minutes = c["train"]["minutes"]
        took = f"{minutes:.1f} min" if minutes >= 1 else f"{minutes * 60:.0f} s"
        rows[f"after ({took} fine-tune)"] = c["after"]
    lines = [
        f"calibration: {len(c['fine_tune_stacks'])} fine-tune stacks "
        f"({len(c['validation_stacks'])} of them validate), {len(c['held_back_stacks'])} held "
        f"back, {len(c['dropped_stacks'])} dropped",
        "",
        markdown_table(rows, title),
        "",
        c["verdict"],
    ]
    return "\n".join(lines)


def calibrate(
    data: Sequence[str | Path],
    out: str | Path,
    model: str | Path | None = None,
    config: CalibrationConfig | None = None,
    verbose: bool = True,
    json_path: str | Path | None = None,
) -> dict[str, Any]:
    """Fine-tune a focus model on a microscope's own focal stacks; write ``out`` only when
    it is better on the held-back stacks (see the module docstring).

    Args:
        data: Dataset folder(s) of this microscope's stacks.
        out: The calibrated checkpoint to write (never the source model's file).
        model: Checkpoint to start from (None: the shipped model of the data's profile).
        config: Knobs (:class:`CalibrationConfig`).
        verbose: Progress output (training epochs) on stdout.
        json_path: Also write the report here (whatever the outcome).

    Returns:
        The report: ``kept`` (bool), ``verdict``, ``before``/``after`` metrics on the
        held-back stacks, the stacks of each role, training summary, paths.

    Raises:
        CalibrationError: bad input (nothing is written; the previous model stays).
    """
    try:
        return _calibrate(data, Path(out), model, config or CalibrationConfig(), verbose, json_path)
    except CalibrationError:
        raise
    except ValueError as exc:  # unreadable images, images smaller than a tile, ...
        raise CalibrationError(str(exc)) from None


def _calibrate(
    data: Sequence[str | Path],
    out: Path,
    model: str | Path | None,
    cfg: CalibrationConfig,
    verbose: bool,
    json_path: str | Path | None,
) -> dict[str, Any]:
    import torch

    log = print if verbose else _noop
    t0 = time.time()
    torch.set_num_threads(cfg.num_threads)
    records = _read(data)
    profiles = sorted({r.profile for r in records})
    if len(profiles) != 1:
        raise CalibrationError(f"the stacks mix profiles {profiles}; calibrate one at a time")
    profile = profiles[0]
    half = half_dof_um(profile)
    path, src = _source_model(model, profile)
    if out.resolve() == path.resolve():
        raise CalibrationError(
            f"--out {out} is the model being calibrated; write the new model to a new file so "
            "that the previous one stays available"
        )
    data_px, model_px = _check_pixel_size(records, src, path, profile)

    from .checkpoint import load_model, save_checkpoint
    from .predictor import FocusPredictor

    def predictor_of(p: Path) -> FocusPredictor:
        try:
            net, _ = load_model(p, cfg.device)
        except (FileNotFoundError, ValueError) as exc:
            raise CalibrationError(f"cannot use the model: {exc}") from None
        return FocusPredictor(net, cfg.device, cfg.max_patches, num_threads=cfg.num_threads)

    before_pred = predictor_of(path)
    n_all = len(_stacks(records))
    records, dropped = check_stacks(records, before_pred, log)
    stacks = _stacks(records)
    if len(stacks) < 2:
        raise CalibrationError(
            f"too few stacks: {len(stacks)} usable of {n_all} (need at least 2: one to "
            "fine-tune on, one held back to check the result); acquire more stacks"
        )
    tune, held = split_records(records, cfg.holdout, "stack", cfg.seed)
    tune_stacks = sorted(_stacks(tune))
    val: list[FocusRecord] = []
    if cfg.val_fraction > 0 and len(tune_stacks) >= cfg.min_val_stacks:
        tune, val = split_records(tune, cfg.val_fraction, "stack", cfg.seed + 1)
    held_stacks, val_stacks = sorted(_stacks(held)), sorted(_stacks(val))
    train_stacks = sorted(_stacks(tune))
    log(
        f"calibrating {path.name} ({profile}) on {len(stacks)} stacks: "
        f"{len(train_stacks)} fine-tune + {len(val_stacks)} validation, "
        f"{len(held_stacks)} held back"
    )
    before = _evaluate(before_pred, held, half)
    log(
        f"before: held-back FE {before['fe_um_mean']:.3f} um, FD {before['fd_pct']:.2f} %, "
        f"DoF {before['dof_pct']:.1f} % ({before['n']} images)"
    )

    patch = int(src["model_config"].get("patch_size", 128))
    side = min(read_image(tune[0].path).shape[:2])
    jitter = cfg.crop_jitter if cfg.crop_jitter is not None else max(0, min(128, side - patch))
    batch = max(1, min(cfg.batch_size, len(tune)))
    tcfg = _fine_tune_config(cfg, src, path, jitter, batch)
    if data_px:
        tcfg.model["pixel_size_m"] = data_px  # the calibrated model is for this sampling

    from .train import train

    t_train = time.time()
    with tempfile.TemporaryDirectory(prefix="deepaf-calibrate-") as tmp:
        try:
            summary = train(
                tcfg,
                [str(d) for d in data],
                tmp,
                cfg.device,
                verbose=verbose,
                records=tune,
                val_records=val,
            )
        except ValueError as exc:
            raise CalibrationError(f"fine-tuning could not start: {exc}") from None
        chosen = Path(tmp) / ("best.pt" if val else "last.pt")
        after_pred = predictor_of(chosen)
        train_wall = time.time() - t_train
        after = _evaluate(after_pred, held, half)
        better = (
            after["fe_um_mean"] < before["fe_um_mean"] - cfg.min_gain_um
            and after["fd_pct"] <= before["fd_pct"] + cfg.fd_margin_pct
        )
        report: dict[str, Any] = {
            "kept": bool(better),
            "out": str(out),
            "source_model": str(path),
            "source_sha256": _sha256(path),
            "data": [str(d) for d in data],
            "profile": profile,
            "pixel_size_m": {"data": data_px, "model": model_px},
            "fine_tune_stacks": train_stacks,
            "validation_stacks": val_stacks,
            "held_back_stacks": held_stacks,
            "dropped_stacks": dropped,
            "before": before,
            "after": after,
            "criterion": (
                f"keep when held-back FE drops by more than {cfg.min_gain_um} um and FD rises "
                f"by at most {cfg.fd_margin_pct} percentage points"
            ),
            "config": asdict(cfg),
            "train": {
                "minutes": summary["train_seconds"] / 60,
                "wall_seconds": train_wall,
                "epochs": summary["epochs_done"],
                "steps": summary["steps"],
                "train_patches": summary["train_patches"],
                "val_patches": summary["val_patches"],
                "selected": "best validation epoch" if val else "last epoch",
                "best_val_fe_um": summary["best_val_fe_um"] if val else None,
                "crop_jitter": jitter,
                "batch_size": batch,
                "lr": cfg.lr,
            },
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        d_fe = after["fe_um_mean"] - before["fe_um_mean"]
        if better:
            net, ck = load_model(chosen)
            entry = {k: v for k, v in report.items() if k not in ("kept", "out")}
            extra: dict[str, Any] = {}
            if src.get("error_model"):
                extra["error_model"] = src["error_model"]  # fitted for the source; conservative
            save_checkpoint(
                out,
                net,
                train_config=src.get("train_config") or {},
                fine_tune_config=ck.get("train_config") or {},
                train_protocols=sorted(
                    set(src.get("train_protocols") or []) | {r.protocol for r in tune}
                ),
                data=list(src.get("data") or []) + [str(d) for d in data],
                history=ck.get("history") or [],
                metrics={"held_back": after, "source": src.get("metrics") or {}},
                calibration=entry,
                **extra,
            )
            report["verdict"] = (
                f"better (FE {d_fe:+.3f} um, FD {after['fd_pct'] - before['fd_pct']:+.2f} "
                f"points): wrote {out}; use it with --model {out} or the focus server's "
                "`model` parameter"
            )
        else:
            report["verdict"] = (
                f"not better (FE {d_fe:+.3f} um, FD {after['fd_pct'] - before['fd_pct']:+.2f} "
                f"points; {report['criterion']}): {out} was NOT written, keep using "
                f"{path}. Try more stacks, more --minutes or another --lr"
            )
    report["wall_seconds"] = time.time() - t0
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2, default=str))
    return report
