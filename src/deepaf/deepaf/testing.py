"""Helpers for tests that run real nodes in separate processes over real DDS.

`NodeProcess` starts a node (a console script, a module or a file) in its own process with the
node environment (large-data transport, localhost discovery) and stops it with SIGINT, so
the node's own shutdown path runs. `spin_until` spins a test-side node until a condition holds
or a deadline passes: every wait in the tests is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from deepaf.runner import NodeProcess

__all__ = ["NodeProcess", "spin_until", "wait_future"]


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
