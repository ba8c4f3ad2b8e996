"""`./deepaf graph`: run the node graph (no scan) until Ctrl-C, for calling its actions from
your own code (deepaf.client, ros2 action send_goal on a full install) or replaying bags into it.
This is what `ros2 launch deepaf_bringup scan.launch.py` does on a full ROS 2 install.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from deepaf.graph import GRAPH, LAUNCH_ARGUMENTS


def main(argv: list[str] | None = None) -> int:
    """Start the graph and keep it running."""
    parser = argparse.ArgumentParser(prog="deepaf graph", description=__doc__.split("\n")[0])
    for name, (default, description) in LAUNCH_ARGUMENTS.items():
        if name == "namespace":
            parser.add_argument("--namespace", default=default, help=description)
        elif name != "log_level":  # unset: the parameter file decides
            parser.add_argument(f"--{name.replace('_', '-')}", default=None, help=description)
    parser.add_argument(
        "--nodes",
        nargs="+",
        choices=[s.name for s in GRAPH],
        help="run only these nodes (default: all)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="write each node's log here (default: temporary files)",
    )
    parser.add_argument("--log-level", default="info", help="log level of every node")
    args = parser.parse_args(argv)
    from deepaf.runner import GraphRunner

    overrides = {"profile": args.profile} if args.profile else {}
    backends = (("camera", args.camera_backend), ("stage", args.stage_backend))
    node_overrides = {name: {"backend": value} for name, value in backends if value}
    files = [args.params_file] if args.params_file else None
    graph = GraphRunner(
        args.namespace, files, overrides, node_overrides, args.log_dir, args.nodes, args.log_level
    )
    with graph:
        names = ", ".join(graph.processes)
        print(f"deepaf graph: {names} under /{args.namespace.strip('/')}; Ctrl-C stops")
        try:
            while not graph.dead():
                time.sleep(0.5)
            print(f"deepaf graph: node(s) exited: {', '.join(graph.dead())}")
            return 1
        except KeyboardInterrupt:
            print("deepaf graph: stopping")
    return 0
