"""The DeepAf paper's focus metrics: FE, FD and DoF.

* FE: mean ± standard deviation of |predicted - true| offset, micrometres.
* FD: percentage of predictions with the wrong sign (the stage would move away from focus).
  A true offset of exactly 0 has no direction and never counts as wrong.
* DoF: percentage of predictions within half the depth of field of the true value, i.e.
  images that would end up in focus. Half the depth of field is the optics profile's
  (:func:`deepaf_driver.profiles.half_dof_um`: 0.592 um at 20x, 29.4 um at 4x), the same
  criterion the scan report's ``within_dof_pct`` uses. (Before, this module used the paper's
  rounded 0.5 / 30 um; DoF % figures measured with those are slightly lower at 20x.)
"""

from __future__ import annotations

import numpy as np
from deepaf_driver.profiles import OPTICS_PROFILES, half_dof_um

__all__ = ["HALF_DOF_UM", "focus_metrics", "half_dof_um"]

#: Half the depth of field (um) of each named profile, from :mod:`deepaf_driver.profiles`.
HALF_DOF_UM: dict[str, float] = {name: half_dof_um(name) for name in OPTICS_PROFILES}


def focus_metrics(pred_um, true_um, half_dof: float = HALF_DOF_UM["20x"]) -> dict[str, float | int]:
    """FE mean/std (um), FD (% wrong sign), DoF (% within ``half_dof`` um) and n.

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
