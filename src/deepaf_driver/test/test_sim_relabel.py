"""`deepaf sim relabel`: stacks labelled under an older best-focus definition move to the
current one in place, images untouched and renamed to their dz, resumably."""

import json

import numpy as np
import pytest
from deepaf_driver.dataset_format import read_dataset
from deepaf_driver.sim import cli
from deepaf_driver.sim.dataset import DatasetSpec, write_dataset
from deepaf_driver.sim.microscope import BEST_FOCUS_VERSION
from deepaf_driver.sim.relabel import relabel_dataset

SHIFT = 0.3e-6  # how far the "old definition" put best focus


def _as_version_1(root):
    """Make every stack look as an older definition left it: best focus SHIFT higher,
    files named by that dz, no version."""
    for sdir in sorted(root.glob("stack_*")):
        meta = json.loads((sdir / "meta.json").read_text())
        meta["best_focus_z_m"] += SHIFT
        del meta["best_focus_version"]
        for i, e in enumerate(meta["images"]):
            old = f"z_old_{i}.png"
            (sdir / e["file"]).rename(sdir / old)
            e["file"] = old
        (sdir / "meta.json").write_text(json.dumps(meta))


@pytest.fixture
def dataset(tmp_path):
    spec = DatasetSpec(2, ("lab_a_standard", "other_lab"), 1e-6, 0.5e-6, 24, seed=3)
    return write_dataset(tmp_path / "ds", spec, workers=1, progress=False)


def test_relabel_restores_the_current_labels_and_names(dataset):
    current = {s.name: (s.labels_m, s.load_images()) for s in read_dataset(dataset)}
    _as_version_1(dataset)
    stale = read_dataset(dataset)
    assert all(np.allclose(s.labels_m, current[s.name][0] + SHIFT) for s in stale)
    assert cli.main(["relabel", str(dataset), "--workers", "1", "--no-progress"]) == 0
    for s in read_dataset(dataset):
        labels, images = current[s.name]
        assert s.labels_m == pytest.approx(labels, abs=1e-12)
        assert s.meta["best_focus_version"] == BEST_FOCUS_VERSION
        assert s.meta["best_focus_z_m_v1"] - s.meta["best_focus_z_m"] == pytest.approx(SHIFT)
        named_dz_um = [float(f.name[2:-6]) for f in s.files]  # z_+0000.500um.png
        assert named_dz_um == pytest.approx(-labels * 1e6, abs=1e-3)
        assert all(np.array_equal(a, b) for a, b in zip(s.load_images(), images, strict=True))
        assert sorted(p.name for p in (dataset / s.name).iterdir()) == sorted(
            ["meta.json", *(f.name for f in s.files)]
        )
    # current stacks are skipped
    assert all(r.shift_m == 0.0 for r in relabel_dataset(dataset, workers=1))


def test_an_interrupted_relabel_finishes_on_rerun(dataset):
    _as_version_1(dataset)
    sdir = dataset / "stack_00000"
    meta = json.loads((sdir / "meta.json").read_text())
    # interrupted after linking one new name, before meta.json was replaced
    (sdir / "z_+0000.000um.png").hardlink_to(sdir / meta["images"][2]["file"])
    assert len(read_dataset(dataset)) == 2  # still readable, old labels
    shifts = relabel_dataset(dataset, workers=1)
    assert [r.shift_m for r in shifts] == pytest.approx([-SHIFT, -SHIFT])
    assert len(read_dataset(dataset)) == 2


def test_relabel_refuses_a_dataset_it_cannot_rebuild(tmp_path, capsys):
    root = tmp_path / "acquired"
    root.mkdir()
    (root / "dataset.json").write_text(
        json.dumps({"format": "deepaf-focal-stack", "version": 1, "stacks": []})
    )
    assert cli.main(["relabel", str(root), "--no-progress"]) == 2
    assert "only simulated datasets can be relabelled" in capsys.readouterr().err
