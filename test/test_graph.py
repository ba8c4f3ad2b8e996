"""The node graph is declared once: every node the launch file and the runner start exists as
a console script of its package and as a module with main(), and the runner's merged
parameter file gives each node the deployment file's values plus the overrides."""

from __future__ import annotations

import ast
import importlib

import yaml
from deepaf.environment import repo_root
from deepaf.graph import GRAPH, LAUNCH_ARGUMENTS, default_params_file, ros_arguments
from deepaf.runner import write_node_params


def _console_scripts(package: str) -> set[str]:
    tree = ast.parse((repo_root() / "src" / package / "setup.py").read_text())
    return {
        node.value.split("=")[0].strip()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and "=" in node.value
        and ":" in node.value
    }


def test_every_node_is_a_console_script_and_a_module():
    for spec in GRAPH:
        assert spec.executable in _console_scripts(spec.package), spec
        assert callable(importlib.import_module(spec.module).main), spec
        for arg in spec.launch_params.values():
            assert arg in LAUNCH_ARGUMENTS, (spec.name, arg)


def test_launch_files_build_their_nodes_from_the_graph():
    """Both launch files use deepaf.graph_launch, which starts GRAPH (the runner's list)."""
    builder = (repo_root() / "src" / "deepaf" / "deepaf" / "graph_launch.py").read_text()
    assert "from deepaf.graph import GRAPH, LAUNCH_ARGUMENTS" in builder
    assert "for spec in GRAPH" in builder
    scan = (repo_root() / "launch" / "scan.launch.py").read_text()
    assert "return graph_launch_description()" in scan
    sim = (repo_root() / "launch" / "sim.launch.py").read_text()
    assert "graph_launch_description(PINNED)" in sim
    assert 'PINNED = {"camera_backend": "sim", "stage_backend": "sim"}' in sim
    bringup = repo_root() / "src" / "deepaf_bringup"
    for folder in ("launch", "config"):  # installed by deepaf_bringup, from the top-level folder
        assert (bringup / folder).resolve() == (repo_root() / folder).resolve()
        assert not (repo_root() / "src" / "deepaf" / folder).exists()
    # ros2launch takes a file named like the package in the working directory for a launch
    # file: the bringup package must not be named like anything at the workspace root
    assert not (repo_root() / "deepaf_bringup").exists()


def test_launch_arguments_left_empty_defer_to_the_parameter_file():
    """Backends and profile default to empty: the parameter file decides unless one is given."""
    for name in ("camera_backend", "stage_backend", "profile"):
        assert LAUNCH_ARGUMENTS[name][0] == "", name
    assert LAUNCH_ARGUMENTS["namespace"][0] == "microscope"


def test_runner_parameters_merge_file_and_overrides(tmp_path):
    path = write_node_params(
        [default_params_file()],
        [s.name for s in GRAPH],
        {"profile": "20x"},
        {"camera": {"capture_width": 2028}},
        tmp_path / "p.yaml",
    )
    params = yaml.safe_load(path.read_text())
    camera = params["/**/camera"]["ros__parameters"]
    assert camera["capture_width"] == 2028 and camera["profile"] == "20x"
    assert camera["backend"] == "sim" and camera["sim_protocol"] == "lab_a_standard"
    assert params["/**/stage"]["ros__parameters"]["z_min"] < 0
    args = ros_arguments(GRAPH[0], "scope2", [str(path)], {"flag": True})
    assert args[:3] == ["--ros-args", "-r", "__node:=stage"]
    assert "__ns:=/scope2" in args and "flag:=true" in args
