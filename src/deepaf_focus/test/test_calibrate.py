"""`./deepaf calibrate` on real files with the real shipped model: the before/after report on
held-back stacks, "not better -> nothing written", and clear refusals of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from deepaf.calibrate_command import main as calibrate_main
from deepaf_driver.sim.dataset import DatasetSpec, write_dataset
from deepaf_focus.calibrate import CalibrationConfig, CalibrationError, calibrate
from deepaf_focus.checkpoint import load_checkpoint
from deepaf_focus.predictor import default_model_path

MODELS = Path(default_model_path("20x")).parent
V1 = MODELS / "deepaf_20x_v1.pt"  # fixed weights: the shipped deepaf_20x.pt may be replaced
FAST = ["--minutes", "2", "--epochs", "10", "--quiet"]  # 10 steps, reproducible


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> Path:
    """Four stacks of the 'foreign' virtual microscope (25 % larger pixels, other optics)."""
    out = tmp_path_factory.mktemp("calib") / "foreign"
    spec = DatasetSpec(
        stacks=4,
        protocols="random",
        range_m=4e-6,
        step_m=1e-6,
        patch=160,
        seed=4004,
        profile="20x",
        microscope="foreign",
    )
    return write_dataset(out, spec, workers=1, progress=False)


def _copy(src: Path, dst: Path, stacks: list[str] | None = None) -> Path:
    shutil.copytree(src, dst)
    if stacks is not None:
        index = json.loads((dst / "dataset.json").read_text())
        for name in index["stacks"]:
            if name not in stacks:
                shutil.rmtree(dst / name)
        index["stacks"] = stacks
        (dst / "dataset.json").write_text(json.dumps(index))
    return dst


def _edit_meta(ds: Path, stack: str, **changes) -> None:
    path = ds / stack / "meta.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_calibration_is_kept_when_better_on_held_back_stacks(foreign, tmp_path, capsys):
    out, report_path = tmp_path / "mine.pt", tmp_path / "report.json"
    argv = ["--data", str(foreign), "--model", str(V1), "--out", str(out)]
    rc = calibrate_main([*argv, "--json", str(report_path), *FAST])
    text = capsys.readouterr().out
    assert rc == 0, text
    report = json.loads(report_path.read_text())
    held, tune = set(report["held_back_stacks"]), set(report["fine_tune_stacks"])
    assert len(held) == 2 and len(tune) == 2 and not held & tune  # split by stack, ~half
    assert report["validation_stacks"] == [] and report["train"]["selected"] == "last epoch"
    # the fine-tune saw exactly the fine-tune stacks' images, the evaluations only the others
    assert report["train"]["train_patches"] == 2 * 9
    assert report["before"]["n"] == report["after"]["n"] == 2 * 9
    assert report["after"]["fe_um_mean"] < report["before"]["fe_um_mean"]
    assert report["kept"] and "wrote" in report["verdict"]
    assert "| before (deepaf_20x_v1.pt) |" in text and "| after (" in text
    ckpt = load_checkpoint(out)  # weights_only
    cal = ckpt["calibration"]
    assert cal["before"] == report["before"] and cal["after"] == report["after"]
    assert cal["source_model"] == str(V1) and len(cal["source_sha256"]) == 64
    assert set(cal["held_back_stacks"]) == held and cal["train"]["minutes"] <= 2.0
    assert ckpt["model_config"]["pixel_size_m"] == pytest.approx(6.139e-7, rel=1e-3)
    # the calibrated model loads and predicts like any other
    from deepaf_focus.cli import predict_main

    img = next((foreign / sorted(held)[0].split("/")[1]).glob("*.png"))
    assert predict_main([str(img), "--model", str(out)]) == 0


def test_not_better_writes_nothing_and_exits_non_zero(foreign, tmp_path, capsys):
    out = tmp_path / "mine.pt"
    argv = ["--data", str(foreign), "--model", str(V1), "--out", str(out)]
    rc = calibrate_main([*argv, "--min-gain-um", "100", *FAST])
    captured = capsys.readouterr()
    assert rc == 3
    assert not out.exists()
    assert "not better" in captured.err and "NOT written" in captured.err
    assert str(V1) in captured.err  # says which model stays in use
    assert "| before (" in captured.out and "| after (" in captured.out


def _refusal(capsys, argv: list[str]) -> str:
    rc = calibrate_main(argv)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "nothing written; the previous model stays in use" in err
    return err


def test_no_tissue_stacks_are_refused(tmp_path, capsys):
    ds = tmp_path / "glass"
    names = ["stack_00000", "stack_00001", "stack_00002"]
    white = np.full((160, 160, 3), 250, np.uint8)
    for name in names:
        (ds / name).mkdir(parents=True)
        images = []
        for dz in (-2, -1, 0, 1, 2):
            f = f"z_{dz:+09.3f}um.png"
            cv2.imwrite(str(ds / name / f), white)
            images.append({"file": f, "z_m": dz * 1e-6})
        meta = {
            "format": "deepaf-focal-stack",
            "version": 1,
            "profile": "20x",
            "pixel_size_m": 4.91e-7,
            "protocol": "unknown",
            "protocol_params": {},
            "slide": "glass",
            "slide_seed": None,
            "x_m": 0.0,
            "y_m": 0.0,
            "best_focus_z_m": 0.0,
            "images": images,
        }
        (ds / name / "meta.json").write_text(json.dumps(meta))
    (ds / "dataset.json").write_text(
        json.dumps({"format": "deepaf-focal-stack", "version": 1, "stacks": names})
    )
    out = tmp_path / "x.pt"
    err = _refusal(capsys, ["--data", str(ds), "--out", str(out), "--quiet"])  # shipped model
    assert "no tissue in the stacks" in err and not out.exists()


def test_model_and_data_mismatches_are_refused(foreign, tmp_path, capsys):
    out = tmp_path / "x.pt"
    base = ["--data", str(foreign), "--out", str(out), "--quiet"]
    err = _refusal(capsys, [*base, "--model", str(MODELS / "deepaf_4x.pt")])
    assert "is a 4x model but the stacks are 20x" in err
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    err = _refusal(capsys, [*base, "--model", str(bad)])
    assert "corrupt" in err and str(bad) in err
    err = _refusal(capsys, [*base, "--model", str(tmp_path / "missing.pt")])
    assert "does not exist" in err
    v1 = tmp_path / "v1.pt"
    shutil.copy(V1, v1)
    err = _refusal(capsys, ["--data", str(foreign), "--model", str(v1), "--out", str(v1)])
    assert "is the model being calibrated" in err
    assert not out.exists()


def test_bad_stacks_are_refused(foreign, tmp_path, capsys):
    base = ["--model", str(V1), "--out", str(tmp_path / "x.pt"), "--quiet"]
    # pixel size more than 25 % off the model's (the foreign scope itself is exactly +25 %)
    px = _copy(foreign, tmp_path / "px")
    for s in ("stack_00000", "stack_00001", "stack_00002", "stack_00003"):
        _edit_meta(px, s, pixel_size_m=1.0e-6)
    err = _refusal(capsys, ["--data", str(px), *base])
    assert "pixel size 1.0000 um/px differs from the model's 0.4912 um/px by +104 %" in err
    # one stack whose best focus lies outside it: no sharpness peak in its range
    out_of_range = _copy(foreign, tmp_path / "edge")
    meta = json.loads((out_of_range / "stack_00002" / "meta.json").read_text())
    _edit_meta(out_of_range, "stack_00002", best_focus_z_m=meta["images"][-1]["z_m"] + 2e-6)
    err = _refusal(capsys, ["--data", str(out_of_range), *base])
    assert "1 of 4 stacks have no usable label" in err and "stack_00002" in err
    assert "best focus is not inside the stack" in err
    # no best focus recorded at all
    null = _copy(foreign, tmp_path / "null")
    _edit_meta(null, "stack_00001", best_focus_z_m=None)
    err = _refusal(capsys, ["--data", str(null), *base])
    assert "null/stack_00001 has no usable label: best_focus_z_m is None" in err
    # a sharpness-peak label on a stack without a peak (one image repeated)
    flat = _copy(foreign, tmp_path / "flat")
    meta = json.loads((flat / "stack_00003" / "meta.json").read_text())
    src = flat / "stack_00003" / meta["images"][4]["file"]
    for img in meta["images"]:
        if img["file"] != src.name:
            shutil.copy(src, flat / "stack_00003" / img["file"])
    _edit_meta(flat, "stack_00003", best_focus_source="sharpness_peak")
    err = _refusal(capsys, ["--data", str(flat), *base])
    assert "stack_00003: no sharpness peak" in err
    # one stack is not enough to fine-tune and check
    one = _copy(foreign, tmp_path / "one", ["stack_00000"])
    err = _refusal(capsys, ["--data", str(one), *base])
    assert "too few stacks: 1 usable of 1 (need at least 2" in err


def test_library_call_raises_calibration_error(foreign, tmp_path):
    with pytest.raises(CalibrationError, match="is a 4x model"):
        calibrate([foreign], tmp_path / "x.pt", MODELS / "deepaf_4x.pt", verbose=False)
    with pytest.raises(CalibrationError, match="--holdout"):
        CalibrationConfig(holdout=1.0)
    assert torch.get_num_threads() == 1


def test_validation_stacks_come_from_the_fine_tune_side(foreign, tmp_path):
    cfg = CalibrationConfig(minutes=1, epochs=2, holdout=0.25, val_fraction=0.34, min_val_stacks=3)
    report = calibrate([foreign], tmp_path / "x.pt", V1, cfg, verbose=False)
    held, val = set(report["held_back_stacks"]), set(report["validation_stacks"])
    tune = set(report["fine_tune_stacks"])
    assert len(held) == 1 and len(val) == 1 and len(tune) == 2
    assert not (held & val) and not (held & tune) and not (val & tune)
    assert report["train"]["selected"] == "best validation epoch"
    assert report["train"]["val_patches"] == 9 and report["train"]["best_val_fe_um"] > 0
    assert (tmp_path / "x.pt").exists() == report["kept"]
