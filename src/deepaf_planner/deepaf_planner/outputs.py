"""A scan's outputs: the stitched slide (`slide.tiff`, or another of
:data:`~deepaf_planner.slide_formats.SLIDE_FORMATS`), `thumbnail.png`, `focus_map.png` and
`report.json`.

Written when every field is done (and again on resume), also for a scan that stopped early
(`write_partial_report`), so a cancelled scan leaves a consistent report of what it did.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from deepaf_planner.journal import ScanJournal
from deepaf_planner.live_stitch import LiveStitcher, stitch_scan
from deepaf_planner.report import ScanReport, TileRecord
from deepaf_planner.scan_path import plan_grid
from deepaf_planner.scanner import ScanRequest
from deepaf_planner.slide_formats import slide_format
from deepaf_planner.slide_writer import write_focus_map, write_thumbnail
from deepaf_planner.stitching import StitchTile

REPORT_FILE = "report.json"
THUMBNAIL_FILE = "thumbnail.png"
FOCUS_MAP_FILE = "focus_map.png"


def make_report(
    req: ScanRequest,
    tiles: list[TileRecord],
    sim_s: float,
    wall_s: float,
    complete: bool,
    message: str = "",
    stitch_s: float = math.nan,
    late_tiles: int = 0,
) -> ScanReport:
    """The report of a scan (complete or not)."""
    n_planned = len(
        plan_grid(req.region_min, req.region_max, req.field_of_view, req.overlap, req.step).fields
    )
    return ScanReport(
        tiles=sorted(tiles, key=lambda t: t.index),
        sim_seconds=sim_s,
        wall_seconds=wall_s,
        depth_of_field_m=2 * req.half_dof,
        tiles_planned=n_planned,
        focus_method=req.focus_method,
        complete=complete,
        message=message,
        stitch_seconds=stitch_s,
        stitch_late_tiles=late_tiles,
    )


def write_partial_report(
    req: ScanRequest, tiles: list[TileRecord], sim_s: float, wall_s: float, message: str
) -> Path:
    """Write report.json for a scan that stopped early (cancel or failure)."""
    path = Path(req.output_dir) / REPORT_FILE
    make_report(req, tiles, sim_s, wall_s, complete=False, message=message).write(path)
    return path


def finish_scan(
    req: ScanRequest,
    tiles: list[TileRecord],
    journal: ScanJournal,
    sim_s: float,
    wall_s: float,
    live: LiveStitcher | None = None,
) -> dict[str, Any]:
    """Stitch the captured tiles and write every output; return paths and totals.

    ``live``: the stitcher that ran during the scan (:class:`LiveStitcher`: only the file
    is left to write); ``None``, or one that failed: the tiles are fed again from disk
    (same slide). The slide's format is ``req.slide_format``. The returned
    ``stitch_final_s`` is the time from the last tile to the written slide, ``late_tiles``
    the tiles frozen where part of the slide was already written (their pixels there are
    missing; 0 unless a tile landed beyond the blending margin).

    Raises:
        ValueError: for an unknown slide format, before anything is written (nothing to
            stitch is not an error: the slide is then omitted).
        OSError: an output cannot be written.
    """
    fmt = slide_format(req.slide_format)
    out = Path(req.output_dir)
    grid = plan_grid(req.region_min, req.region_max, req.field_of_view, req.overlap, req.step)
    captured = [t for t in tiles if t.has_tissue and t.image_path]
    slide_path = ""
    final_s, late = math.nan, 0
    if captured:
        stitch_tiles = [
            StitchTile(t.index, t.row, t.col, t.x_m, t.y_m, out / t.image_path) for t in captured
        ]
        t0 = time.monotonic()
        result = stitch_scan(
            grid.fields,
            stitch_tiles,
            req.pixel_size,
            out / fmt.file_name,
            fmt.name,
            (grid.covered_min_xy, grid.covered_max_xy),
            live=live,
            config=req.stitch_config,
        )
        final_s = time.monotonic() - t0
        late = result.late_tiles
        write_thumbnail(out / THUMBNAIL_FILE, result.info.thumbnail)
        slide_path = str(result.info.path)
    panels = {"chosen focus z (um)": {(t.row, t.col): t.z_m * 1e6 for t in captured}}
    if any(math.isfinite(t.true_focus_error_m) for t in captured):
        panels["true focus error (um)"] = {
            (t.row, t.col): t.true_focus_error_m * 1e6 for t in captured
        }
    write_focus_map(
        out / FOCUS_MAP_FILE,
        grid.n_rows,
        grid.n_cols,
        panels,
        title=f"focus map ({req.focus_method})",
    )
    report = make_report(
        req, tiles, sim_s, wall_s, complete=True, stitch_s=final_s, late_tiles=late
    )
    report_path = report.write(out / REPORT_FILE)
    wd = report.within_dof_pct
    return {
        "slide_path": slide_path,
        "report_path": str(report_path),
        "tiles_total": report.tiles_total,
        "tiles_below_quality": report.tiles_below_quality,
        "within_dof_pct": None if math.isnan(wd) else wd,
        "stitch_final_s": final_s,
        "late_tiles": late,
    }
