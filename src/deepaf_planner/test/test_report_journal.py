"""report.json, the summary table and the resume journal (including a killed writer)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from deepaf_planner.journal import TILES_JOURNAL, ScanJournal, load_journal
from deepaf_planner.report import ScanReport, TileRecord, completion_message
from rich.console import Console

PARAMS = {"region_min": (0.0, 0.0), "region_max": (2e-3, 1e-3), "overlap": 0.1,
          "focus_method": "deepaf", "profile": "4x"}  # fmt: skip


def _record(i: int, tissue: bool = True, err: float = 0.5e-6, path: str = "") -> TileRecord:
    return TileRecord(
        index=i, row=0, col=i, x_m=i * 1e-3, y_m=0.0, z_m=10e-6, has_tissue=tissue,
        focus_method="deepaf" if tissue else "", predicted_offset_m=1e-6 if tissue else math.nan,
        focus_images=1 if tissue else 0, focus_time_s=0.2, sharpness=0.03 if tissue else math.nan,
        image_path=path, true_focus_error_m=err if tissue else math.nan,
    )  # fmt: skip


def test_report_json_keys_and_values(tmp_path: Path) -> None:
    report = ScanReport(
        tiles=[_record(0), _record(1, err=-3e-6), _record(2, tissue=False), _record(3)],
        sim_seconds=12.5, wall_seconds=3.25, depth_of_field_m=4e-6, focus_method="deepaf",
    )  # fmt: skip
    path = report.write(tmp_path / "report.json")
    d = json.loads(path.read_text())
    assert {"tiles_total", "tiles_tissue", "tiles_skipped", "within_dof_pct", "sim_seconds",
            "wall_seconds"} <= set(d)  # fmt: skip
    assert (d["tiles_total"], d["tiles_tissue"], d["tiles_skipped"]) == (4, 3, 1)
    assert d["within_dof_pct"] == pytest.approx(200 / 3)  # |-3 um| > 2 um: one of three out
    assert (d["sim_seconds"], d["wall_seconds"]) == (12.5, 3.25)
    tile = d["tiles"][2]
    assert set(tile) >= {"index", "row", "col", "x_m", "y_m", "z_m", "has_tissue",
                         "focus_method", "predicted_offset_m", "focus_images", "focus_time_s",
                         "refocused", "sharpness", "image_path", "true_focus_error_m"}  # fmt: skip
    assert tile["true_focus_error_m"] is None and tile["predicted_offset_m"] is None
    assert "NaN" not in path.read_text()
    back = ScanReport.read(path)
    assert [t.to_dict() for t in back.tiles] == [t.to_dict() for t in report.tiles]
    assert back.within_dof_pct == pytest.approx(report.within_dof_pct)


def test_hardware_report_has_null_truth_and_summary_prints() -> None:
    report = ScanReport(tiles=[_record(0, err=math.nan)], wall_seconds=1.0, complete=False,
                        message="canceled on request", tiles_planned=6)  # fmt: skip
    d = report.to_dict()
    assert d["within_dof_pct"] is None and d["sim_seconds"] is None
    assert d["tiles_planned"] == 6 and d["complete"] is False
    console = Console(record=True, width=100)
    report.print_summary(console, max_tiles=1)
    text = console.export_text()
    assert "tissue tiles" in text and "n/a" in text and "canceled on request" in text


def test_journal_round_trip_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "scan"
    j = ScanJournal.open(out, PARAMS)
    img = np.full((20, 30, 3), 200, np.uint8)
    rel = j.write_tile_image(0, img, row=0, col=0)
    j.append(_record(0, path=rel))
    j.append(_record(1, tissue=False))
    assert sorted(j.finished) == [0, 1] and j.is_finished(0) and not j.is_finished(2)
    assert [t.index for t in j.tiles()] == [0, 1]
    # a new process resumes: same parameters (tuples read back as lists)
    j2 = ScanJournal.open(out, dict(PARAMS), resume=True)
    assert sorted(j2.finished) == [0, 1]
    assert j2.finished[0] == j.finished[0]
    assert load_journal(out)[1].has_tissue is False


def test_killed_writer_leaves_no_counted_half_tile(tmp_path: Path) -> None:
    out = tmp_path / "scan"
    j = ScanJournal.open(out, PARAMS)
    j.append(_record(0, path=j.write_tile_image(0, np.zeros((8, 8, 3), np.uint8))))
    # killed mid-tile: an image temp file, no journal line
    (out / "tiles" / ".tile_00001_r000_c001.png.tmp").write_bytes(b"\x89PNG half")
    # killed mid-append: a truncated last line for tile 2
    with open(out / TILES_JOURNAL, "a") as fh:
        fh.write('{"index": 2, "row": 0, "col"')
    assert sorted(load_journal(out)) == [0]
    j2 = ScanJournal.open(out, PARAMS, resume=True)
    assert sorted(j2.finished) == [0]
    rel = j2.write_tile_image(1, np.zeros((8, 8, 3), np.uint8), row=0, col=1)
    j2.append(_record(1, path=rel))
    assert sorted(load_journal(out)) == [0, 1]
    lines = (out / TILES_JOURNAL).read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # the half line was cut, not appended to
    os.remove(out / rel)  # a journalled tile whose image vanished is redone too
    assert sorted(load_journal(out)) == [0]


def test_journal_rejects_other_scans_and_bad_records(tmp_path: Path) -> None:
    out = tmp_path / "scan"
    ScanJournal.open(out, PARAMS)
    with pytest.raises(ValueError, match=r"different scan \(overlap: 0.1 there, 0.2 now\)"):
        ScanJournal.open(out, {**PARAMS, "overlap": 0.2}, resume=True)
    with pytest.raises(ValueError, match="already holds a different scan"):
        ScanJournal.open(out, {**PARAMS, "focus_method": "stack"})
    with pytest.raises(ValueError, match="pass resume"):
        ScanJournal.open(out, PARAMS)
    j = ScanJournal.open(out, PARAMS, resume=True)
    with pytest.raises(ValueError, match="missing"):
        j.append(_record(3, path="tiles/nope.png"))
    with pytest.raises(ValueError, match="uint8"):
        j.write_tile_image(3, np.zeros((8, 8), np.uint8))
    stray = tmp_path / "stray"
    (stray / "tiles").mkdir(parents=True)
    (stray / "tiles" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown scan"):
        ScanJournal.open(stray, PARAMS)


def test_unwritable_output_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match="cannot create output directory"):
        ScanJournal.open(blocker / "scan", PARAMS)


def test_append_accepts_other_tile_objects(tmp_path: Path) -> None:
    """The planner's own per-tile result type journals as long as it has the fields."""

    @dataclass
    class Result:
        index: int
        row: int
        col: int
        x_m: float
        y_m: float
        z_m: float
        has_tissue: bool
        sim_seconds: float
        extra: str = "ignored"

    j = ScanJournal.open(tmp_path / "scan", PARAMS)
    rec = j.append(Result(5, 1, 2, 1e-3, 2e-3, 3e-6, False, 0.4))
    assert rec.index == 5 and rec.sim_seconds == 0.4 and math.isnan(rec.sharpness)
    assert load_journal(tmp_path / "scan")[5] == rec


def test_focus_quality_is_journalled_reported_and_old_journals_still_resume(tmp_path: Path) -> None:
    out = tmp_path / "scan"
    j = ScanJournal.open(out, PARAMS)
    img = np.full((20, 30, 3), 200, np.uint8)
    old = _record(0, path=j.write_tile_image(0, img)).to_dict()
    del old["focus_quality"], old["focus_check"]  # a journal line from before the check
    with open(out / TILES_JOURNAL, "a") as fh:
        fh.write(json.dumps(old) + "\n")
    low = dataclasses.replace(
        _record(1, path=j.write_tile_image(1, img, col=1)),
        focus_quality="low",
        focus_check="re-prediction +2.10 um (tolerance 0.89 um); fallback ...",
        refocused=True,
    )
    j2 = ScanJournal.open(out, PARAMS, resume=True)
    assert j2.finished[0].focus_quality == "" and not j2.finished[0].below_quality
    j2.append(low)
    j2.append(dataclasses.replace(_record(2, tissue=False)))
    tiles = ScanJournal.open(out, PARAMS, resume=True).tiles()
    assert [t.focus_quality for t in tiles] == ["", "low", ""]
    line = json.loads((out / TILES_JOURNAL).read_text().splitlines()[1])
    assert line["focus_quality"] == "low" and line["focus_check"].startswith("re-prediction")
    report = ScanReport(tiles=tiles, depth_of_field_m=4e-6, tiles_planned=3)
    d = json.loads(report.write(tmp_path / "report.json").read_text())
    assert d["tiles_below_quality"] == 1 and d["tiles"][1]["focus_quality"] == "low"
    assert ScanReport.read(tmp_path / "report.json").tiles_below_quality == 1
    console = Console(record=True, width=100)
    report.print_summary(console, max_tiles=3)
    text = console.export_text()
    assert "below focus quality" in text and "complete, 1 tiles below focus quality" in text
    assert "focus low" in text
    assert completion_message(0) == "complete"
    assert completion_message(3) == "complete, 3 tiles below focus quality"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("5", "not int 5"),
        ('{"index": "two", "row": 0, "col": 0, "x_m": 0, "y_m": 0, "z_m": 0, '
         '"has_tissue": false}', "index must be an int, got 'two'"),
        ("[1, 2]", "not list"),
        ("{not json", "Expecting"),
    ],
)  # fmt: skip
def test_corrupt_journal_line_fails_resume_naming_the_line(tmp_path: Path, line, reason) -> None:
    out = tmp_path / "scan"
    j = ScanJournal.open(out, PARAMS)
    j.append(_record(0, tissue=False))
    with open(out / TILES_JOURNAL, "a") as fh:  # a finished (newline-ended) corrupt line
        fh.write(line + "\n")
    with pytest.raises(ValueError, match=rf"tiles\.jsonl:2 is not a tile record \(.*{reason}"):
        ScanJournal.open(out, PARAMS, resume=True)
    with pytest.raises(ValueError, match="remove the line"):
        load_journal(out)


def test_journal_refuses_images_outside_the_scan_directory(tmp_path: Path) -> None:
    out = tmp_path / "scan"
    j = ScanJournal.open(out, PARAMS)
    j.append(_record(0, path=j.write_tile_image(0, np.zeros((8, 8, 3), np.uint8))))
    foreign = tmp_path / "foreign.png"
    foreign.write_bytes((out / "tiles" / "tile_00000_r000_c000.png").read_bytes())
    (out / "tiles" / "link.png").symlink_to(foreign)
    for i, path in enumerate(["../foreign.png", str(foreign), "tiles/link.png"], start=1):
        with pytest.raises(ValueError, match="outside the scan directory"):
            j.append(_record(i, path=path))
        journal = out / TILES_JOURNAL
        kept = journal.read_text()
        with open(journal, "a") as fh:  # a tampered journal names it anyway
            fh.write(json.dumps(_record(i, path=path).to_dict()) + "\n")
        with pytest.raises(ValueError, match=r"tiles\.jsonl:2 names the image .*outside"):
            ScanJournal.open(out, PARAMS, resume=True)
        journal.write_text(kept)
    assert sorted(ScanJournal.open(out, PARAMS, resume=True).finished) == [0]
