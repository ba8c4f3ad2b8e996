"""`deepaf scan`'s argument checks: a typo in --region-mm never becomes a whole-stage scan."""

from __future__ import annotations

import pytest

from deepaf import scan_command


@pytest.mark.parametrize("region", ["6,6,6,6", "6,6,9,6", "6,6,6,8", "0,0,0,0"])
def test_zero_area_region_is_refused_before_anything_starts(region, capsys, monkeypatch):
    """ScanSlide reads region_min == region_max as "whole stage" (2,451 fields at 4x)."""

    def no_graph(*_args, **_kwargs):
        raise AssertionError("the graph must not start for a refused region")

    monkeypatch.setattr("deepaf.runner.GraphRunner", no_graph)
    with pytest.raises(SystemExit) as exc:
        scan_command.main(["--region-mm", region, "--out", "/nonexistent/never-written"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "zero area" in err and region in err
    assert "whole stage" in err and "0,0,15,15" in err


@pytest.mark.parametrize(
    ("region", "reason"),
    [
        ("nan,6,9,8", "not a finite number"),
        ("6,6,inf,8", "not a finite number"),
        ("6,6,9", "expected X0,Y0,X1,Y1"),
        ("a,b,c,d", "expected X0,Y0,X1,Y1"),
        ("9,8,6,6", "inverted"),
    ],
)
def test_malformed_region_is_refused(region, reason, capsys):
    with pytest.raises(SystemExit):
        scan_command.build_parser().parse_args(["--region-mm", region])
    assert reason in capsys.readouterr().err


def test_a_real_region_parses():
    args = scan_command.build_parser().parse_args(["--region-mm", "6,6,9,8"])
    assert args.region_mm == (6.0, 6.0, 9.0, 8.0)
    assert scan_command.build_parser().parse_args([]).region_mm is None  # the default region


def test_format_is_a_planner_parameter_and_tiff_stays_the_default(capsys, monkeypatch):
    from deepaf_planner.slide_formats import SLIDE_FORMATS

    assert scan_command.build_parser().parse_args([]).format == "tiff"
    with pytest.raises(SystemExit) as exc:
        scan_command.build_parser().parse_args(["--format", "tif"])
    assert exc.value.code == 2
    assert "'tiff', 'ome-tiff', 'dicom'" in capsys.readouterr().err  # the choices, listed
    seen = {}

    def graph(*_args, **kwargs):
        seen.update(kwargs["node_overrides"]["planner"])
        raise RuntimeError("stop before the graph starts")

    monkeypatch.setattr("deepaf.runner.GraphRunner", graph)
    for name in SLIDE_FORMATS:
        with pytest.raises(RuntimeError, match="stop before"):
            scan_command.main(["--region-mm", "6,6,9,8", "--format", name, "--out", "/nonexistent"])
        assert seen["slide_format"] == name
