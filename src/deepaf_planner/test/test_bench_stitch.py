"""bench/bench_stitch.py: its tile sets carry the truth, our registration recovers it, and
its quick mode prints the JSON the issue asks for (small tiles, dense case, deepaf only)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bench():
    """The bench module, loaded by path as `./deepaf bench stitch` does."""
    path = ROOT / "bench" / "bench_stitch.py"
    spec = importlib.util.spec_from_file_location("bench_stitch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(bench, tmp_path_factory):
    """`--quick` (N=16) on 320x240 tiles of the dense case with deepaf only; (stdout, cache)."""
    cache = tmp_path_factory.mktemp("bench_stitch_cache")
    argv = ["--quick", "--tile-size", "320x240", "--overlap", "0.15", "--cases", "dense"]
    argv += ["--methods", "deepaf", "--cache-dir", str(cache)]
    from io import StringIO

    buf, old = StringIO(), sys.stdout
    sys.stdout = buf
    try:
        assert bench.main(argv) == 0
    finally:
        sys.stdout = old
    return buf.getvalue(), cache


def test_position_error_ignores_a_global_offset(bench):
    truth = np.array([[0.0, 0.0], [0.0, 100.0], [80.0, 0.0]])
    rms, mx = bench.position_error(truth + np.array([5.0, -3.0]), truth)
    assert rms == pytest.approx(0.0, abs=1e-12) and mx == pytest.approx(0.0, abs=1e-12)
    rms, mx = bench.position_error(truth + np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]]), truth)
    assert mx == pytest.approx(1.0) and rms == pytest.approx(np.sqrt(2 / 3))


def test_quick_json_has_the_required_keys(quick_run):
    out, _ = quick_run
    last = json.loads(out.strip().splitlines()[-1])
    for key in ("rms_px", "max_px", "s_per_tile", "peak_rss_mb", "writer_s_per_mp"):
        assert set(last["deepaf"][key]) == {"16"}, key
        assert last["deepaf"][key]["16"] is not None, key
    assert last["case"] == "dense" and last["tile_shape"] == [240, 320]
    assert "dense N=16: deepaf RMS <= 1 px" in last["gates"]


def test_tiles_carry_truth_and_registration_recovers_it(bench, quick_run):
    """The stage error is real (several px) and the registration undoes it to < 1 px."""
    _, cache = quick_run
    (tile_dir,) = sorted(cache.glob("tiles_dense_n16_*"))
    man = json.loads((tile_dir / "manifest.json").read_text())
    assert len(man["tiles"]) == 16 and all((tile_dir / t["file"]).exists() for t in man["tiles"])
    # serpentine: row 1 runs right to left
    assert [t["col"] for t in man["tiles"][4:8]] == [3, 2, 1, 0]
    r = bench.worker("deepaf", tile_dir, 1.0)
    assert r["stage_rms_px"] > 3.0  # the stage positions alone are off by several px
    assert r["rms_px"] < 1.0 and r["max_px"] < 1.5
    assert r["matches_total"] == 24 and r["matches_accepted"] >= 18  # a lumen may be glass
    assert r["peak_rss_mb"] >= r["baseline_rss_mb"] > 0
