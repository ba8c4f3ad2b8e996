"""Focus decision over the PredictFocus action: the preview named by its stamp vs sent back.

Run: `./deepaf bench focus_frame [--decisions 30] [--profile 4x]`.

Starts the stage, camera (virtual microscope, 1280x720 previews at 30 Hz) and focus server
as the graph runs them, and drives them through the planner's own
:class:`deepaf_planner.ros_microscope.RosMicroscope`: move to a tissue field, take a preview
at the commanded pose, then ask for its focus offset twice, in alternating order:

* `stamp`: PredictFocus names the preview by its header stamp (`preview_stamp`); the focus
  server predicts from the copy it already received on camera/image_raw;
* `image`: the preview travels back inside the goal (the planner's behaviour before).

Per mode: wall time of the decision as the planner sees it (goal sent to result received;
median, p95), the paired difference on the same frame, and the bytes of the serialized goal;
on a tissue field (full decision) and on empty glass (the server stops at its tissue check,
so the time is mostly the transport). Both modes must give the same offset (the same frame).
Prints a table, then (last line) one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
import uuid

import numpy as np


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _glass_position(sim) -> tuple[float, float]:
    """A field of empty glass on the virtual slide (the predictor stops at its tissue check)."""
    lim = sim.stage.limits
    rng = np.random.default_rng(3)
    for _ in range(10000):
        x, y = rng.uniform(lim.x_min_m, lim.x_max_m), rng.uniform(lim.y_min_m, lim.y_max_m)
        if not sim.has_tissue(x, y):
            return float(x), float(y)
    raise RuntimeError("no empty glass found on the virtual slide")


def measure(profile: str, decisions: int) -> dict[str, object]:
    """Run the graph and time `decisions` decisions per mode and field (this process's rclpy).

    Fields: `tissue` (a full decision: tissue check, tiles, inference) and `glass` (empty
    glass: the server stops after its tissue check, so the time is mostly the transport).
    """
    import rclpy
    from deepaf.runner import GraphRunner
    from deepaf_driver.backends.sim import make_microscope
    from deepaf_planner.ros_microscope import RosMicroscope
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.serialization import serialize_message

    from deepaf_msgs.action import PredictFocus

    namespace = f"bench_{uuid.uuid4().hex[:6]}"
    sim = make_microscope(profile, "lab_a_standard", 0)
    x, y = sim.random_tissue_position(np.random.default_rng(11))
    dz = 3e-6 if profile == "20x" else 60e-6
    fields = {"tissue": (x, y, float(sim.best_focus_z(x, y)) + dz)}
    gx, gy = _glass_position(sim)
    fields["glass"] = (gx, gy, float(sim.best_focus_z(x, y)))
    timeouts = {"discovery": 60.0, "move": 60.0, "preview": 10.0, "capture": 60.0,
                "predict": 60.0}  # fmt: skip
    out: dict[str, object] = {"profile": profile, "decisions_per_mode": decisions}
    rclpy.init()
    try:
        with GraphRunner(
            namespace,
            overrides={"profile": profile, "time_scale": 0.0, "noise": False},
            nodes=["stage", "camera", "focus"],
        ):
            node = rclpy.create_node("planner", namespace=namespace)
            scope = RosMicroscope(node, timeouts, preview_time=0.033)
            executor = MultiThreadedExecutor(num_threads=4)
            executor.add_node(node)
            spinner = threading.Thread(target=executor.spin, daemon=True)
            spinner.start()
            try:
                scope.check_servers(need_focus=True)
                for name, (fx, fy, fz) in fields.items():
                    scope.move_to(fx, fy, fz)
                    frame = scope.preview()
                    scope.predict_focus(frame, fz)  # warm-up (model, discovery)
                    out[f"{name}_status"] = scope.predict_focus(frame, fz).status
                    out["stamp_goal_bytes"] = len(
                        serialize_message(
                            PredictFocus.Goal(preview_stamp=frame.msg.header.stamp, focus_z=fz)
                        )
                    )
                    out["image_goal_bytes"] = len(serialize_message(
                        PredictFocus.Goal(image=frame.msg, focus_z=fz)))  # fmt: skip
                    out["preview"] = f"{frame.rgb.shape[1]}x{frame.rgb.shape[0]}"
                    times: dict[str, list[float]] = {"stamp": [], "image": []}
                    offsets: dict[str, list[float]] = {"stamp": [], "image": []}
                    before = dict(scope.predict_stats)
                    for _ in range(decisions):
                        frame = scope.preview()
                        for mode in random.sample(["stamp", "image"], 2):
                            scope.predict_by_stamp = mode == "stamp"
                            t0 = time.perf_counter()
                            decision = scope.predict_focus(frame, fz)
                            times[mode].append((time.perf_counter() - t0) * 1e3)
                            offsets[mode].append(decision.offset_m)
                    scope.predict_by_stamp = True
                    stats = {k: v - before[k] for k, v in scope.predict_stats.items()}
                    paired = np.subtract(times["image"], times["stamp"])  # same frame and load
                    out.update({
                        f"{name}_stamp_ms_median": _percentile(times["stamp"], 50),
                        f"{name}_stamp_ms_p95": _percentile(times["stamp"], 95),
                        f"{name}_image_ms_median": _percentile(times["image"], 50),
                        f"{name}_image_ms_p95": _percentile(times["image"], 95),
                        f"{name}_saved_ms_median": float(np.median(paired)),
                        f"{name}_saved_ms_iqr": [float(np.percentile(paired, 25)),
                                                 float(np.percentile(paired, 75))],
                        f"{name}_stamp_misses": stats["by_stamp_miss"],
                        f"{name}_same_offsets": bool(np.allclose(
                            offsets["stamp"], offsets["image"], atol=1e-12, equal_nan=True)),
                    })  # fmt: skip
            finally:
                scope.destroy()
                executor.shutdown(timeout_sec=2.0)
                spinner.join(timeout=5.0)
                node.destroy_node()
    finally:
        rclpy.try_shutdown()
    out["load_average_1min"] = os.getloadavg()[0]
    out["cpu_cores"] = os.cpu_count()
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table and, last, one JSON line."""
    ap = argparse.ArgumentParser(
        prog="deepaf bench focus_frame", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--profile", choices=["4x", "20x"], default="4x", help="optics and model")
    ap.add_argument("--decisions", type=int, default=30, help="decisions per mode")
    ap.add_argument("--quick", action="store_true", help="5 decisions per mode (smoke test)")
    args = ap.parse_args(argv)
    result = measure(args.profile, 5 if args.quick else args.decisions)
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(
            title=f"PredictFocus: preview by stamp vs sent back ({os.cpu_count()} cores, "
            f"load {result['load_average_1min']:.1f})"
        )
        columns = ("field", "mode", "median (ms)", "p95 (ms)", "goal (bytes)", "saved (ms)",
                   "stamp misses")  # fmt: skip
        for col in columns:
            table.add_column(col, justify="left" if col in ("field", "mode") else "right")
        for name in ("tissue", "glass"):
            lo, hi = result[f"{name}_saved_ms_iqr"]
            for mode, label in (("stamp", "stamp"), ("image", "image")):
                table.add_row(
                    f"{name} ({result[f'{name}_status']})" if mode == "stamp" else "",
                    label,
                    f"{result[f'{name}_{mode}_ms_median']:.1f}",
                    f"{result[f'{name}_{mode}_ms_p95']:.1f}",
                    f"{result[f'{mode}_goal_bytes']:,}",
                    f"{result[f'{name}_saved_ms_median']:.1f} ({lo:.0f}..{hi:.0f})"
                    if mode == "stamp"
                    else "",
                    str(result[f"{name}_stamp_misses"]) if mode == "stamp" else "",
                )
        Console().print(table)
        print(
            "saved = image - stamp on the same frame, median (IQR); a stamp miss (the server "
            "no longer held the frame) sends the image after all, and is in the stamp times"
        )
    except ImportError:
        pass
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
