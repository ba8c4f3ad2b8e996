"""Benchmark focus transfer (``./deepaf bench robust``): does the model hold up elsewhere?

Rows, every one measured in this run on the same test stacks (20x, dz uniform in +-10 um,
slides and seeds never used in training):

* ``v1``: the shipped model before domain randomisation (``deepaf_20x_v1.pt``);
* ``robust``: the shipped model (``deepaf_20x.pt``);
* ``robust + calibrated``: the robust model after ``./deepaf calibrate`` on K stacks of the
  foreign microscope (the other foreign stacks are held back; every row's foreign column is
  measured on those held-back stacks).

Columns: training presets on new slides, random protocols with an unseen seed, the
``other_lab`` preset (stain outside the training presets), the foreign microscope
(optics, stain and camera outside the randomisation ranges), each as FE / FD / DoF.
Missing test sets are rendered first into ``--data-root`` (resumable; same seeds as the
model card). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from deepaf_driver.sim.dataset import DatasetSpec, write_dataset
from deepaf_focus.data import read_dataset
from deepaf_focus.evaluate import evaluate_records
from deepaf_focus.predictor import FocusPredictor, default_model_path

LABS = (
    "lab_a_standard",
    "lab_b_pale_eosin",
    "lab_c_dark_hematoxylin",
    "lab_d_thick_section",
    "lab_e_thin_section",
    "lab_f_warm_lamp",
    "lab_g_cool_led",
    "lab_h_high_cellularity",
    "lab_i_low_index_mountant",
    "lab_j_magenta_eosin",
)


def _specs(stacks: int) -> dict[str, tuple[str, DatasetSpec]]:
    def spec(n, protocols, seed, microscope="profile"):
        return DatasetSpec(n, protocols, 10e-6, 0.5e-6, 256, seed, "20x", microscope=microscope)

    return {
        "presets": ("20x_test_same", spec(stacks, tuple(LABS), 1001)),
        "random": ("20x_test_heldout", spec(stacks, "random", 2002)),
        "other_lab": ("20x_test_otherlab", spec(max(4, stacks // 2), ("other_lab",), 3003)),
        "foreign": ("20x_test_foreign", spec(16, ("lab_a_standard",), 4004, "foreign")),
    }


def _metrics(predictor: FocusPredictor, records) -> dict:
    m = evaluate_records(predictor, records)["splits"]["all"]
    return {k: m[k] for k in ("fe_um_mean", "fe_um_std", "fd_pct", "dof_pct", "n")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="deepaf bench robust", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data-root", default="data", help="where test sets live (rendered if missing)"
    )
    ap.add_argument("--stacks", type=int, default=30, help="stacks of the presets / random sets")
    ap.add_argument("--calib-stacks", type=int, default=8, help="foreign stacks to calibrate on")
    ap.add_argument("--calib-minutes", type=float, default=10.0, help="fine-tuning budget")
    ap.add_argument("--v1", default=None, help="the pre-randomisation model (default: shipped v1)")
    ap.add_argument("--model", default=None, help="the robust model (default: shipped)")
    ap.add_argument("--workers", type=int, default=2, help="processes rendering test sets")
    a = ap.parse_args(argv)

    root = Path(a.data_root)
    sets = {}
    for col, (name, spec) in _specs(a.stacks).items():
        out = root / name
        print(f"test set {col}: {out}", flush=True)
        write_dataset(out, spec, workers=a.workers, progress=True)
        sets[col] = read_dataset([out])

    v1 = Path(a.v1) if a.v1 else default_model_path("20x").with_name("deepaf_20x_v1.pt")
    robust = Path(a.model) if a.model else default_model_path("20x")
    # calibrate the robust model on K foreign stacks; the rest are held back for every row
    from deepaf_focus.calibrate import CalibrationConfig, calibrate

    n_foreign = len({r.stack for r in sets["foreign"]})
    holdout = 1.0 - a.calib_stacks / n_foreign
    calibrated = Path("out") / "bench-robust" / "calibrated_20x.pt"
    calibrated.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    cal = calibrate(
        [root / "20x_test_foreign"],
        calibrated,
        robust,
        CalibrationConfig(minutes=a.calib_minutes, holdout=holdout),
        verbose=False,
    )
    calib_s = time.monotonic() - t0
    held = set(cal["held_back_stacks"])
    sets["foreign"] = [r for r in sets["foreign"] if r.stack in held]
    print(f"calibration: {cal['verdict']}", flush=True)

    rows: dict[str, dict[str, dict]] = {}
    for label, path in (("v1", v1), ("robust", robust)):
        pred = FocusPredictor.from_checkpoint(path, profile="20x", num_threads=1)
        rows[label] = {col: _metrics(pred, recs) for col, recs in sets.items()}
        print(f"evaluated {label} ({path.name})", flush=True)
    after = cal["after"] if cal["kept"] else cal["before"]
    rows["robust + calibrated"] = {
        "foreign": {k: after[k] for k in ("fe_um_mean", "fe_um_std", "fd_pct", "dof_pct", "n")}
    }

    cols = ("presets", "random", "other_lab", "foreign")
    print("\n| model | " + " | ".join(f"{c} FE / FD / DoF" for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for label, r in rows.items():
        cells = []
        for c in cols:
            m = r.get(c)
            cells.append(
                f"{m['fe_um_mean']:.2f} / {m['fd_pct']:.1f} % / {m['dof_pct']:.0f} %" if m else "-"
            )
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(
        f"\ncalibration: {a.calib_stacks} foreign stacks, {calib_s:.0f} s wall "
        f"(budget {a.calib_minutes:g} min of fine-tuning)"
    )
    gates = {
        "random": "FE <= 0.30 um, FD <= 1 %, DoF >= 80 %",
        "other_lab": "FD <= 5 %, FE <= 1.0 um",
        "foreign after calibration": "FE <= 0.5 um, FD <= 2 %, DoF >= 70 %",
    }
    for k, v in gates.items():
        print(f"gate {k}: {v}")
    r, c = rows["robust"], rows["robust + calibrated"]["foreign"]
    out = {
        "random_fe_um": r["random"]["fe_um_mean"],
        "random_fd_pct": r["random"]["fd_pct"],
        "random_dof_pct": r["random"]["dof_pct"],
        "other_lab_fe_um": r["other_lab"]["fe_um_mean"],
        "other_lab_fd_pct": r["other_lab"]["fd_pct"],
        "foreign_fd_pct_before": r["foreign"]["fd_pct"],
        "foreign_fe_um_before": r["foreign"]["fe_um_mean"],
        "foreign_fe_um_after": c["fe_um_mean"],
        "foreign_fd_pct_after": c["fd_pct"],
        "foreign_dof_pct_after": c["dof_pct"],
        "calibration_s": calib_s,
        "calibration_kept": bool(cal["kept"]),
        "rows": rows,
    }
    print(json.dumps(out, default=lambda v: float(v) if isinstance(v, np.floating) else str(v)))
    return 0
