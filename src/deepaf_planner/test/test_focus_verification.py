"""The scan's focus loop never hands back a blurred tile unflagged: predict, move, verify from
the capture, fall back to a classical search. On the in-process 20x virtual microscope
(SimMicroscope) with small captures (1014x760; the preview keeps the camera's sampling), the
shipped 20x model, and predictor stand-ins at the Microscope boundary; simulator truth
(`best_focus_z`) judges the result."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from deepaf.sim_regions import tissue_region
from deepaf_driver.sim import VirtualMicroscope
from deepaf_planner.journal import ScanJournal
from deepaf_planner.outputs import make_report
from deepaf_planner.report import ScanReport, completion_message
from deepaf_planner.scan_path import plan_grid
from deepaf_planner.scanner import Limits, Scanner, ScanRequest, survey_fields, validate_request
from deepaf_planner.sim_microscope import SimMicroscope

PROFILE, PROTOCOL = "20x", "lab_a_standard"
CAPTURE = (1014, 760)


@pytest.fixture(scope="module")
def predictor():
    from deepaf_focus.predictor import FocusPredictor

    return FocusPredictor.from_checkpoint(None, profile=PROFILE, num_threads=1)


def _scope() -> VirtualMicroscope:
    return VirtualMicroscope(PROFILE, PROTOCOL, slide_seed=0)


def _request(scope, sim, out, cols: int, rows: int, dz: float, **kw) -> ScanRequest:
    """A cols x rows all-tissue region; the first field starts `dz` from its true focus."""
    fov = (CAPTURE[0] * scope.pixel_size_m, CAPTURE[1] * scope.pixel_size_m)
    lo, hi = tissue_region(scope, fov, cols, rows)
    half_dof = scope.profile.depth_of_field_m / 2
    first = plan_grid(lo, hi, fov).fields[0]
    kw.setdefault("limits", sim.limits)
    kw.setdefault("stack_range", 8 * half_dof)
    kw.setdefault("bias_fields", 0)  # the bias check has its own test
    return ScanRequest(
        region_min=lo,
        region_max=hi,
        field_of_view=fov,
        pixel_size=scope.pixel_size_m,
        output_dir=out,
        half_dof=half_dof,
        refocus_tolerance=2 * half_dof,
        start_z=float(scope.best_focus_z(first.x, first.y)) + dz,
        **kw,
    )


class StandIn:
    """A predictor stand-in at the Microscope boundary: the real model runs (its timing and
    status), and `offset(true)` replaces its answer, given the true offset to focus (the
    simulator's truth), confidently (expected error 0.2 um)."""

    def __init__(self, sim: SimMicroscope, scope: VirtualMicroscope) -> None:
        self.sim, self.scope = sim, scope
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.sim, name)

    def offset(self, true: float) -> float:
        raise NotImplementedError

    def predict_focus(self, frame, focus_z):
        self.calls += 1
        decision = self.sim.predict_focus(frame, focus_z)
        x, y, _ = self.scope.stage.position
        true = float(self.scope.best_focus_z(x, y)) - self.scope.stage.actual_z_m
        return dataclasses.replace(
            decision, status="ok", offset_m=self.offset(true), expected_error_m=0.2e-6
        )


class WrongWay(StandIn):
    """Always points the wrong way, by at least 2 um, also on the capture the scan verifies
    with."""

    def offset(self, true: float) -> float:
        return -(true + math.copysign(2e-6, true))


class ShortFromAfar(StandIn):
    """Points the right way but only half as far when focus is more than 4 um away (the
    out-of-domain error grows with defocus), exact closer to focus."""

    def offset(self, true: float) -> float:
        return 0.5 * true if abs(true) > 4e-6 else true


class ShortOnPreviews(StandIn):
    """Points the right way but only half as far on previews; exact on captures."""

    def predict_focus(self, frame, focus_z):
        self.on_preview = frame.rgb.shape[0] == self.sim.preview_size[1]
        return super().predict_focus(frame, focus_z)

    def offset(self, true: float) -> float:
        return 0.5 * true if self.on_preview else true


class Biased(StandIn):
    """Consistently wrong by BIAS everywhere, the capture included (a stain the model never
    saw): its own re-prediction cannot catch it."""

    BIAS = 1.0e-6  # 1.7 half depths of field at 20x

    def offset(self, true: float) -> float:
        return true + self.BIAS


def _scan_with(kind: type[StandIn], predictor, out, cols: int, dz: float):
    """Scan cols x 1 tissue fields with a stand-in predictor; (request, tiles, stand-in)."""
    scope = _scope()
    stand_in = kind(SimMicroscope(scope, predictor, capture_size=CAPTURE), scope)
    req = _request(scope, stand_in, out, cols, 1, dz=dz)
    machine, tiles, _ = Scanner(stand_in, scope.best_focus_z).run(req)
    assert machine.state == "stitching", machine
    return req, tiles, stand_in


def _tissue(tiles):
    return [t for t in tiles if t.has_tissue]


def test_good_predictor_verifies_every_tile_from_its_capture(predictor, tmp_path):
    scope = _scope()
    sim = SimMicroscope(scope, predictor, capture_size=CAPTURE)
    req = _request(scope, sim, tmp_path / "scan", 3, 2, dz=2e-6)
    machine, tiles, _ = Scanner(sim, scope.best_focus_z).run(req)
    assert machine.state == "stitching", machine
    tissue = _tissue(tiles)
    assert len(tissue) == 6
    assert all(t.focus_quality == "ok" for t in tissue), [t.focus_check for t in tissue]
    assert all("verified: re-prediction" in t.focus_check for t in tissue)
    assert not any(t.refocused for t in tissue)
    assert all(abs(t.true_focus_error_m) <= req.half_dof for t in tissue), [
        t.true_focus_error_m for t in tissue
    ]
    assert np.mean([t.focus_images for t in tissue]) <= 1.3  # verifying costs no image
    report = make_report(req, tiles, 1.0, 1.0, complete=True)
    assert report.tiles_below_quality == 0 and report.to_dict()["tiles_below_quality"] == 0


def test_a_short_first_move_is_re_predicted_before_the_capture(predictor, tmp_path):
    """No verified focus on the slide yet: the first field's long move is checked from a
    preview at its z (the approach), so no capture is spent on a short one."""
    req, tiles, _ = _scan_with(ShortFromAfar, predictor, tmp_path / "scan", 2, dz=6e-6)
    first = _tissue(tiles)[0]  # starts 6 um off: the first move stops 3 um short
    assert not first.refocused and first.focus_check.startswith("verified"), first.focus_check
    assert first.focus_images == 3  # the preview, and two on the approach (3 um, then 0)
    assert abs(first.true_focus_error_m) <= req.half_dof, first.true_focus_error_m


def test_a_short_prediction_gets_a_second_shot_not_a_search(predictor, tmp_path):
    req, tiles, _ = _scan_with(ShortOnPreviews, predictor, tmp_path / "scan", 2, dz=8e-6)
    first = _tissue(tiles)[0]  # the approach leaves it 0.5 um short; the capture says so
    assert first.refocused and "second shot" in first.focus_check, first.focus_check
    assert "fallback" not in first.focus_check, first.focus_check
    assert first.focus_quality == "ok"
    assert first.focus_images == 5  # preview, 3 approach previews, the replaced capture
    assert abs(first.true_focus_error_m) <= req.half_dof, first.true_focus_error_m


def test_a_biased_model_is_measured_on_the_first_tiles_and_corrected(predictor, tmp_path):
    scope = _scope()
    biased = Biased(SimMicroscope(scope, predictor, capture_size=CAPTURE), scope)
    blind = _request(scope, biased, tmp_path / "blind", 4, 1, dz=2e-6)
    _, tiles, _ = Scanner(biased, scope.best_focus_z).run(blind)
    # the model's own check passes tiles a bias's width outside the depth of field
    blurred_ok = [
        t
        for t in _tissue(tiles)
        if t.focus_quality == "ok" and abs(t.true_focus_error_m) > blind.half_dof
    ]
    assert blurred_ok, [(t.true_focus_error_m, t.focus_check) for t in tiles]

    req = _request(scope, biased, tmp_path / "checked", 4, 1, dz=2e-6, bias_fields=2)
    machine, tiles, _ = Scanner(biased, scope.best_focus_z).run(req)
    assert machine.state == "stitching", machine
    tissue = _tissue(tiles)
    assert len(tissue) == 4
    checked, rest = tissue[:2], tissue[2:]
    for t in checked:  # searched, bias measured
        assert "bias check" in t.focus_check and "model bias -1." in t.focus_check, t.focus_check
        assert t.focus_images > 3
    assert checked[0].refocused  # recaptured at the search's peak (the second was corrected)
    for t in rest:  # corrected by the measured bias, one image each
        assert "bias check" not in t.focus_check and t.focus_images == 1, t.focus_check
        assert "before the slide's bias" in t.focus_check
    assert all(abs(t.true_focus_error_m) <= req.half_dof for t in tissue), [
        t.true_focus_error_m for t in tissue
    ]


def test_fields_with_little_tissue_are_no_bias_checks(predictor, tmp_path, monkeypatch):
    """A sharpness peak on a few specks of tissue measures no bias: such fields are passed
    over (here: every field, by a threshold above any tissue fraction)."""
    import deepaf_planner.scanner as scanner

    monkeypatch.setattr(scanner, "BIAS_MIN_TISSUE", 1.01)
    scope = _scope()
    sim = SimMicroscope(scope, predictor, capture_size=CAPTURE)
    req = _request(scope, sim, tmp_path / "scan", 2, 1, dz=0.5e-6, bias_fields=2)
    run = Scanner(sim, scope.best_focus_z)
    machine, tiles, _ = run.run(req)
    assert machine.state == "stitching", machine
    assert not any("bias check" in t.focus_check for t in tiles)
    assert run._bias_est.checks == 0 and run._bias == 0.0


def test_wrong_direction_predictor_is_caught_and_refocused_or_flagged(predictor, tmp_path):
    req, tiles, _ = _scan_with(WrongWay, predictor, tmp_path / "scan", 2, dz=1.5e-6)
    tissue = _tissue(tiles)
    assert len(tissue) == 2
    for t in tissue:
        assert t.refocused, t.focus_check  # the capture's re-prediction failed the tile
        assert "fallback search" in t.focus_check
        assert t.focus_images >= 10  # the search's images are counted
        in_focus = abs(t.true_focus_error_m) <= req.half_dof
        assert (t.focus_quality == "ok" and in_focus) or t.focus_quality == "low", (
            t.focus_quality,
            t.true_focus_error_m,
            t.focus_check,
        )
    assert sum(t.focus_quality == "ok" for t in tissue) >= 1  # the search does find focus


def test_focus_out_of_reach_is_flagged_low_and_the_message_says_so(predictor, tmp_path):
    scope = _scope()
    sim = SimMicroscope(scope, predictor, capture_size=CAPTURE)
    probe = _request(scope, sim, tmp_path / "probe", 2, 1, dz=0.0)
    z_focus = probe.start_z
    # soft limits that keep the focus 4..40 um above the slide's best focus: unreachable
    lim = sim.limits
    limits = Limits(lim.x, lim.y, (z_focus + 4e-6, z_focus + 40e-6))
    req = _request(scope, sim, tmp_path / "scan", 2, 1, dz=5e-6, limits=limits)
    machine, tiles, journal = Scanner(sim, scope.best_focus_z).run(req)
    assert machine.state == "stitching", machine
    tissue = _tissue(tiles)
    assert tissue and all(t.focus_quality == "low" for t in tissue), [
        (t.focus_quality, t.focus_check) for t in tissue
    ]
    assert all(abs(t.true_focus_error_m) > req.half_dof for t in tissue)  # truly blurred
    report = make_report(req, tiles, 1.0, 1.0, complete=True)
    assert report.tiles_below_quality == len(tissue)
    assert "below focus quality" in completion_message(report.tiles_below_quality)
    # the journal keeps the verdict, and a resume sees it
    again = ScanJournal.open(req.output_dir, journal.params, resume=True)
    assert [t.focus_quality for t in again.tiles() if t.has_tissue] == ["low"] * len(tissue)
    assert ScanReport(tiles=again.tiles()).tiles_below_quality == len(tissue)


def test_fixed_focus_is_verified_but_never_refocused(predictor, tmp_path):
    scope = _scope()
    sim = SimMicroscope(scope, predictor, capture_size=CAPTURE)
    sharp = _request(scope, sim, tmp_path / "a", 2, 1, dz=0.0, focus_method="fixed")
    _, tiles, _ = Scanner(sim, scope.best_focus_z).run(sharp)
    first, second = _tissue(tiles)
    assert first.focus_quality == "ok", first.focus_check  # started at its focus
    # the second field keeps the first one's z: flagged when that is clearly out of focus
    assert second.focus_quality == "low" or abs(second.true_focus_error_m) <= 1.5 * sharp.half_dof
    blurred = _request(scope, sim, tmp_path / "b", 2, 1, dz=4e-6, focus_method="fixed")
    _, tiles, _ = Scanner(sim, scope.best_focus_z).run(blurred)
    tissue = _tissue(tiles)
    assert [t.focus_quality for t in tissue] == ["low", "low"], [t.focus_check for t in tissue]
    assert all(not t.refocused and t.focus_images == 0 for t in tissue)
    assert all("re-prediction" in t.focus_check for t in tissue)
    blind = SimMicroscope(scope, None, capture_size=CAPTURE)  # nothing to verify with
    _, tiles, _ = Scanner(blind).run(
        _request(scope, blind, tmp_path / "c", 2, 1, dz=0.0, focus_method="fixed")
    )
    assert all(
        t.focus_quality == "low" and "no focus prediction" in t.focus_check for t in _tissue(tiles)
    )


# -- the baseline methods: fair stack, focus map, single shot ---------------------------
def _fair(scope, sim, out, cols, rows, dz, **kw) -> ScanRequest:
    req = _request(scope, sim, out, cols, rows, dz, **kw)
    req.stack_range = None  # the default: +- 3 DoF
    return req


def test_survey_fields_span_the_grid_corners_included():
    grid = plan_grid((0.0, 0.0), (10e-3, 7e-3), (1e-3, 1e-3), overlap=0.0)
    picked = survey_fields(grid.fields, 3)
    rows = sorted({f.row for f in picked})
    cols = sorted({f.col for f in picked})
    assert rows[0] == 0 and rows[-1] == grid.n_rows - 1
    assert cols[0] == 0 and cols[-1] == grid.n_cols - 1
    assert max(np.diff(rows)) <= 3 and max(np.diff(cols)) <= 3
    assert len(picked) < len(grid.fields) / 4  # sparse
    assert [f.index for f in picked] == sorted(f.index for f in picked)  # scan order
    single = plan_grid((0.0, 0.0), (1e-3, 1e-3), (1e-3, 1e-3)).fields
    assert survey_fields(single, 3) == single


def test_bad_survey_spacing_and_stack_range_are_refused(tmp_path, predictor):
    scope = _scope()
    sim = SimMicroscope(scope, predictor, capture_size=CAPTURE)
    for kw in ({"focus_map_spacing": 0}, {"stack_range": -1e-6}, {"stack_range": float("nan")}):
        req = _request(scope, sim, tmp_path / "x", 1, 1, 0.0, **kw)
        with pytest.raises(ValueError):
            validate_request(req)


def test_fair_stack_focuses_every_tile_within_a_few_images(predictor, tmp_path):
    scope = _scope()
    sim = SimMicroscope(scope, predictor, capture_size=CAPTURE)
    req = _fair(scope, sim, tmp_path / "scan", 3, 1, dz=2e-6, focus_method="stack")
    assert req.stack_half_range == pytest.approx(6 * req.half_dof)
    machine, tiles, _ = Scanner(sim, scope.best_focus_z).run(req)
    assert machine.state == "stitching", machine
    tissue = [t for t in tiles if t.has_tissue]
    assert len(tissue) == 3
    errors = [abs(t.true_focus_error_m) for t in tissue]
    assert all(e <= req.half_dof for e in errors), errors
    assert all(t.focus_quality == "ok" for t in tissue), [t.focus_check for t in tissue]
    # golden section over 6 DoF to a quarter DoF: about 8 images, far fewer than +- 4 DoF
    # at a quarter-DoF step (33)
    assert np.mean([t.focus_images for t in tissue]) <= 12


def test_focus_map_surveys_a_sparse_grid_then_captures_without_refocusing(predictor, tmp_path):
    scope = _scope()
    sim = SimMicroscope(scope, predictor, capture_size=CAPTURE)
    req = _fair(scope, sim, tmp_path / "scan", 3, 2, dz=1e-6, focus_method="focus_map")
    machine, tiles, _ = Scanner(sim, scope.best_focus_z).run(req)
    assert machine.state == "stitching", machine
    tissue = [t for t in tiles if t.has_tissue]
    assert len(tissue) == 6
    surveyed = {f.index for f in survey_fields(validate_request(req), 3)}
    assert surveyed == {0, 2, 3, 5}  # the corners of 3 x 2
    for t in tissue:  # only the survey fields carry focus images
        assert (t.focus_images > 0) == (t.index in surveyed), (t.index, t.focus_images)
        assert "focus point" in t.focus_check or t.index not in surveyed
        assert not t.refocused
    errors = [abs(t.true_focus_error_m) for t in tissue]
    assert np.mean([e <= 1.5 * req.half_dof for e in errors]) >= 5 / 6, errors


def test_single_shot_never_refocuses_but_flags_what_it_could_not_verify(predictor, tmp_path):
    scope = _scope()
    sim = SimMicroscope(scope, predictor, capture_size=CAPTURE)
    wrong = WrongWay(sim, scope)
    req = _request(scope, sim, tmp_path / "scan", 2, 1, dz=0.0, focus_method="deepaf_single")
    _, tiles, _ = Scanner(wrong, scope.best_focus_z).run(req)
    tissue = [t for t in tiles if t.has_tissue]
    assert tissue and not any(t.refocused for t in tissue)
    assert all(t.focus_images == 1 for t in tissue)
    blurred = [t for t in tissue if abs(t.true_focus_error_m) > req.half_dof]
    assert blurred and all(t.focus_quality == "low" for t in blurred)


def test_searches_are_kept_as_focal_stacks_the_trainer_reads(predictor, tmp_path):
    from deepaf_focus.data import read_dataset

    scope = _scope()
    sim = SimMicroscope(scope, predictor, capture_size=CAPTURE)
    req = _fair(
        scope, sim, tmp_path / "scan", 2, 1, dz=1e-6, focus_method="stack", save_search_stacks=True
    )
    req.profile = PROFILE
    _, tiles, _ = Scanner(sim, scope.best_focus_z).run(req)
    tissue = [t for t in tiles if t.has_tissue and t.focus_quality == "ok"]
    assert tissue and all("kept as focus_stacks/" in t.focus_check for t in tissue)
    records = read_dataset(tmp_path / "scan" / "focus_stacks")
    assert len(records) == sum(t.focus_images for t in tissue)  # every search image, labelled
    assert len({r.stack for r in records}) == len(tissue)
    for r in records:
        assert r.profile == PROFILE and r.pixel_size_m > scope.pixel_size_m  # preview pixels
        assert r.label_um == pytest.approx((r.best_focus_z_m - r.z_m) * 1e6, abs=1e-3)
        true = float(scope.best_focus_z(*_stack_xy(r)))
        assert abs(r.best_focus_z_m - true) <= req.half_dof  # the peak is a good label


def _stack_xy(record) -> tuple[float, float]:
    import json

    meta = json.loads((record.path.parent / "meta.json").read_text())
    return meta["x_m"], meta["y_m"]
