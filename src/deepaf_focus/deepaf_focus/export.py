"""Export a DeepAf checkpoint to TorchScript (traced), with a parity check.

TorchScript keeps ``torch.fft.rfftn``; the classic ``torch.onnx`` exporter cannot export it
(use ``torch.onnx.export(..., dynamo=True)`` where ``onnx`` is installed).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .checkpoint import load_model

__all__ = ["export_torchscript"]


def export_torchscript(checkpoint: str | Path, out: str | Path, tol: float = 1e-4) -> float:
    """Trace the model at its patch size, save it, reload it and compare to eager.

    Returns:
        The max absolute output difference (um) on random tiles.

    Raises:
        ValueError: for bad checkpoints or when the difference exceeds ``tol``.
    """
    model, _ = load_model(checkpoint)
    p = model.cfg.patch_size
    example = torch.rand(2, 3, p, p, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        # shape-dependent branches are fixed at the traced tile size, which is the point
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(out))
        loaded = torch.jit.load(str(out))
        x = torch.rand(4, 3, p, p, generator=torch.Generator().manual_seed(1))
        diff = float((loaded(x) - model(x)).abs().max())
    if diff > tol:
        raise ValueError(f"exported model differs from eager by {diff:.2e} > {tol:.0e}")
    return diff
