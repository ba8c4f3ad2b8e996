"""`./deepaf calibrate`: teach the focus model your own microscope in minutes.

Two entry points, one implementation (:func:`deepaf_focus.calibrate.calibrate`):

    # from focal stacks you already have (any layout `./deepaf eval --data` reads)
    ./deepaf calibrate --data my_stacks --out my_scope.pt [--model M] [--minutes 10]

    # against a running graph (`./deepaf graph`): acquire K stacks at tissue fields first
    ./deepaf calibrate --live --stacks 16 --out my_scope.pt [--namespace microscope]

The live path steps the stage around its current position (or visits `--fields-mm`), asks the
focus server whether the preview shows tissue (the shared tissue test), acquires a focal stack
there with the AcquireFocalStack action into a dataset folder next to `--out`
(`my_scope_stacks/`), then calibrates from that folder exactly as `--data` does. A stack whose
best focus is not inside it is re-acquired around the focus it found; glass stacks are dropped.

Exit codes: 0 the calibrated model was better and is written; 1 refused (bad input, nothing
written); 2 bad usage; 3 the calibrated model was not better (nothing written).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "AcquiredStack",
    "LiveMicroscope",
    "acquire_stacks",
    "calibrate_live",
    "main",
    "parse_fields",
    "spiral_fields",
]

EXIT_NOT_BETTER = 3
LIVE_DEFAULTS = {"20x": (10.0, 0.5), "4x": (100.0, 5.0)}  # range, step (um)


class AcquiredStack:
    """One stack written by the microscope: folder, best focus [m] and its source."""

    def __init__(self, stack_dir: Path, best_focus_z: float, source: str) -> None:
        self.stack_dir, self.best_focus_z, self.source = Path(stack_dir), best_focus_z, source


class Scope(Protocol):
    """What acquisition needs from a microscope (see :class:`LiveMicroscope`)."""

    def position(self) -> tuple[float, float, float]: ...

    def move_xy(self, x: float, y: float) -> bool: ...

    def tissue_here(self) -> bool: ...

    def acquire(
        self, out_dir: Path, xyz: tuple[float, float, float], range_m: float, step_m: float
    ) -> AcquiredStack: ...


class LiveMicroscope:
    """:class:`Scope` over a :class:`deepaf.client.DeepAfClient` (a running graph).

    Args:
        client: connected client.
        crop_size: side (px) of the centred crop saved per slice (preview sampling: the
            pixels the focus server predicts from).
        timeout: seconds per move / prediction.
    """

    def __init__(self, client: Any, crop_size: int = 256, timeout: float = 60.0) -> None:
        self.client, self.crop_size, self.timeout = client, int(crop_size), timeout
        self._preview_scale: float | None = None

    def preview_scale(self) -> float:
        """Preview pixel / capture pixel: the camera node's capture_width / preview_width
        (the preview is the binned full field)."""
        if self._preview_scale is None:
            from rcl_interfaces.srv import GetParameters

            ns = getattr(self.client, "namespace", "")
            node = self.client.node
            service = node.create_client(GetParameters, f"{ns}/camera/get_parameters")
            try:
                if not service.wait_for_service(timeout_sec=self.timeout):
                    raise RuntimeError(f"{ns}/camera/get_parameters: camera node not running")
                request = GetParameters.Request(names=["capture_width", "preview_width"])
                future = service.call_async(request)
                deadline = time.monotonic() + self.timeout
                while not future.done():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{ns}/camera/get_parameters: no answer")
                    self.client.spin(0.05)
                capture_w, preview_w = (v.integer_value for v in future.result().values)
            finally:
                node.destroy_client(service)
            if capture_w <= 0 or preview_w <= 0:
                raise RuntimeError(f"{ns}/camera: capture/preview widths {capture_w}/{preview_w}")
            self._preview_scale = capture_w / preview_w
        return self._preview_scale

    def _fix_preview_pixel_size(self, stack_dir: Path) -> None:
        """The planner records the capture pixel size for preview stacks (no `sampling`
        key); rewrite it to the preview's, which these stacks have. Stacks that state their
        sampling are left alone."""
        from deepaf_driver.dataset_format import read_stack_meta, write_stack_meta

        meta = read_stack_meta(stack_dir)
        if meta is None or "sampling" in meta or not meta.get("pixel_size_m"):
            return
        scale = self.preview_scale()
        meta["pixel_size_m"] = float(meta["pixel_size_m"]) * scale
        meta["sampling"] = "preview"
        meta["pixel_size_note"] = (
            f"deepaf calibrate: preview pixel = recorded capture pixel x {scale:.4f} "
            "(camera capture_width / preview_width)"
        )
        write_stack_meta(stack_dir, meta)

    def position(self) -> tuple[float, float, float]:
        outcome = self.client.move_stage(timeout=self.timeout)  # no axes: reports the pose
        if not outcome.ok:
            raise RuntimeError(f"cannot read the stage position: {outcome.message}")
        p = outcome.result.position
        return (p.x, p.y, p.z)

    def move_xy(self, x: float, y: float) -> bool:
        outcome = self.client.move_stage(x=x, y=y, timeout=self.timeout)
        if outcome.ok:
            return True
        refused = getattr(outcome.status, "value", "") == "rejected"  # older stage nodes
        if refused or (outcome.result is not None and outcome.result.error_code == 1):
            return False  # CODE_OUT_OF_LIMITS: nothing moved
        raise RuntimeError(
            f"stage move to ({x * 1e3:.3f}, {y * 1e3:.3f}) mm failed: {outcome.message}"
        )

    def tissue_here(self) -> bool:
        outcome = self.client.predict_focus(timeout=self.timeout)
        if outcome.result is None or not outcome.result.success:
            raise RuntimeError(f"focus server gave no answer: {outcome.message}")
        return outcome.result.prediction.status != 1  # STATUS_NO_TISSUE

    def acquire(
        self, out_dir: Path, xyz: tuple[float, float, float], range_m: float, step_m: float
    ) -> AcquiredStack:
        images = math.floor(2 * range_m / step_m + 1e-6) + 1
        outcome = self.client.acquire_focal_stack(
            str(out_dir),
            z_range=range_m,
            z_step=step_m,
            position=xyz,
            crop_size=self.crop_size,
            protocol="calibration",
            timeout=60.0 + 5.0 * images,
        )
        if not outcome.ok:
            raise RuntimeError(f"focal stack acquisition failed: {outcome.message}")
        r = outcome.result
        self._fix_preview_pixel_size(Path(r.stack_dir))
        return AcquiredStack(Path(r.stack_dir), r.best_focus_z, r.best_focus_source)


def spiral_fields(x0: float, y0: float, step: float, n: int) -> list[tuple[float, float]]:
    """`n` field centres on a square grid of pitch `step` around (x0, y0), nearest first."""
    pts = [(0, 0)]
    ring = 1
    while len(pts) < n:
        cells = [
            (i, j)
            for i in range(-ring, ring + 1)
            for j in range(-ring, ring + 1)
            if max(abs(i), abs(j)) == ring
        ]
        cells.sort(key=lambda c: (c[0] ** 2 + c[1] ** 2, math.atan2(c[1], c[0])))
        pts += cells
        ring += 1
    return [(x0 + i * step, y0 + j * step) for i, j in pts[:n]]


def parse_fields(text: str) -> list[tuple[float, float]]:
    """`"x,y;x,y"` in millimetres to [(x, y)] in metres.

    Raises:
        ValueError: malformed text.
    """
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        try:
            x, y = (float(v) * 1e-3 for v in part.split(","))
        except ValueError:
            raise ValueError(f"--fields-mm: {part!r} is not 'x,y' in millimetres") from None
        out.append((x, y))
    if not out:
        raise ValueError("--fields-mm is empty; give 'x,y;x,y' in millimetres")
    return out


def _drop_stack(dataset: Path, stack_dir: Path) -> None:
    """Remove a stack folder and its entry in dataset.json (our own fresh dataset)."""
    from deepaf_driver.dataset_format import remove_from_index

    shutil.rmtree(stack_dir, ignore_errors=True)
    remove_from_index(dataset, stack_dir.name)


def _stack_problem(dataset: Path, stack_dir: Path) -> str | None:
    """Why a just-acquired stack cannot calibrate (label or tissue), else None."""
    from deepaf_focus.calibrate import stack_label_problem
    from deepaf_focus.data import read_focal_stack_dataset, read_image
    from deepaf_focus.tissue import tissue_patches

    recs = [r for r in read_focal_stack_dataset(dataset) if r.path.parent.name == stack_dir.name]
    if not recs:
        return "the stack was not written"
    problem = stack_label_problem(recs)
    if problem:
        return problem
    img = read_image(min(recs, key=lambda r: abs(r.label_um)).path)
    patch = min(128, *img.shape[:2])
    if len(tissue_patches(img, patch, 1)[0]) == 0:
        return "no tissue in the saved crop"
    return None


def acquire_stacks(
    scope: Scope,
    dataset: str | Path,
    k: int,
    range_m: float,
    step_m: float,
    fields: Sequence[tuple[float, float]] | None = None,
    field_step_m: float = 0.5e-3,
    retries: int = 2,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Acquire `k` usable focal stacks at tissue fields into `dataset`.

    Fields are `fields`, or a spiral of pitch `field_step_m` around the current position
    (at most 8 k + 9 candidates). A field counts when the focus server sees tissue in its
    preview. The first stack is centred on the current z, each later one on the previous
    stack's best focus (the slide's surface); a stack whose best focus lies outside it is
    removed and re-acquired around the focus it found (up to `retries` times); a stack with
    no sharpness peak or no tissue in its crop is removed and the next field tried.

    Returns:
        The stack folders (fewer than `k` when the fields ran out; the caller decides).

    Raises:
        RuntimeError: the stage, focus server or planner failed.
    """
    dataset = Path(dataset)
    x0, y0, z = scope.position()
    candidates = list(fields) if fields else spiral_fields(x0, y0, field_step_m, 8 * k + 9)
    got: list[Path] = []
    for n, (x, y) in enumerate(candidates, 1):
        if len(got) >= k:
            break
        where = f"field {n} ({x * 1e3:.3f}, {y * 1e3:.3f}) mm"
        if not scope.move_xy(x, y):
            log(f"{where}: outside the stage limits, skipped")
            continue
        if not scope.tissue_here():
            log(f"{where}: no tissue in the preview, skipped")
            continue
        centre = z
        for attempt in range(retries + 1):
            stack = scope.acquire(dataset, (x, y, centre), range_m, step_m)
            problem = _stack_problem(dataset, stack.stack_dir)
            if problem is None:
                got.append(stack.stack_dir)
                z = stack.best_focus_z
                log(
                    f"{where}: stack {len(got)}/{k} {stack.stack_dir.name}, best focus "
                    f"{stack.best_focus_z * 1e6:+.2f} um ({stack.source})"
                )
                break
            _drop_stack(dataset, stack.stack_dir)
            inside = "not inside the stack" in problem
            if inside and attempt < retries and math.isfinite(stack.best_focus_z):
                log(f"{where}: {problem}; re-acquiring around {stack.best_focus_z * 1e6:+.2f} um")
                centre = stack.best_focus_z
                continue
            log(f"{where}: {problem}; stack removed")
            break
    return got


def calibrate_live(
    client: Any,
    out: str | Path,
    stacks: int = 16,
    range_m: float | None = None,
    step_m: float | None = None,
    profile: str = "20x",
    fields: Sequence[tuple[float, float]] | None = None,
    field_step_m: float = 0.5e-3,
    crop_size: int = 256,
    dataset: str | Path | None = None,
    model: str | Path | None = None,
    config: Any = None,
    verbose: bool = True,
    json_path: str | Path | None = None,
) -> dict[str, Any]:
    """Acquire `stacks` focal stacks through `client` and calibrate from them.

    Args:
        client: a :class:`deepaf.client.DeepAfClient` of the running graph.
        out: the calibrated checkpoint (written only when better).
        stacks: stacks to acquire (half fine-tune, half held back by default).
        range_m, step_m: stack half range and step (default per `profile`: 10 / 0.5 um at
            20x, 100 / 5 um at 4x).
        profile: the graph's profile (only for those defaults).
        fields: field centres (x, y) [m] to use instead of the spiral search.
        field_step_m: pitch of the spiral search.
        crop_size: saved crop per slice (px).
        dataset: where the stacks go (default: `OUT` without suffix + `_stacks`, next to
            `out`); must not hold stacks already.
        model, config, verbose, json_path: as :func:`deepaf_focus.calibrate.calibrate`.

    Returns:
        The calibration report, plus `dataset`.

    Raises:
        deepaf_focus.calibrate.CalibrationError: too few usable stacks or bad input.
        RuntimeError: the graph failed.
    """
    from deepaf_focus.calibrate import CalibrationError, calibrate

    out = Path(out)
    r_um, s_um = LIVE_DEFAULTS.get(profile, LIVE_DEFAULTS["20x"])
    range_m = r_um * 1e-6 if range_m is None else range_m
    step_m = s_um * 1e-6 if step_m is None else step_m
    if stacks < 2:
        raise CalibrationError(f"--stacks must be >= 2 (fine-tune and held back), got {stacks}")
    dataset = Path(dataset) if dataset else out.with_name(out.stem + "_stacks")
    if (dataset / "dataset.json").exists():
        raise CalibrationError(
            f"{dataset} already holds stacks; calibrate from them with --data {dataset}, or "
            "choose another --out / --stacks-dir"
        )
    log = print if verbose else (lambda *_: None)
    log(
        f"acquiring {stacks} focal stacks (±{range_m * 1e6:g} um, step {step_m * 1e6:g} um) "
        f"into {dataset}"
    )
    got = acquire_stacks(
        LiveMicroscope(client, crop_size),
        dataset,
        stacks,
        range_m,
        step_m,
        fields,
        field_step_m,
        log=log,
    )
    if len(got) < 2:
        raise CalibrationError(
            f"found only {len(got)} usable tissue field(s) (need at least 2); move the stage "
            "over tissue, focus roughly, or pass --fields-mm"
        )
    if len(got) < stacks:
        log(f"only {len(got)} of {stacks} stacks acquired; calibrating with those")
    report = calibrate([dataset], out, model, config, verbose, json_path)
    report["dataset"] = str(dataset)
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepaf calibrate",
        description=(
            "Fine-tune the focus model on this microscope's own focal stacks and keep it only "
            "if it is better on held-back stacks it never saw (FE lower, FD not worse). "
            "Splits by stack (all stacks may come from one slide)."
        ),
        epilog=(
            "exit codes: 0 better, written; 1 refused (bad input, nothing written); "
            "2 bad usage; 3 not better (nothing written, keep the previous model). "
            "Examples: ./deepaf calibrate --data my_stacks --out my_scope.pt | "
            "./deepaf graph & ./deepaf calibrate --live --stacks 16 --out my_scope.pt"
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--data", nargs="+", help="dataset folder(s) of focal stacks (deepaf or Incoherent)"
    )
    src.add_argument(
        "--live", action="store_true", help="acquire the stacks from a running graph first"
    )
    p.add_argument("--out", required=True, help="calibrated checkpoint (written only if better)")
    p.add_argument("--model", help="model to start from (default: shipped model of the profile)")
    p.add_argument(
        "--minutes", type=float, default=10.0, help="fine-tuning budget in minutes (default 10)"
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=0.5,
        help="fraction of stacks held back for the before/after check (default 0.5)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and training")
    p.add_argument("--lr", type=float, default=4e-4, help="peak learning rate (default 4e-4)")
    p.add_argument(
        "--crop-jitter",
        type=int,
        help="random-crop jitter in px (default: as much as the images allow, up to 128)",
    )
    p.add_argument(
        "--epochs", type=int, default=1000, help="at most this many epochs (default: minutes)"
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="fraction of the fine-tune stacks that validate, best epoch kept (with >= 5 "
        "fine-tune stacks); default 0: train on all of them, keep the last epoch",
    )
    p.add_argument(
        "--min-gain-um",
        type=float,
        default=0.0,
        help="keep the new model only if held-back FE drops by more than this (default 0)",
    )
    p.add_argument(
        "--fd-margin",
        type=float,
        default=1.0,
        help="... and FD rises by at most this many percentage points (default 1)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="torch device")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", help="also write the report as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    live = p.add_argument_group("live acquisition (--live)")
    live.add_argument("--stacks", type=int, default=16, help="stacks to acquire (default 16)")
    live.add_argument("--namespace", default="microscope", help="the graph's namespace")
    live.add_argument(
        "--profile", choices=sorted(LIVE_DEFAULTS), default="20x", help="the graph's profile"
    )
    live.add_argument(
        "--range-um", type=float, help="stack half range (default 10 at 20x, 100 at 4x)"
    )
    live.add_argument("--step-um", type=float, help="stack step (default 0.5 at 20x, 5 at 4x)")
    live.add_argument(
        "--fields-mm", help="field centres 'x,y;x,y' in mm (default: search around the stage)"
    )
    live.add_argument(
        "--field-step-mm", type=float, default=0.5, help="pitch of the field search (0.5)"
    )
    live.add_argument("--crop", type=int, default=256, help="saved crop per slice, px (256)")
    live.add_argument(
        "--stacks-dir", help="where the stacks go (default: OUT without .pt + _stacks)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run `deepaf calibrate`; returns the exit code."""
    args = build_parser().parse_args(argv)
    from deepaf_focus.calibrate import CalibrationConfig, CalibrationError, format_report

    try:
        cfg = CalibrationConfig(
            minutes=args.minutes,
            holdout=args.holdout,
            seed=args.seed,
            lr=args.lr,
            epochs=args.epochs,
            crop_jitter=args.crop_jitter,
            val_fraction=args.val_fraction,
            min_gain_um=args.min_gain_um,
            fd_margin_pct=args.fd_margin,
            num_threads=args.threads,
            device=args.device,
        )
        fields = parse_fields(args.fields_mm) if args.fields_mm else None
    except ValueError as exc:
        print(f"deepaf calibrate: {exc}", file=sys.stderr)
        return 2
    verbose = not args.quiet
    try:
        if args.live:
            report = _run_live(args, cfg, fields, verbose)
        else:
            from deepaf_focus.calibrate import calibrate

            report = calibrate(args.data, args.out, args.model, cfg, verbose, args.json)
    except (CalibrationError, RuntimeError) as exc:
        print(f"error: {exc}\n(nothing written; the previous model stays in use)", file=sys.stderr)
        return 1
    print(format_report(report))
    if not report["kept"]:
        print(f"error: {report['verdict']}", file=sys.stderr)
        return EXIT_NOT_BETTER
    return 0


def _run_live(args: argparse.Namespace, cfg: Any, fields: Any, verbose: bool) -> dict:
    import rclpy

    from deepaf.client import DeepAfClient

    rclpy.init()
    client = None
    try:
        client = DeepAfClient(args.namespace, server_timeout=30.0)
        return calibrate_live(
            client,
            args.out,
            args.stacks,
            None if args.range_um is None else args.range_um * 1e-6,
            None if args.step_um is None else args.step_um * 1e-6,
            args.profile,
            fields,
            args.field_step_mm * 1e-3,
            args.crop,
            args.stacks_dir,
            args.model,
            cfg,
            verbose,
            args.json,
        )
    finally:
        if client is not None:
            client.close()
        rclpy.try_shutdown()
