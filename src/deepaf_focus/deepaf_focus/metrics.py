"""The DeepAf paper's focus metrics: FE, FD and DoF.

* FE: mean ± standard deviation of |predicted - true| offset, micrometres.
* FD: percentage of predictions with the wrong sign (the stage would move away from focus).
  A true offset of exactly 0 has no direction and never counts as wrong.
* DoF: percentage of predictions within half the depth of field of the true value
  (0.5 um at 20x, 30 um at 4x), i.e. images that would end up in focus.
"""

from __future__ import annotations

import numpy as np

__all__ = ["HALF_DOF_UM", "focus_metrics", "half_dof_um"]

HALF_DOF_UM = {"20x": 0.5, "4x": 30.0}


def half_dof_um(profile: str) -> float:
    """Half the depth of field (um) for a microscope profile.

    Raises:
        ValueError: for an unknown profile.
    """
    try:
        return HALF_DOF_UM[profile]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; known: {sorted(HALF_DOF_UM)}") from None


def focus_metrics(pred_um, true_um, half_dof: float = 0.5) -> dict[str, float | int]:
    """FE mean/std (um), FD (% wrong sign), DoF (% within ``half_dof``) and n.

    Raises:
        ValueError: when the arrays differ in length.
    """
    pred = np.asarray(pred_um, dtype=np.float64).ravel()
    true = np.asarray(true_um, dtype=np.float64).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"pred and true differ in length: {pred.shape} vs {true.shape}")
    if pred.size == 0:
        nan = float("nan")
        return {"fe_um_mean": nan, "fe_um_std": nan, "fd_pct": nan, "dof_pct": nan, "n": 0}
    err = np.abs(pred - true)
    wrong = (np.sign(pred) != np.sign(true)) & (true != 0)
    return {
        "fe_um_mean": float(err.mean()),
        "fe_um_std": float(err.std()),
        "fd_pct": float(100.0 * wrong.mean()),
        "dof_pct": float(100.0 * (err <= half_dof).mean()),
        "n": int(pred.size),
    }
