"""Test-wide set-up: each pytest-xdist worker talks on its own ROS_DOMAIN_ID.

`./deepaf test` picks a random base domain per run (DEEPAF_TEST_DOMAIN_BASE) and sets
localhost-only discovery; worker gwN uses base + N, so parallel workers and parallel runs on
one machine never see each other's nodes. Node processes started by tests inherit it.
"""

from __future__ import annotations

import os
import uuid

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Give this worker its own domain ID before any test imports rclpy."""
    base = int(os.environ.get("DEEPAF_TEST_DOMAIN_BASE", "0") or 0)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    if base:
        os.environ["ROS_DOMAIN_ID"] = str(base + int(worker.removeprefix("gw") or 0))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@pytest.fixture
def namespace() -> str:
    """A namespace unique to this test, so nodes of earlier tests can never answer."""
    return f"/t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def ros_node(request: pytest.FixtureRequest):
    """An initialised rclpy context and a test-side node, torn down after the test."""
    import re

    import rclpy

    rclpy.init()
    node = rclpy.create_node("test_" + re.sub(r"\W", "_", request.node.name)[:40])
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
