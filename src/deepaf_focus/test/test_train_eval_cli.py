"""A tiny training run, resumption, evaluation JSON/plot and the CLI entry points."""

import json

import pytest
import yaml
from deepaf_focus.cli import eval_main, predict_main, train_main
from deepaf_focus.train import TrainConfig, load_config, lr_at, progress_at, train

TINY = {
    "model": {"init_features": 4, "patch_size": 32, "variant": "spatio_spectral"},
    "augment": {"p_blur": 0.0, "p_perspective": 0.0, "p_erase": 0.0},
    "epochs": 6,
    "batch_size": 16,
    "lr": 3e-3,
    "weight_decay": 0.0,
    "seed": 0,
    "val_fraction": 0.25,
    "load_margin": 4,
    "schedule": "cosine",
    "warmup_steps": 2,
    "num_threads": 1,
}


def test_lr_schedule_is_pure():
    cfg = TrainConfig(lr=1.0, schedule="cosine", warmup_steps=10, min_lr_ratio=0.0)
    assert lr_at(0, 0.0, cfg) == pytest.approx(0.1)
    assert lr_at(10, 0.0, cfg) == pytest.approx(1.0)
    assert lr_at(100, 1.0, cfg) == pytest.approx(0.0, abs=1e-9)
    assert lr_at(55, 0.5, cfg) == pytest.approx(0.5)
    assert lr_at(5, 0.3, TrainConfig(lr=0.3)) == 0.3
    assert progress_at(50, 100, 0.0, cfg) == 0.5
    timed = TrainConfig(max_minutes=1.0)
    assert progress_at(10, 100, 45.0, timed) == 0.75
    assert progress_at(10, 100, 90.0, timed) == 1.0


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_config(bad)
    with pytest.raises(ValueError, match="unknown model config keys"):
        TrainConfig(model={"depth": 3})
    assert load_config(None).lr == 8e-4


@pytest.fixture(scope="module")
def trained(train_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    summary = train(TrainConfig(**TINY), [train_dataset], out, verbose=False)
    return out, summary


def test_tiny_training_reduces_loss(trained):
    out, summary = trained
    hist = summary["history"]
    assert len(hist) == 6 and summary["epochs_done"] == 6
    assert hist[-1]["train_loss"] < 0.8 * hist[0]["train_loss"]
    assert (out / "best.pt").exists() and (out / "last.pt").exists()
    assert json.loads((out / "summary.json").read_text())["steps"] == summary["steps"]


def test_resume_continues_where_it_stopped(train_dataset, tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 2})
    train(cfg, [train_dataset], tmp_path, verbose=False)
    cfg.epochs = 3
    summary = train(cfg, [train_dataset], tmp_path, resume=True, verbose=False)
    assert summary["epochs_done"] == 3 and len(summary["history"]) == 3


def test_eval_and_predict_cli(trained, train_dataset, tmp_path, capsys):
    out, _ = trained
    rc = eval_main(
        [
            "--model",
            str(out / "best.pt"),
            "--data",
            str(train_dataset),
            "--json",
            str(tmp_path / "e.json"),
            "--plot",
            str(tmp_path / "e.png"),
            "--baselines",
        ]
    )
    assert rc == 0
    rep = json.loads((tmp_path / "e.json").read_text())
    assert set(rep) >= {"splits", "model", "data"}
    assert list(rep["splits"]) == ["same protocol"]  # all protocols were seen in training
    assert set(rep["splits"]["same protocol"]) == {
        "fe_um_mean",
        "fe_um_std",
        "fd_pct",
        "dof_pct",
        "n",
    }
    assert (tmp_path / "e.png").stat().st_size > 1000
    text = capsys.readouterr().out
    assert "| same protocol |" in text and "golden-section" in text
    img = next(train_dataset.glob("stack_00000/*.png"))
    assert predict_main([str(img), "--model", str(out / "best.pt")]) == 0
    assert "offset:" in capsys.readouterr().out


def test_train_cli_with_yaml(train_dataset, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "epochs": 1}))
    assert (
        train_main(
            [
                "--config",
                str(cfg),
                "--data",
                str(train_dataset),
                "--out",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )
        == 0
    )
    assert "best validation FE" in capsys.readouterr().out
    assert (
        train_main(
            ["--config", str(cfg), "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
        )
        == 1
    )
    with pytest.raises(SystemExit):
        train_main(["--help"])
