"""Whole-slide scans: the overview sweep's grid, the tissue box it derives, and a whole-slide
scan on the in-process virtual microscope that finds the tissue and resumes with the same box."""

from __future__ import annotations

import pytest
from deepaf_driver.sim import VirtualMicroscope
from deepaf_planner.overview import sweep_points, tissue_box
from deepaf_planner.scanner import Scanner, ScanRequest
from deepaf_planner.sim_microscope import SimMicroscope

CAPTURE = (640, 480)


def test_sweep_is_a_serpentine_from_the_bottom_right_covering_the_region():
    pts = sweep_points(((0.0, 0.0), (1.0, 0.5)), (0.3, 0.2))
    assert len(pts) == 4 * 3
    assert pts[0] == pytest.approx((0.875, 0.5 / 6))  # highest x, lowest y
    assert [p[0] for p in pts[:4]] == sorted((p[0] for p in pts[:4]), reverse=True)
    assert [p[0] for p in pts[4:8]] == sorted(p[0] for p in pts[4:8])  # back the other way
    with pytest.raises(ValueError, match="area"):
        sweep_points(((0.0, 0.0), (0.0, 1.0)), (0.1, 0.1))
    with pytest.raises(ValueError, match="positive"):
        sweep_points(((0.0, 0.0), (1.0, 1.0)), (0.0, 0.1))


def test_tissue_box_grows_to_the_neighbours_views_and_stays_in_the_region():
    region = ((0.0, 0.0), (10.0, 10.0))
    grid = [(x + 0.5, y + 0.5) for y in range(0, 10, 2) for x in range(0, 10, 2)]
    hits = {(4.5, 4.5), (6.5, 4.5)}
    pts = [(x, y, (x, y) in hits) for x, y in grid]
    (x0, y0), (x1, y1) = tissue_box(pts, region, view=(1.0, 1.0))
    # spacing 2, view 1: tissue seen at 4.5 can reach 1.5 farther, to where 2.5's view starts
    assert (x0, y0, x1, y1) == pytest.approx((3.0, 3.0, 8.0, 6.0))
    edge = [(x, y, x == 0.5) for x, y in grid]
    assert tissue_box(edge, region, (1.0, 1.0))[0][0] == 0.0  # clipped to the region
    assert tissue_box([(x, y, False) for x, y in grid], region, (1.0, 1.0)) is None


def _whole_slide_request(scope, sim, out, region, **kw) -> ScanRequest:
    fov = (CAPTURE[0] * scope.pixel_size_m, CAPTURE[1] * scope.pixel_size_m)
    return ScanRequest(
        region_min=region[0],
        region_max=region[1],
        field_of_view=fov,
        pixel_size=scope.pixel_size_m,
        limits=sim.limits,
        output_dir=out,
        half_dof=scope.profile.depth_of_field_m / 2,
        focus_method="fixed",
        whole_slide=True,
        overview_step_fields=1.5,
        **kw,
    )


def test_whole_slide_scan_finds_the_tissue_and_a_resume_keeps_its_box(tmp_path):
    from deepaf.sim_regions import edge_region, field_tissue_fraction

    scope = VirtualMicroscope("4x", "lab_a_standard", slide_seed=0)
    sim = SimMicroscope(scope, capture_size=CAPTURE)
    fov = (CAPTURE[0] * scope.pixel_size_m, CAPTURE[1] * scope.pixel_size_m)
    # a window around the tissue's edge: some of it glass, some tissue
    (ex0, ey0), (ex1, ey1) = edge_region(scope, fov, cols=3, rows=3, min_empty=3)
    pad = (2 * fov[0], 2 * fov[1])
    region = ((ex0 - pad[0], ey0 - pad[1]), (ex1 + pad[0], ey1 + pad[1]))
    req = _whole_slide_request(scope, sim, tmp_path / "scan", region)
    done: list[int] = []
    first = Scanner(
        sim, on_tile=lambda t: done.append(t.index), should_cancel=lambda: len(done) >= 2
    )
    machine, _, _ = first.run(req)
    assert machine.state == "canceled"
    ov = first.overview
    assert ov is not None and ov.region is not None and any(p[2] for p in ov.points)
    assert not all(p[2] for p in ov.points)  # glass was seen too
    (bx0, by0), (bx1, by1) = ov.region
    area = (bx1 - bx0) * (by1 - by0)
    full = (region[1][0] - region[0][0]) * (region[1][1] - region[0][1])
    assert area < 0.95 * full  # the scan covers less than the swept region
    for x, y, hit in ov.points:  # every point that saw tissue lies in the box
        if hit:
            assert bx0 <= x <= bx1 and by0 <= y <= by1
    first.live.close()
    again = _whole_slide_request(scope, sim, tmp_path / "scan", region, resume=True)
    scanner = Scanner(sim)
    machine, tiles, _ = scanner.run(again)
    scanner.live.close()
    assert machine.state == "stitching" and scanner.overview is None  # no second sweep
    assert (again.region_min, again.region_max) == ov.region
    tissue = [t for t in tiles if t.has_tissue]
    assert tissue and all(
        field_tissue_fraction(scope, t.x_m, t.y_m, fov) > 0 for t in tissue
    )  # truth agrees


def test_whole_slide_scan_of_bare_glass_fails_with_a_reason(tmp_path):
    scope = VirtualMicroscope("4x", "lab_a_standard", slide_seed=0)
    sim = SimMicroscope(scope, capture_size=CAPTURE)
    fov = (CAPTURE[0] * scope.pixel_size_m, CAPTURE[1] * scope.pixel_size_m)
    corner = ((0.2e-3, 0.2e-3), (0.2e-3 + 3 * fov[0], 0.2e-3 + 3 * fov[1]))  # slide margin
    scanner = Scanner(sim)
    machine, tiles, journal = scanner.run(_whole_slide_request(scope, sim, tmp_path / "g", corner))
    assert machine.state == "failed" and tiles == [] and journal is None
    assert "no tissue" in scanner.error and "previews" in scanner.error
