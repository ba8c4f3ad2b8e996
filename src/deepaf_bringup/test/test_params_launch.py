"""`params_file:=` chooses the hardware; an argument given on the command line wins over it.

A launch_testing test. One parameter file, a copy of config/deepaf.yaml with `profile: 20x`
for every node, `camera.backend: opencv` and `stage.backend: motorkit`, is launched twice with
`ros2 launch deepaf_bringup scan.launch.py` (without the planner):

- namespace `explicit`, with `camera_backend:=sim stage_backend:=sim`: the arguments win
  (backends sim), and the file wins over the defaults (profile 20x, read with `ros2 param get`);
- namespace `from_file`, with no backend argument: the camera and stage start the file's
  hardware backends, which, with no camera or motor HAT here, refuse to start (exit status 2)
  and say which backend they tried.

Run it with `launch_test src/deepaf_bringup/test/test_params_launch.py` (or `colcon test`);
`./deepaf test` runs it through test_ros2_cli.py when ../shared/ros2cli is there.
"""

from __future__ import annotations

import os
import re
import tempfile
import unittest
from pathlib import Path

import pytest

pytest.importorskip(
    "launch_testing", reason="needs ROS 2 launch_testing (test_ros2_cli.py runs this file)"
)
import launch_testing
import launch_testing.actions
import launch_testing.asserts
import yaml
from ament_index_python.packages import get_package_share_directory
from deepaf.testing import run_ros2
from launch.actions import ExecuteProcess

from launch import LaunchDescription

READY = 240.0  # [s] for the focus server to load its model on a loaded machine


def _hardware_params_file() -> str:
    """config/deepaf.yaml made for a real microscope (20x, OpenCV camera, motor HAT stage)."""
    config = Path(get_package_share_directory("deepaf_bringup")) / "config" / "deepaf.yaml"
    params = yaml.safe_load(config.read_text())
    params["/**"]["ros__parameters"]["profile"] = "20x"
    params["/**/camera"]["ros__parameters"]["backend"] = "opencv"
    params["/**/stage"]["ros__parameters"]["backend"] = "motorkit"
    fd, path = tempfile.mkstemp(prefix="deepaf-my-scope-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(params, f)
    return path


def _launch(namespace: str, params_file: str, *args: str) -> ExecuteProcess:
    return ExecuteProcess(
        cmd=[
            "ros2",
            "launch",
            "deepaf_bringup",
            "scan.launch.py",
            f"namespace:={namespace}",
            f"params_file:={params_file}",
            "with_planner:=false",
            "sigterm_timeout:=20",  # each node's SIGINT grace: 5 s was too short at load 6+
            *args,
        ],
        output="screen",
        # longer than the nodes' own 20 s grace inside the launch, so the launch can finish
        # its clean shutdown before it is killed (both at 20 s: -15 at load 5+ in CI)
        sigterm_timeout="60",
        additional_env={"PYTHONUNBUFFERED": "1"},  # its output as it comes, not at exit
    )


@pytest.mark.launch_test
def generate_test_description():
    """The same hardware parameter file, once with explicit sim backends, once without."""
    suffix = os.getpid()
    params_file = _hardware_params_file()
    explicit = _launch(
        f"explicit_{suffix}", params_file, "camera_backend:=sim", "stage_backend:=sim"
    )
    from_file = _launch(f"from_file_{suffix}", params_file)
    context = {"explicit": explicit, "from_file": from_file, "suffix": suffix}
    return (
        LaunchDescription([explicit, from_file, launch_testing.actions.ReadyToTest()]),
        context,
    )


def _param(node: str, name: str) -> str:
    """`ros2 param get NODE NAME` as printed ('String value is: sim')."""
    got = run_ros2(["param", "get", "--no-daemon", "--timeout", "20", node, name], os.environ, 90)
    return got.stdout.strip()


class TestParameterPrecedence(unittest.TestCase):
    def test_arguments_win_over_the_file_and_the_file_over_defaults(
        self, proc_output, explicit, suffix
    ):
        """Backends from the command line (sim); profile from the file (20x)."""
        proc_output.assertWaitFor(
            "serving focus/predict", process=explicit, timeout=READY, stream="stdout"
        )
        ns = f"/explicit_{suffix}"
        self.assertEqual(_param(f"{ns}/camera", "backend"), "String value is: sim")
        self.assertEqual(_param(f"{ns}/stage", "backend"), "String value is: sim")
        for node in ("camera", "stage", "focus"):
            self.assertEqual(_param(f"{ns}/{node}", "profile"), "String value is: 20x", node)
        proc_output.assertWaitFor(
            "deepaf_20x", process=explicit, timeout=10, stream="stdout"
        )  # the 20x model

    def test_the_file_chooses_the_hardware(self, proc_output, from_file):
        """Without backend arguments the camera and stage start the file's backends."""
        proc_output.assertWaitFor(
            "cannot open camera", process=from_file, timeout=READY, stream="stdout"
        )
        proc_output.assertWaitFor(
            "adafruit_motorkit", process=from_file, timeout=READY, stream="stdout"
        )
        for node in ("camera_node", "stage_node"):  # EXIT_CONFIG_ERROR, not a crash
            died = re.compile(rf"\[{node}-\d+\]: process has died \[pid \d+, exit code 2,")
            proc_output.assertWaitFor(died, process=from_file, timeout=60, stream="stdout")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_launches_exit_cleanly(self, proc_info, proc_output, explicit):
        """Both ros2 launch processes exit 0; the explicit graph's nodes end cleanly."""
        launch_testing.asserts.assertExitCodes(proc_info)
        text = "".join(line.text.decode(errors="replace") for line in proc_output[explicit])
        self.assertEqual(text.count("process has finished cleanly"), 3, text[-4000:])
        self.assertNotIn("Traceback", text, text[-4000:])
