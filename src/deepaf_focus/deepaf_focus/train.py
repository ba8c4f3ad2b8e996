"""Train a DeepAf focus model on focal-stack datasets.

How to run::

    ./deepaf train --config src/deepaf_focus/config/shipped_20x.yaml \
        --data data/train_presets data/train_random --out runs/20x [--device cpu|cuda] [--resume]

    # several GPUs (DistributedDataParallel, one process per GPU):
    torchrun --nproc_per_node 4 -m deepaf_focus.cli train --config ... --data ... --out ...

The defaults are the paper's recipe (``config/paper.yaml``): Smooth-L1 loss, Adam with
lr 8e-4 and weight decay 0.006, batch 32, 100 epochs, 224x224 tiles, train/validation 80/20
split by slide. Every epoch ends with validation; ``OUT/last.pt`` (resumable, with optimizer,
step and random state) is written every epoch and every ``checkpoint_minutes``;
``OUT/best.pt`` keeps the weights with the lowest validation FE.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from .checkpoint import load_checkpoint, save_checkpoint
from .data import (
    AugmentConfig,
    FocusRecord,
    augment_batch,
    load_patches,
    read_dataset,
    split_records,
)
from .metrics import focus_metrics, half_dof_um
from .model import DeepAf, DeepAfConfig, count_parameters

__all__ = ["TrainConfig", "evaluate_patches", "load_config", "lr_at", "train"]


@dataclass
class TrainConfig:
    """Training hyper-parameters (paper defaults) plus the model and augmentation configs.

    Args:
        model: :class:`DeepAfConfig` fields.
        augment: :class:`AugmentConfig` fields.
        epochs: Passes over the training patches.
        batch_size: Patches per optimizer step (per process under DDP).
        lr: Adam learning rate.
        weight_decay: Adam (L2) weight decay.
        schedule: ``constant`` or ``cosine`` (with linear warm-up).
        warmup_steps: Linear warm-up steps.
        min_lr_ratio: Final learning rate as a fraction of ``lr`` for ``cosine``.
        smooth_l1_beta: Smooth-L1 transition point in micrometres.
        seed: Seed of every random choice (split, order, augmentation, init).
        val_fraction: Fraction of slides held out for validation.
        split_by: Grouping of the split: ``slide``, ``stack`` or ``protocol``.
        label_range_um: Use only images within this distance of focus (None: all).
        load_margin: Extra pixels loaded around each patch for random-crop jitter.
        num_threads: CPU threads for torch.
        checkpoint_minutes: Also write ``last.pt`` this often within an epoch.
        max_minutes: Training-time budget: the schedule (cosine) is stretched over whichever of
            ``epochs`` or ``max_minutes`` ends first, and training ends there; a killed run
            continues with ``--resume``. None: epochs only.
        val_max_patches: Validate on at most this many (evenly spaced) patches.
        log_every: Log a line every this many steps when not on a terminal.
        init_checkpoint: Start from this checkpoint's weights (fine-tuning; its model
            config must match ``model``). None: random initialisation.
    """

    model: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 32
    lr: float = 8e-4
    weight_decay: float = 0.006
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.02
    smooth_l1_beta: float = 1.0
    seed: int = 0
    val_fraction: float = 0.2
    split_by: str = "slide"
    label_range_um: float | None = None
    load_margin: int = 0
    num_threads: int = 2
    checkpoint_minutes: float = 5.0
    max_minutes: float | None = None
    log_every: int = 50
    val_max_patches: int = 3000
    init_checkpoint: str | None = None

    def __post_init__(self) -> None:
        DeepAfConfig.from_dict(self.model)  # fail fast on bad model keys
        AugmentConfig(**self.augment)
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be constant or cosine, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")


def load_config(path: str | Path | None) -> TrainConfig:
    """Read a YAML training config (keys of :class:`TrainConfig`); None gives the paper's.

    Raises:
        ValueError: for unreadable files or unknown keys.
    """
    if path is None:
        return TrainConfig()
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read training config {path}: {exc}") from exc
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known keys: {sorted(known)}")
    return TrainConfig(**data)


def progress_at(step: int, total_steps: int, seconds: float, cfg: TrainConfig) -> float:
    """Fraction of training done: steps, or time when ``max_minutes`` is the tighter budget."""
    p = step / max(1, total_steps)
    if cfg.max_minutes:
        p = max(p, seconds / (cfg.max_minutes * 60))
    return min(1.0, p)


def lr_at(step: int, progress: float, cfg: TrainConfig) -> float:
    """Learning rate at ``step`` with ``progress`` (0..1) of training done; a pure function."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    t = min(1.0, max(0.0, progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def _to_float(x_uint8: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x_uint8.to(device).permute(0, 3, 1, 2).float().div_(255.0)


def _center(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    y, xx = (h - size) // 2, (w - size) // 2
    return x[..., y : y + size, xx : xx + size]


@torch.no_grad()
def evaluate_patches(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    patch: int,
    device: torch.device,
    batch_size: int = 64,
) -> np.ndarray:
    """Predict every (centre-cropped) patch in eval mode, then restore the previous mode."""
    was_training = model.training
    model.eval()
    preds = []
    for i in range(0, len(images), batch_size):
        x = _center(_to_float(images[i : i + batch_size], device), patch)
        preds.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(preds).numpy() if preds else np.zeros(0, np.float32)


class _Progress:
    """A rich progress bar on a terminal, periodic log lines otherwise."""

    def __init__(self, total: int, every: int, enabled: bool) -> None:
        self.enabled, self.every, self.bar = enabled, every, None
        if enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, info="")

    def update(self, step: int, epoch: int, info: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=step, description=f"epoch {epoch}", info=info)
        elif step % self.every == 0:
            print(f"step {step} epoch {epoch} {info}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _dist_setup(device: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, torch.device(device)
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return dist.get_rank(), world, dev


def train(
    cfg: TrainConfig,
    data: list[str | Path],
    out: str | Path,
    device: str = "cpu",
    resume: bool = False,
    verbose: bool = True,
    records: list[FocusRecord] | None = None,
    val_records: list[FocusRecord] | None = None,
) -> dict[str, Any]:
    """Train, validating every epoch; returns the final summary (also ``OUT/summary.json``).

    Args:
        cfg: Hyper-parameters.
        data: Dataset folders (read unless ``records`` is given; recorded in checkpoints).
        out: Output folder (``last.pt``, ``best.pt``, ``config.yaml``, ``summary.json``).
        device: ``cpu`` or ``cuda``.
        resume: Continue from ``OUT/last.pt``.
        verbose: Progress output.
        records: Train on these records instead of reading ``data`` (e.g. a caller's own
            split by stack).
        val_records: Validate on these records instead of splitting off
            ``cfg.val_fraction``; all of ``records`` (or ``data``) are then training records.
            An empty list trains without validation: ``best.pt`` is not written and
            ``last.pt`` holds the final weights.

    Raises:
        ValueError: for unusable data (no tissue patches, no validation slides).
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA GPU is available; use --device cpu")
    rank, world, dev = _dist_setup(device)
    is_main = rank == 0
    log = print if (verbose and is_main) else (lambda *a, **k: None)
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mcfg = DeepAfConfig.from_dict(cfg.model)
    aug = AugmentConfig(**cfg.augment)
    patch = mcfg.patch_size

    if records is None:
        records = read_dataset(data)
    records = [r for r in records if r.profile == mcfg.profile]
    if not records:
        raise ValueError(f"no images of profile {mcfg.profile!r} in {data}")
    given_val = (
        None if val_records is None else [r for r in val_records if r.profile == mcfg.profile]
    )
    sizes = [r.pixel_size_m for r in records + (given_val or []) if r.pixel_size_m]
    if mcfg.pixel_size_m is None and sizes:
        mcfg.pixel_size_m = float(np.median(sizes))  # travels with the weights
    if given_val is None:
        train_recs, val_recs = split_records(records, cfg.val_fraction, cfg.split_by, cfg.seed)
    else:
        train_recs, val_recs = records, given_val
    validate = val_records is None or len(val_records) > 0
    load = patch + cfg.load_margin
    xtr, ytr, _ = load_patches(train_recs, load, cfg.label_range_um)
    xva, yva, _ = load_patches(val_recs, load, cfg.label_range_um)
    if len(xtr) < cfg.batch_size or (validate and len(xva) == 0):
        raise ValueError(
            f"too little data: {len(xtr)} training and {len(xva)} validation tissue patches "
            f"(batch {cfg.batch_size}); generate more stacks with `./deepaf sim dataset`"
        )
    if len(xva) > cfg.val_max_patches:
        keep = np.linspace(0, len(xva) - 1, cfg.val_max_patches).round().astype(int)
        xva, yva = xva[keep], yva[keep]
    xtr, ytr = torch.from_numpy(xtr), torch.from_numpy(ytr)
    xva, yva = torch.from_numpy(xva), torch.from_numpy(yva)
    protocols = sorted({r.protocol for r in train_recs})
    log(
        f"data: {len(xtr)} train / {len(xva)} val patches from "
        f"{len({r.slide for r in train_recs})} / {len({r.slide for r in val_recs})} slides, "
        f"{len(protocols)} training protocols"
    )

    model = DeepAf(mcfg).to(dev)
    log(
        f"model: {mcfg.variant} init_features={mcfg.init_features} patch={patch} "
        f"params={count_parameters(model):,}"
    )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(xtr) // (cfg.batch_size * world)
    total_steps = steps_per_epoch * cfg.epochs
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
    state = {
        "epoch": 0,
        "step_in_epoch": 0,
        "global_step": 0,
        "best_fe": float("inf"),
        "history": [],
        "train_seconds": 0.0,
    }
    last = out / "last.pt"
    if resume and last.exists():
        ck = load_checkpoint(last)
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["gen_state"])
        state.update({k: ck[k] for k in state})
        log(f"resumed from {last}: epoch {state['epoch']} step {state['step_in_epoch']}")
    else:
        if resume:
            log(f"--resume: no {last} yet, starting fresh")
        if cfg.init_checkpoint:
            init = load_checkpoint(cfg.init_checkpoint)
            try:
                model.load_state_dict(init["state_dict"])
            except RuntimeError as exc:
                raise ValueError(
                    f"init_checkpoint {cfg.init_checkpoint} does not fit the model config "
                    f"({str(exc).splitlines()[0]}); use the checkpoint's own model config"
                ) from None
            log(f"initialised from {cfg.init_checkpoint}")
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    (out / "config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    half_dof = half_dof_um(mcfg.profile)
    meta = {
        "train_config": asdict(cfg),
        "train_protocols": protocols,
        "data": [str(d) for d in data],
    }

    def save(path: Path, with_optimizer: bool, metrics: dict | None = None) -> None:
        extra = (
            {"optimizer": opt.state_dict(), "gen_state": gen.get_state()} if with_optimizer else {}
        )
        save_checkpoint(
            path, model, **meta, **extra, **{k: state[k] for k in state}, metrics=metrics or {}
        )

    progress = _Progress(total_steps, cfg.log_every, verbose and is_main)
    t_start, t_ckpt = time.time(), time.time()
    seconds0 = state["train_seconds"]
    stopped = False
    model.train()
    if cfg.max_minutes is not None and state["train_seconds"] > cfg.max_minutes * 60:
        stopped = True  # resumed a run whose time budget is already spent
    while state["epoch"] < cfg.epochs and not stopped:
        epoch = state["epoch"]
        perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(cfg.seed + epoch))
        perm = perm[rank::world]
        loss_sum, n_loss = 0.0, 0
        for s in range(state["step_in_epoch"], steps_per_epoch):
            idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            x = augment_batch(_to_float(xtr[idx], dev), aug, gen, crop=patch)
            y = ytr[idx].to(dev)
            prog = progress_at(state["global_step"], total_steps, state["train_seconds"], cfg)
            for g in opt.param_groups:
                g["lr"] = lr_at(state["global_step"], prog, cfg)
            loss = F.smooth_l1_loss(ddp_model(x), y, beta=cfg.smooth_l1_beta)
            if not torch.isfinite(loss):
                raise RuntimeError(
                    f"loss became {loss.item()} at step {state['global_step']}; "
                    "lower lr or check the data"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum, n_loss = loss_sum + loss.item(), n_loss + 1
            state["global_step"] += 1
            state["step_in_epoch"] = s + 1
            state["train_seconds"] = seconds0 + time.time() - t_start
            progress.update(state["global_step"], epoch, f"loss {loss_sum / n_loss:.3f}")
            if is_main and time.time() - t_ckpt > cfg.checkpoint_minutes * 60:
                save(last, True)
                t_ckpt = time.time()
            if cfg.max_minutes is not None and state["train_seconds"] > cfg.max_minutes * 60:
                stopped = True
                break
        state["epoch"] += 1
        state["step_in_epoch"] = 0
        if is_main and not validate:  # no validation records: last.pt is the result
            m = {"train_loss": loss_sum / max(1, n_loss), "epoch": state["epoch"]}
            m["seconds"] = round(state["train_seconds"], 1)
            state["history"].append(m)
            log(
                f"epoch {state['epoch']}/{cfg.epochs} loss {m['train_loss']:.4f} "
                f"(no validation) ({m['seconds']:.0f} s)",
                flush=True,
            )
            save(last, True, {"training": m})
            t_ckpt = time.time()
        elif is_main:
            pred = evaluate_patches(model, xva, yva, patch, dev)
            m = focus_metrics(pred, yva.numpy(), half_dof)
            m["train_loss"] = loss_sum / max(1, n_loss)
            m["epoch"] = state["epoch"]
            m["seconds"] = round(state["train_seconds"], 1)
            state["history"].append(m)
            log(
                f"epoch {state['epoch']}/{cfg.epochs} loss {m['train_loss']:.4f} val FE "
                f"{m['fe_um_mean']:.3f}±{m['fe_um_std']:.3f} um FD {m['fd_pct']:.2f}% "
                f"DoF {m['dof_pct']:.1f}% ({m['seconds']:.0f} s)",
                flush=True,
            )
            if m["fe_um_mean"] < state["best_fe"]:
                state["best_fe"] = m["fe_um_mean"]
                save(out / "best.pt", False, {"validation": m})
            save(last, True, {"validation": m})
            t_ckpt = time.time()
        if world > 1:
            torch.distributed.barrier()
    progress.close()
    if stopped:
        log(f"time budget max_minutes={cfg.max_minutes} reached after {state['epoch']} epochs")
    summary = {
        "epochs_done": state["epoch"],
        "steps": state["global_step"],
        "train_seconds": state["train_seconds"],
        "best_val_fe_um": state["best_fe"],
        "samples_per_s": state["global_step"]
        * cfg.batch_size
        * world
        / max(1e-9, state["train_seconds"]),
        "train_patches": len(xtr),
        "val_patches": len(xva),
        "history": state["history"],
        "stopped_early": stopped,
    }
    if is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if world > 1:
        torch.distributed.destroy_process_group()
    return summary
