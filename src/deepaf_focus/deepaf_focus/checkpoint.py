"""Checkpoints that rebuild their own model and never unpickle arbitrary objects.

A checkpoint is a plain dict saved with ``torch.save`` and read with
``torch.load(..., weights_only=True)``::

    {"format": "deepaf-focus-checkpoint", "version": 1, "arch": "deepaf",
     "model_config": {...}, "train_config": {...}, "preprocessing": {...},
     "metrics": {...}, "state_dict": {...}, optional "optimizer", "epoch", "step", ...}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .model import DeepAf, DeepAfConfig

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "load_model", "save_checkpoint"]

CHECKPOINT_FORMAT = "deepaf-focus-checkpoint"
ARCH = "deepaf"


def save_checkpoint(path: str | Path, model: DeepAf, **fields: Any) -> Path:
    """Atomically write a checkpoint (temp file + rename, so a crash never truncates it).

    Args:
        path: Destination file.
        model: The network (its config is stored with its weights).
        **fields: ``train_config``, ``metrics``, ``optimizer``, ``epoch``, ... (plain python
            values and tensors only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = model.module if hasattr(model, "module") else model
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "arch": ARCH,
        "model_config": module.cfg.to_dict(),
        "preprocessing": {
            "input": "RGB float in [0, 1], NCHW",
            "normalization": module.cfg.normalization,
            "mean": list(module.cfg.mean),
            "std": list(module.cfg.std),
            "patch_size": module.cfg.patch_size,
            "output": "best_focus_z - z in micrometres",
        },
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        **fields,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint dict (weights only, no arbitrary unpickling).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when it is corrupt, truncated, not a DeepAf checkpoint or of an unknown
            version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad zips/pickles
        raise ValueError(
            f"checkpoint {path} is corrupt, truncated or contains objects that are not "
            f"allowed with weights_only=True ({type(exc).__name__}: {str(exc)[:200]}); "
            "re-download or retrain it"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a DeepAf focus checkpoint (no format={CHECKPOINT_FORMAT!r} field); "
            "train one with `./deepaf train`"
        )
    if ckpt.get("version") != 1 or ckpt.get("arch") != ARCH:
        raise ValueError(
            f"{path}: unsupported checkpoint version {ckpt.get('version')!r} / arch "
            f"{ckpt.get('arch')!r}; this library reads version 1 of arch {ARCH!r}"
        )
    for key in ("model_config", "state_dict"):
        if not isinstance(ckpt.get(key), dict):
            raise ValueError(f"{path}: checkpoint lacks {key!r}")
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[DeepAf, dict]:
    """Rebuild the model stored in a checkpoint, in eval mode.

    Raises:
        ValueError: for bad checkpoints, or weights that do not fit the stored architecture.
    """
    ckpt = load_checkpoint(path)
    cfg = DeepAfConfig.from_dict(ckpt["model_config"])
    model = DeepAf(cfg)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{path}: weights do not match the {cfg.variant} architecture with "
            f"init_features={cfg.init_features} recorded in the checkpoint: {str(exc)[:300]}"
        ) from exc
    return model.to(device).eval(), ckpt
