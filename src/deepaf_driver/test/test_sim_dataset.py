"""Focal-stack dataset: round trip, resume after interruption, bad input, CLI."""

import json

import cv2
import numpy as np
import pytest
from deepaf_driver.sim import cli, dataset
from deepaf_driver.sim.dataset import (
    DatasetInterrupted,
    DatasetSpec,
    read_dataset,
    write_dataset,
)


def _spec(**kw):
    args = {
        "stacks": 2,
        "protocols": ("lab_a_standard", "other_lab"),
        "range_m": 1e-6,
        "step_m": 0.5e-6,
        "patch": 32,
        "seed": 5,
    }
    return DatasetSpec(**(args | kw))


def test_round_trip(tmp_path):
    out = write_dataset(tmp_path / "ds", _spec(), workers=1, progress=False)
    head = json.loads((out / "dataset.json").read_text())
    assert head["format"] == "deepaf-focal-stack" and head["version"] == 1
    assert head["stacks"] == ["stack_00000", "stack_00001"]
    assert head["created_by"] == "deepaf sim dataset"
    stacks = read_dataset(out)
    assert len(stacks) == 2
    for st in stacks:
        m = st.meta
        for key in (
            "format",
            "version",
            "profile",
            "pixel_size_m",
            "protocol",
            "protocol_params",
            "slide",
            "slide_seed",
            "x_m",
            "y_m",
            "best_focus_z_m",
            "images",
        ):
            assert key in m
        assert m["protocol"] in ("lab_a_standard", "other_lab")
        assert [e["file"] for e in m["images"]] == [
            "z_-0001.000um.png",
            "z_-0000.500um.png",
            "z_+0000.000um.png",
            "z_+0000.500um.png",
            "z_+0001.000um.png",
        ]
        np.testing.assert_allclose(st.labels_m, [1e-6, 0.5e-6, 0, -0.5e-6, -1e-6], atol=1e-9)
        imgs = st.load_images()
        assert all(i.shape == (32, 32, 3) and i.dtype == np.uint8 for i in imgs)
    # stacks are a function of (seed, index) only
    again = write_dataset(tmp_path / "ds2", _spec(), workers=2, progress=False)
    a = read_dataset(again)[1]
    b = stacks[1]
    assert a.meta["x_m"] == b.meta["x_m"] and a.meta["protocol"] == b.meta["protocol"]


def test_random_protocols_deterministic_per_seed(tmp_path):
    s1 = [dataset.stack_plan(_spec(protocols="random", seed=1), i)[1] for i in range(3)]
    s1b = [dataset.stack_plan(_spec(protocols="random", seed=1), i)[1] for i in range(3)]
    s2 = [dataset.stack_plan(_spec(protocols="random", seed=2), i)[1] for i in range(3)]
    assert s1 == s1b
    assert all(a != b for a, b in zip(s1, s2, strict=True))
    from deepaf_driver.sim import PROTOCOL_PRESETS

    assert not {p.name for p in s1} & set(PROTOCOL_PRESETS)


def test_resume_after_interruption(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    real = dataset.write_stack
    calls = []

    def flaky(out_dir, spec, i):
        calls.append(i)
        if i == 1:
            # a partial stack: one image written, then Ctrl-C
            (out_dir / "stack_00001").mkdir(parents=True, exist_ok=True)
            (out_dir / "stack_00001" / "z_-0001.000um.png").write_bytes(b"partial")
            raise KeyboardInterrupt
        return real(out_dir, spec, i)

    monkeypatch.setattr(dataset, "write_stack", flaky)
    with pytest.raises(DatasetInterrupted, match="re-run the same command"):
        write_dataset(out, _spec(stacks=3), workers=1, progress=False)
    done = out / "stack_00000" / "meta.json"
    assert done.exists() and not (out / "stack_00001" / "meta.json").exists()
    before = done.stat().st_mtime_ns
    monkeypatch.setattr(dataset, "write_stack", real)
    write_dataset(out, _spec(stacks=3), workers=1, progress=False)
    assert done.stat().st_mtime_ns == before  # finished stack untouched
    stacks = read_dataset(out)
    assert len(stacks) == 3
    assert cv2.imread(str(stacks[1].files[0])) is not None  # partial image redone


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"stacks": 0}, "stacks"),
        ({"range_m": -1e-6}, "range"),
        ({"step_m": 0.0}, "step"),
        ({"patch": 0}, "patch"),
        ({"protocols": ("lab_zz",)}, "valid presets"),
        ({"profile": "60x"}, "valid"),
    ],
)
def test_bad_specs(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        write_dataset(tmp_path / "ds", _spec(**kw), workers=1, progress=False)


def test_unwritable_and_conflicting_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"not writable|not a directory"):
        write_dataset(blocker / "ds", _spec(stacks=1), workers=1, progress=False)
    with pytest.raises(ValueError, match="not a directory"):
        write_dataset(blocker, _spec(stacks=1), workers=1, progress=False)
    out = write_dataset(tmp_path / "ds", _spec(stacks=1), workers=1, progress=False)
    meta = (out / "stack_00000" / "meta.json").read_bytes()
    with pytest.raises(ValueError, match="other arguments"):
        write_dataset(out, _spec(stacks=1, seed=9), workers=1, progress=False)
    assert (out / "stack_00000" / "meta.json").read_bytes() == meta


def test_cli(tmp_path, capsys):
    assert cli.main(["protocols"]) == 0
    names = capsys.readouterr().out.split()
    assert "lab_a_standard" in names and len(names) >= 8
    png = tmp_path / "f.png"
    assert (
        cli.main(
            [
                "render",
                "--protocol",
                "lab_b_pale_eosin",
                "--x-mm",
                "7.5",
                "--y-mm",
                "7.5",
                "--dz-um",
                "-2",
                "--size",
                "64x48",
                "--out",
                str(png),
            ]
        )
        == 0
    )
    assert cv2.imread(str(png)).shape == (48, 64, 3)
    assert cli.main(["render", "--protocol", "nope", "--out", str(png)]) == 2
    assert "valid presets" in capsys.readouterr().err
    assert cli.main(["render", "--x-mm", "99", "--y-mm", "1", "--out", str(png)]) == 2
    assert (
        cli.main(
            [
                "dataset",
                "--out",
                str(tmp_path / "d"),
                "--stacks",
                "1",
                "--protocols",
                "random",
                "--range-um",
                "1",
                "--step-um",
                "1",
                "--patch",
                "24",
                "--seed",
                "3",
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert read_dataset(tmp_path / "d")[0].meta["protocol"].startswith("random_")
    with pytest.raises(SystemExit) as e:
        cli.main(["dataset", "--protocols", "bogus", "--out", "x", "--stacks", "1"])
    assert e.value.code == 2
    for sub in ("protocols", "render", "dataset", "montage"):
        with pytest.raises(SystemExit) as e:
            cli.main([sub, "--help"])
        assert e.value.code == 0
