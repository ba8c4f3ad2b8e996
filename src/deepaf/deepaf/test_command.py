"""`./deepaf test`, `./deepaf lint` and `./deepaf info`: run the suite inside the environment."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

from deepaf.environment import isolated_test_environment, repo_root


def main(argv: list[str] | None = None) -> int:
    """Run every package's tests plus the repository-level test/ with pytest."""
    parser = argparse.ArgumentParser(
        prog="deepaf test",
        description=(
            "Run the tests of every package (src/*/test) and the whole-graph tests (test/) "
            "with real rclpy nodes over Fast DDS. Each run gets its own ROS_DOMAIN_ID range "
            "and localhost-only discovery. Exits non-zero when any test fails."
        ),
        epilog="Anything after the options is passed to pytest, e.g. ./deepaf test -k stage -x",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        default="2",
        help="parallel pytest workers (pytest-xdist; 'auto' = one per core, 0 = serial; default 2)",
    )
    parser.add_argument("paths", nargs="*", help="test files or directories (default: all)")
    args, pytest_args = parser.parse_known_args(argv)

    root = repo_root()
    paths = args.paths or [str(p) for p in [*sorted(root.glob("src/*/test")), root / "test"]]
    env = isolated_test_environment(os.environ, domain_base=random.Random().randint(1, 180))
    cmd = [sys.executable, "-m", "pytest", *paths, "-p", "no:cacheprovider"]
    if args.jobs not in {"0", "1"}:
        cmd += ["-n", args.jobs, "--dist", "loadfile"]
    cmd += pytest_args
    print(
        f"deepaf test: ROS_DOMAIN_ID from {env['DEEPAF_TEST_DOMAIN_BASE']}, "
        f"discovery {env['ROS_AUTOMATIC_DISCOVERY_RANGE']}",
        flush=True,
    )
    return subprocess.call(cmd, cwd=root, env=env)


def lint_main(argv: list[str] | None = None) -> int:
    """Run ruff (lint and format check) over the repository."""
    parser = argparse.ArgumentParser(prog="deepaf lint", description="ruff check + format check")
    parser.add_argument("--fix", action="store_true", help="apply safe fixes and format")
    args = parser.parse_args(argv)
    root = repo_root()
    ruff = shutil.which("ruff") or "ruff"
    if args.fix:
        return subprocess.call([ruff, "check", "--fix", "."], cwd=root) or subprocess.call(
            [ruff, "format", "."], cwd=root
        )
    rc = subprocess.call([ruff, "check", "."], cwd=root)
    return rc or subprocess.call([ruff, "format", "--check", "."], cwd=root)


def info_main(argv: list[str] | None = None) -> int:
    """Print the environment ./deepaf runs subcommands in."""
    argparse.ArgumentParser(prog="deepaf info", description=info_main.__doc__).parse_args(argv)
    import rclpy  # noqa: F401  (proves the ROS 2 stack loads)
    import torch

    root = repo_root()
    rows = {
        "repository": str(root),
        "python": sys.version.split()[0],
        "venv": os.environ.get("VIRTUAL_ENV", "(none)"),
        "ROS_DISTRO": os.environ.get("ROS_DISTRO", "(unset: PyPI wheels, Kilted)"),
        "RMW_IMPLEMENTATION": os.environ.get("RMW_IMPLEMENTATION", "(default)"),
        "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", "0"),
        "torch": torch.__version__,
        "workspace": str(Path(root, "install")),
    }
    for key, value in rows.items():
        print(f"{key:>20}: {value}")
    return 0
