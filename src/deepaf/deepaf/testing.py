"""Helpers for tests that run real nodes in separate processes over real DDS.

`NodeProcess` starts a node (a console script, a module or a file) in its own process with the
node environment (large-data transport, localhost discovery) and stops it with SIGINT, so
the node's own shutdown path runs. `spin_until` spins a test-side node until a condition holds
or a deadline passes: every wait in the tests is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deepaf.environment import node_environment


class NodeProcess:
    """A node running in a child process; use as a context manager.

    Args:
        command: argv after the interpreter, e.g. `["-m", "deepaf_driver.stage_node"]`, or a
            full argv whose first element is an executable (then `python=False`).
        ros_args: arguments after `--ros-args` (parameters, remaps).
        python: run `command` with this interpreter (default True).
        env: extra environment variables.
    """

    def __init__(
        self,
        command: Sequence[str],
        ros_args: Sequence[str] = (),
        *,
        python: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        argv = [sys.executable, *command] if python else list(command)
        if ros_args:
            argv += ["--ros-args", *ros_args]
        self.argv = argv
        self._env = node_environment({**os.environ, **(env or {})})
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in stop())
            prefix="deepaf-node-", suffix=".log", delete=False
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """Path of the file holding the node's stdout and stderr."""
        return Path(self._log.name)

    def output(self) -> str:
        """Return what the node printed so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def start(self) -> NodeProcess:
        """Start the process."""
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash would."""
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop with SIGINT (then SIGKILL after `timeout`); return the exit code."""
        if self.proc is None:
            return None
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spin_until(
    node: Any, condition: Callable[[], bool], timeout: float, what: str = "condition"
) -> None:
    """Spin `node` until `condition()` is true; raise TimeoutError naming `what` otherwise."""
    import rclpy

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        rclpy.spin_once(node, timeout_sec=0.05)


def wait_future(node: Any, future: Any, timeout: float, what: str = "result") -> Any:
    """Spin until an rclpy future is done and return its result (bounded by `timeout`)."""
    spin_until(node, future.done, timeout, what)
    return future.result()
