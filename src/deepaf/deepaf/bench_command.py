"""`./deepaf bench NAME`: run one benchmark from bench/ (bench/bench_NAME.py)."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from deepaf.environment import repo_root


def available() -> list[str]:
    """Return the names of the benchmarks in bench/."""
    return sorted(p.stem.removeprefix("bench_") for p in (repo_root() / "bench").glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    """Run bench/bench_NAME.py's main with the remaining arguments."""
    names = available()
    parser = argparse.ArgumentParser(
        prog="deepaf bench",
        description=(
            "Run a benchmark. Each prints a readable table with its baseline measured in the "
            "same run, and as its last line one JSON object with every figure."
        ),
    )
    parser.add_argument("name", choices=names, help="benchmark to run")
    args, rest = parser.parse_known_args(argv)
    path = repo_root() / "bench" / f"bench_{args.name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{args.name}", path)
    if spec is None or spec.loader is None:
        print(f"deepaf bench: cannot load {path}", file=sys.stderr)
        return 2
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.main(rest) or 0)
