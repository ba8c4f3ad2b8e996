"""The scan engine: serpentine fields, tissue detection, focusing, capture, resume (ROS-free).

`Scanner.run(request)` drives a :class:`Microscope` (the ROS adapter in `ros_microscope`, or
any object with the same methods) through the :class:`ScanMachine` states. Per field:

1. move x, y, and z to the focus surface's estimate (the robust fit through the tiles
   already verified; the previous tile's z until there are some);
2. preview; tissue detection (`deepaf_focus.tissue`); empty glass is skipped;
3. focus by method:

   * `deepaf` (the verified loop, default): predict the offset from the preview and move z
     once. A prediction the model itself does not trust (calibrated expected error >
     `max_expected_error`) goes straight to the fallback; one far from the focus surface is
     re-checked with a preview at its z; before the slide has a verified focus (its first
     tissue fields) a move larger than the verify tolerance is re-predicted from a preview
     at its z, up to 3 times (the approach). The first `bias_fields` verified tiles are
     confirmed by a +- 1 DoF search: a model that never saw this stain or microscope can be
     biased, and the re-prediction on the capture shares the bias, so only a measurement
     independent of the model finds it; the median bias then corrects every later
     prediction and re-prediction of the scan (a resumed scan measures it again).
   * `deepaf_single`: the paper's single shot: predict, move once, capture; the capture is
     verified for its verdict but never refocused.
   * `stack`: golden-section search on Brenner over the surface estimate +- `stack_range`
     (+- 3 DoF by default) to a quarter DoF, moving on past an end that holds the peak.
   * `focus_map`: what commercial scanners do: before the scan, the same search at a sparse
     grid of survey fields (every `focus_map_spacing`-th row and column, corners included);
     a robust surface through them; then every field is captured at the surface's z without
     refocusing. The survey's images and time are charged to the survey fields' tiles.
   * `fixed`: keep the starting z.

4. full-resolution capture, VERIFIED from the capture itself (no extra exposure): the focus
   prediction re-run on it at the preview's pixel sampling must be within
   `verify_tolerance` of zero, after a move of more than 2 half DoF it must be sharper than
   the preview (otherwise not much blurrier), and it must not be far less sharp than its
   verified neighbours. For `deepaf`, a check that failed only on a re-prediction of at
   most 6 half DoF earns a SECOND SHOT: move by the re-prediction (made close to focus,
   where the model is most accurate) and capture again, verified the same way. Any other
   failed check, or a failed second shot, starts the FALLBACK: a golden-section
   search on Brenner over +- 3 DoF around the prediction, the surface estimate and the
   re-prediction (at most +- 30 half DoF, inside the soft limits), to a quarter DoF, with
   both ends imaged to prove an interior peak; then the tile is recaptured;
5. every tissue tile gets a verdict, `focus_quality` "ok" (verified: the check passed, or
   the search found a clear interior peak; for `stack` an interior peak) or "low" (it could
   not be verified: the tile may be blurred; `fixed` tiles that fail the check), and a
   human-readable `focus_check`. Low tiles do not feed the focus surface;
6. the tile is written atomically and journalled, so `resume` after a cancel or a crash skips
   finished tiles.

Times: `sim_seconds` add the durations the microscope reports for moves and exposures (the
virtual microscope's clock, or real durations on hardware); focus time per field counts the
previews, z moves and inference spent on focusing (the verifying re-prediction included; a
capture discarded by the fallback counts as a focus image and its exposure as focus time).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from deepaf_driver.profiles import half_dof_m
from deepaf_focus.baselines import brenner, golden_section_search
from deepaf_focus.tissue import (
    PAPER_VALUE_THRESHOLD,
    TissueParams,
    field_tissue_score,
    mean_hsv_value,
    paper_field_has_tissue,
)

from deepaf_planner.focus_surface import FocusSurface
from deepaf_planner.journal import ScanJournal, stored_parameters
from deepaf_planner.live_stitch import LiveStitcher
from deepaf_planner.overview import Overview, sweep
from deepaf_planner.report import FOCUS_QUALITY_LOW, FOCUS_QUALITY_OK, TileRecord
from deepaf_planner.scan_path import Field, Limits, check_within_limits, plan_grid
from deepaf_planner.search_stacks import SearchStackWriter
from deepaf_planner.sharpness import assess_sharpness, normalized_sharpness, resample_to_width
from deepaf_planner.slide_formats import DEFAULT_SLIDE_FORMAT, slide_format
from deepaf_planner.state_machine import ScanMachine
from deepaf_planner.stitching import STITCH_CONFIG, StitchConfig

FOCUS_METHODS = ("deepaf", "deepaf_single", "stack", "focus_map", "fixed")
PREDICTING_METHODS = ("deepaf", "deepaf_single")  # need the focus server
SEARCH_STACKS_DIR = "focus_stacks"  # save_search_stacks: output_dir/focus_stacks

# Focus verification and fallback, in half depths of field (ScanRequest.half_dof) or ratios.
VERIFY_TOLERANCE_HDOF = 1.0  # |re-prediction from the capture| of a tile verified "ok"
# ... and of a deepaf capture kept without a second shot: the re-prediction errs by ~0.2-0.25
# um (sd) at 20x, so accepting a whole half DoF at once let tiles ~0.9 um off pass
REFINE_TOLERANCE_HDOF = 0.6
SECOND_SHOT_MAX_HDOF = 6.0  # a larger re-prediction goes straight to the search
MAX_EXPECTED_ERROR_HDOF = 5.0  # a prediction expected to be off by more is not confident
SHARPEN_MOVE_HDOF = 2.0  # a focus move larger than this must sharpen the image
SEARCH_MARGIN_HDOF = 6.0  # the fallback searches +- 3 DoF around each focus candidate
SEARCH_MAX_HALF_WIDTH_HDOF = 30.0  # ... but at most this far from the field's start
PREVIEW_MARGIN = 0.92  # a capture below this fraction of its preview's sharpness failed
# ... or below this fraction of its verified neighbours' median (tissue varies: in-focus 20x
# tiles measured down to 0.37 of their neighbours', so only gross blur is caught this way)
NEIGHBOUR_MIN_RATIO = 0.3
PEAK_CONTRAST = 1.15  # a search peak must be this much sharper than the interval's ends
SEARCH_EXTENSIONS = 2  # times a search whose peak is at an end moves on past it
APPROACH_STEPS = 3  # previews re-predicting a move made before the slide has a verified focus
BIAS_MIN_TISSUE = 0.3  # tissue fraction a field needs to be a bias check (colour test's scale)
SURVEY_EXTENSIONS = 6  # ... for a focus-map survey point, which has no neighbours to start from


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
    """What the scan engine needs from the hardware.

    An optional `can_predict() -> bool` says whether `predict_focus` is available; without
    it the scanner assumes it is (it is only asked for the `fixed` method's verification).
    """

    def position(self) -> tuple[float, float, float]: ...
    def move_to(
        self, x: float | None = None, y: float | None = None, z: float | None = None
    ) -> Moved: ...
    def preview(self) -> Frame: ...
    def capture(self) -> Frame: ...
    def predict_focus(self, frame: Frame, focus_z: float) -> FocusDecision: ...


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
        focus_method: one of FOCUS_METHODS (see the module docstring).
        start_z: focus_z of the first field [m]; None = current.
        output_dir: where tiles, journal, slide and report go.
        resume: continue the scan already in output_dir.
        keep_empty_fields: capture empty glass too.
        tissue_method: "colour" (saturation or optical density per pixel, default) or
            "paper" (mean HSV value below `value_threshold`, as in the DeepAf paper).
        stack_range: [m] half range of the `stack` (and `focus_map` survey) search around
            the expected focus; None = 6 half_dof (+- 3 DoF).
        focus_map_spacing: `focus_map` surveys every this many rows and columns.
        bias_fields: `deepaf` confirms this many verified tiles with a short classical
            search, to learn the model's focus bias on this slide (0: trust the model).
        save_search_stacks: keep every classical search with a trusted peak as a focal
            stack (dataset format) in output_dir/focus_stacks, for `./deepaf calibrate`.
        profile: optics profile name, recorded in those stacks.
        half_dof: [m] half the depth of field (the within-DoF criterion).
        refocus_tolerance: [m] a prediction farther than this from the surface is re-checked.
        verify_tolerance: [m] the largest |re-prediction| on the capture that verifies its
            focus; None = 1 half_dof (`deepaf` keeps its first capture only within 0.6
            half_dof; a larger one, up to 6 half_dof, earns one second
            shot at the re-predicted z before the search).
        max_expected_error: [m] a prediction whose calibrated expected error is larger is
            not trusted (straight to the classical fallback); None = 5 half_dof.
        whole_slide: sweep the region with previews first (see :mod:`overview`) and scan
            only the tissue's bounding box; a resumed scan keeps the box it found.
        overview_step_fields: the sweep's spacing, in fields of view.
        slide_format: the slide's format, a name in ``SLIDE_FORMATS``; the slide is
            stitched into it while the scan runs (:mod:`live_stitch`).
        stitch_cache_mb: decoded tiles kept in memory while their part of the slide
            awaits its blend (evicted ones are read again from their PNG).
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
    stack_range: float | None = None
    focus_map_spacing: int = 3
    bias_fields: int = 2
    save_search_stacks: bool = False
    profile: str = "unknown"
    half_dof: float = half_dof_m("4x")
    refocus_tolerance: float = 60e-6
    verify_tolerance: float | None = None
    max_expected_error: float | None = None
    whole_slide: bool = False
    overview_step_fields: float = 2.0
    slide_format: str = DEFAULT_SLIDE_FORMAT
    stitch_cache_mb: int = STITCH_CONFIG.cache_bytes >> 20
    tissue: TissueParams = field(default_factory=TissueParams)
    tissue_method: str = "colour"
    value_threshold: float = PAPER_VALUE_THRESHOLD

    @property
    def stitch_config(self) -> StitchConfig:
        """The stitching settings of this scan."""
        return dataclasses.replace(STITCH_CONFIG, cache_bytes=max(1, self.stitch_cache_mb) << 20)

    @property
    def verify_tol(self) -> float:
        """[m] |re-prediction| accepted as in focus."""
        if self.verify_tolerance is not None:
            return self.verify_tolerance
        return VERIFY_TOLERANCE_HDOF * self.half_dof

    @property
    def refine_tol(self) -> float:
        """[m] |re-prediction| at which `deepaf` keeps its first capture (above: second shot)."""
        return min(self.verify_tol, REFINE_TOLERANCE_HDOF * self.half_dof)

    @property
    def max_error(self) -> float:
        """[m] largest expected error of a prediction that is acted on."""
        if self.max_expected_error is not None:
            return self.max_expected_error
        return MAX_EXPECTED_ERROR_HDOF * self.half_dof

    @property
    def stack_half_range(self) -> float:
        """[m] the `stack` search's first interval is the surface estimate +- this."""
        return self.stack_range if self.stack_range is not None else self.search_margin_m

    @property
    def search_margin_m(self) -> float:
        """[m] the fallback search covers each focus candidate +- this."""
        return SEARCH_MARGIN_HDOF * self.half_dof

    @property
    def search_max_half_width_m(self) -> float:
        """[m] the fallback search stays this close to the field's starting z."""
        return SEARCH_MAX_HALF_WIDTH_HDOF * self.half_dof

    @property
    def search_tol(self) -> float:
        """[m] classical searches stop at a quarter depth of field."""
        return max(self.half_dof / 2, 0.05e-6)


@dataclass
class _FieldContext:
    """One tissue field while it is focused: start, preview, references, spent focus cost."""

    f: Field
    z0: float  # focus z of the preview (the focus surface's estimate)
    z: float  # current focus z
    preview: Frame
    preview_sharpness: float
    neighbours: list[float]
    tissue_score: float = 1.0  # the tissue test's score of the preview
    images: int = 0  # images spent on focusing (the tile's own capture excluded)
    seconds: float = 0.0  # focus time: previews, z moves, inference, discarded captures


@dataclass
class _Shot:
    """A full-resolution capture, at the preview's sampling too, and its sharpness there."""

    frame: Frame
    z: float
    small: np.ndarray
    sharpness: float
    footprint_sharpness: float  # on the preview's footprint, comparable with the preview


@dataclass
class _Check:
    """Verification of a capture: passed, why, and the re-predicted offset [m] (or NaN)."""

    ok: bool
    text: str
    offset_m: float = math.nan
    second_shot: bool = False  # failed only on a re-prediction worth one more capture
    raw_offset_m: float = math.nan  # the re-prediction as the model gave it (no bias removed)


@dataclass
class _Found:
    """A classical search: best z [m], whether its peak is trusted, a description, and
    which end holds the sharpest z when none inside does."""

    z: float
    ok: bool
    text: str
    side: int = 0  # +1 / -1: the sharpest z is the interval's upper / lower end


@dataclass
class _Outcome:
    """The focus result of one tissue field."""

    shot: _Shot
    offset_m: float
    quality: str
    check: str
    refocused: bool = False


@dataclass
class _Surveyed:
    """A `focus_map` survey field: the z its search found, whether its peak is trusted, and
    the images, seconds and descriptions the search cost."""

    z: float
    ok: bool
    images: int
    seconds: float
    texts: list[str]


@dataclass
class _BiasEstimate:
    """The model's focus bias on this slide: true focus minus where its prediction near
    focus puts it, measured by the bias checks (see :meth:`Scanner._confirm`).

    Args:
        half_dof: [m] two samples farther apart than this disagree (a noisy search can miss).
    """

    half_dof: float
    samples: list[float] = field(default_factory=list)  # [m], one per conclusive check
    checks: int = 0  # tiles confirmed by a search so far

    @property
    def consistent(self) -> bool:
        """Whether the samples agree (only a pair can disagree: a third decides)."""
        return len(self.samples) != 2 or float(np.ptp(self.samples)) <= self.half_dof

    @property
    def value(self) -> float:
        """[m] the median sample; 0 before any, and while two samples disagree."""
        if not self.samples or not self.consistent:
            return 0.0
        return float(np.median(self.samples))


def survey_fields(fields: list[Field], spacing: int) -> list[Field]:
    """`focus_map`'s survey fields, in scan order: every `spacing`-th row and column of the
    grid, always including its first and last rows and columns (corners), so the surface
    spans the region."""

    def picks(n: int) -> set[int]:
        k = max(2, math.ceil((n - 1) / spacing) + 1) if n > 1 else 1
        return {round(float(v)) for v in np.linspace(0, n - 1, k)}

    rows = picks(max(f.row for f in fields) + 1) if fields else set()
    cols = picks(max(f.col for f in fields) + 1) if fields else set()
    return [f for f in fields if f.row in rows and f.col in cols]


def _um(m: float, signed: bool = True) -> str:
    return f"{m * 1e6:+.2f}" if signed else f"{m * 1e6:.2f}"


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
    region_area: float = 0.0  # [m^2] of the planned fields


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
        **({"whole_slide": True} if req.whole_slide else {}),
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
    if not (isinstance(req.focus_map_spacing, int) and req.focus_map_spacing >= 1):
        raise ValueError(f"focus_map_spacing must be an integer >= 1, got {req.focus_map_spacing}")
    if req.stack_range is not None and not (math.isfinite(req.stack_range) and req.stack_range > 0):
        raise ValueError(f"stack_range must be positive, got {req.stack_range} m")
    if req.step is not None and not (math.isfinite(req.step) and req.step > 0):
        raise ValueError(f"step must be positive, got {req.step} m")
    slide_format(req.slide_format)
    grid = plan_grid(req.region_min, req.region_max, req.field_of_view, req.overlap, req.step)
    check_within_limits(grid.fields, req.limits)
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
    def run(self, req: ScanRequest) -> tuple[ScanMachine, list[TileRecord], ScanJournal | None]:
        """Scan; return the final machine, all tile results and the journal (None when a
        whole-slide scan ended in its overview sweep).

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
        self.overview: Overview | None = None
        self.live: LiveStitcher | None = None  # set once the fields are known
        if req.whole_slide:
            try:
                self._find_tissue(req)
            except ScanCanceled:
                self.error = "canceled on request (during the overview sweep)"
                machine.cancel()
                return machine, [], None
            except (HardwareError, OSError) as exc:
                self.error = f"overview sweep failed: {exc}"
                machine.fail()
                return machine, [], None
            if self.overview is not None and self.overview.region is None:
                self.error = self.overview.text
                machine.fail()
                return machine, [], None
        fields = validate_request(req)
        grid = plan_grid(req.region_min, req.region_max, req.field_of_view, req.overlap, req.step)
        (ax0, ay0), (ax1, ay1) = grid.covered_min_xy, grid.covered_max_xy
        self._status["area"] = abs(ax1 - ax0) * abs(ay1 - ay0)
        journal = ScanJournal.open(req.output_dir, scan_parameters(req), resume=req.resume)
        done = {t.index: t for t in journal.tiles()}
        self._status.update(
            total=len(fields),
            done=len(done),
            tissue=sum(t.has_tissue for t in done.values()),
            skipped=sum(not t.has_tissue for t in done.values()),
        )
        self._can_predict = req.focus_method in PREDICTING_METHODS or bool(
            getattr(self.scope, "can_predict", lambda: True)()
        )
        mapping = req.focus_method == "focus_map"
        self._survey: dict[int, _Surveyed] = {}
        self._bias_est = _BiasEstimate(req.half_dof)  # the model's bias on this slide
        self._stacks: SearchStackWriter | None = None
        self._frames: list[tuple[float, np.ndarray]] = []
        if req.save_search_stacks:
            self._stacks = SearchStackWriter(
                req.output_dir / SEARCH_STACKS_DIR, req.profile, math.nan
            )
        fmt = slide_format(req.slide_format)
        covered = (grid.covered_min_xy, grid.covered_max_xy)
        self.live = LiveStitcher(
            fields, req.pixel_size, req.output_dir / fmt.file_name, fmt.name, covered,
            config=req.stitch_config,
        )  # fmt: skip
        self.live.resume(done.values(), req.output_dir)
        surface = FocusSurface()
        for t in done.values():
            # only verified focus feeds the surface (a focus map's tiles add nothing new)
            if t.has_tissue and not t.below_quality and not mapping:
                surface.add(t.x_m, t.y_m, t.z_m)
        results = [done[i] for i in sorted(done)]
        try:
            z = req.start_z if req.start_z is not None else self.scope.position()[2]
            if mapping:
                z = self._survey_map(machine, req, fields, done, z, surface)
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
                if tile.has_tissue and not tile.below_quality and not mapping:
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
        score, has_tissue = self._has_tissue(req, preview)
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
            self.live.visit(f.index)  # glass: the tiles around it may be placed now
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
        ctx = _FieldContext(
            f=f,
            z0=moved.pose[2],
            z=moved.pose[2],
            preview=preview,
            preview_sharpness=normalized_sharpness(preview.rgb, work_px=preview.rgb.shape[1]),
            tissue_score=score,
            neighbours=[
                t.sharpness
                for t in results[-6:]
                if t.has_tissue
                and not t.below_quality
                and abs(t.row - f.row) <= 1
                and abs(t.col - f.col) <= 1
            ],
        )
        if req.focus_method == "deepaf":
            out = self._deepaf(machine, req, ctx, surface)
        elif req.focus_method == "deepaf_single":
            out = self._deepaf_single(machine, req, ctx)
        elif req.focus_method == "stack":
            out = self._stack(machine, req, ctx)
        elif req.focus_method == "focus_map":
            out = self._mapped(machine, req, ctx)
        else:
            out = self._fixed(machine, req, ctx)
        path = journal.write_tile_image(f.index, out.shot.frame.rgb, f.row, f.col)
        if has_tissue:
            self.live.add(f.index, f.row, f.col, out.shot.frame.rgb, req.output_dir / path)
        else:  # an empty field kept on request: not part of the slide
            self.live.visit(f.index)
        truth_err = math.nan
        if self._truth is not None:
            truth_err = float(out.shot.z - self._truth(moved.pose[0], moved.pose[1]))
        return TileRecord(
            **base,
            z_m=out.shot.z,
            has_tissue=has_tissue,
            predicted_offset_m=out.offset_m,
            focus_images=ctx.images,
            focus_time_s=ctx.seconds,
            refocused=out.refocused,
            sharpness=out.shot.sharpness,
            image_path=path,
            sim_seconds=moved.seconds + preview.seconds + self._sim - sim_before,
            true_focus_error_m=truth_err,
            focus_quality=out.quality,
            focus_check=out.check,
        )

    # -- focus methods -------------------------------------------------------------------
    def _deepaf(
        self, machine: ScanMachine, req: ScanRequest, ctx: _FieldContext, surface: FocusSurface
    ) -> _Outcome:
        """Predict from the preview, move once, capture, verify from the capture; fall back
        to a classical search when the prediction is not confident or fails verification."""
        decision = self._predict(ctx, ctx.preview, ctx.z0)
        ctx.images += 1
        ctx.seconds += ctx.preview.seconds
        candidates = [ctx.z0]  # the field starts at the surface's estimate
        if decision.status == "invalid":
            raise HardwareError(f"focus prediction invalid: {decision.message}")
        if decision.status != "ok":  # too little tissue to predict: trust the surface
            offset, target = math.nan, ctx.z0
        else:
            offset = decision.offset_m
            target = ctx.z0 + offset + self._bias
            candidates.append(target)
            expected = decision.expected_error_m
            if math.isfinite(expected) and expected > req.max_error:
                reason = (
                    f"low confidence: expected error {_um(expected)} um > {_um(req.max_error)} um"
                )
                return self._fallback(machine, req, ctx, candidates, reason, offset)
            f = ctx.f
            if len(surface) >= 3 and surface.is_outlier(f.x, f.y, target, req.refocus_tolerance):
                # far from the surface: re-check with a preview at the predicted z
                z_t, check = self._predict_at(req, ctx, target)
                if check.status != "ok" or abs(check.offset_m) > req.verify_tol:
                    if check.status == "ok":
                        candidates.append(z_t + check.offset_m)
                    seen = _um(check.offset_m) + " um" if check.status == "ok" else check.status
                    reason = (
                        f"prediction {_um(offset)} um far from the focus surface not confirmed "
                        f"at its z (re-check {seen})"
                    )
                    return self._fallback(machine, req, ctx, candidates, reason, offset)
            elif len(surface) == 0 and abs(offset) > req.verify_tol:
                target = self._approach(req, ctx, target, candidates)
        self._move_z(req, target, ctx)
        machine.focused()
        shot = self._capture(ctx)
        verdict = self._verify(req, ctx, shot, predict=True, tol=req.refine_tol)
        if verdict.ok:
            return self._confirm(machine, req, ctx, shot, verdict, offset)
        if math.isfinite(verdict.offset_m):
            candidates.append(shot.z + verdict.offset_m)
        machine.refocus()
        ctx.images += 1  # the capture turned out to be one more focus image
        ctx.seconds += shot.frame.seconds
        if verdict.second_shot:
            # the capture's own prediction, made close to focus, where the model is most
            # accurate: one more move and capture before a search
            z2 = self._move_z(req, shot.z + verdict.offset_m, ctx)
            machine.focused()
            second = self._capture(ctx)
            check = self._verify(req, ctx, second, predict=True)
            text = f"{verdict.text}; second shot at {_um(z2 - ctx.z0)} um: {check.text}"
            if check.ok:
                check = _Check(True, text, check.offset_m, raw_offset_m=check.raw_offset_m)
                return self._confirm(machine, req, ctx, second, check, offset, refocused=True)
            if math.isfinite(check.offset_m):
                candidates.append(second.z + check.offset_m)
            machine.refocus()
            ctx.images += 1
            ctx.seconds += second.frame.seconds
            verdict = _Check(False, text, check.offset_m)
            shot = max(shot, second, key=lambda s: s.sharpness)
        return self._fallback(machine, req, ctx, candidates, verdict.text, offset, shot)

    def _approach(
        self, req: ScanRequest, ctx: _FieldContext, target: float, candidates: list[float]
    ) -> float:
        """The slide has no verified focus yet (its first tissue fields, the stage where the
        operator left it): a long move from far out of focus may end anywhere in the model's
        range, so a preview at each new z predicts again, up to APPROACH_STEPS times, until
        the move left is within the verify tolerance. Returns the z to capture at."""
        for _ in range(APPROACH_STEPS):
            z_t, check = self._predict_at(req, ctx, target)
            if check.status != "ok":
                return target
            target = z_t + check.offset_m + self._bias
            candidates.append(target)
            if abs(check.offset_m) <= req.verify_tol:
                break
        return target

    @property
    def _bias(self) -> float:
        """[m] the model's focus bias on this slide (see :class:`_BiasEstimate`)."""
        return self._bias_est.value

    def _confirm(
        self,
        machine: ScanMachine,
        req: ScanRequest,
        ctx: _FieldContext,
        shot: _Shot,
        verdict: _Check,
        offset: float,
        refocused: bool = False,
    ) -> _Outcome:
        """A verified tile; the first `bias_fields` of a scan are confirmed by a classical
        search over +- 1 DoF around it (to a quarter DoF, moving on past an end).

        The re-prediction on the capture shares any bias the model has on this microscope
        (a stain or renderer it never saw), so it passes a tile the bias put outside the depth
        of field. The search measures that bias (its peak minus the re-predicted focus); the
        median over the confirmed tiles then corrects every later prediction and
        re-prediction. A confirmed tile more than half a half-DoF off is recaptured at the
        search's peak. Two samples more than a half DoF apart earn a third check (and no
        correction until it). Fields with less than BIAS_MIN_TISSUE tissue are not checked:
        on a few specks of tissue among debris the sharpness peak measures nothing (a 20x
        whole-slide scan took -0.82 um from a field with 3 % tissue, against -0.23 um from
        the next, and put later tiles up to 0.75 um off, all verified by the biased model).
        """
        est = self._bias_est
        allowed = req.bias_fields + (0 if est.consistent else 1)
        if est.checks >= allowed or not math.isfinite(verdict.raw_offset_m):
            return _Outcome(shot, offset, FOCUS_QUALITY_OK, verdict.text, refocused)
        tissue = ctx.tissue_score
        if req.tissue_method == "paper":  # its score is on another scale
            tissue = field_tissue_score(ctx.preview.rgb, req.tissue)
        if tissue < BIAS_MIN_TISSUE:  # too little tissue for a sharpness peak to measure it
            return _Outcome(shot, offset, FOCUS_QUALITY_OK, verdict.text, refocused)
        est.checks += 1
        machine.refocus()
        found, texts = self._bounded_search(req, ctx, [shot.z], 2 * req.half_dof, False)
        machine.focused()
        if not found.ok:  # no clear peak near the tile: keep the verified capture
            text = f"{verdict.text}; bias check inconclusive ({', '.join(texts)})"
            return _Outcome(shot, offset, FOCUS_QUALITY_OK, text, refocused)
        est.samples.append(found.z - (shot.z + verdict.raw_offset_m))
        text = (
            f"{verdict.text}; bias check {', '.join(texts)}: model bias "
            f"{_um(est.samples[-1])} um (slide estimate {_um(est.value)} um)"
        )
        if abs(found.z - shot.z) <= req.half_dof / 2:
            return _Outcome(shot, offset, FOCUS_QUALITY_OK, text, refocused)
        ctx.images += 1  # the verified capture was replaced
        ctx.seconds += shot.frame.seconds
        self._move_z(req, found.z, ctx)
        return _Outcome(self._capture(ctx), offset, FOCUS_QUALITY_OK, text, True)

    def _deepaf_single(
        self, machine: ScanMachine, req: ScanRequest, ctx: _FieldContext
    ) -> _Outcome:
        """The paper's single shot: predict, move once, capture. The capture is verified for
        the tile's verdict, never refocused."""
        decision = self._predict(ctx, ctx.preview, ctx.z0)
        ctx.images += 1
        ctx.seconds += ctx.preview.seconds
        if decision.status == "invalid":
            raise HardwareError(f"focus prediction invalid: {decision.message}")
        offset = decision.offset_m if decision.status == "ok" else math.nan
        if decision.status == "ok":
            self._move_z(req, ctx.z0 + offset, ctx)
        machine.focused()
        shot = self._capture(ctx)
        verdict = self._verify(req, ctx, shot, predict=True)
        quality = FOCUS_QUALITY_OK if verdict.ok else FOCUS_QUALITY_LOW
        return _Outcome(shot, offset, quality, verdict.text)

    def _stack(self, machine: ScanMachine, req: ScanRequest, ctx: _FieldContext) -> _Outcome:
        """Golden-section search of Brenner over the surface estimate +- stack_range, to a
        quarter DoF, moving on past an end that holds the peak; then capture."""
        found, texts = self._bounded_search(req, ctx, [ctx.z0], req.stack_half_range, False)
        self._move_z(req, found.z, ctx)
        machine.focused()
        shot = self._capture(ctx)
        quality = FOCUS_QUALITY_OK if found.ok else FOCUS_QUALITY_LOW
        return _Outcome(shot, found.z - ctx.z0, quality, ", ".join(texts))

    def _survey_map(
        self,
        machine: ScanMachine,
        req: ScanRequest,
        fields: list[Field],
        done: dict[int, TileRecord],
        z: float,
        surface: FocusSurface,
    ) -> float:
        """`focus_map`'s survey: a stack search at every survey field with tissue (in scan
        order, each starting at the surface so far), every result fed to the surface.
        Returns the z to start the scan at."""
        for f in survey_fields(fields, req.focus_map_spacing):
            self._check_cancel()
            guess = surface.predict(f.x, f.y)
            z_start = float(np.clip(guess[0] if guess is not None else z, *req.limits.z))
            moved = self.scope.move_to(f.x, f.y, z_start)
            self._sim += moved.seconds
            preview = self.scope.preview()
            self._sim += preview.seconds
            if not self._has_tissue(req, preview)[1]:
                continue
            ctx = _FieldContext(f, moved.pose[2], moved.pose[2], preview, 0.0, [])
            found, texts = self._bounded_search(
                req, ctx, [ctx.z0], req.stack_half_range, False, SURVEY_EXTENSIONS
            )
            self._survey[f.index] = _Surveyed(found.z, found.ok, ctx.images, ctx.seconds, texts)
            if found.ok:
                surface.add(moved.pose[0], moved.pose[1], found.z)
                z = found.z
        return z

    def _mapped(self, machine: ScanMachine, req: ScanRequest, ctx: _FieldContext) -> _Outcome:
        """Capture at the focus map's z (the field started there); verify for the verdict.
        A survey field carries the survey's focus cost."""
        machine.focused()
        shot = self._capture(ctx)
        verdict = self._verify(req, ctx, shot, predict=self._can_predict)
        quality = FOCUS_QUALITY_OK if verdict.ok else FOCUS_QUALITY_LOW
        text = verdict.text
        point = self._survey.get(ctx.f.index)
        if point is not None:
            ctx.images += point.images
            ctx.seconds += point.seconds
            text = f"focus point ({', '.join(point.texts)}); {text}"
        return _Outcome(shot, 0.0, quality, text)

    def _fixed(self, machine: ScanMachine, req: ScanRequest, ctx: _FieldContext) -> _Outcome:
        """Capture at the starting z; verify it from the capture (never refocus)."""
        machine.focused()
        shot = self._capture(ctx)
        verdict = self._verify(req, ctx, shot, predict=self._can_predict)
        quality = FOCUS_QUALITY_OK if verdict.ok else FOCUS_QUALITY_LOW
        return _Outcome(shot, 0.0, quality, verdict.text)

    def _find_tissue(self, req: ScanRequest) -> None:
        """A whole-slide scan's region: the box a resumed scan found before (its scan.json),
        else an overview sweep's (:mod:`overview`); sets req.region_min/max and
        self.overview (None when resumed)."""
        stored = stored_parameters(req.output_dir) if req.resume else None
        if stored and stored.get("whole_slide"):
            req.region_min = tuple(stored["region_min_m"])
            req.region_max = tuple(stored["region_max_m"])
            return
        region = (tuple(req.region_min), tuple(req.region_max))
        lo = (max(region[0][0], req.limits.x[0]), max(region[0][1], req.limits.y[0]))
        hi = (min(region[1][0], req.limits.x[1]), min(region[1][1], req.limits.y[1]))
        fov = req.field_of_view
        step = (fov[0] * req.overview_step_fields, fov[1] * req.overview_step_fields)
        z = req.start_z if req.start_z is not None else self.scope.position()[2]
        z = float(np.clip(z, *req.limits.z))

        def look(x: float, y: float) -> tuple[bool, float]:
            self._check_cancel()
            moved = self.scope.move_to(x, y, z)
            frame = self.scope.preview()
            self._sim += moved.seconds + frame.seconds
            return self._has_tissue(req, frame)[1], moved.seconds + frame.seconds

        def progress(done: int, total: int) -> None:
            self._status.update(tile_index=done, total=total)
            self._progress("planning", f"overview preview {done}/{total}")

        # a preview sees the capture's width and the centred 16:9 band of its height
        view = (fov[0], min(fov[1], fov[0] * 9 / 16))
        self.overview = sweep((lo, hi), step, view, look, progress)
        self._status.update(tile_index=0, total=0)
        if self.overview.region is not None:
            req.region_min, req.region_max = self.overview.region

    # -- building blocks -----------------------------------------------------------------
    @staticmethod
    def _has_tissue(req: ScanRequest, preview: Frame) -> tuple[float, bool]:
        """(tissue score, whether the field has tissue) of a preview."""
        if req.tissue_method == "paper":
            score = 1.0 - mean_hsv_value(preview.rgb)
            return score, paper_field_has_tissue(preview.rgb, req.value_threshold)
        score = field_tissue_score(preview.rgb, req.tissue)
        return score, score >= req.tissue.min_field_fraction

    def _predict(self, ctx: _FieldContext, frame: Frame, focus_z: float) -> FocusDecision:
        """A focus-server decision; its compute time is focus time and scan time."""
        decision = self.scope.predict_focus(frame, focus_z)
        ctx.seconds += decision.seconds
        self._sim += decision.seconds
        return decision

    def _predict_at(
        self, req: ScanRequest, ctx: _FieldContext, z: float
    ) -> tuple[float, FocusDecision]:
        """Move to `z`, take a preview and predict from it, all charged to the field's focus
        cost; returns the z reached and the decision."""
        z_t = self._move_z(req, z, ctx)
        frame = self.scope.preview()
        self._sim += frame.seconds
        ctx.images += 1
        ctx.seconds += frame.seconds
        return z_t, self._predict(ctx, frame, z_t)

    def _move_z(self, req: ScanRequest, z: float, ctx: _FieldContext) -> float:
        """Move the focus (clipped to the soft limits), charged to the field's focus time."""
        moved = self.scope.move_to(z=float(np.clip(z, *req.limits.z)))
        self._sim += moved.seconds
        ctx.seconds += moved.seconds
        ctx.z = moved.pose[2]
        return ctx.z

    def _capture(self, ctx: _FieldContext) -> _Shot:
        """Full-resolution capture, resampled to the preview's pixel sampling and scored:
        whole (for the neighbours) and on the preview's footprint (the centred 16:9 band)."""
        self._check_cancel()
        frame = self.scope.capture()
        self._sim += frame.seconds
        ph, pw = ctx.preview.rgb.shape[:2]
        small = resample_to_width(frame.rgb, pw)
        top = max(0, (small.shape[0] - ph) // 2)
        band = small[top : top + ph]
        sharp = normalized_sharpness(small, work_px=max(small.shape[:2]))
        band_sharp = normalized_sharpness(band, work_px=max(band.shape[:2]))
        return _Shot(frame, ctx.z, small, sharp, band_sharp)

    def _verify(
        self,
        req: ScanRequest,
        ctx: _FieldContext,
        shot: _Shot,
        predict: bool,
        tol: float | None = None,
    ) -> _Check:
        """Verify a capture without another exposure.

        (a) the focus prediction on the capture at the preview's sampling must be within
        `verify_tolerance` of zero; (b) after a focus move of more than 2 half depths of
        field the capture must be sharper than the preview (otherwise not much blurrier),
        and it must not be far less sharp than its verified neighbours.
        """
        tol = req.verify_tol if tol is None else tol
        passed: list[str] = []
        failed: list[str] = []
        offset2 = math.nan
        in_tol = False
        raw = math.nan
        if predict:
            d = self._predict(ctx, Frame(shot.small, 0.0), shot.z)
            if d.status == "ok":
                raw = d.offset_m
                offset2 = raw + self._bias
                text = f"re-prediction {_um(offset2)} um (tolerance {_um(tol, False)} um)"
                if self._bias:
                    text = text[:-1] + f"; {_um(raw)} um before the slide's bias)"
                in_tol = abs(offset2) <= tol
                (passed if in_tol else failed).append(text)
            else:
                failed.append(f"no re-prediction from the capture ({d.status})")
        else:
            failed.append("no focus prediction to verify it with")
        moved_by = shot.z - ctx.z0
        must_sharpen = abs(moved_by) > SHARPEN_MOVE_HDOF * req.half_dof
        same_view = assess_sharpness(
            shot.footprint_sharpness,
            preview_score=ctx.preview_sharpness,
            preview_margin=PREVIEW_MARGIN,
            must_sharpen=must_sharpen,
        )
        near = assess_sharpness(shot.sharpness, ctx.neighbours, min_ratio=NEIGHBOUR_MIN_RATIO)
        pv = ctx.preview_sharpness
        ratio = shot.footprint_sharpness / pv if pv > 0 else math.nan
        for verdict in (same_view, near):
            if not verdict.ok:
                failed.append(verdict.reason.removesuffix("; refocus"))
        if same_view.ok and near.ok:
            passed.append(f"sharpness {ratio:.2f}x the preview's after {_um(moved_by)} um")
        if failed:
            # only the re-prediction failed, and it is a move the model is sure of: one
            # second shot (gross blur or a doubtful prediction goes to the search)
            second = (
                len(failed) == 1
                and math.isfinite(offset2)
                and not in_tol
                and abs(offset2) <= SECOND_SHOT_MAX_HDOF * req.half_dof
            )
            return _Check(False, "; ".join(failed), offset2, second, raw)
        return _Check(True, "verified: " + ", ".join(passed), offset2, raw_offset_m=raw)

    def _fallback(
        self,
        machine: ScanMachine,
        req: ScanRequest,
        ctx: _FieldContext,
        candidates: list[float],
        reason: str,
        offset: float,
        discarded: _Shot | None = None,
    ) -> _Outcome:
        """Bounded classical search around every focus candidate, then recapture.

        When the sharpest z is an end of the interval (focus beyond it), the search moves on
        past that end, up to SEARCH_EXTENSIONS times, as far as `search_max_half_width`
        from the field's start and the soft limits allow.
        """
        found, texts = self._bounded_search(req, ctx, candidates, req.search_margin_m, True)
        self._move_z(req, found.z, ctx)
        machine.focused()
        shot = self._capture(ctx)
        quality = FOCUS_QUALITY_OK if found.ok else FOCUS_QUALITY_LOW
        if not found.ok and discarded is not None and discarded.sharpness > shot.sharpness:
            shot = discarded  # no peak proven: keep the sharper capture
        return _Outcome(shot, offset, quality, f"{reason}; fallback {', '.join(texts)}", True)

    def _bounded_search(
        self,
        req: ScanRequest,
        ctx: _FieldContext,
        candidates: list[float],
        margin: float,
        prove_peak: bool,
        extensions: int = SEARCH_EXTENSIONS,
    ) -> tuple[_Found, list[str]]:
        """Search every focus candidate +- `margin`; when the sharpest z is an end of the
        interval (focus beyond it), move on past that end, up to `extensions` times, as far
        as `search_max_half_width` from the first candidate and the soft limits allow.
        Returns the last search and the descriptions of all of them."""
        (lo, hi), (lo_max, hi_max) = self._search_interval(req, candidates, margin)
        self._frames = []
        found = self._search(req, ctx, lo, hi, prove_peak=prove_peak)
        texts = [found.text]
        tol = req.search_tol
        for _ in range(extensions):
            if found.ok or found.side == 0:
                break
            if found.side > 0 and hi < hi_max - tol:
                lo, hi = hi - margin / 2, min(hi_max, hi + margin)
            elif found.side < 0 and lo > lo_max + tol:
                lo, hi = max(lo_max, lo - margin), lo + margin / 2
            else:
                break
            found = self._search(req, ctx, lo, hi, prove_peak=prove_peak)
            texts.append("then " + found.text)
        if self._stacks is not None and found.ok and self._frames:
            width = ctx.preview.rgb.shape[1]
            self._stacks.pixel_size_m = req.field_of_view[0] / width  # preview sampling
            where = self._stacks.write(ctx.f.x, ctx.f.y, self._frames, found.z)
            texts.append(f"kept as {where.parent.name}/{where.name}")
        self._frames = []
        return found, texts

    def _search_interval(
        self, req: ScanRequest, candidates: list[float], margin: float
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """A search's first interval, every finite candidate +- margin, and the most it may
        grow to: +- search_max_half_width around the first candidate (the field's start,
        the surface estimate), inside the soft limits."""
        primary = candidates[0]
        finite = [c for c in candidates if math.isfinite(c)]
        z_lo, z_hi = req.limits.z
        lo_max = max(z_lo, primary - req.search_max_half_width_m)
        hi_max = min(z_hi, primary + req.search_max_half_width_m)
        lo = max(min(finite) - margin, lo_max)
        hi = min(max(finite) + margin, hi_max)
        if hi - lo < 4 * req.search_tol:  # squeezed against a limit
            lo = max(z_lo, min(lo, hi - 2 * margin))
            hi = min(z_hi, max(hi, lo + 2 * margin))
        return (lo, hi), (min(lo, lo_max), max(hi, hi_max))

    def _search(
        self, req: ScanRequest, ctx: _FieldContext, lo: float, hi: float, prove_peak: bool
    ) -> _Found:
        """Golden-section search of Brenner over [lo, hi] with previews, to a quarter DoF.

        The result is trusted ("ok") when the best z is interior; with `prove_peak` also when
        the peak is clearly (PEAK_CONTRAST) sharper than both ends, which are imaged too.
        """
        n0, scores = ctx.images, {}

        def acquire(zq: float) -> np.ndarray:
            self._check_cancel()
            moved = self.scope.move_to(z=zq)
            frame = self.scope.preview()
            self._sim += moved.seconds + frame.seconds
            ctx.seconds += moved.seconds + frame.seconds
            ctx.images += 1
            ctx.z = moved.pose[2]
            if self._stacks is not None:
                self._frames.append((ctx.z, frame.rgb))
            return frame.rgb

        tol = req.search_tol
        if prove_peak:
            scores[lo] = brenner(acquire(lo))
        result = golden_section_search(acquire, lo, hi, "brenner", tol_m=tol)
        if prove_peak:
            scores[hi] = brenner(acquire(hi))
        best_z, best = max(result.samples, key=lambda zs: zs[1])
        if scores and max(scores.values()) >= best:  # an end is the sharpest
            best_z = max(scores, key=scores.get)
        interior = best_z - lo > tol and hi - best_z > tol
        side = 0 if interior else (1 if best_z > (lo + hi) / 2 else -1)
        text = f"search {_um(lo)}..{_um(hi)} um, {ctx.images - n0} images: "
        if not prove_peak:
            text += f"peak at {_um(best_z)} um" + ("" if interior else " at the interval's end")
            return _Found(best_z, interior, text, side)
        c_lo, c_hi = (best / scores[e] if scores[e] > 0 else math.inf for e in (lo, hi))
        ok = interior and min(c_lo, c_hi) >= PEAK_CONTRAST
        if ok:
            side = 0
        elif (c_lo >= PEAK_CONTRAST) != (c_hi >= PEAK_CONTRAST):  # rising toward one end
            side = 1 if c_hi < PEAK_CONTRAST else -1
        text += f"peak at {_um(best_z)} um, {min(c_lo, c_hi):.2f}x the ends' sharpness"
        if not ok:
            text += " (no peak inside the interval)" if not interior else " (no clear peak)"
        return _Found(best_z, ok, text, side)

    # ---------------------------------------------------------------------------------
    def _check_cancel(self) -> None:
        if self._should_cancel():
            raise ScanCanceled()

    @property
    def sim_seconds(self) -> float:
        """Simulated (or hardware) seconds of motion and exposure so far."""
        return self._sim

    def _progress(self, state: str, message: str | None = None) -> None:
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
                self.error if message is None else message,
                s.get("area", 0.0),
            )
        )
