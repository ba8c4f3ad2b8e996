"""`./deepaf scan`: scan a virtual slide end to end (the scan is built in a later issue)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Say clearly that the scan is not built yet."""
    argparse.ArgumentParser(
        prog="deepaf scan",
        description="Scan a (virtual) slide into a stitched, viewer-ready slide with a report.",
    ).parse_args(argv)
    print(
        "deepaf scan: the scan pipeline (planner, focus server, stitching) is not built yet.\n"
        "The environment is ready: ./deepaf test runs the test suite, ./deepaf info shows it.",
        file=sys.stderr,
    )
    return 3
