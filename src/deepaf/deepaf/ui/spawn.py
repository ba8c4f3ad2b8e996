"""`./deepaf ui` as a child process, and where it serves: one definition of the line it
prints at start, for the browser tests and `./deepaf bench ui`."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

from deepaf.runner import NodeProcess

#: What `./deepaf ui` prints once it serves: ``deepaf ui: dashboard at URL``.
DASHBOARD_LINE = "deepaf ui: dashboard at {url}"
_URL = re.compile(r"dashboard at (http://\S+?/)\?token=")


def start_dashboard(
    args: Sequence[str], log_path: Path, timeout: float
) -> tuple[NodeProcess, str | None]:
    """Start `./deepaf ui ARGS` (with `--token`, so the URL carries one); return the process
    and its base URL, or None when it exited or did not serve within `timeout` s (the
    process is returned for its output either way; the caller stops it)."""
    proc = NodeProcess(["-m", "deepaf.cli", "ui", *args], log_path=log_path).start()
    deadline = time.monotonic() + timeout
    while True:
        found = _URL.search(proc.output())
        if found:
            return proc, found.group(1)
        if not proc.alive() or time.monotonic() > deadline:
            return proc, None
        time.sleep(0.5)
