"""`./deepaf bag`: record, replay, inspect, evaluate and convert rosbag2 bags (mcap storage).

Examples::

    ./deepaf bag record --out bags/run1 --namespace /microscope --duration 60
    ./deepaf bag info bags/run1
    ./deepaf bag play bags/run1 --rate 2 --topics camera/image_raw --remap focus/prediction:=old
    ./deepaf bag eval bags/run1 --model a.pt --model b.pt --json eval.json
    ./deepaf bag to-dataset bags/stack1 --out data/from_bag

Exit codes: 0 success, 1 a bag or model problem (one line naming the file and the problem),
2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "record_argv"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepaf bag",
        description="Record a running graph into rosbag2 bags (mcap) and replay, inspect, "
        "evaluate or convert them. Bags play with `ros2 bag play` on a full ROS 2 install.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser(
        "record",
        help="record topics into a new bag",
        description=(
            "Record topics of the running graph (raw CDR) into a new bag directory. Default "
            "topics (relative to --namespace): camera/image_raw, camera/camera_info, camera/pose, "
            "camera/image_full, joint_states, focus/prediction, scan/status, scan/tiles. "
            "Stops after --duration or on Ctrl-C; the bag is complete either way."
        ),
    )
    r.add_argument("--out", required=True, type=Path, help="bag directory to create (new)")
    r.add_argument(
        "--topics",
        nargs="+",
        default=None,
        metavar="TOPIC",
        help="topics to record (relative names are put under --namespace)",
    )
    r.add_argument("--all", action="store_true", help="record every topic of a known type")
    r.add_argument("--namespace", default="/microscope", help="namespace (default /microscope)")
    r.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="stop after S seconds (default: until Ctrl-C)",
    )
    r.add_argument(
        "--compress-full",
        action="store_true",
        help="store camera/image_full as lossless PNG sensor_msgs/CompressedImage "
        "on camera/image_full/compressed",
    )
    r.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="context stored in deepaf.json and metadata.yaml custom_data; the "
        "simulator's profile=, protocol=, slide_seed=, slide= give eval its ground truth",
    )

    y = sub.add_parser(
        "play",
        help="publish a bag into the running graph",
        description=("Publish the bag's messages with their original timing (scaled by --rate)."),
    )
    y.add_argument("bag", type=Path, help="bag directory")
    y.add_argument("--rate", type=float, default=1.0, help="speed factor (default 1.0)")
    y.add_argument(
        "--topics",
        nargs="+",
        default=None,
        metavar="TOPIC",
        help="play only these (bag names, or relative to the recorded namespace)",
    )
    y.add_argument(
        "--remap",
        action="append",
        default=[],
        metavar="OLD:=NEW",
        help="publish bag topic OLD on NEW (repeatable)",
    )
    y.add_argument(
        "--namespace",
        default=None,
        help="publish the recorded namespace's topics under this namespace",
    )
    y.add_argument(
        "--delay",
        type=float,
        default=1.0,
        metavar="S",
        help="wait S seconds after creating publishers, for discovery (default 1)",
    )
    y.add_argument(
        "--wait-for",
        nargs="+",
        default=[],
        metavar="TOPIC",
        help="before playing, wait (up to 30 s) until these bag topics have subscribers",
    )

    i = sub.add_parser(
        "info",
        help="summarise a bag",
        description="Topics, types, counts, type hashes, duration and the DeepAf context of a bag.",
    )
    i.add_argument("bag", type=Path, help="bag directory")
    i.add_argument("--json", action="store_true", help="print JSON instead of a table")

    e = sub.add_parser(
        "eval",
        help="run focus models on every recorded preview",
        description=(
            "Run the predictor on every preview of the bag, streaming. Ground truth: the "
            "simulator (pose from joint_states + the profile/protocol/slide_seed/slide the bag "
            "stores) "
            "or a focal stack's best focus. Prints FE/FD/DoF like ./deepaf eval and throughput."
        ),
    )
    e.add_argument("bag", type=Path, help="bag directory")
    e.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="M",
        help="checkpoint (repeat to compare models; default: the shipped model)",
    )
    e.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the report")
    e.add_argument("--topic", default=None, help="preview topic (default: */camera/image_raw)")
    e.add_argument("--profile", default=None, help="microscope profile (default: from the bag)")
    e.add_argument("--max-patches", type=int, default=8, help="tiles per preview (default 8)")
    e.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )

    d = sub.add_parser(
        "to-dataset",
        help="convert a recorded focal stack to a dataset",
        description="Turn a recorded focal-stack acquisition (joint_states + "
        "camera/image_full[/compressed] or previews) into the deepaf-focal-stack "
        "dataset format (DIR/dataset.json, stack_NNNNN/meta.json, z_*.png).",
    )
    d.add_argument("bag", type=Path, help="bag directory")
    d.add_argument("--out", required=True, type=Path, help="dataset directory (new or empty)")
    d.add_argument(
        "--topic", default=None, help="image topic (default: full frames, else previews)"
    )
    d.add_argument(
        "--crop",
        type=int,
        default=0,
        metavar="PX",
        help="save a centred square crop of PX pixels (default: full frame)",
    )
    return p


def record_argv(
    out: str | Path,
    namespace: str = "/microscope",
    info: dict[str, Any] | None = None,
    compress_full: bool = False,
    topics: list[str] | None = None,
) -> list[str]:
    """argv after the interpreter that records a graph into `out` (for `NodeProcess`).

    `./deepaf scan --record BAG` starts this beside the graph and stops it with SIGINT; pass
    the simulator's `profile`, `protocol`, `slide_seed` and `slide` in `info` so `bag eval` has
    truth.
    """
    argv = ["-m", "deepaf.bag_command", "record", "--out", str(out), "--namespace", namespace]
    for key, value in (info or {}).items():
        argv += ["--meta", f"{key}={value}"]
    if compress_full:
        argv.append("--compress-full")
    if topics:
        argv += ["--topics", *topics]
    return argv


def _meta(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"bad --meta {item!r}; write KEY=VALUE")
        out[key] = value
    return out


def _record(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from deepaf.bags.recorder import DEFAULT_TOPICS, BagRecorder, resolve_topic
    from deepaf.bags.writer import BagWriter

    namespace = "/" + args.namespace.strip("/")
    topics = (
        [] if args.all else [resolve_topic(t, namespace) for t in args.topics or DEFAULT_TOPICS]
    )
    info = {"namespace": namespace, **_meta(args.meta)}
    if args.compress_full:
        info["compress_full"] = True
    writer = BagWriter(args.out, info).open()

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(
        f"recording into {args.out} ({'all topics' if args.all else ', '.join(topics)})", flush=True
    )
    start = time.monotonic()
    try:
        with rclpy.init(args=["--ros-args"]):
            node = BagRecorder(writer, topics, args.compress_full, namespace)
            try:
                while args.duration is None or time.monotonic() - start < args.duration:
                    rclpy.spin_once(node, timeout_sec=0.1)
            except (KeyboardInterrupt, ExternalShutdownException):
                pass
            finally:
                node.destroy_node()
    except KeyboardInterrupt:
        pass
    finally:
        writer.close()
    total = sum(writer.counts.values())
    print(
        f"wrote {total} messages on {len(writer.counts)} topics in "
        f"{time.monotonic() - start:.1f} s to {args.out}"
    )
    for topic, count in sorted(writer.counts.items()):
        print(f"  {topic}: {count}")
    return 0


def _play(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from deepaf.bags.player import BagPlayer, parse_remaps
    from deepaf.bags.reader import BagReader

    remaps = parse_remaps(args.remap)
    with BagReader(args.bag) as reader, rclpy.init(args=["--ros-args"]):
        node = BagPlayer(reader, args.topics or (), args.rate, remaps, args.namespace)
        try:
            for topic, target in node.targets.items():
                print(f"  {topic} -> {target}" if topic != target else f"  {topic}")
            if args.wait_for:
                from deepaf.bags.recorder import resolve_topic

                ns = str(reader.info.get("namespace", "/"))
                wait = [resolve_topic(t, ns) for t in args.wait_for]
                if not node.wait_for_subscribers(wait, 30.0):
                    print(
                        f"deepaf bag play: no subscriber on {', '.join(wait)} after 30 s",
                        file=sys.stderr,
                    )
                    return 1
            stats = node.play(delay=args.delay)
        except (KeyboardInterrupt, ExternalShutdownException):
            print("deepaf bag play: interrupted", file=sys.stderr)
            return 130
        finally:
            node.destroy_node()
    print(
        f"published {stats.published} messages: {stats.bag_s:.2f} s of bag in "
        f"{stats.wall_s:.2f} s (rate {args.rate}), max lag {stats.max_lag_s * 1e3:.1f} ms"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from deepaf.bags.reader import BagReader

    with BagReader(args.bag) as reader:
        data = {
            "path": str(reader.path),
            "messages": reader.message_count,
            "duration_s": round(reader.duration_s, 3),
            "info": reader.info,
            "topics": {
                t.name: {"type": t.msgtype, "count": t.count, "type_hash": t.type_hash}
                for t in reader.topics.values()
            },
        }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rows = [
        ("bag", data["path"]),
        ("messages", data["messages"]),
        ("duration", f"{data['duration_s']:.3f} s"),
        *sorted(data["info"].items()),
    ]
    key_width = max(len(k) for k, _ in rows) + 2
    for key, value in rows:
        print(f"{key + ':':<{key_width}}{value}")
    width = max((len(t) for t in data["topics"]), default=5)
    print(f"\n{'topic':<{width}}  {'count':>6}  type")
    for name, t in sorted(data["topics"].items()):
        print(f"{name:<{width}}  {t['count']:>6}  {t['type']}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from deepaf.bags.evaluate import evaluate_bag, print_report

    report = evaluate_bag(
        args.bag,
        models=args.model or [None],
        json_path=args.json,
        topic=args.topic,
        profile=args.profile,
        max_patches=args.max_patches,
        threads=args.threads,
    )
    print_report(report)
    if args.json:
        print(f"wrote {args.json}")
    return 0


def _to_dataset(args: argparse.Namespace) -> int:
    from deepaf.bags.to_dataset import bag_to_dataset

    summary = bag_to_dataset(args.bag, args.out, topic=args.topic, crop=args.crop)
    print(
        f"wrote {summary['images']} images in {summary['stacks']} stack(s) to {args.out} "
        f"(from {summary['topic']}; best focus from {summary['best_focus_source']})"
    )
    return 0


COMMANDS = {
    "record": _record,
    "play": _play,
    "info": _info,
    "eval": _eval,
    "to-dataset": _to_dataset,
}


def main(argv: list[str] | None = None) -> int:
    """Run `deepaf bag COMMAND ...`; returns the exit code."""
    args = _parser().parse_args(argv)
    from deepaf.bags.errors import BagError

    try:
        return COMMANDS[args.command](args)
    except (BagError, ValueError, FileNotFoundError) as exc:
        print(f"deepaf bag {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
