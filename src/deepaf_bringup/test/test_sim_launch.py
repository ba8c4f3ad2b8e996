"""`ros2 launch deepaf_bringup sim.launch.py` as a user runs it, checked with the real ros2 CLI.

A launch_testing test, run twice: from the workspace root (where the `./deepaf` script sits
beside src/ and install/) and from another directory. Both check that the four nodes come up
under their namespace and that Ctrl-C (launch_testing ends the launch with SIGINT, which
`ros2 launch` passes on to every node) ends each of them cleanly. From the root it also sends
goals with `ros2 action send_goal`:

- a MoveStage goal naming only z moves focus_z alone (x and y stay where they are);
- a bad goal of every action (MoveStage, PredictFocus, ScanSlide, AcquireFocalStack) is
  accepted and aborted, and the reason is in the result the command line prints;
- a small ScanSlide (2 fields, 2028x1520 captures through `params_file:=`) writes slide.tiff.

Run it with `launch_test src/deepaf_bringup/test/test_sim_launch.py` (or `colcon test` on a
full ROS 2 install); `./deepaf test` runs it through test_ros2_cli.py when ../shared/ros2cli
is there.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
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
from ament_index_python.packages import get_package_prefix, get_package_share_directory
from deepaf.testing import run_ros2
from launch.actions import ExecuteProcess

from launch import LaunchDescription

NODES = ("stage", "camera", "focus", "planner")
CAMERA = {
    "capture_width": 2028,
    "capture_height": 1520,
    "preview_width": 640,
    "preview_height": 360,
}
READY = 240.0  # [s] for the graph to come up (torch import and model load on a loaded machine)


def workspace_root() -> Path:
    """The colcon workspace this package was installed from (isolated or merged install)."""
    prefix = Path(get_package_prefix("deepaf_bringup")).resolve()
    base = prefix if (prefix / "setup.bash").exists() else prefix.parent
    return base.parent


def _params_file() -> str:
    """config/deepaf.yaml with smaller camera frames (the 4x model's sampling), in a temp file."""
    config = Path(get_package_share_directory("deepaf_bringup")) / "config" / "deepaf.yaml"
    params = yaml.safe_load(config.read_text())
    params["/**/camera"]["ros__parameters"].update(CAMERA)
    fd, path = tempfile.mkstemp(prefix="deepaf-sim-launch-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(params, f)
    return path


@pytest.mark.launch_test
@launch_testing.parametrize("where", ["workspace_root", "elsewhere"])
def generate_test_description(where: str):
    """`ros2 launch deepaf_bringup sim.launch.py` from `where`, in its own namespace."""
    cwd = workspace_root() if where == "workspace_root" else Path(tempfile.mkdtemp())
    namespace = f"sim_{where}_{os.getpid()}"
    # each node's SIGINT-to-SIGTERM grace (launch's `sigterm_timeout`, 5 s by default): at
    # load 6+ on 2 cores all four nodes once needed longer than 5 s to finish cleanly
    args = [f"namespace:={namespace}", "sigterm_timeout:=20"]
    if where == "workspace_root":
        args.append(f"params_file:={_params_file()}")
    launch = ExecuteProcess(
        cmd=["ros2", "launch", "deepaf_bringup", "sim.launch.py", *args],
        cwd=str(cwd),
        output="screen",
        # longer than the nodes' own 20 s grace inside the launch, so the launch can finish
        # its clean shutdown before it is killed (both at 20 s: -15 at load 5+ in CI)
        sigterm_timeout="60",
        additional_env={"PYTHONUNBUFFERED": "1"},  # its output as it comes, not at exit
    )
    context = {"launch": launch, "ns": "/" + namespace, "cwd": cwd}
    return LaunchDescription([launch, launch_testing.actions.ReadyToTest()]), context


def _send_goal(ns: str, action: str, kind: str, goal: str, timeout: float = 120.0) -> str:
    """`ros2 action send_goal NS/ACTION deepaf_msgs/action/KIND GOAL`; its printed output."""
    done = run_ros2(
        ["action", "send_goal", f"{ns}/{action}", f"deepaf_msgs/action/{kind}", goal],
        os.environ,
        timeout,
    )
    return done.stdout


def _number(text: str, key: str) -> float:
    """The float after `key:` in ros2's YAML-like output (the last occurrence)."""
    found = re.findall(rf"\b{key}: (\S+)", text)
    assert found, f"no {key!r} in:\n{text}"
    return float(found[-1])


class TestSimLaunch(unittest.TestCase):
    """While the launch runs (tests run in name order)."""

    def test_1_graph_comes_up(self, proc_output, launch, ns, cwd):
        """The four nodes start under the namespace, wherever ros2 launch was typed."""
        proc_output.assertWaitFor("planner ready", process=launch, timeout=READY, stream="stdout")
        proc_output.assertWaitFor(
            "serving focus/predict", process=launch, timeout=READY, stream="stdout"
        )
        wanted = {f"{ns}/{name}" for name in NODES}
        for _ in range(3):  # discovery within --spin-time can miss a node on a loaded machine
            listed = run_ros2(["node", "list", "--no-daemon", "--spin-time", "5"], os.environ, 60)
            if wanted <= set(listed.stdout.split()):
                break
        self.assertLessEqual(wanted, set(listed.stdout.split()), f"cwd {cwd}: {listed.stdout}")

    def test_2_move_naming_only_z_moves_only_z(self, ns, where):
        """`{z: 0.0001}` moves focus_z; stage_x and stage_y stay where they were."""
        if where != "workspace_root":
            self.skipTest("goals are checked in the workspace-root run")
        out = _send_goal(ns, "stage/move", "MoveStage", "{x: 0.007, y: 0.006}")
        self.assertIn("SUCCEEDED", out, out)
        out = _send_goal(ns, "stage/move", "MoveStage", "{z: 0.0001}")
        self.assertIn("SUCCEEDED", out, out)
        for key, want in (("x", 0.007), ("y", 0.006), ("z", 0.0001)):
            self.assertAlmostEqual(_number(out, key), want, delta=1e-7, msg=out)
        echo = run_ros2(
            [
                "topic",
                "echo",
                "--once",
                "--no-daemon",
                f"{ns}/joint_states",
                "sensor_msgs/msg/JointState",
            ],
            os.environ,
            60,
        )
        position = yaml.safe_load(echo.stdout.split("---")[0])["position"]
        for got, want in zip(position, (0.007, 0.006, 0.0001), strict=True):
            self.assertAlmostEqual(got, want, delta=1e-7, msg=echo.stdout)

    def test_3_refused_goals_say_why_on_the_command_line(self, ns, where):
        """Every action accepts a bad goal and aborts it with the reason in the result."""
        if where != "workspace_root":
            self.skipTest("goals are checked in the workspace-root run")
        cases = {
            ("stage/move", "MoveStage", "{x: 1.0}"): "limit",
            ("focus/predict", "PredictFocus", "{}"): "no image to predict from",
            ("scan_slide", "ScanSlide", "{}"): "output_dir is empty",
            ("acquire_focal_stack", "AcquireFocalStack", "{}"): "must be positive",
        }
        for (action, kind, goal), reason in cases.items():
            out = _send_goal(ns, action, kind, goal)
            self.assertIn("Goal accepted", out, out)
            self.assertIn("Goal finished with status: ABORTED", out, out)
            self.assertRegex(out, rf"message: .*{re.escape(reason)}", out)

    def test_4_scan_writes_a_slide(self, ns, where):
        """A two-field ScanSlide goal succeeds and writes slide.tiff."""
        if where != "workspace_root":
            self.skipTest("the scan runs in the workspace-root run")
        from deepaf.sim_regions import edge_region
        from deepaf_driver.backends.sim import SCAN_SLIDE
        from deepaf_driver.sim import VirtualMicroscope

        scope = VirtualMicroscope("4x", "lab_a_standard", slide_seed=0, slide=SCAN_SLIDE)
        fov = (
            CAMERA["capture_width"] * scope.pixel_size_m,
            CAMERA["capture_height"] * scope.pixel_size_m,
        )
        (x0, y0), (x1, y1) = edge_region(scope, fov, cols=2, rows=1, min_empty=0)
        out_dir = Path(tempfile.mkdtemp(prefix="deepaf-sim-scan-"))
        goal = (
            f"{{region_min: {{x: {x0}, y: {y0}}}, region_max: {{x: {x1}, y: {y1}}}, "
            f"output_dir: {out_dir}}}"
        )
        start = time.monotonic()
        out = _send_goal(ns, "scan_slide", "ScanSlide", goal, timeout=600.0)
        self.assertIn("Goal finished with status: SUCCEEDED", out, out)
        self.assertTrue((out_dir / "slide.tiff").is_file(), out)
        print(f"scan of 2 fields: {time.monotonic() - start:.0f} s")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    """After launch_testing stopped the launch with SIGINT (Ctrl-C)."""

    def test_every_node_ended_cleanly(self, proc_info, proc_output, launch):
        """ros2 launch exits 0, each node 'finished cleanly', no traceback anywhere."""
        launch_testing.asserts.assertExitCodes(proc_info, process=launch)
        text = "".join(line.text.decode(errors="replace") for line in proc_output[launch])
        self.assertEqual(text.count("process has finished cleanly"), len(NODES), text[-4000:])
        for bad in ("process has died", "Traceback", "never retrieved", "escalating to"):
            self.assertNotIn(bad, text, text[-4000:])
