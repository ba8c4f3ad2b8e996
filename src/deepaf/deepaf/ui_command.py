"""`./deepaf ui`: serve a browser dashboard of a microscope: live view, jog, focus, capture,
e-stop, scans with live progress, and a deep-zoom viewer of finished slides.

Starts the node graph on the virtual microscope (as `./deepaf scan` does), or attaches to a
running graph with `--attach NAMESPACE`. The server is a thin ROS client (`deepaf.client` and
the graph's standard topics and services). It listens on 127.0.0.1:8080; `--host 0.0.0.0`
needs a token, printed at start and required on every request.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from deepaf.environment import repo_root
from deepaf.ui.spawn import DASHBOARD_LINE


def build_parser() -> argparse.ArgumentParser:
    """The command's options."""
    from deepaf.scan_command import _size

    parser = argparse.ArgumentParser(prog="deepaf ui", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--attach",
        metavar="NAMESPACE",
        default=None,
        help="attach to the graph already running under NAMESPACE "
        "(default: start one on the virtual microscope)",
    )
    parser.add_argument(
        "--namespace",
        default="microscope",
        help="namespace of the graph this command starts (default: microscope)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="listen address (default 127.0.0.1; anything else needs a token)",
    )
    parser.add_argument("--port", type=int, default=8080, help="listen port (default 8080)")
    parser.add_argument(
        "--token",
        default=None,
        help="access token (default: none on loopback, a random one printed at "
        "start otherwise); '' is refused off loopback",
    )
    parser.add_argument(
        "--require-token", action="store_true", help="make up a token even on loopback"
    )
    parser.add_argument(
        "--scans-root",
        type=Path,
        default=None,
        help="where scans are written and listed (default: out/)",
    )
    parser.add_argument(
        "--profile",
        choices=("4x", "20x"),
        default="4x",
        help="optics profile (the started graph's; jog steps; default 4x)",
    )
    parser.add_argument(
        "--capture-size",
        type=_size,
        default=(4056, 3040),
        metavar="WxH",
        help="full-resolution capture size of the started graph (default "
        "4056x3040; the preview keeps the 4056:1280 sampling)",
    )
    parser.add_argument(
        "--protocol", default="lab_a_standard", help="staining protocol of the virtual slide"
    )
    parser.add_argument("--slide-seed", type=int, default=0, help="which virtual slide")
    parser.add_argument(
        "--slide",
        choices=("realistic", "plain"),
        default="realistic",
        help="artefacts of the virtual slide (default: realistic)",
    )
    parser.add_argument(
        "--params-file",
        type=Path,
        default=None,
        help="parameter file whose stage soft limits the page shows (default: config/deepaf.yaml)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="node logs of the started graph (default: log/ui)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=5.0,
        help="commands per second per client (default 5; burst 10)",
    )
    return parser


def stage_limits(params_file: Path | None) -> Any:
    """The stage's soft limits from a parameter file (`/**/stage` or `stage` section)."""
    import yaml

    from deepaf.graph import default_params_file
    from deepaf.ui.live import Limits

    path = params_file or Path(default_params_file())
    content = yaml.safe_load(path.read_text()) or {}
    params: dict[str, Any] = {}
    for key in ("/**", "stage", "/**/stage"):
        params.update((content.get(key) or {}).get("ros__parameters", {}))
    return Limits.from_params(params)


def main(argv: list[str] | None = None) -> int:
    """Start (or attach to) the graph and serve the dashboard until Ctrl-C."""
    from deepaf.ui.security import make_token, token_required

    args = build_parser().parse_args(argv)
    token = args.token
    if token is None and (args.require_token or args.host not in {"127.0.0.1", "localhost", "::1"}):
        token = make_token()
    try:
        token_required(args.host, token)
    except ValueError as exc:
        print(f"deepaf ui: {exc}", file=sys.stderr)
        return 2
    graph = None
    namespace = args.attach if args.attach is not None else args.namespace
    if args.attach is None:
        from deepaf.runner import GraphRunner
        from deepaf.scan_command import camera_parameters

        overrides = {
            "profile": args.profile,
            "sim_protocol": args.protocol,
            "sim_slide_seed": args.slide_seed,
            "sim_slide": args.slide,
        }
        log_dir = (args.log_dir or repo_root() / "log" / "ui").resolve()
        graph = GraphRunner(
            namespace,
            overrides=overrides,
            node_overrides={"camera": camera_parameters(args.capture_size)},
            log_dir=log_dir,
        ).start()
        print(f"deepaf ui: started the graph under /{namespace.strip('/')} (logs: {log_dir})")
    try:
        return asyncio.run(_serve(args, namespace, token))
    finally:
        if graph is not None:
            graph.stop()


async def _serve(args: argparse.Namespace, namespace: str, token: str | None) -> int:
    import rclpy
    from aiohttp import web
    from deepaf_driver.profiles import get_profile
    from rclpy.signals import SignalHandlerOptions

    from deepaf.ui.bridge import ScopeBridge
    from deepaf.ui.live import jog_steps
    from deepaf.ui.server import Dashboard, UiConfig

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)  # asyncio handles Ctrl-C
    dashboard: Dashboard | None = None
    try:
        pixel = get_profile(args.profile).pixel_size_m
        fov = args.capture_size[0] * pixel
        config = UiConfig(
            profile=args.profile,
            jog=jog_steps(args.profile, fov),
            limits=stage_limits(args.params_file),
            scans_root=(args.scans_root or repo_root() / "out").resolve(),
            token=token,
            rate=args.rate,
            namespace="/" + namespace.strip("/"),
            field_of_view_m=(fov, args.capture_size[1] * pixel),
        )
        config.scans_root.mkdir(parents=True, exist_ok=True)
        holder: dict[str, Dashboard] = {}
        bridge = ScopeBridge(
            namespace,
            loop.call_soon_threadsafe,
            lambda frame: holder["d"].hub.frame(frame),
            lambda event: holder["d"].hub.event(event),
            server_timeout=60.0,
        )
        dashboard = holder["d"] = Dashboard(bridge, config)
        runner = web.AppRunner(dashboard.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else args.port
        host = "127.0.0.1" if args.host in {"0.0.0.0", "::"} else args.host
        url = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
        print(DASHBOARD_LINE.format(url=url), flush=True)
        if token:
            print(f"deepaf ui: token {token} (required on every request)", flush=True)
        print("deepaf ui: Ctrl-C stops", flush=True)
        await stop.wait()
        print("deepaf ui: stopping", flush=True)
        await runner.cleanup()
        bridge.close()
    finally:
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
