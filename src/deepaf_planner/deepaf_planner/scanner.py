"""The scan engine: serpentine fields, tissue detection, focusing, capture, resume (ROS-free).

`Scanner.run(request)` drives a :class:`Microscope` (the ROS adapter in `ros_microscope`, or
any object with the same methods) through the :class:`ScanMachine` states. Per field:

1. move x, y (and z to the focus surface's estimate once neighbours are known);
2. preview; tissue detection (`deepaf_focus.tissue`); empty glass is skipped;
3. focus by method: `deepaf` (one prediction, one z move; a prediction far from the focus
   surface is re-checked with a second preview at the surface's z), `stack` (golden-section
   search on Brenner through the same camera and stage) or `fixed`;
4. full-resolution capture; its sharpness is checked against neighbours and the preview and a
   failing tile is refocused once;
5. the tile is written atomically and journalled, so `resume` after a cancel or a crash skips
   finished tiles.

Times: `sim_seconds` add the durations the microscope reports for moves and exposures (the
virtual microscope's clock, or real durations on hardware); focus time per field counts the
previews, z moves and inference spent on focusing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from deepaf_focus.baselines import golden_section_search
from deepaf_focus.tissue import (
    PAPER_VALUE_THRESHOLD,
    TissueParams,
    field_tissue_score,
    mean_hsv_value,
    paper_field_has_tissue,
)

from deepaf_planner.focus_surface import FocusSurface
from deepaf_planner.journal import ScanJournal
from deepaf_planner.report import TileRecord
from deepaf_planner.scan_path import Field, plan_grid
from deepaf_planner.sharpness import assess_sharpness, normalized_sharpness
from deepaf_planner.state_machine import ScanMachine

FOCUS_METHODS = ("deepaf", "stack", "fixed")


class HardwareError(RuntimeError):
    """A stage, camera or focus server failed or did not answer (the message says which)."""


class ScanCanceled(RuntimeError):
    """The scan was cancelled on request."""


@dataclass
class Frame:
    """An image and the time its exposure cost [s]; `msg` keeps the ROS message if any."""

    rgb: np.ndarray
    seconds: float
    msg: Any = None


@dataclass
class Moved:
    """Pose reached (x, y, z) [m] and the time the move took [s]."""

    pose: tuple[float, float, float]
    seconds: float


@dataclass
class FocusDecision:
    """A single-shot prediction: status ok | no_tissue | invalid, offset [m], wall seconds,
    and the model's calibrated expected |error| [m] (NaN when unknown)."""

    status: str
    offset_m: float
    confidence: float
    seconds: float
    message: str = ""
    expected_error_m: float = math.nan


class Microscope(Protocol):
    """What the scan engine needs from the hardware."""

    def position(self) -> tuple[float, float, float]: ...
    def move_to(
        self, x: float | None = None, y: float | None = None, z: float | None = None
    ) -> Moved: ...
    def preview(self) -> Frame: ...
    def capture(self) -> Frame: ...
    def predict_focus(self, frame: Frame, focus_z: float) -> FocusDecision: ...


@dataclass
class Limits:
    """Soft limits of the stage [m]."""

    x: tuple[float, float]
    y: tuple[float, float]
    z: tuple[float, float]


@dataclass
class ScanRequest:
    """One scan: region [m], method, output and the optics the planning needs.

    Args:
        region_min / region_max: (x, y) corners of the region [m].
        field_of_view: (w, h) of one full-resolution capture [m].
        pixel_size: [m] per capture pixel at the sample.
        limits: soft limits the plan must stay inside.
        overlap: fraction of the field shared by neighbours.
        step: field step [m]; None derives it from the field of view and overlap.
        focus_method: deepaf | stack | fixed.
        start_z: focus_z of the first field [m]; None = current.
        output_dir: where tiles, journal, slide and report go.
        resume: continue the scan already in output_dir.
        keep_empty_fields: capture empty glass too.
        tissue_method: "colour" (saturation or optical density per pixel, default) or
            "paper" (mean HSV value below `value_threshold`, as in the DeepAf paper).
        stack_range: [m] half range of the `stack` search around the expected focus.
        half_dof: [m] half the depth of field (the within-DoF criterion).
        refocus_tolerance: [m] a prediction farther than this from the surface is re-checked.
    """

    region_min: tuple[float, float]
    region_max: tuple[float, float]
    field_of_view: tuple[float, float]
    pixel_size: float
    limits: Limits
    output_dir: Path
    overlap: float = 0.1
    step: float | None = None
    focus_method: str = "deepaf"
    start_z: float | None = None
    resume: bool = False
    keep_empty_fields: bool = False
    stack_range: float = 60e-6
    half_dof: float = 30e-6
    refocus_tolerance: float = 60e-6
    tissue: TissueParams = field(default_factory=TissueParams)
    tissue_method: str = "colour"
    value_threshold: float = PAPER_VALUE_THRESHOLD


@dataclass
class ScanProgress:
    """Progress published while scanning."""

    state: str
    tile_index: int
    tiles_total: int
    tiles_done: int
    tiles_tissue: int
    tiles_skipped: int
    elapsed: float
    eta: float
    message: str = ""


def scan_parameters(req: ScanRequest) -> dict[str, Any]:
    """The parameters that define a scan's tile set (stored in scan.json for resume)."""
    return {
        "region_min_m": list(req.region_min),
        "region_max_m": list(req.region_max),
        "field_of_view_m": list(req.field_of_view),
        "pixel_size_m": req.pixel_size,
        "overlap": req.overlap,
        "step_m": req.step,
        "focus_method": req.focus_method,
        "keep_empty_fields": req.keep_empty_fields,
    }


def validate_request(req: ScanRequest) -> list[Field]:
    """Plan the fields and check everything that can be checked before anything moves.

    Raises:
        ValueError: bad method, step, overlap, region or a field outside the soft limits.
    """
    if req.tissue_method not in ("colour", "paper"):
        raise ValueError(f"unknown tissue method {req.tissue_method!r}; use colour or paper")
    if req.focus_method not in FOCUS_METHODS:
        raise ValueError(f"unknown focus method {req.focus_method!r}; use one of {FOCUS_METHODS}")
    if req.step is not None and not (math.isfinite(req.step) and req.step > 0):
        raise ValueError(f"step must be positive, got {req.step} m")
    grid = plan_grid(req.region_min, req.region_max, req.field_of_view, req.overlap, req.step)
    (x0, x1), (y0, y1) = req.limits.x, req.limits.y
    for f in grid.fields:
        if not (x0 <= f.x <= x1 and y0 <= f.y <= y1):
            raise ValueError(
                f"field {f.index} at ({f.x * 1e3:.3f}, {f.y * 1e3:.3f}) mm is outside the stage "
                f"limits x [{x0 * 1e3:.3f}, {x1 * 1e3:.3f}] mm, y [{y0 * 1e3:.3f}, "
                f"{y1 * 1e3:.3f}] mm; shrink the region"
            )
    if req.start_z is not None and not req.limits.z[0] <= req.start_z <= req.limits.z[1]:
        raise ValueError(
            f"start_z {req.start_z * 1e6:.1f} um is outside the z limits "
            f"[{req.limits.z[0] * 1e6:.1f}, {req.limits.z[1] * 1e6:.1f}] um"
        )
    return grid.fields


class Scanner:
    """Runs scans on a microscope.

    Args:
        scope: the hardware (see :class:`Microscope`).
        truth: optional `best_focus_z(x, y)` (simulator ground truth) for the report.
        on_progress: called with a :class:`ScanProgress` on every state change and tile.
        on_tile: called with each finished :class:`TileRecord`.
        should_cancel: polled between steps; True cancels the scan.
    """

    def __init__(
        self,
        scope: Microscope,
        truth: Callable[[float, float], float] | None = None,
        on_progress: Callable[[ScanProgress], None] | None = None,
        on_tile: Callable[[TileRecord], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> None:
        self.scope = scope
        self._truth = truth
        self._on_progress = on_progress or (lambda p: None)
        self._on_tile = on_tile or (lambda t: None)
        self._should_cancel = should_cancel or (lambda: False)

    # ---------------------------------------------------------------------------------
    def run(self, req: ScanRequest) -> tuple[ScanMachine, list[TileRecord], ScanJournal]:
        """Scan; return the final machine, all tile results and the journal.

        Hardware failures and cancels raise nothing: the machine ends in `failed` or
        `canceled` and `self.error` holds the reason.

        Raises:
            ValueError: the request is invalid or the output directory holds another scan
                (nothing has moved).
            PermissionError: the output directory is not writable (nothing has moved).
        """
        self.error = ""
        self._t0 = time.monotonic()
        self._sim = 0.0
        self._status = {"tile_index": 0, "done": 0, "tissue": 0, "skipped": 0, "total": 0}
        machine = ScanMachine(on_change=lambda s: self._progress(s))
        machine.start()
        fields = validate_request(req)
        journal = ScanJournal.open(req.output_dir, scan_parameters(req), resume=req.resume)
        done = {t.index: t for t in journal.tiles()}
        self._status.update(
            total=len(fields),
            done=len(done),
            tissue=sum(t.has_tissue for t in done.values()),
            skipped=sum(not t.has_tissue for t in done.values()),
        )
        surface = FocusSurface()
        for t in done.values():
            if t.has_tissue:
                surface.add(t.x_m, t.y_m, t.z_m)
        results = [done[i] for i in sorted(done)]
        try:
            z = req.start_z if req.start_z is not None else self.scope.position()[2]
            for f in fields:
                if f.index in done:
                    continue
                self._check_cancel()
                self._status["tile_index"] = f.index
                machine.go_to_field()
                tile = self._field(machine, req, f, z, surface, results, journal)
                results.append(tile)
                journal.append(tile)
                self._status["done"] += 1
                self._status["tissue" if tile.has_tissue else "skipped"] += 1
                if tile.has_tissue:
                    surface.add(tile.x_m, tile.y_m, tile.z_m)
                    z = tile.z_m
                self._on_tile(tile)
                self._progress(machine.state)
            self._check_cancel()
            machine.all_fields_done()
        except ScanCanceled:
            self.error = "canceled on request"
            machine.cancel()
        except (HardwareError, OSError) as exc:
            self.error = str(exc)
            machine.fail()
        return machine, results, journal

    # ---------------------------------------------------------------------------------
    def _field(
        self,
        machine: ScanMachine,
        req: ScanRequest,
        f: Field,
        z_prev: float,
        surface: FocusSurface,
        results: list[TileRecord],
        journal: ScanJournal,
    ) -> TileRecord:
        """Process one field from arrival to journal record."""
        guess = surface.predict(f.x, f.y)
        z_start = guess[0] if guess is not None else z_prev
        z_start = float(np.clip(z_start, *req.limits.z))
        moved = self.scope.move_to(f.x, f.y, z_start)
        self._sim += moved.seconds
        machine.arrived()
        preview = self.scope.preview()
        self._sim += preview.seconds
        machine.previewed()
        if req.tissue_method == "paper":
            score = 1.0 - mean_hsv_value(preview.rgb)
            has_tissue = paper_field_has_tissue(preview.rgb, req.value_threshold)
        else:
            score = field_tissue_score(preview.rgb, req.tissue)
            has_tissue = score >= req.tissue.min_field_fraction
        base = dict(
            index=f.index,
            row=f.row,
            col=f.col,
            x_m=moved.pose[0],
            y_m=moved.pose[1],
            tissue_score=score,
            focus_method=req.focus_method,
        )
        if not has_tissue and not req.keep_empty_fields:
            return TileRecord(
                **base,
                z_m=moved.pose[2],
                has_tissue=False,
                predicted_offset_m=math.nan,
                focus_images=0,
                focus_time_s=0.0,
                refocused=False,
                sharpness=math.nan,
                image_path="",
                sim_seconds=moved.seconds + preview.seconds,
            )
        machine.tissue_found()
        sim_before = self._sim
        z, offset, images, focus_s = self._focus(req, f, moved.pose[2], preview, surface)
        machine.focused()
        self._check_cancel()
        tile = self.scope.capture()
        self._sim += tile.seconds
        work = preview.rgb.shape[1]  # compare capture and preview at the preview's sampling
        sharp = normalized_sharpness(tile.rgb, work_px=work)
        neighbours = [
            t.sharpness
            for t in results[-6:]
            if t.has_tissue and abs(t.row - f.row) <= 1 and abs(t.col - f.col) <= 1
        ]
        verdict = assess_sharpness(
            sharp, neighbours, normalized_sharpness(preview.rgb, work_px=work)
        )
        refocused = False
        if not verdict.ok and req.focus_method != "fixed":
            machine.refocus()
            refocused = True
            preview = self.scope.preview()
            self._sim += preview.seconds
            z2, offset2, images2, focus_s2 = self._focus(req, f, z, preview, surface)
            images += images2
            focus_s += focus_s2
            machine.focused()
            retry = self.scope.capture()
            self._sim += retry.seconds
            sharp2 = normalized_sharpness(retry.rgb, work_px=work)
            if sharp2 >= sharp:
                tile, sharp, z, offset = retry, sharp2, z2, offset2
        path = journal.write_tile_image(f.index, tile.rgb, f.row, f.col)
        truth_err = math.nan
        if self._truth is not None:
            truth_err = float(z - self._truth(moved.pose[0], moved.pose[1]))
        return TileRecord(
            **base,
            z_m=z,
            has_tissue=has_tissue,
            predicted_offset_m=offset,
            focus_images=images,
            focus_time_s=focus_s,
            refocused=refocused,
            sharpness=sharp,
            image_path=path,
            sim_seconds=moved.seconds + preview.seconds + self._sim - sim_before,
            true_focus_error_m=truth_err,
        )

    def _focus(
        self, req: ScanRequest, f: Field, z: float, preview: Frame, surface: FocusSurface
    ) -> tuple[float, float, int, float]:
        """Return (focus z, offset used, images used, focus seconds) and move there."""
        lo, hi = req.limits.z
        if req.focus_method == "fixed":
            return z, 0.0, 0, 0.0
        if req.focus_method == "stack":
            return self._stack_focus(req, z)
        decision = self.scope.predict_focus(preview, z)
        seconds = preview.seconds + decision.seconds
        images = 1
        if decision.status != "ok":
            if decision.status == "invalid":
                raise HardwareError(f"focus prediction invalid: {decision.message}")
            guess = surface.predict(f.x, f.y)  # too little tissue to predict: trust the surface
            target = guess[0] if guess is not None else z
            offset = math.nan
        else:
            offset = decision.offset_m
            target = z + offset
            if len(surface) >= 3 and surface.is_outlier(f.x, f.y, target, req.refocus_tolerance):
                guess = surface.predict(f.x, f.y)
                if guess is not None:  # re-check from the surface's estimate
                    moved = self.scope.move_to(z=float(np.clip(guess[0], lo, hi)))
                    self._sim += moved.seconds
                    second = self.scope.preview()
                    self._sim += second.seconds
                    check = self.scope.predict_focus(second, moved.pose[2])
                    images += 1
                    seconds += moved.seconds + second.seconds + check.seconds
                    if check.status == "ok":
                        target, offset = moved.pose[2] + check.offset_m, check.offset_m
        target = float(np.clip(target, lo, hi))
        moved = self.scope.move_to(z=target)
        self._sim += moved.seconds
        return moved.pose[2], offset, images, seconds + moved.seconds

    def _stack_focus(self, req: ScanRequest, z: float) -> tuple[float, float, int, float]:
        """Golden-section search of Brenner sharpness over z +- stack_range via the camera."""
        lo, hi = req.limits.z
        spent = [0.0]

        def acquire(zq: float) -> np.ndarray:
            self._check_cancel()
            moved = self.scope.move_to(z=zq)
            frame = self.scope.preview()
            spent[0] += moved.seconds + frame.seconds
            self._sim += moved.seconds + frame.seconds
            return frame.rgb

        z_lo, z_hi = max(lo, z - req.stack_range), min(hi, z + req.stack_range)
        result = golden_section_search(
            acquire, z_lo, z_hi, "brenner", tol_m=max(req.half_dof / 2, 0.05e-6)
        )
        moved = self.scope.move_to(z=result.z_m)
        self._sim += moved.seconds
        return moved.pose[2], result.z_m - z, result.images_used, spent[0] + moved.seconds

    # ---------------------------------------------------------------------------------
    def _check_cancel(self) -> None:
        if self._should_cancel():
            raise ScanCanceled()

    @property
    def sim_seconds(self) -> float:
        """Simulated (or hardware) seconds of motion and exposure so far."""
        return self._sim

    def _progress(self, state: str) -> None:
        s = self._status
        elapsed = time.monotonic() - getattr(self, "_t0", time.monotonic())
        new_done = max(s["done"], 0)
        left = s["total"] - new_done
        eta = elapsed / new_done * left if new_done else math.nan
        self._on_progress(
            ScanProgress(
                state,
                s["tile_index"],
                s["total"],
                s["done"],
                s["tissue"],
                s["skipped"],
                elapsed,
                eta,
                self.error,
            )
        )
