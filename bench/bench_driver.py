"""Driver benchmark: preview stream and full-resolution capture through DDS between processes.

Run: `./deepaf bench driver [--seconds 5] [--captures 8]`.

For each transport setting (Fast DDS defaults = baseline, then the project's
LARGE_DATA + glibc malloc tuning from `deepaf.environment.NODE_ENVIRONMENT`), it starts the
camera node (sim backend, noise off) and a probe process with the same environment. The probe
measures, over DDS:
- preview: frames per second received on camera/image_raw (1280x720 rgb8 at 30 Hz,
  reliable `deepaf_driver.qos.PREVIEW_QOS`) and latency = receive time - header stamp
  (median, p95);
- capture: camera/capture round trips of 4056x3040 rgb8. With noise off the sim backend
  renders a pose once and serves repeats from its cache, so repeated captures measure the
  driver and transport only; the render time is measured separately, in-process.
Prints a table, then (last line) one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

SETTINGS = ("fastdds_defaults", "large_data_malloc")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _environment(setting: str, domain: int) -> dict[str, str]:
    from deepaf.environment import NODE_ENVIRONMENT

    env = {k: v for k, v in os.environ.items() if k not in NODE_ENVIRONMENT}
    if setting == "large_data_malloc":
        env.update(NODE_ENVIRONMENT)
    env.update(
        ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1"
    )
    return env


# ---------------------------------------------------------------------------- probe process
def probe(namespace: str, seconds: float, captures: int) -> dict[str, object]:
    """Measure previews and captures of the camera in `namespace` (runs in its own process)."""
    import rclpy
    from deepaf_driver.qos import PREVIEW_QOS
    from sensor_msgs.msg import Image

    from deepaf_msgs.srv import CaptureImage

    with rclpy.init():
        node = rclpy.create_node("bench_driver_probe")
        latencies: list[float] = []
        arrivals: list[float] = []

        def on_image(msg: Image) -> None:
            now = time.time()
            stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
            latencies.append(now - stamp)
            arrivals.append(time.monotonic())

        node.create_subscription(Image, f"{namespace}/camera/image_raw", on_image, PREVIEW_QOS)
        client = node.create_client(CaptureImage, f"{namespace}/camera/capture")
        if not client.wait_for_service(timeout_sec=60):
            raise RuntimeError("camera/capture did not appear within 60 s")
        deadline = time.monotonic() + 30
        while not latencies and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        warmup_end = time.monotonic() + 1.0
        while time.monotonic() < warmup_end:
            rclpy.spin_once(node, timeout_sec=0.05)
        latencies.clear()
        arrivals.clear()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            rclpy.spin_once(node, timeout_sec=0.05)
        span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
        preview = {
            "fps": (len(arrivals) - 1) / span if len(arrivals) > 1 else 0.0,
            "latency_median_ms": 1e3 * statistics.median(latencies) if latencies else None,
            "latency_p95_ms": 1e3 * _percentile(latencies, 0.95) if latencies else None,
            "frames": len(arrivals),
        }
        round_trips: list[float] = []
        for _ in range(captures + 1):  # the first renders; the rest come from the cache
            start = time.monotonic()
            future = client.call_async(CaptureImage.Request(timeout=60.0))
            while not future.done():
                rclpy.spin_once(node, timeout_sec=0.01)
                if time.monotonic() - start > 120:
                    raise RuntimeError("capture did not return within 120 s")
            response = future.result()
            if not response.success or response.image.width != 4056:
                raise RuntimeError(f"capture failed: {response.message}")
            round_trips.append(time.monotonic() - start)
        repeats = round_trips[1:]
        node.destroy_node()
    return {
        "preview": preview,
        "capture_first_ms": 1e3 * round_trips[0],
        "capture_median_ms": 1e3 * statistics.median(repeats),
        "capture_p95_ms": 1e3 * _percentile(repeats, 0.95),
    }


# ---------------------------------------------------------------------------- orchestration
def _measure(setting: str, seconds: float, captures: int) -> dict[str, object]:
    """Start the camera node and the probe with `setting`'s environment; return the figures."""
    domain = random.randint(150, 220)
    env = _environment(setting, domain)
    namespace = f"/bench{uuid.uuid4().hex[:6]}"
    log = tempfile.NamedTemporaryFile(prefix="bench-camera-", suffix=".log", delete=False)  # noqa: SIM115
    camera = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deepaf_driver.camera_node",
            "--ros-args",
            "-r",
            f"__ns:={namespace}",
            "-p",
            "noise:=false",
            "-p",
            "preview_rate:=30.0",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        out = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--probe",
                namespace,
                "--seconds",
                str(seconds),
                "--captures",
                str(captures),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        camera.send_signal(2)
        try:
            camera.wait(timeout=10)
        except subprocess.TimeoutExpired:
            camera.kill()
        log.close()
    if out.returncode != 0:
        tail = Path(log.name).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"probe failed ({setting}):\n{out.stderr[-3000:]}\ncamera log:\n{tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _render_time_ms(repeats: int = 2) -> float:
    """Median wall time of rendering one 4056x3040 frame in-process (noise off)."""
    from deepaf_driver.backends.sim import make_microscope

    scope = make_microscope("4x", "lab_a_standard", 0)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        scope.capture(0.0075 + i * 1e-4, 0.0075, 0.0, noise=False)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table and, last, one JSON line."""
    parser = argparse.ArgumentParser(prog="deepaf bench driver", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="preview measurement [s]")
    parser.add_argument("--captures", type=int, default=8, help="cached 12 MP captures timed")
    parser.add_argument("--probe", metavar="NAMESPACE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.probe, args.seconds, args.captures)))
        return 0

    from rich.console import Console
    from rich.table import Table

    load_before = os.getloadavg()[0]
    results = {s: _measure(s, args.seconds, args.captures) for s in SETTINGS}
    render_ms = _render_time_ms()
    table = Table(
        title=f"deepaf_driver through DDS between processes ({os.cpu_count()} cores, "
        f"load average {load_before:.1f} at start)"
    )
    table.add_column("setting", no_wrap=True)
    for col in (
        "preview fps",
        "preview median ms",
        "preview p95 ms",
        "capture median ms",
        "capture p95 ms",
        "first capture ms",
    ):
        table.add_column(col, justify="right")
    for setting, r in results.items():
        p = r["preview"]
        table.add_row(
            setting,
            f"{p['fps']:.1f}",
            f"{p['latency_median_ms']:.1f}",
            f"{p['latency_p95_ms']:.1f}",
            f"{r['capture_median_ms']:.0f}",
            f"{r['capture_p95_ms']:.0f}",
            f"{r['capture_first_ms']:.0f}",
        )
    console = Console(width=120)
    console.print(table)
    console.print(
        f"12 MP render (sim, in-process, not included in capture latency): {render_ms:.0f} ms. "
        "Targets: preview 30 fps with p95 <= 20 ms; capture p95 <= 150 ms."
    )
    tuned, base = results["large_data_malloc"], results["fastdds_defaults"]
    figures = {
        "preview_fps": round(tuned["preview"]["fps"], 2),
        "preview_latency_median_ms": round(tuned["preview"]["latency_median_ms"], 2),
        "preview_latency_p95_ms": round(tuned["preview"]["latency_p95_ms"], 2),
        "capture_latency_median_ms": round(tuned["capture_median_ms"], 1),
        "capture_latency_p95_ms": round(tuned["capture_p95_ms"], 1),
        "capture_first_ms": round(tuned["capture_first_ms"], 1),
        "capture_render_ms": round(render_ms, 1),
        "baseline_preview_fps": round(base["preview"]["fps"], 2),
        "baseline_preview_latency_median_ms": round(base["preview"]["latency_median_ms"], 2),
        "baseline_preview_latency_p95_ms": round(base["preview"]["latency_p95_ms"], 2),
        "baseline_capture_latency_median_ms": round(base["capture_median_ms"], 1),
        "baseline_capture_latency_p95_ms": round(base["capture_p95_ms"], 1),
        "preview_size": "1280x720",
        "capture_size": "4056x3040",
        "preview_rate_hz": 30.0,
        "captures_timed": args.captures,
        "cores": os.cpu_count(),
        "load_average_1min": round(load_before, 2),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
