"""Benchmark of the virtual microscope (``./deepaf bench sim``).

Measures, on this machine: a 224x224 patch (new focal plane at a known field, and cold
at a new field), the 1280x720 preview, the 4056x3040 capture, and a 1,000-image 224x224
focal-stack dataset written with 2 worker processes. Prints a table with median and p95
against the targets, the core count and peak memory; the last line is one JSON object.

``--slide realistic`` measures the slide scans see (artefacts: folds, bubbles, debris);
the default is the plain slide the datasets use.

Run: ``PYTHONPATH=src/deepaf_driver python bench/bench_sim.py [--quick] [--slide realistic]``
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


class _Timer:
    """Wall and process-CPU time of a block (CPU time shows the work when cores are shared)."""

    def __init__(self, wall: list[float], cpu: list[float]) -> None:
        self.wall, self.cpu = wall, cpu

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall.append(time.perf_counter() - self._w)
        self.cpu.append(time.process_time() - self._c)


def _peak_rss_mb() -> float:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(self_kb, child_kb) / 1024


def run(quick: bool = False, slide: str = "plain") -> dict:
    from deepaf_driver.sim import VirtualMicroscope
    from deepaf_driver.sim.dataset import DatasetSpec, write_dataset

    scope = VirtualMicroscope("20x", "lab_a_standard", slide_seed=0, slide=slide)
    rng = np.random.default_rng(0)
    fields = [scope.random_tissue_position(rng) for _ in range(8)]
    x, y = fields[0]
    zb = float(scope.best_focus_z(x, y))
    scope.render_patch(x, y, zb, 224)  # warm caches (focus calibration, tables)
    n = 10 if quick else 30
    warm, warm_cpu = [], []
    for i in range(n):
        with _Timer(warm, warm_cpu):
            scope.render_patch(x, y, zb + (i - n / 2) * 0.3e-6, 224)
    cold, cold_cpu = [], []
    for _ in range(n):
        fx, fy = scope.random_tissue_position(rng)
        with _Timer(cold, cold_cpu):
            scope.render_patch(fx, fy, float(scope.best_focus_z(fx, fy)) + 1e-6, 224)
    prev, prev_cpu = [], []
    for fx, fy in fields[: 3 if quick else 6]:
        with _Timer(prev, prev_cpu):
            scope.preview(fx, fy, float(scope.best_focus_z(fx, fy)) + 0.5e-6)
    cap, cap_cpu = [], []
    for fx, fy in fields[: 1 if quick else 3]:
        with _Timer(cap, cap_cpu):
            scope.capture(fx, fy, float(scope.best_focus_z(fx, fy)))
    n_images = 200 if quick else 1000
    spec = DatasetSpec(
        stacks=n_images // 40,
        protocols=("lab_a_standard", "lab_b_pale_eosin", "lab_c_dark_hematoxylin"),
        range_m=9.75e-6,
        step_m=0.5e-6,
        patch=224,
        seed=0,
        slide=slide,
    )  # 40 images/stack
    with tempfile.TemporaryDirectory(prefix="deepaf_bench_") as tmp:
        t = time.perf_counter()
        write_dataset(os.path.join(tmp, "ds"), spec, workers=2, progress=False)
        ds = time.perf_counter() - t
    ds_1000 = ds * 1000 / n_images
    res = {
        "patch224_ms_median": _stats(warm)[0],
        "patch224_ms_p95": _stats(warm)[1],
        "patch224_cold_ms_median": _stats(cold)[0],
        "patch224_cold_ms_p95": _stats(cold)[1],
        "preview_ms_median": _stats(prev)[0],
        "preview_ms_p95": _stats(prev)[1],
        "capture_ms_median": _stats(cap)[0],
        "capture_ms_p95": _stats(cap)[1],
        "dataset_1000_s": ds_1000,
        "dataset_images": n_images,
        "patch224_cpu_ms_median": _stats(warm_cpu)[0],
        "patch224_cold_cpu_ms_median": _stats(cold_cpu)[0],
        "preview_cpu_ms_median": _stats(prev_cpu)[0],
        "capture_cpu_ms_median": _stats(cap_cpu)[0],
        "cores": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
        "peak_rss_mb": _peak_rss_mb(),
        "quick": quick,
        "slide": slide,
    }
    return res


def _print_table(res: dict) -> None:
    nan = float("nan")
    rows = [
        ("224x224 patch, new z at a field", "patch224_ms", "patch224_ms", "patch224_cpu_ms", "ms"),
        (
            "224x224 patch, cold new field",
            "patch224_ms",
            "patch224_cold_ms",
            "patch224_cold_cpu_ms",
            "ms",
        ),
        ("1280x720 preview", "preview_ms", "preview_ms", "preview_cpu_ms", "ms"),
        ("4056x3040 capture", "capture_ms", "capture_ms", "capture_cpu_ms", "ms"),
    ]
    table = [
        (what, tgt, res[f"{k}_median"], res[f"{k}_p95"], res[f"{c}_median"], unit)
        for what, tgt, k, c, unit in rows
    ]
    table.append(
        (
            f"1,000-image 224² dataset (from {res['dataset_images']}, 2 workers)",
            "dataset_1000_s",
            res["dataset_1000_s"],
            nan,
            nan,
            "s",
        )
    )
    title = (
        f"virtual microscope, {res['slide']} slide — {res['cores']} cores (1-min load average "
        f"{res['load_avg_1min']:.1f}), peak memory {res['peak_rss_mb']:.0f} MiB"
    )
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(
            title=title,
            caption="cpu = process CPU time of all threads: the cost without competing load",
        )
        for col in ("what", "median", "p95", "cpu median", "target", "ok"):
            t.add_column(col, justify="left" if col == "what" else "right")
        for what, key, med, p95, cpu, unit in table:
            tgt = TARGETS[key]
            t.add_row(
                what,
                f"{med:.1f} {unit}",
                "-" if np.isnan(p95) else f"{p95:.1f} {unit}",
                "-" if np.isnan(cpu) else f"{cpu:.1f} {unit}",
                f"≤ {tgt:g} {unit}",
                "yes" if med <= tgt else "NO",
            )
        Console().print(t)
    except ImportError:  # pragma: no cover
        print(title)
        for what, key, med, p95, cpu, unit in table:
            print(f"{what:50s} {med:9.1f} {p95:9.1f} {cpu:9.1f} {unit} target {TARGETS[key]:g}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the last printed line is one JSON object."""
    ap = argparse.ArgumentParser(prog="deepaf bench sim", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, 200 images")
    ap.add_argument(
        "--slide",
        choices=("plain", "realistic"),
        default="plain",
        help="slide artefacts (default plain, as the datasets; realistic: what scans see)",
    )
    a = ap.parse_args(argv)
    res = run(a.quick, a.slide)
    _print_table(res)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
