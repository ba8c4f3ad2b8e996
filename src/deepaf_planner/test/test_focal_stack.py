"""Focal-stack acquisition on the in-process virtual microscope: the dataset it writes, and
every bad goal refused before anything moves, with nothing written or deleted outside the
output directory and nothing moved into place beside a corrupt dataset.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from deepaf_driver.dataset_format import read_dataset
from deepaf_driver.sim import VirtualMicroscope
from deepaf_planner.focal_stack import MAX_STACK_IMAGES, acquire_focal_stack
from deepaf_planner.sim_microscope import SimMicroscope
from geometry_msgs.msg import Point

from deepaf_msgs.action import AcquireFocalStack


@pytest.fixture(scope="module")
def scope():
    return VirtualMicroscope("4x", "lab_a_standard", slide_seed=0)


@pytest.fixture
def sim(scope):
    return SimMicroscope(scope, capture_size=(400, 300))


def _goal(out: Path, scope, **kw) -> AcquireFocalStack.Goal:
    x, y = scope.random_tissue_position(np.random.default_rng(2))
    z = float(scope.best_focus_z(x, y))
    fields = dict(
        position=Point(x=x, y=y, z=z),
        z_range=20e-6,
        z_step=20e-6,
        crop_size=64,
        output_dir=str(out),
        protocol="lab_a_standard",
    )
    fields.update(kw)
    return AcquireFocalStack.Goal(**fields)


def _acquire(sim, goal, feedback=lambda *_: None):
    return acquire_focal_stack(sim, goal, sim.limits, "4x", 3.875e-7, None, feedback, lambda: False)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_stack_streams_to_disk_and_leaves_other_partials_alone(sim, scope, tmp_path):
    out = tmp_path / "data"
    other = out / ".stack_00000.partial"  # another writer's (or an old crash's) folder
    other.mkdir(parents=True)
    (other / "keep.txt").write_text("not ours")
    result = _acquire(sim, _goal(out, scope))
    assert result.images == 3 and result.stack_dir == out / "stack_00000"
    (record,) = read_dataset(out)
    best = record.meta["best_focus_z_m"]
    for e in record.meta["images"]:  # each slice is named by its dz from best focus
        assert e["file"] == f"z_{(e['z_m'] - best) * 1e6:+09.3f}um.png"
        assert (result.stack_dir / e["file"]).is_file()
    assert record.meta["best_focus_source"] == "sharpness_peak"
    assert (other / "keep.txt").read_text() == "not ours"
    partials = [p.name for p in out.iterdir() if p.name.endswith(".partial")]
    assert partials == [other.name]  # its own temporary folder is gone
    assert not list(result.stack_dir.glob("slice_*"))  # every slice named by its dz


@pytest.mark.parametrize("name", ["./../evil_escape", "./../victim", "../x", "a/b", ".hidden",
                                  "..", "a\\b", " padded"])  # fmt: skip
def test_stack_names_that_leave_the_output_directory_are_refused(sim, scope, tmp_path, name):
    out = tmp_path / "a" / "data"
    out.mkdir(parents=True)
    victim = tmp_path / "victim.partial"  # what `./../victim` used to rmtree
    victim.mkdir()
    (victim / "precious.txt").write_text("mine")
    before_pose, before_tree = sim.position(), _tree(tmp_path)
    with pytest.raises(ValueError, match="not a plain folder name"):
        _acquire(sim, _goal(out, scope, stack_name=name))
    assert sim.position() == before_pose  # nothing moved
    assert _tree(tmp_path) == before_tree  # nothing written or deleted anywhere
    assert (victim / "precious.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"z_step": 1e-12}, "below 1e-09 m"),
        ({"z_step": 1e-8, "z_range": 20e-6}, f"at most {MAX_STACK_IMAGES} per stack"),
        ({"z_step": math.nan}, "must be positive"),
        ({"z_range": math.inf}, "must be positive"),
        ({"position": Point(x=math.nan, y=math.nan, z=math.nan)}, "not finite"),
        ({"position": Point(x=1.0, y=0.005, z=0.0)}, "outside the soft limits"),
    ],
)
def test_bad_numbers_and_counts_are_refused_before_anything_moves(
    sim, scope, tmp_path, fields, reason
):
    before = sim.position()
    with pytest.raises(ValueError, match=reason):
        _acquire(sim, _goal(tmp_path / "data", scope, **fields))
    assert sim.position() == before
    assert not (tmp_path / "data").exists()


BAD_INDEXES = [
    "{not json",
    "5",
    '{"format": "other"}',
    '{"format": "deepaf-focal-stack", "version": 1, "stacks": 5}',
]


@pytest.mark.parametrize("index", BAD_INDEXES)
def test_corrupt_dataset_json_fails_before_moving(sim, scope, tmp_path, index):
    out = tmp_path / "data"
    out.mkdir()
    (out / "dataset.json").write_text(index)
    before = sim.position()
    with pytest.raises(ValueError, match=r"dataset\.json"):
        _acquire(sim, _goal(out, scope))
    assert sim.position() == before
    assert _tree(out) == {"dataset.json"}


def test_dataset_json_corrupted_during_the_stack_keeps_it_out_of_place(sim, scope, tmp_path):
    out = tmp_path / "data"
    _acquire(sim, _goal(out, scope))  # a valid dataset with one stack

    def corrupt(done: int, total: int, z: float) -> None:
        if done == total:
            (out / "dataset.json").write_text('{"truncated": ')

    with pytest.raises(ValueError, match=r"dataset\.json"):
        _acquire(sim, _goal(out, scope), feedback=corrupt)
    assert not (out / "stack_00001").exists()  # the new stack was not moved into place
    assert _tree(out) == {"dataset.json", "stack_00000"} | {
        f"stack_00000/{p.name}" for p in (out / "stack_00000").iterdir()
    }


def test_existing_folder_is_never_reused_or_replaced(sim, scope, tmp_path):
    out = tmp_path / "data"
    (out / "mine").mkdir(parents=True)
    (out / "mine" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="already exists and is not a stack"):
        _acquire(sim, _goal(out, scope, stack_name="mine"))
    assert (out / "mine" / "notes.txt").read_text() == "x"
    done = _acquire(sim, _goal(out, scope, stack_name="named"))
    with pytest.raises(ValueError, match="already holds a finished stack"):
        _acquire(sim, _goal(out, scope, stack_name="named"))
    assert json.loads((out / "dataset.json").read_text())["stacks"] == ["named"]
    assert done.stack_dir.name == "named"
