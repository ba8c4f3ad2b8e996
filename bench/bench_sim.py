"""Benchmark of the virtual microscope (``./deepaf bench sim``).

Measures, on this machine: a 224x224 patch (new focal plane at a known field, and cold
at a new field), the 1280x720 preview, the 4056x3040 capture, and a 1,000-image 224x224
focal-stack dataset written with 2 worker processes. Prints a table with median and p95
against the targets, the core count and peak memory; the last line is one JSON object.

Run: ``PYTHONPATH=src/deepaf_driver python bench/bench_sim.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np

TARGETS = {"patch224_ms": 30.0, "preview_ms": 400.0, "capture_ms": 5000.0, "dataset_1000_s": 120.0}


def _stats(ts: list[float]) -> tuple[float, float]:
    a = np.asarray(ts) * 1e3
    return float(np.median(a)), float(np.percentile(a, 95))


def _peak_rss_mb() -> float:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(self_kb, child_kb) / 1024


def run(quick: bool = False) -> dict:
    from deepaf_driver.sim import VirtualMicroscope
    from deepaf_driver.sim.dataset import DatasetSpec, write_dataset

    scope = VirtualMicroscope("20x", "lab_a_standard", slide_seed=0)
    rng = np.random.default_rng(0)
    fields = [scope.random_tissue_position(rng) for _ in range(8)]
    x, y = fields[0]
    zb = float(scope.best_focus_z(x, y))
    scope.render_patch(x, y, zb, 224)  # warm caches (focus calibration, tables)
    n = 10 if quick else 30
    warm = []
    for i in range(n):
        t = time.perf_counter()
        scope.render_patch(x, y, zb + (i - n / 2) * 0.3e-6, 224)
        warm.append(time.perf_counter() - t)
    cold = []
    for i in range(n):
        fx, fy = scope.random_tissue_position(rng)
        t = time.perf_counter()
        scope.render_patch(fx, fy, float(scope.best_focus_z(fx, fy)) + 1e-6, 224)
        cold.append(time.perf_counter() - t)
    prev = []
    for fx, fy in fields[: 3 if quick else 6]:
        t = time.perf_counter()
        scope.preview(fx, fy, float(scope.best_focus_z(fx, fy)) + 0.5e-6)
        prev.append(time.perf_counter() - t)
    cap = []
    for fx, fy in fields[: 1 if quick else 3]:
        t = time.perf_counter()
        scope.capture(fx, fy, float(scope.best_focus_z(fx, fy)))
        cap.append(time.perf_counter() - t)
    n_images = 200 if quick else 1000
    spec = DatasetSpec(stacks=n_images // 40, protocols=("lab_a_standard", "lab_b_pale_eosin",
                                                          "lab_c_dark_hematoxylin"),
                       range_m=9.75e-6, step_m=0.5e-6, patch=224, seed=0)  # 40 images/stack
    with tempfile.TemporaryDirectory(prefix="deepaf_bench_") as tmp:
        t = time.perf_counter()
        write_dataset(os.path.join(tmp, "ds"), spec, workers=2, progress=False)
        ds = time.perf_counter() - t
    ds_1000 = ds * 1000 / n_images
    res = {
        "patch224_ms_median": _stats(warm)[0], "patch224_ms_p95": _stats(warm)[1],
        "patch224_cold_ms_median": _stats(cold)[0], "patch224_cold_ms_p95": _stats(cold)[1],
        "preview_ms_median": _stats(prev)[0], "preview_ms_p95": _stats(prev)[1],
        "capture_ms_median": _stats(cap)[0], "capture_ms_p95": _stats(cap)[1],
        "dataset_1000_s": ds_1000, "dataset_images": n_images,
        "cores": os.cpu_count(), "peak_rss_mb": _peak_rss_mb(), "quick": quick,
    }
    return res


def _print_table(res: dict) -> None:
    rows = [
        ("224x224 patch, new z at a field", "patch224_ms", res["patch224_ms_median"],
         res["patch224_ms_p95"], "ms"),
        ("224x224 patch, cold new field", "patch224_ms", res["patch224_cold_ms_median"],
         res["patch224_cold_ms_p95"], "ms"),
        ("1280x720 preview", "preview_ms", res["preview_ms_median"], res["preview_ms_p95"], "ms"),
        ("4056x3040 capture", "capture_ms", res["capture_ms_median"], res["capture_ms_p95"],
         "ms"),
        (f"1,000-image 224² dataset (from {res['dataset_images']})", "dataset_1000_s",
         res["dataset_1000_s"], float("nan"), "s"),
    ]
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"virtual microscope — {res['cores']} cores, "
                        f"peak memory {res['peak_rss_mb']:.0f} MiB")
        for col in ("what", "median", "p95", "target", "ok"):
            t.add_column(col, justify="left" if col == "what" else "right")
        for what, key, med, p95, unit in rows:
            tgt = TARGETS[key]
            t.add_row(what, f"{med:.1f} {unit}", "-" if np.isnan(p95) else f"{p95:.1f} {unit}",
                      f"≤ {tgt:g} {unit}", "yes" if med <= tgt else "NO")
        Console().print(t)
    except ImportError:  # pragma: no cover
        for what, key, med, p95, unit in rows:
            print(f"{what:45s} {med:9.1f} {p95:9.1f} {unit}  target {TARGETS[key]:g}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the last printed line is one JSON object."""
    ap = argparse.ArgumentParser(prog="deepaf bench sim", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, 200 images")
    a = ap.parse_args(argv)
    res = run(a.quick)
    _print_table(res)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
