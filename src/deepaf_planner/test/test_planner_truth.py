"""Simulator ground truth reaches the scan report only while the camera is the simulator's."""

from __future__ import annotations

from types import SimpleNamespace

from deepaf_planner.planner_node import PlannerNode
from deepaf_planner.scanner import HardwareError


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str) -> None:
        self.lines.append(text)

    warning = info


def _planner(truth, backend):
    def camera_backend() -> str:
        if isinstance(backend, Exception):
            raise backend
        return backend

    log = _Log()
    node = SimpleNamespace(_sim_truth=truth, _scope=SimpleNamespace(camera_backend=camera_backend))
    node.get_logger = lambda: log
    return node, log


def test_truth_only_with_the_sim_camera():
    def truth(x: float, y: float) -> float:
        return -20e-6

    node, _ = _planner(truth, "sim")
    assert PlannerNode._truth(node) is truth
    for backend in ("opencv", "picamera2", "my_lab.camera:Camera"):
        node, log = _planner(truth, backend)
        assert PlannerNode._truth(node) is None
        assert backend in log.lines[0]
    node, log = _planner(truth, HardwareError("camera: node not running"))
    assert PlannerNode._truth(node) is None and "unknown" in log.lines[0]
    node, _ = _planner(None, "sim")  # sim_truth:=false
    assert PlannerNode._truth(node) is None
