"""`./deepaf scan`: scan a virtual slide end to end and show where the result is.

Starts the node graph (stage, camera, focus server, planner: each in its own process, exactly
as `ros2 launch deepaf_bringup scan.launch.py` would), sends one ScanSlide goal through
`deepaf.client`, shows progress, shuts the graph down, and prints the report's summary.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime
from pathlib import Path

from deepaf_driver.backends.sim import SCAN_SLIDE
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from deepaf.environment import repo_root


def _region(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1 in mm, got {text!r}")
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"region {text!r} has a value that is not a finite number")
    x0, y0, x1, y1 = values
    if x0 == x1 or y0 == y1:
        # ScanSlide reads region_min == region_max as "the whole stage": a typo here must
        # not start a scan of every field on the stage
        raise argparse.ArgumentTypeError(
            f"region {text!r} has zero area (X0 == X1 or Y0 == Y1); give the lower and "
            "the upper corner, e.g. 6,6,9,8. To scan the whole stage, give its full range, e.g. "
            "0,0,15,15 for the default soft limits (x_min..x_max, y_min..y_max)"
        )
    if x1 < x0 or y1 < y0:
        raise argparse.ArgumentTypeError(
            f"region {text!r} is inverted: give the lower corner first (X0 < X1, Y0 < Y1)"
        )
    return values  # type: ignore[return-value]


def default_region_mm(
    profile: str, protocol: str, seed: int, slide: str = SCAN_SLIDE
) -> tuple[float, ...]:
    """4 x 3 full-resolution fields at the tissue's edge of the virtual slide [mm]."""
    from deepaf_driver.sim import VirtualMicroscope

    from deepaf.sim_regions import edge_region

    scope = VirtualMicroscope(profile, protocol, slide_seed=seed, slide=slide)
    (x0, y0), (x1, y1) = edge_region(scope, scope.field_of_view_m, cols=4, rows=3)
    return (x0 * 1e3, y0 * 1e3, x1 * 1e3, y1 * 1e3)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, got {text!r}") from None
    if w < 256 or h < 192:
        raise argparse.ArgumentTypeError(f"capture size {w}x{h} is too small (min 256x192)")
    return w, h


def camera_parameters(capture: tuple[int, int]) -> dict[str, int]:
    """Camera sizes for a capture size, keeping the 4056:1280 capture:preview sampling."""
    from deepaf_driver.sim.camera import preview_size_for

    preview = preview_size_for(capture)
    return {
        "capture_width": capture[0],
        "capture_height": capture[1],
        "preview_width": preview[0],
        "preview_height": preview[1],
    }


def build_parser() -> argparse.ArgumentParser:
    """The command's options."""
    from deepaf_planner.scanner import FOCUS_METHODS
    from deepaf_planner.slide_formats import DEFAULT_SLIDE_FORMAT, SLIDE_FORMATS

    parser = argparse.ArgumentParser(
        prog="deepaf scan",
        description=(
            "Scan a region of a virtual slide: serpentine fields, tissue detection, single-shot "
            "focus, full-resolution capture, stitching into slide.tiff (OpenSlide/QuPath; "
            "--format for OME-TIFF or DICOM), "
            "thumbnail.png, focus_map.png and report.json."
        ),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: out/scan-YYYYmmdd-HHMMSS)",
    )
    parser.add_argument(
        "--region-mm",
        type=_region,
        default=None,
        metavar="X0,Y0,X1,Y1",
        help="stage region in mm, lower then upper corner (default: 4 x 3 fields at the "
        "tissue's edge, so the scan captures tissue and skips empty glass); a zero-area "
        "region is refused",
    )
    parser.add_argument(
        "--profile",
        choices=("4x", "20x"),
        default="4x",
        help="optics profile and its shipped model (default: 4x, the paper's)",
    )
    parser.add_argument(
        "--method",
        choices=FOCUS_METHODS,
        default="deepaf",
        help="focus method (default: deepaf: one prediction + one z move, every capture "
        "verified, a bounded search when it fails; deepaf_single: no fallback; stack: "
        "golden-section search +- 3 DoF; focus_map: survey a sparse grid first; fixed)",
    )
    parser.add_argument(
        "--format",
        choices=tuple(SLIDE_FORMATS),
        default=DEFAULT_SLIDE_FORMAT,
        help="stitched slide format (default: tiff): "
        + "; ".join(f"{f.name}: {f.file_name} ({f.readers})" for f in SLIDE_FORMATS.values()),
    )
    parser.add_argument(
        "--protocol", default="lab_a_standard", help="staining protocol preset of the virtual slide"
    )
    parser.add_argument("--slide-seed", type=int, default=0, help="which virtual slide")
    parser.add_argument(
        "--slide",
        choices=("realistic", "plain"),
        default=SCAN_SLIDE,
        help="the virtual slide's artefacts (default: realistic: tilt 5-7 um/mm, waviness, "
        "thickness variation, folds, air bubbles, dust and debris above the section; plain: "
        "the clean, gently tilted slide the focus models were trained on)",
    )
    parser.add_argument("--overlap", type=float, default=0.1, help="field overlap, 0..0.5")
    parser.add_argument(
        "--start-z-um",
        type=float,
        default=None,
        help="focus z of the first field in um (default: where the stage is)",
    )
    parser.add_argument("--model", default="", help="focus model checkpoint (default: shipped)")
    parser.add_argument(
        "--save-stacks",
        action="store_true",
        help="keep every classical focus search as a focal stack in OUT/focus_stacks "
        "(dataset format: ./deepaf calibrate --data OUT/focus_stacks)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the scan already in --out without redoing tiles",
    )
    parser.add_argument(
        "--whole-slide",
        action="store_true",
        help="scan the whole slide: a coarse preview sweep of --region-mm (default: the whole "
        "stage) finds the tissue, then its bounding box is scanned",
    )
    parser.add_argument(
        "--capture-size",
        type=_size,
        default=(4056, 3040),
        metavar="WxH",
        help="full-resolution capture size (default 4056x3040; the preview "
        "keeps the camera's 4056:1280 sampling ratio)",
    )
    parser.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="BAGDIR",
        help="record the scan as a rosbag2 (mcap) bag while it runs",
    )
    parser.add_argument("--namespace", default="microscope", help="ROS namespace of the graph")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after [s]")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one scan on the virtual microscope."""
    from deepaf.runner import GraphRunner

    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    out = (args.out or repo_root() / "out" / f"scan-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    if args.region_mm is None and not args.whole_slide:
        args.region_mm = default_region_mm(args.profile, args.protocol, args.slide_seed, args.slide)
    # region_min == region_max: the whole stage (ScanSlide)
    x0, y0, x1, y1 = (v * 1e-3 for v in args.region_mm or (0.0, 0.0, 0.0, 0.0))
    overrides = {
        "profile": args.profile,
        "sim_protocol": args.protocol,
        "sim_slide_seed": args.slide_seed,
        "sim_slide": args.slide,
    }
    node_overrides: dict[str, dict] = {
        "camera": camera_parameters(args.capture_size),
        "planner": {
            "publish_full_resolution": bool(args.record),
            "save_search_stacks": bool(args.save_stacks),
            "slide_format": args.format,
        },
    }
    if args.model:
        node_overrides["focus"] = {"model": args.model}
    region = ", ".join(f"{v:.2f}" for v in args.region_mm) if args.region_mm else "whole stage"
    region += ", whole slide: tissue found by an overview sweep" if args.whole_slide else ""
    console.print(
        f"[bold]deepaf scan[/]: {args.profile} {args.slide} virtual slide {args.slide_seed} "
        f"({args.protocol}), region ({region}) mm, focus {args.method}"
    )
    console.print(f"output: {out}")
    log_dir = out / "logs"
    start = time.monotonic()
    with GraphRunner(
        args.namespace, overrides=overrides, node_overrides=node_overrides, log_dir=log_dir
    ) as graph:
        recorder = _start_recorder(args, console) if args.record else None
        try:
            outcome = _run_scan(args, graph, out, (x0, y0), (x1, y1), console)
        finally:
            if recorder is not None:
                recorder.stop(timeout=30.0)
                console.print(f"bag: {args.record} ({recorder.output().strip().splitlines()[-1:]})")
    if outcome is None:
        return 1
    result = outcome.result
    if not outcome.ok:
        console.print(f"[red]scan {outcome.status.value}[/]: {outcome.message}")
        console.print(f"node logs: {log_dir}")
        return 1
    _print_summary(out, console)
    console.print(
        f"[green]done[/] in {time.monotonic() - start:.0f} s ({result.message}): "
        f"{result.tiles_tissue} tiles captured, {result.tiles_skipped} empty fields skipped"
    )
    if result.tiles_below_quality:
        console.print(
            f"[bold red]WARNING: {result.tiles_below_quality} of {result.tiles_tissue} tiles "
            "below focus quality[/]: their focus could not be verified, they may be blurred "
            '(focus_quality "low" in report.json; rescan them, e.g. with --method stack)'
        )
    from deepaf_planner.slide_formats import SLIDE_FORMATS

    slide = SLIDE_FORMATS[args.format].file_name
    for name in (slide, "thumbnail.png", "focus_map.png", "report.json"):
        if (out / name).exists():
            console.print(f"  {out / name}")
    return 0


def _start_recorder(args, console: Console):
    """Start `deepaf bag record` beside the graph (stopped with SIGINT after the scan)."""
    from deepaf.bag_command import record_argv
    from deepaf.runner import NodeProcess

    info = {
        "profile": args.profile,
        "protocol": args.protocol,
        "slide_seed": args.slide_seed,
        "slide": args.slide,
    }
    console.print(f"recording to {args.record}")
    return NodeProcess(
        record_argv(args.record.resolve(), "/" + args.namespace.strip("/"), info)
    ).start()


def _wait_recorder(client, namespace: str, timeout: float = 60.0) -> None:
    """Wait until the recorder subscribes to the planner's tile topic (so nothing is missed)."""
    topic = f"/{namespace.strip('/')}/scan/tiles"
    deadline = time.monotonic() + timeout
    while client.node.count_subscribers(topic) < 1 and time.monotonic() < deadline:
        client.spin(0.1)


def _run_scan(args, graph, out: Path, rmin, rmax, console: Console):
    """Send the goal, show progress until it ends; None when the graph failed to start."""
    import rclpy

    from deepaf.client import DeepAfClient, Outcome, Status

    rclpy.init()
    try:
        client = DeepAfClient(args.namespace, server_timeout=60.0)
        if args.record:
            _wait_recorder(client, args.namespace)
        task = client.start_scan(
            rmin,
            rmax,
            str(out),
            focus_method=args.method,
            overlap=args.overlap,
            start_z=None if args.start_z_um is None else args.start_z_um * 1e-6,
            resume=args.resume,
            whole_slide=args.whole_slide,
            timeout=90.0,
        )
        if isinstance(task, Outcome):
            dead = graph.dead()
            console.print(
                f"[red]could not start the scan[/]: {task.message}"
                + (f"; exited: {', '.join(dead)} (see {out / 'logs'})" if dead else "")
            )
            return None
        deadline = time.monotonic() + args.timeout
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} fields"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            bar = progress.add_task("planning", total=None, detail="")
            while not task.done():
                fb = task.feedback
                if fb is not None:
                    s = fb.status
                    progress.update(
                        bar,
                        total=s.tiles_total or None,
                        completed=s.tiles_done,
                        description=f"{s.state:<10} field {s.tile_index + 1}",
                        detail=progress_detail(s, graph.rss_bytes()),
                    )
                if graph.dead():
                    console.print(f"[red]node(s) exited: {', '.join(graph.dead())}[/]")
                if time.monotonic() > deadline:
                    task.cancel()
                    return Outcome(Status.TIMED_OUT, None, "scan timed out")
                time.sleep(0.2)
        return task.wait(30.0)
    except KeyboardInterrupt:
        console.print("interrupted: cancelling the scan (resume with --resume)")
        task.cancel()
        return task.wait(30.0)
    finally:
        rclpy.try_shutdown()


def progress_detail(status, rss_bytes: int) -> str:
    """Area done, ETA and the graph's memory for the progress bar (or the overview sweep's
    progress while it runs)."""
    if status.state == "planning" and status.message.startswith("overview"):
        return status.message
    parts = [f"{status.tiles_tissue} tissue"]
    if status.tiles_total and status.region_area > 0:
        total = status.region_area * 1e6
        parts.append(f"{status.tiles_done / status.tiles_total * total:.1f} of {total:.1f} mm2")
    if math.isfinite(status.eta):
        parts.append(f"eta {status.eta:.0f} s")
    parts.append(f"mem {rss_bytes / 2**20:.0f} MB")
    return ", ".join(parts)


def _print_summary(out: Path, console: Console) -> None:
    """Print the report's summary table."""
    from deepaf_planner.report import ScanReport
    from rich.markup import escape

    path = out / "report.json"
    if path.is_file():
        report = ScanReport.read(path)
        report.print_summary(console)
        for t in report.tiles:
            if t.below_quality:
                console.print(
                    f"[red]tile {t.index} (r{t.row} c{t.col}) below focus quality[/]: "
                    f"{escape(t.focus_check)}",
                    highlight=False,
                )
    else:
        console.print(json.dumps({"warning": f"{path} missing"}))


if __name__ == "__main__":
    sys.exit(main())
