"""The scan engine on the in-process virtual microscope: states, tissue skipping, classical
focusing, resume after a cancel, and validation before anything moves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from deepaf_driver.sim import VirtualMicroscope
from deepaf_planner.outputs import finish_scan
from deepaf_planner.scanner import Scanner, ScanRequest, validate_request
from deepaf_planner.sim_microscope import SimMicroscope
from deepaf_planner.state_machine import ScanMachine
from statemachine.exceptions import TransitionNotAllowed

CAPTURE = (640, 480)


def _edge_request(scope: VirtualMicroscope, sim: SimMicroscope, out, **kw) -> ScanRequest:
    from deepaf.sim_regions import edge_region

    fov = (CAPTURE[0] * scope.pixel_size_m, CAPTURE[1] * scope.pixel_size_m)
    lo, hi = edge_region(scope, fov, cols=3, rows=2, min_empty=1)
    return ScanRequest(
        region_min=lo,
        region_max=hi,
        field_of_view=fov,
        pixel_size=scope.pixel_size_m,
        limits=sim.limits,
        output_dir=out,
        half_dof=scope.profile.depth_of_field_m / 2,
        stack_range=4 * scope.profile.depth_of_field_m,
        **kw,
    )


@pytest.fixture
def sim():
    scope = VirtualMicroscope("4x", "lab_a_standard", slide_seed=0)
    return scope, SimMicroscope(scope, capture_size=CAPTURE)


def test_state_machine_allows_only_the_scan_order():
    seen: list[str] = []
    m = ScanMachine(seen.append)
    m.start()
    with pytest.raises(TransitionNotAllowed):
        m.focused()  # cannot capture before arriving, previewing and detecting
    m.go_to_field()
    m.arrived()
    m.previewed()
    m.tissue_found()
    m.focused()
    m.refocus()
    m.focused()
    m.all_fields_done()
    m.stitched()
    assert seen[:3] == ["idle", "planning", "moving"] and seen[-1] == "done"
    assert m.finished
    with pytest.raises(TransitionNotAllowed):
        m.cancel()  # nothing to cancel once done


def test_stack_focus_scan_skips_glass_and_lands_in_focus(sim, tmp_path):
    scope, scope_sim = sim
    truth = scope.best_focus_z
    req = _edge_request(scope, scope_sim, tmp_path / "scan", focus_method="stack", start_z=50e-6)
    states: list[str] = []
    machine, tiles, journal = Scanner(
        scope_sim, truth, on_progress=lambda p: states.append(p.state)
    ).run(req)
    assert machine.state == "stitching", machine
    assert {"moving", "previewing", "detecting", "focusing", "capturing"} <= set(states)
    tissue = [t for t in tiles if t.has_tissue]
    assert tissue and len(tissue) < len(tiles) == 6
    half_dof = scope.profile.depth_of_field_m / 2
    assert all(abs(t.true_focus_error_m) <= half_dof for t in tissue), [
        t.true_focus_error_m for t in tissue
    ]
    assert all(t.focus_images >= 5 for t in tissue)  # a search costs many images
    assert all(t.focus_quality == "ok" and "peak at" in t.focus_check for t in tissue)
    assert all(t.focus_quality == "" for t in tiles if not t.has_tissue)
    out = finish_scan(req, tiles, journal, 1.0, 1.0)
    report = json.loads(Path(out["report_path"]).read_text())
    assert report["within_dof_pct"] == 100.0
    assert report["tiles_tissue"] == len(tissue) and report["tiles_below_quality"] == 0


def test_cancel_then_resume_redoes_nothing(sim, tmp_path):
    scope, scope_sim = sim
    req = _edge_request(scope, scope_sim, tmp_path / "scan", focus_method="fixed",
                        stitch_cache_mb=64)  # fmt: skip
    done: list[int] = []
    scanner = Scanner(
        scope_sim, on_tile=lambda t: done.append(t.index), should_cancel=lambda: len(done) >= 2
    )
    machine, tiles, _ = scanner.run(req)
    assert machine.state == "canceled" and len(tiles) == 2
    req.resume = True
    visited: list[int] = []
    machine, tiles, _ = Scanner(scope_sim, on_tile=lambda t: visited.append(t.index)).run(req)
    assert machine.state == "stitching"
    assert visited == [2, 3, 4, 5]
    assert [t.index for t in tiles] == list(range(6))


def test_bad_requests_fail_before_anything_moves(sim, tmp_path):
    scope, scope_sim = sim
    good = _edge_request(scope, scope_sim, tmp_path / "a", focus_method="fixed")
    before = scope_sim.position()
    cases = {
        "outside the stage limits": dict(region_min=(-0.01, 0.0), region_max=(0.002, 0.002)),
        "step must be positive": dict(step=-1e-4),
        "unknown focus method": dict(focus_method="autofocus"),
        "overlap": dict(overlap=0.7),
        "start_z": dict(start_z=1.0),
    }
    for reason, change in cases.items():
        req = ScanRequest(**{**good.__dict__, **change})
        with pytest.raises(ValueError, match=reason):
            Scanner(scope_sim).run(req)
    assert scope_sim.position() == before
    Scanner(scope_sim).run(good)
    other = ScanRequest(**{**good.__dict__, "overlap": 0.2})
    with pytest.raises(ValueError, match="different scan"):
        validate_request(other) and Scanner(scope_sim).run(other)
    assert not math.isnan(scope_sim.position()[0])


def test_paper_tissue_test_agrees_on_clear_fields(sim, tmp_path):
    from deepaf.sim_regions import field_tissue_fraction

    scope, scope_sim = sim
    found = {}
    for method in ("colour", "paper"):
        req = _edge_request(
            scope, scope_sim, tmp_path / method, focus_method="fixed", tissue_method=method
        )
        _, tiles, _ = Scanner(scope_sim).run(req)
        found[method] = {t.index: t.has_tissue for t in tiles}
        fov = req.field_of_view
        clear = {t.index: field_tissue_fraction(scope, t.x_m, t.y_m, fov) for t in tiles}
    for index, fraction in clear.items():
        if fraction >= 0.3 or fraction == 0.0:
            assert found["paper"][index] == found["colour"][index] == (fraction > 0), index
    with pytest.raises(ValueError, match="tissue method"):
        Scanner(scope_sim).run(ScanRequest(**{**req.__dict__, "tissue_method": "guess"}))


def test_a_slide_stitched_during_a_resumed_scan_equals_one_stitched_from_disk(sim, tmp_path):
    """Stitching runs during the scan; a cancel and a resume feed the finished tiles again
    from disk, so the slide equals one made from every tile at the end."""
    import numpy as np
    import tifffile

    scope, scope_sim = sim
    req = _edge_request(scope, scope_sim, tmp_path / "scan", focus_method="fixed",
                        stitch_cache_mb=64)  # fmt: skip
    done: list[int] = []
    first = Scanner(
        scope_sim, on_tile=lambda t: done.append(t.index), should_cancel=lambda: len(done) >= 3
    )
    machine, _, _ = first.run(req)
    assert machine.state == "canceled"
    first.live.close()
    req.resume = True
    scanner = Scanner(scope_sim)
    machine, tiles, journal = scanner.run(req)
    assert machine.state == "stitching"
    assert scanner.live._config.cache_bytes == 64 << 20  # the planner's stitch_cache_mb
    out = finish_scan(req, tiles, journal, 1.0, 1.0, live=scanner.live)
    scanner.live.close()
    assert not scanner.live.error and scanner.live.tiles == sum(t.has_tissue for t in tiles)
    with_live = tifffile.imread(req.output_dir / "slide.tiff", level=0)
    finish_scan(req, tiles, journal, 1.0, 1.0)  # every tile fed again from disk
    full = tifffile.imread(req.output_dir / "slide.tiff", level=0)
    np.testing.assert_array_equal(with_live, full)
    assert out["stitch_final_s"] >= 0
