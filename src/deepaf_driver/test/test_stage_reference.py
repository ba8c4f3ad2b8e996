"""The stage's absolute reference without ROS: what an unreferenced stage may do, limits
against the reference, and the reference file (restored only when the counters survived)."""

from __future__ import annotations

import json
import math

import pytest
from deepaf_driver.backends.base import Limits
from deepaf_driver.reference import (
    NOT_REFERENCED,
    OUT_OF_LIMITS,
    ReferenceFile,
    StageFrame,
    check_stage_id,
    default_state_dir,
    derive_stage_id,
)

SOFT = Limits((0.0, 0.015), (0.0, 0.015), (-5e-4, 5e-4))
TRAVEL = Limits((0.0, 0.015), (0.0, 0.015), (-5e-4, 5e-4))  # backend coordinates


def test_unreferenced_frame_allows_only_jogs_within_the_travel():
    frame = StageFrame(SOFT, TRAVEL, jog_limit=5e-4)
    here = (0.0075, 0.0075, 0.0)
    kind, reason = frame.check(here, (0.008, 0.0075, 0.0), relative=False)
    assert kind == NOT_REFERENCED and "absolute moves are refused" in reason
    assert "stage/set_reference" in reason and "0.500 mm per axis" in reason
    kind, reason = frame.check(here, (0.0075, 0.0075, 6e-4), relative=True)
    assert kind == NOT_REFERENCED and "focus_z 0.6000 mm" in reason
    assert frame.check(here, (0.008, 0.007, 5e-4), relative=True) == ("", "")
    # the travel still holds while unreferenced (the soft limits cannot yet)
    kind, reason = frame.check((0.0149, 0.0075, 0.0), (0.0152, 0.0075, 0.0), relative=True)
    assert kind == OUT_OF_LIMITS and "outside the stage's travel" in reason
    # without known travel, only the jog size is bounded
    assert StageFrame(SOFT, None, 5e-4).check(here, (-1.0, 0.0075, 0.0), True)[0] == (
        NOT_REFERENCED
    )
    assert StageFrame(SOFT, None, 5e-4).check((0.0, 0, 0), (-4e-4, 0, 0), True) == ("", "")


def test_referenced_frame_enforces_soft_limits_within_the_shifted_travel():
    frame = StageFrame(SOFT, TRAVEL, jog_limit=5e-4)
    frame.adopt((-0.007, -0.005, 0.0), "set_reference")
    assert frame.referenced and frame.source == "set_reference"
    assert frame.to_machine((0.008, 0.007, 0.0)) == pytest.approx((0.001, 0.002, 0.0))
    assert frame.to_backend((0.001, 0.002, 0.0)) == pytest.approx((0.008, 0.007, 0.0))
    flat = [v for pair in frame.limits.axes() for v in pair]
    assert flat == pytest.approx([0.0, 0.008, 0.0, 0.01, -5e-4, 5e-4])
    here = (0.001, 0.002, 0.0)
    assert frame.check(here, (0.0, 0.009, 0.0), relative=False) == ("", "")
    assert frame.check(here, (0.009, 0.002, 0.0), relative=True)[0] == OUT_OF_LIMITS
    kind, reason = frame.check(here, (0.001, 0.002, -6e-4), relative=False)
    assert kind == OUT_OF_LIMITS and "focus_z target -0.6000 mm is outside the soft" in reason
    # an axis that does not move is not checked: a stage parked outside can leave
    assert frame.check((0.0085, 0.002, 0.0), (0.0085, 0.003, 0.0), relative=False) == ("", "")
    frame.invalidate()
    assert not frame.referenced and frame.offset == (-0.007, -0.005, 0.0)  # no jump
    assert frame.check(here, (0.0, 0.002, 0.0), relative=False)[0] == NOT_REFERENCED


def test_a_reference_that_puts_the_soft_limits_outside_the_travel_is_refused():
    frame = StageFrame(SOFT, TRAVEL, jog_limit=5e-4)
    with pytest.raises(ValueError, match="soft limits of focus_z lie outside"):
        frame.adopt((0.0, 0.0, 0.002), "set_reference")
    assert not frame.referenced
    with pytest.raises(ValueError, match="three finite"):
        frame.adopt((0.0, math.nan, 0.0), "set_reference")
    with pytest.raises(ValueError, match="jog_limit"):
        StageFrame(SOFT, TRAVEL, jog_limit=0.0)


def test_reference_file_round_trips_and_is_restored_only_for_the_same_counters(tmp_path):
    store = ReferenceFile(tmp_path / "state", "scope-1")
    assert store.restorable("sim", "s1") == (None, store.restorable("sim", "s1")[1])
    assert "no reference saved" in store.restorable("sim", "s1")[1]
    store.save(store.saved("sim", "s1", (0.001, -0.002, 3e-5), "set_reference", (0, 0, 0)))
    assert store.path == tmp_path / "state" / "stage-scope-1.json"
    saved, why = store.restorable("sim", "s1")
    assert why == "" and saved.offset == (0.001, -0.002, 3e-5)
    assert saved.source == "set_reference" and saved.saved_at
    for backend, session, reason in (
        ("sim", None, "cannot confirm its position counters survived"),
        ("sim", "s2", "counters restarted"),
        ("motorkit", "s1", "belongs to stage 'scope-1' on backend 'sim'"),
    ):
        saved, why = store.restorable(backend, session)
        assert saved is None and reason in why, why
    # a stage whose backend cannot confirm its counters saves "" and is never restored
    store.save(store.saved("motorkit", None, (0.0, 0.0, 0.0), "endstops", (0, 0, 0)))
    assert store.restorable("motorkit", None)[0] is None
    assert store.restorable("motorkit", "")[0] is None
    store.remove()
    store.remove()  # twice is fine
    assert not store.path.exists()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{oops", "is not JSON"),
        ("[1, 2]", "is not a stage reference"),
        ('{"format": 99}', "format 99"),
        (
            {"offset": [0.0, "x", 0.0]},
            "is not a stage reference",
        ),
        ({"offset": [0.0, float("nan"), 0.0]}, "three finite"),
        ({"stage_id": 5}, "must be strings"),
    ],
)
def test_corrupt_reference_files_are_not_used(tmp_path, body, reason):
    store = ReferenceFile(tmp_path, "s")
    if isinstance(body, dict):
        good = {
            "format": 1,
            "stage_id": "s",
            "backend": "sim",
            "counter_session": "c",
            "offset": [0.0, 0.0, 0.0],
            "source": "set_reference",
            "reference_position": [0.0, 0.0, 0.0],
        }
        body = json.dumps({**good, **body})
    store.path.write_text(body)
    saved, why = store.restorable("sim", "c")
    assert saved is None and reason in why, why


def test_stage_ids_name_files_and_the_state_dir_follows_xdg(monkeypatch, tmp_path):
    assert check_stage_id("bench_2.x-1") == "bench_2.x-1"
    for bad in ("", "../up", "a/b", ".hidden", "x" * 101):
        with pytest.raises(ValueError, match="stage_id"):
            check_stage_id(bad)
    assert derive_stage_id("sim", "/microscope") == "sim_microscope"
    assert derive_stage_id("sim", "/") == "sim"
    assert check_stage_id(derive_stage_id("my.pkg:Stage", "/a/b"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "deepaf"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_state_dir().parts[-3:] == (".local", "state", "deepaf")
