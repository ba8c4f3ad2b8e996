"""Two microscopes in one DDS domain: two namespaced graphs (virtual microscopes showing
different slides, each stage, camera, focus server and planner in its own process), both
scanning at once, with no cross-talk of topics, parameters or actions.

Each graph runs `deepaf.runner.GraphRunner` (the node list the launch files start) in its own
namespace with its own slide seed. Checked: the two scans overlap in time and both write a
slide; every tile each planner publishes on its scan/tiles names its own scan and lies in its
own region; each camera's parameters are its own (slide seed); the tiles' simulator truth,
which the planner takes from its camera's parameters and the camera renders at its stage's
pose, says each tile is in focus on its own slide; and each stage ends in its own
region.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from deepaf.client import DeepAfClient, Status, Task
from deepaf.runner import GraphRunner
from deepaf.sim_regions import edge_region, field_tissue_fraction

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PROFILE, PROTOCOL = "4x", "lab_a_standard"
SEEDS = {"a": 0, "b": 7}
CAMERA = {  # the 4056x3040 / 1280x720 sampling ratio at half size (as test_scan.py)
    "capture_width": 2028,
    "capture_height": 1520,
    "preview_width": 640,
    "preview_height": 360,
}


def _scope(seed: int):
    from deepaf_driver.backends.sim import SCAN_SLIDE
    from deepaf_driver.sim import VirtualMicroscope

    return VirtualMicroscope(PROFILE, PROTOCOL, slide_seed=seed, slide=SCAN_SLIDE)


def _fov(scope) -> tuple[float, float]:
    return (
        CAMERA["capture_width"] * scope.pixel_size_m,
        CAMERA["capture_height"] * scope.pixel_size_m,
    )


def _parameter(client: DeepAfClient, node: str, name: str):
    """A parameter of `node` (relative to the client's namespace), read over its service."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    service = client.node.create_client(GetParameters, f"{client.namespace}/{node}/get_parameters")
    try:
        assert service.wait_for_service(timeout_sec=30), f"{client.namespace}/{node}"
        future = service.call_async(GetParameters.Request(names=[name]))
        deadline = time.monotonic() + 30
        while not future.done():
            assert time.monotonic() < deadline, f"no answer from {client.namespace}/{node}"
            client.spin(0.05)
        return parameter_value_to_python(future.result().values[0])
    finally:
        client.node.destroy_client(service)


@pytest.fixture(scope="module")
def two_scans(tmp_path_factory):
    """Both graphs up, one scan on each started together; everything the checks need."""
    import rclpy
    from sensor_msgs.msg import JointState

    from deepaf_msgs.msg import ScanTile

    base = tmp_path_factory.mktemp("multi")
    suffix = base.name.replace("-", "_")
    scopes = {k: _scope(seed) for k, seed in SEEDS.items()}
    regions = {k: edge_region(s, _fov(s), cols=2, rows=1, min_empty=0) for k, s in scopes.items()}
    graphs = {
        k: GraphRunner(
            f"scope_{k}_{suffix}",
            overrides={"profile": PROFILE, "sim_protocol": PROTOCOL, "sim_slide_seed": seed},
            node_overrides={"camera": CAMERA},
            log_dir=base / f"logs_{k}",
        )
        for k, seed in SEEDS.items()
    }
    rclpy.init()
    try:
        for graph in graphs.values():
            graph.start()
        clients = {k: DeepAfClient(f"scope_{k}_{suffix}", server_timeout=180.0) for k in graphs}
        tiles = {k: [] for k in graphs}
        joints = {k: [] for k in graphs}
        for k, client in clients.items():
            ns = client.namespace
            client.node.create_subscription(ScanTile, f"{ns}/scan/tiles", tiles[k].append, 50)
            client.node.create_subscription(JointState, f"{ns}/joint_states", joints[k].append, 10)
        # both focus servers answering before the scans start (model load is slow under load)
        for k, client in clients.items():
            deadline = time.monotonic() + 300
            while client.predict_focus(timeout=20.0).status not in (
                Status.SUCCEEDED,
                Status.FAILED,
            ):
                assert time.monotonic() < deadline, f"focus server {k} not answering"
                assert not graphs[k].dead(), f"graph {k}: {graphs[k].dead()} exited"
        tasks, started, finished = {}, {}, {}
        for k, client in clients.items():
            (x0, y0), (x1, y1) = regions[k]
            tasks[k] = client.start_scan((x0, y0), (x1, y1), str(base / f"scan_{k}"), timeout=60)
            assert isinstance(tasks[k], Task), f"scan {k} did not start: {tasks[k]}"
            started[k] = time.monotonic()
        deadline = time.monotonic() + 900
        while len(finished) < len(tasks):
            for k, task in tasks.items():
                clients[k].spin(0.05)
                if k not in finished and task.done():
                    finished[k] = time.monotonic()
            assert time.monotonic() < deadline, "the scans did not finish within 900 s"
        outcomes = {k: task.wait(timeout=30) for k, task in tasks.items()}
        seeds = {k: _parameter(c, "camera", "sim_slide_seed") for k, c in clients.items()}
        for client in clients.values():
            client.spin(0.5)  # the latest joint_states
        poses = {k: tuple(joints[k][-1].position) for k in joints}
        for client in clients.values():
            client.close()
        logs = {k: {n: p.output() for n, p in g.processes.items()} for k, g in graphs.items()}
    finally:
        for graph in graphs.values():
            graph.stop()
        rclpy.try_shutdown()
    return {
        "base": base,
        "scopes": scopes,
        "regions": regions,
        "outcomes": outcomes,
        "started": started,
        "finished": finished,
        "tiles": tiles,
        "seeds": seeds,
        "poses": poses,
        "logs": logs,
    }


@pytest.mark.timeout(1500)
def test_both_scan_at_once_and_write_their_own_slide(two_scans):
    for k, outcome in two_scans["outcomes"].items():
        assert outcome.ok, (k, outcome.message, two_scans["logs"][k]["planner"][-3000:])
        out = two_scans["base"] / f"scan_{k}"
        assert Path(outcome.result.output_dir) == out
        assert (out / "slide.tiff").is_file()
    started, finished = two_scans["started"], two_scans["finished"]
    assert max(started.values()) < min(finished.values()), "the scans did not overlap"


def test_each_planner_publishes_only_its_own_tiles_in_its_own_region(two_scans):
    for k, tiles in two_scans["tiles"].items():
        report = json.loads((two_scans["base"] / f"scan_{k}" / "report.json").read_text())
        assert len(tiles) == report["tiles_total"] == 2, (k, [t.scan_id for t in tiles])
        assert {t.scan_id for t in tiles} == {f"scan_{k}"}
        (x0, y0), (x1, y1) = two_scans["regions"][k]
        for t in tiles:
            assert x0 <= t.position.x <= x1 and y0 <= t.position.y <= y1, (k, t.position)


def test_each_camera_has_its_own_parameters(two_scans):
    assert two_scans["seeds"] == SEEDS


def test_tiles_are_in_focus_on_their_own_slide_and_each_stage_ends_in_its_region(two_scans):
    for k, scope in two_scans["scopes"].items():
        report = json.loads((two_scans["base"] / f"scan_{k}" / "report.json").read_text())
        fov = _fov(scope)
        tissue = [t for t in report["tiles"] if t["has_tissue"]]
        assert tissue, (k, report["tiles"])
        half_dof = scope.profile.depth_of_field_m / 2
        for t in tissue:
            assert field_tissue_fraction(scope, t["x_m"], t["y_m"], fov) > 0, (k, t)
        errors = [abs(t["true_focus_error_m"]) for t in tissue]
        assert np.mean([e <= half_dof for e in errors]) >= 0.5, (k, errors)
        (x0, y0), (x1, y1) = two_scans["regions"][k]
        x, y, _ = two_scans["poses"][k]
        slack = max(fov)  # the stage may end at a field's centre beyond the region's edge
        assert x0 - slack <= x <= x1 + slack and y0 - slack <= y <= y1 + slack, (k, (x, y))
