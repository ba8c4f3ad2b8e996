"""Helpers for tests that run real nodes in separate processes over real DDS.

`NodeProcess` starts a node (a console script, a module or a file) in its own process with the
node environment (large-data transport, localhost discovery) and stops it with SIGINT, so
the node's own shutdown path runs. `spin_until` spins a test-side node until a condition holds
or a deadline passes: every wait in the tests is bounded.

`ros2cli_environment` finds the real upstream `ros2` command line, launch and launch_testing
for the tests that run them (see README, "Using a full ROS 2 install instead"): a `ros2` and
`launch_test` already on PATH (a full ROS 2 install), else the overlay that
`../shared/ros2cli/setup.sh` builds on top of this checkout's environment (CI has that folder
beside the checkout; `DEEPAF_ROS2CLI` names another). Without either, those tests skip with the
reason it returns.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from deepaf.environment import node_environment, repo_root
from deepaf.runner import NodeProcess

__all__ = ["NodeProcess", "ros2cli_environment", "run_ros2", "spin_until", "wait_future"]


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


def ros2cli_dir() -> Path:
    """Folder of the upstream ros2 CLI sources and setup.sh (`DEEPAF_ROS2CLI` or ../shared)."""
    return Path(os.environ.get("DEEPAF_ROS2CLI") or repo_root().parent / "shared" / "ros2cli")


@functools.lru_cache(maxsize=1)
def _ros2cli_environment() -> tuple[tuple[tuple[str, str], ...] | None, str]:
    if shutil.which("ros2") and shutil.which("launch_test"):
        return tuple(node_environment(os.environ).items()), "ros2 and launch_test on PATH"
    setup = ros2cli_dir() / "setup.sh"
    if not setup.is_file():
        return None, (
            f"needs the ROS 2 command line (ros2, launch, launch_testing): none on PATH and no "
            f"{setup} (CI has ../shared/ros2cli beside the checkout; DEEPAF_ROS2CLI names "
            "another; a full ROS 2 install provides them)"
        )
    try:
        # setup.sh checks the venv in a clean environment (no LD_LIBRARY_PATH): let the ROS
        # wheels' bootstrapper re-exec there instead of inheriting "already bootstrapped"
        clean = {k: v for k, v in os.environ.items() if k != "_ROS_WHEELS_BOOTSTRAP_COMPLETE"}
        built = subprocess.run(
            ["bash", str(setup), str(repo_root())],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            env=clean,
        )
    except subprocess.TimeoutExpired:
        return None, f"{setup} did not finish within 900 s"
    env_sh = built.stdout.strip().splitlines()[-1] if built.stdout.strip() else ""
    if built.returncode != 0 or not env_sh.endswith("env.sh"):
        return None, f"{setup} failed (exit {built.returncode}): {built.stderr.strip()[-800:]}"
    dumped = subprocess.run(
        ["bash", "-c", 'source "$1" >/dev/null && env -0', "env.sh", env_sh],
        capture_output=True,
        timeout=60,
        check=False,
        env=node_environment(os.environ),
    )
    if dumped.returncode != 0:
        return None, f"sourcing {env_sh} failed: {dumped.stderr.decode(errors='replace')[-800:]}"
    pairs = (item.split("=", 1) for item in dumped.stdout.decode().split("\0") if "=" in item)
    return tuple((key, value) for key, value in pairs), f"overlay {env_sh}"


def ros2cli_environment() -> tuple[dict[str, str] | None, str]:
    """The environment in which `ros2`, `ros2 launch` and `launch_test` are the upstream tools.

    Returns (environment, where it came from), or (None, why not) for a skip message. The
    overlay is built on first use (about 1 to 3 minutes, then cached per venv by setup.sh);
    the result is cached for the process.
    """
    env, why = _ros2cli_environment()
    return (None if env is None else dict(env)), why


def run_ros2(
    args: Sequence[str],
    env: Mapping[str, str],
    timeout: float = 60.0,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `ros2 ARGS...` (stdout and stderr together in `.stdout`), bounded by `timeout`.

    Raises:
        subprocess.TimeoutExpired: the command ran longer than `timeout` (it is killed).
    """
    return subprocess.run(
        ["ros2", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env=dict(env),
        cwd=cwd,
        check=False,
    )
