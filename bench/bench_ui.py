"""Dashboard benchmark: the live view from the camera to the browser, its CPU cost, and the
slide viewer's tile latency, beside the camera's own rate.

Run: `./deepaf bench ui [--seconds 8] [--tiles 60] [--no-browser]`.

Starts `./deepaf ui` (its own graph on the virtual microscope, 1280x720 previews at 30 Hz,
stage still, token required) on a free port, then measures in turn:
- baseline: the camera's own rate and DDS latency (receive - header stamp) seen by a plain
  rclpy subscriber in this process, with no dashboard client connected;
- websocket client (a headless stand-in for a browser): frames/s and latency from the
  camera's header stamp to a decoded JPEG (cv2.imdecode) in this process;
- chromium (headless, when Debian chromium + chromedriver are installed): the page's own
  frames/s and latency (stamp to the frame drawn on the canvas, Date.now() on this machine);
- CPU: the dashboard process's CPU time per second of wall time (% of one core) in each phase,
  and the graph's (camera, stage, focus, planner) beside it;
- tiles: DZI tile requests (distinct tiles, cold cache; then repeats) of a finished slide
  (the newest under out/ with slide.tiff, else a synthetic pyramid);
- soft limits: coarse z jogs through the page's API until the stage refuses; the stage must
  never pass z_max, and a region past the limits must be refused (400).
Prints a table, the gates (MET/MISSED), and as its last line one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

TOKEN = "bench-ui-token"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class CpuMeter:
    """CPU share (% of one core) of the dashboard process and of its graph's processes."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def sample(self) -> tuple[float, float, float]:
        kids = _children(self.pid)
        return time.monotonic(), _cpu_s(self.pid), sum(_cpu_s(k) for k in kids)

    @staticmethod
    def share(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float]:
        wall = max(1e-9, b[0] - a[0])
        return 100 * (b[1] - a[1]) / wall, 100 * (b[2] - a[2]) / wall


def _get(url: str) -> tuple[int, bytes, float]:
    req = urllib.request.Request(url, headers={"X-DeepAf-Token": TOKEN})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            body = r.read()
            return r.status, body, time.perf_counter() - t0
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), time.perf_counter() - t0


def _post(url: str, body: dict, client_id: str = "") -> tuple[int, dict]:
    headers = {"X-DeepAf-Token": TOKEN, "Content-Type": "application/json"}
    if client_id:
        headers["X-Client-Id"] = client_id
    req = urllib.request.Request(url, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def baseline(namespace: str, seconds: float) -> dict:
    """The camera's own rate and DDS latency at a plain subscriber (no dashboard client)."""
    import rclpy
    from deepaf_driver.qos import PREVIEW_QOS
    from sensor_msgs.msg import Image

    arrivals: list[float] = []
    lat: list[float] = []
    size: list[tuple[int, int]] = []

    def on_image(msg: Image) -> None:
        now = time.time()
        arrivals.append(now)
        lat.append(1e3 * (now - msg.header.stamp.sec - msg.header.stamp.nanosec * 1e-9))
        size[:] = [(msg.width, msg.height)]

    rclpy.init()
    try:
        node = rclpy.create_node("bench_ui_probe")
        node.create_subscription(Image, f"/{namespace}/camera/image_raw", on_image, PREVIEW_QOS)
        deadline = time.monotonic() + 60
        while not arrivals and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        arrivals.clear(), lat.clear()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
    fps = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    w, h = size[0] if size else (0, 0)
    return {"fps": fps, "p50": _pct(lat, 0.5), "p95": _pct(lat, 0.95), "size": f"{w}x{h}"}


async def ws_client(base: str, seconds: float) -> dict:
    """A websocket client that decodes every JPEG it receives (stand-in for a browser)."""
    import aiohttp
    import cv2
    import numpy as np
    from deepaf.ui.live import unpack_frame

    lat: list[float] = []
    times: list[float] = []
    sizes: list[int] = []
    shape = (0, 0)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(base + "ws", params={"token": TOKEN}, max_msg_size=0)
        end = None
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            meta, jpeg = unpack_frame(msg.data)
            img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            now = time.time()
            if end is None:  # warm-up frame
                end = time.monotonic() + seconds
                continue
            shape = img.shape[1], img.shape[0]
            lat.append(1e3 * (now - meta["stamp"]))
            times.append(now)
            sizes.append(len(jpeg))
            if time.monotonic() >= end:
                break
        await ws.close()
    fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return {
        "fps": fps,
        "p50": _pct(lat, 0.5),
        "p95": _pct(lat, 0.95),
        "size": f"{shape[0]}x{shape[1]}",
        "jpeg_kb": statistics.mean(sizes) / 1e3,
    }


def browser(base: str, seconds: float) -> dict | str:
    """The page in headless chromium: its frames/s and latency (stamp to canvas)."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        return "no chromium/chromedriver (apt-get install chromium chromium-driver)"
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return "selenium not installed"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.get(base + "?token=" + TOKEN)
        deadline = time.monotonic() + 60
        while not driver.execute_script("return window.deepaf && window.deepaf.frames > 5"):
            if time.monotonic() > deadline:
                return "the page showed no frames within 60 s"
            time.sleep(0.2)
        start = driver.execute_script("window.deepaf.latencies = []; return window.deepaf.frames")
        t0 = time.monotonic()
        time.sleep(seconds)
        frames, lat, size = driver.execute_script(
            "const c = document.getElementById('live'); "
            "return [window.deepaf.frames, window.deepaf.latencies, c.width + 'x' + c.height]"
        )
        wall = time.monotonic() - t0
    finally:
        driver.quit()
    return {
        "fps": (frames - start) / wall,
        "p50": _pct(lat, 0.5),
        "p95": _pct(lat, 0.95),
        "size": size,
    }


def _slide_scan(tmp: Path) -> tuple[Path, str]:
    """A scans root and the name of a scan with a slide (a synthetic one when none exists)."""
    from deepaf.environment import repo_root
    from deepaf.ui.dzi import find_slide

    out = repo_root() / "out"
    found = (
        sorted(
            (d for d in out.iterdir() if d.is_dir() and find_slide(d)),
            key=lambda d: -d.stat().st_mtime,
        )
        if out.is_dir()
        else []
    )
    if found:
        return out, found[0].name
    import numpy as np
    import tifffile

    scan = tmp / "scans" / "synthetic"
    scan.mkdir(parents=True)
    level = np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8)
    with tifffile.TiffWriter(scan / "slide.tiff") as tif:
        sub = 0
        while max(level.shape[:2]) > 256:
            tif.write(
                level,
                tile=(256, 256),
                photometric="rgb",
                subfiletype=sub,
                compression="jpeg",
                resolution=(25800, 25800),
                resolutionunit="CENTIMETER",
            )
            level, sub = level[::2, ::2].copy(), 1
    return tmp / "scans", "synthetic"


def tiles(base: str, name: str, count: int) -> dict:
    """Cold (distinct) and warm (repeated) DZI tile request latencies."""
    from deepaf.ui.dzi import DziLayout

    status, body, _ = _get(f"{base}api/slides/{name}/info")
    info = json.loads(body)
    layout = DziLayout(info["width"], info["height"])
    rng = random.Random(0)
    wanted = []
    for level in range(max(0, layout.max_level - 4), layout.max_level + 1):
        cols, rows = layout.grid(level)
        wanted += [(level, c, r) for c in range(cols) for r in range(rows)]
    rng.shuffle(wanted)
    wanted = wanted[:count]
    cold, warm, bad = [], [], 0
    for level, c, r in wanted:
        status, body, dt = _get(f"{base}api/slides/{name}/slide_files/{level}/{c}_{r}.jpeg")
        bad += status != 200 or body[:2] != b"\xff\xd8"
        cold.append(1e3 * dt)
    for level, c, r in wanted:
        warm.append(1e3 * _get(f"{base}api/slides/{name}/slide_files/{level}/{c}_{r}.jpeg")[2])
    return {
        "slide": name,
        "size": f"{info['width']}x{info['height']}",
        "n": len(wanted),
        "cold_p50": _pct(cold, 0.5),
        "cold_p95": _pct(cold, 0.95),
        "warm_p95": _pct(warm, 0.95),
        "bad": bad,
    }


async def _client_id(base: str):
    import aiohttp

    session = aiohttp.ClientSession()
    ws = await session.ws_connect(base + "ws", params={"token": TOKEN}, max_msg_size=0)
    while True:
        msg = await ws.receive(timeout=30)
        if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "hello":
            return session, ws, json.loads(msg.data)["client_id"]


def soft_limits(base: str) -> dict:
    """Coarse +z jogs until the stage refuses; z must stay <= z_max. A region past the limits
    must be refused."""

    async def run() -> dict:
        session, ws, cid = await _client_id(base)
        try:
            state = json.loads(_get(base + "api/state")[1])
            z_max = state["limits"]["z_max"]
            loop = asyncio.get_running_loop()
            zs, refusal = [], ""
            for _ in range(20):
                status, body = await loop.run_in_executor(
                    None,
                    _post,
                    base + "api/jog",
                    {"axis": "z", "direction": 1, "size": "coarse"},
                    cid,
                )
                if status != 200:
                    refusal = body.get("error", "")
                    break
                zs.append(body["position"]["z"])
                await asyncio.sleep(0.25)
            region = await loop.run_in_executor(
                None, _post, base + "api/scan", {"region_mm": [14, 14, 16, 15], "name": "never"}
            )
        finally:
            await ws.close()
            await session.close()
        held = bool(refusal) and all(z <= z_max + 1e-12 for z in zs)
        return {
            "jogs": len(zs),
            "max_z_um": 1e6 * max(zs, default=0.0),
            "z_max_um": 1e6 * z_max,
            "refusal": refusal,
            "region_refused": region[0] == 400,
            "held": held,
        }

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    from deepaf.ui import assets
    from deepaf.ui.spawn import start_dashboard

    parser = argparse.ArgumentParser(prog="deepaf bench ui", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per live-view phase")
    parser.add_argument("--tiles", type=int, default=60, help="distinct tiles requested")
    parser.add_argument("--no-browser", action="store_true", help="skip the chromium phase")
    args = parser.parse_args(argv)

    os.environ["ROS_DOMAIN_ID"] = str(random.Random().randint(100, 200))
    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    scans_root, slide = _slide_scan(tmp)
    ns = f"benchui{os.getpid()}"
    proc, base = start_dashboard(
        [
            "--namespace",
            ns,
            "--port",
            "0",
            "--token",
            TOKEN,
            "--scans-root",
            str(scans_root),
            "--log-dir",
            str(tmp / "logs"),
            "--rate",
            "50",
        ],
        tmp / "ui.log",
        180,
    )
    try:
        if base is None:
            print(proc.output(), file=sys.stderr)
            return 1
        cpu = CpuMeter(proc.proc.pid)
        time.sleep(3.0)  # the graph settles
        a = cpu.sample()
        base_fig = baseline(ns, args.seconds)
        base_fig["ui_cpu"], base_fig["graph_cpu"] = cpu.share(a, cpu.sample())
        a = cpu.sample()
        ws_fig = asyncio.run(ws_client(base, args.seconds))
        ws_fig["ui_cpu"], ws_fig["graph_cpu"] = cpu.share(a, cpu.sample())
        br_fig: dict | str = "skipped (--no-browser)"
        if not args.no_browser:
            a = cpu.sample()
            br_fig = browser(base, args.seconds)
            if isinstance(br_fig, dict):
                br_fig["ui_cpu"], br_fig["graph_cpu"] = cpu.share(a, cpu.sample())
        tile_fig = tiles(base, slide, args.tiles)
        limit_fig = soft_limits(base)
    finally:
        proc.stop(timeout=30)

    def row(name: str, f: dict | str) -> str:
        if isinstance(f, str):
            return f"| {name:<38} | {f} |"
        per_frame = f.get("ui_cpu", float("nan")) * 10 / max(f["fps"], 1e-9)
        return (
            f"| {name:<44} | {f['size']:>9} | {f['fps']:6.1f} | {f['p50']:7.1f} | "
            f"{f['p95']:7.1f} | {f.get('ui_cpu', float('nan')):6.0f} | "
            f"{f.get('graph_cpu', float('nan')):6.0f} | {per_frame:8.1f} |"
        )

    widths = (44, 9, 6, 7, 7, 6, 6, 8)
    heads = ("path", "frame", "fps", "p50 ms", "p95 ms", "UI %", "graph%", "UI ms/fr")
    print("\nlive view (stage still; latency = arrival - the camera's header stamp)")
    print(
        "| "
        + " | ".join(
            f"{h:>{w}}" if i else f"{h:<{w}}"
            for i, (h, w) in enumerate(zip(heads, widths, strict=True))
        )
        + " |"
    )
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(row("baseline: camera -> DDS subscriber", base_fig))
    print(row("camera -> UI -> websocket client (stand-in)", ws_fig))
    print(row("camera -> UI -> chromium page", br_fig))
    print(
        "UI % / graph %: CPU time per wall second, % of one core; UI ms/fr: the dashboard's CPU "
        "per frame delivered (baseline row: no live view is open, so the dashboard does not "
        f"subscribe the previews). This machine: {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.1f} (shared)"
    )
    t = tile_fig
    print(
        f"\nslide viewer tiles ({t['slide']}, {t['size']} px, {t['n']} distinct tiles): cold "
        f"p50 {t['cold_p50']:.1f} ms, p95 {t['cold_p95']:.1f} ms; cached p95 "
        f"{t['warm_p95']:.1f} ms; non-JPEG or non-200: {t['bad']}"
    )
    lf = limit_fig
    print(
        f"soft limits: {lf['jogs']} coarse +z jogs, max z {lf['max_z_um']:.1f} um of z_max "
        f"{lf['z_max_um']:.1f} um; refused: {lf['refusal'][:110]!r}; region past the limits "
        f"refused: {lf['region_refused']}"
    )

    live = br_fig if isinstance(br_fig, dict) else ws_fig
    live_src = "chromium" if isinstance(br_fig, dict) else "websocket stand-in"
    full = live["size"] == "1280x720"
    gates = {
        f"live view >= 10 fps at 1280x720, p95 <= 200 ms ({live_src})": full
        and live["fps"] >= 10
        and live["p95"] <= 200,
        "tile requests p95 <= 100 ms (cold cache)": t["cold_p95"] <= 100 and t["bad"] == 0,
        "the page cannot drive the stage past a soft limit": lf["held"] and lf["region_refused"],
        f"asset fetched at set-up, pinned ({assets.OSD_NAME}@{assets.OSD_VERSION}, sha512)": (
            assets.installed()
        ),
    }
    print("\ngates:")
    for what, ok in gates.items():
        print(f"  {'MET   ' if ok else 'MISSED'} {what}")

    def r(v: float) -> float | None:
        return None if v != v else round(v, 1)

    summary = {
        "ui_fps": r(live["fps"]),
        "ui_latency_p50_ms": r(live["p50"]),
        "ui_latency_p95_ms": r(live["p95"]),
        "ui_source": live_src,
        "ui_frame": live["size"],
        "ws_fps": r(ws_fig["fps"]),
        "ws_latency_p95_ms": r(ws_fig["p95"]),
        "camera_fps": r(base_fig["fps"]),
        "camera_latency_p95_ms": r(base_fig["p95"]),
        "ui_cpu_pct": r(live.get("ui_cpu", float("nan"))),
        "ui_cpu_idle_pct": r(base_fig["ui_cpu"]),
        "tile_p50_ms": r(t["cold_p50"]),
        "tile_p95_ms": r(t["cold_p95"]),
        "tile_cached_p95_ms": r(t["warm_p95"]),
        "soft_limits_held": lf["held"],
        "gates_met": sum(gates.values()),
        "gates": len(gates),
        "load_avg": round(os.getloadavg()[0], 1),
    }
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
