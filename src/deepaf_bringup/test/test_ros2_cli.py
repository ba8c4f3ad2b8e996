"""The full-ROS user's path, with the real upstream `ros2`, `ros2 launch` and `launch_test`.

The launch tests of this folder (test_*_launch.py, ROS 2's launch_testing form) run here with
`launch_test`, in the environment `deepaf.testing.ros2cli_environment` finds: a full ROS 2
install on PATH, or the overlay `../shared/ros2cli/setup.sh` builds on this checkout (CI has
that folder). Without either, every test here skips with the reason. Also checked here:
`ros2 launch ... --show-args` from the workspace root and from elsewhere lists exactly the
arguments each launch file acts on.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import warnings
from pathlib import Path

import pytest
from deepaf.environment import repo_root
from deepaf.testing import ros2cli_environment, run_ros2

pytestmark = [pytest.mark.ros, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
LAUNCH_TESTS = sorted(p.name for p in HERE.glob("test_*_launch.py"))


@pytest.fixture(scope="module")
def ros2_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.config.pluginmanager.hasplugin("launch_testing"):
        pytest.skip("launch_testing's pytest plugin runs the launch tests directly (colcon test)")
    env, why = ros2cli_environment()
    if env is None:
        pytest.skip(why)
    return env


def _show_args(env: dict[str, str], launch_file: str, cwd: Path) -> list[str]:
    shown = run_ros2(["launch", "deepaf_bringup", launch_file, "--show-args"], env, 120, cwd)
    assert shown.returncode == 0, f"from {cwd}:\n{shown.stdout}"
    return re.findall(r"^    '(\w+)':$", shown.stdout, flags=re.MULTILINE)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("where", ["workspace_root", "elsewhere"])
def test_show_args_lists_what_each_launch_file_acts_on(ros2_env, where):
    cwd = repo_root() if where == "workspace_root" else Path(tempfile.mkdtemp())
    if where == "workspace_root":
        assert (cwd / "deepaf").is_file()  # the script ros2launch once took for a launch file
    common = ["namespace", "params_file", "profile", "log_level", "with_planner"]
    assert sorted(_show_args(ros2_env, "sim.launch.py", cwd)) == sorted(common)
    scan = _show_args(ros2_env, "scan.launch.py", cwd)
    assert sorted(scan) == sorted([*common, "camera_backend", "stage_backend"])


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("name", LAUNCH_TESTS)
def test_launch_test(ros2_env, name, tmp_path):
    """`launch_test FILE` passes (it prints each test and the nodes' output).

    It runs in a session of its own, killed afterwards: a launch that launch_testing had to
    SIGTERM leaves its nodes running, and they must not load the tests that follow. SIGINT
    is reset to its default for it: a test run started as a background job (`cmd &` in a
    script) ignores SIGINT, a Python started so installs no handler, and `ros2 launch`
    then never hears launch_testing's SIGINT (a clean-clone CI run failed just so).
    """
    proc = subprocess.Popen(
        ["launch_test", str(HERE / name), "--junit-xml", str(tmp_path / "junit.xml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ros2_env,
        cwd=tmp_path,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        out, _ = proc.communicate(timeout=1400)
    finally:
        left = _kill_session(proc.pid)
        run_ros2(["daemon", "stop"], ros2_env, 60)  # a verb may have started one
    if left:  # reported, not failed: launch_testing's own verdict is the test
        warnings.warn(f"killed {len(left)} processes left by launch_test: {left}", stacklevel=1)
    assert proc.returncode == 0, out[-15000:]


def _kill_session(sid: int) -> list[str]:
    """SIGKILL every process of session `sid`; return the command lines of those found."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != sid or fields[0] == "Z":  # field 6: the session id
                continue
            pid = int(stat.parent.name)
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            os.kill(pid, signal.SIGKILL)
            found.append(cmd.strip()[:200])
        except (OSError, ValueError, IndexError):
            continue
    return found
