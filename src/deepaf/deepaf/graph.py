"""The DeepAf node graph, declared once.

The launch files of deepaf_bringup (`launch/scan.launch.py`, `launch/sim.launch.py`, through
`deepaf.graph_launch`, for users with a full ROS 2 install) and the local runner behind
`./deepaf scan` (where launch_ros is missing) both build the graph from `GRAPH`, so the two
can never disagree about which nodes run, under which names, with which parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from deepaf.environment import repo_root


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph.

    Args:
        package: ROS package that installs the executable.
        executable: console script name (`ros2 run PACKAGE EXECUTABLE`).
        name: node name; parameter files key on it.
        module: Python module with `main()`, used by the local runner.
        role: what the node does, for the README and `--help`.
        launch_params: node parameter -> launch argument that sets it.
    """

    package: str
    executable: str
    name: str
    module: str
    role: str
    launch_params: Mapping[str, str] = field(default_factory=dict)


GRAPH: tuple[NodeSpec, ...] = (
    NodeSpec(
        "deepaf_driver",
        "stage_node",
        "stage",
        "deepaf_driver.stage_node",
        "x/y/focus stage: joint_states, stage/move, stage/joint_trajectory",
        {"backend": "stage_backend", "profile": "profile"},
    ),
    NodeSpec(
        "deepaf_driver",
        "camera_node",
        "camera",
        "deepaf_driver.camera_node",
        "camera: camera/image_raw preview, camera/capture full resolution",
        {"backend": "camera_backend", "profile": "profile"},
    ),
    NodeSpec(
        "deepaf_focus",
        "focus_server",
        "focus",
        "deepaf_focus.focus_server",
        "single-shot focus: focus/predict action, focus/prediction topic",
        {"profile": "profile"},
    ),
    NodeSpec(
        "deepaf_planner",
        "scan_planner",
        "planner",
        "deepaf_planner.planner_node",
        "scan state machine: scan_slide and acquire_focal_stack actions",
        {"profile": "profile"},
    ),
)

#: Launch arguments shared by the launch files and the runner: name -> (default, description).
#: Parameters come from the node's defaults, then the parameter file, then the arguments given:
#: an argument left empty sets nothing, so the file's value (e.g. a hardware backend) holds.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "namespace": ("microscope", "namespace of every node and topic (one per microscope)"),
    "params_file": (
        "",
        "parameter YAML of every node (default: config/deepaf.yaml); the arguments given "
        "override its values",
    ),
    "camera_backend": (
        "",
        "camera backend: sim | opencv | picamera2 (empty: the parameter file's; sim in "
        "config/deepaf.yaml)",
    ),
    "stage_backend": (
        "",
        "stage backend: sim | motorkit | sangaboard (empty: the parameter file's; sim in "
        "config/deepaf.yaml)",
    ),
    "profile": (
        "",
        "optics profile of the virtual microscope and focus model: 4x | 20x (empty: the "
        "parameter file's; 4x in config/deepaf.yaml)",
    ),
    "log_level": ("info", "log level of every node"),
}


def default_params_file() -> str:
    """Path of the default parameter file in the source tree."""
    return str(repo_root() / "config" / "deepaf.yaml")


def ros_arguments(
    spec: NodeSpec,
    namespace: str,
    params_files: Sequence[str],
    overrides: Mapping[str, object] | None = None,
    log_level: str = "info",
) -> list[str]:
    """Return the `--ros-args ...` list that starts `spec` as the launch file would."""
    args = ["--ros-args", "-r", f"__node:={spec.name}", "--log-level", log_level]
    if namespace:
        args += ["-r", f"__ns:=/{namespace.strip('/')}"]
    for path in params_files:
        args += ["--params-file", path]
    for key, value in (overrides or {}).items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{key}:={text}"]
    return args
