"""Environment defaults shared by the runner, the launch files and the tests (one definition).

Large images: Fast DDS's default transports drop to ~2.6 fps at 12 MP; the LARGE_DATA builtin
transport plus glibc malloc tuning (no fresh mmap per large buffer) reaches 22 fps between
processes (see README, "Large images"). Every DeepAf node process gets these settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: Settings every node process gets unless the user already set them.
NODE_ENVIRONMENT: dict[str, str] = {
    "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA",
    "MALLOC_MMAP_THRESHOLD_": "4294967296",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
    "MALLOC_TOP_PAD_": "268435456",
    "RCUTILS_COLORIZED_OUTPUT": "1",
}

#: Domain IDs above 232 fail in Fast DDS ("Calculated port number is too high").
MAX_DOMAIN_ID = 232


def repo_root() -> Path:
    """Return the repository root (from DEEPAF_ROOT, else relative to this file's source)."""
    env = os.environ.get("DEEPAF_ROOT")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3]


def node_environment(base: Mapping[str, str]) -> dict[str, str]:
    """Return `base` plus the node defaults (user-set values win)."""
    env = dict(base)
    for key, value in NODE_ENVIRONMENT.items():
        env.setdefault(key, value)
    return env


def isolated_test_environment(base: Mapping[str, str], domain_base: int) -> dict[str, str]:
    """Return the environment for a test run: isolated domain range, localhost discovery."""
    if not 0 <= domain_base <= MAX_DOMAIN_ID - 16:
        raise ValueError(f"domain_base must be in 0..{MAX_DOMAIN_ID - 16}, got {domain_base}")
    env = node_environment(base)
    env["DEEPAF_TEST_DOMAIN_BASE"] = str(domain_base)
    env["ROS_DOMAIN_ID"] = str(domain_base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    return env
