"""The node graph as a launch description, for the launch files of deepaf_bringup.

    ros2 launch deepaf_bringup scan.launch.py     # any backend: graph_launch_description()
    ros2 launch deepaf_bringup sim.launch.py      # backends pinned to sim

Needs launch and launch_ros (a full ROS 2 install); nothing else in deepaf imports this module.
The nodes are `deepaf.graph.GRAPH`, the list the local runner (`./deepaf scan`, `./deepaf graph`)
starts too, with the same names, namespace, parameter file and environment.

A node's parameters come from its declared defaults, then the parameter file (`params_file`),
then the launch arguments given on the command line: `camera_backend`, `stage_backend` and
`profile` default to empty, which sets nothing, so `params_file:=my_scope.yaml` chooses the
hardware and `camera_backend:=sim` still overrides the file. Arguments a launch file pins
(sim.launch.py's backends) are not declared, so `--show-args` lists only what can be set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    GroupAction,
    OpaqueFunction,
    SetEnvironmentVariable,
)
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node, PushROSNamespace
from launch_ros.parameter_descriptions import ParameterValue

from deepaf.environment import NODE_ENVIRONMENT
from deepaf.graph import GRAPH, LAUNCH_ARGUMENTS
from launch import LaunchContext, LaunchDescription

#: The ROS package that installs the launch files and config/deepaf.yaml.
BRINGUP_PACKAGE = "deepaf_bringup"


def graph_launch_description(pinned: Mapping[str, str] | None = None) -> LaunchDescription:
    """Environment, then argument declarations, then the graph's nodes under one namespace.

    Args:
        pinned: launch arguments the calling launch file fixes (name -> value); they are not
            declared and always win over the parameter file.
    """
    pinned = dict(pinned or {})
    unknown = set(pinned) - set(LAUNCH_ARGUMENTS)
    if unknown:
        raise ValueError(f"pinned arguments {sorted(unknown)} are not launch arguments")
    share = get_package_share_directory(BRINGUP_PACKAGE)
    environment = [
        SetEnvironmentVariable(key, os.environ.get(key, value))
        for key, value in NODE_ENVIRONMENT.items()
    ]
    declarations = []
    for name, (default, description) in LAUNCH_ARGUMENTS.items():
        if name in pinned:
            continue
        if name == "params_file":
            default = os.path.join(share, "config", "deepaf.yaml")
        declarations.append(
            DeclareLaunchArgument(name, default_value=default, description=description)
        )
    declarations.append(
        DeclareLaunchArgument(
            "with_planner",
            default_value="true",
            description="start the scan planner",
            choices=["true", "false"],
        )
    )
    nodes = OpaqueFunction(function=_graph, kwargs={"pinned": pinned})
    return LaunchDescription([*environment, *declarations, nodes])


def _graph(context: LaunchContext, pinned: Mapping[str, str]) -> list:
    """The nodes, with only the arguments that were given (or pinned) as parameters."""
    values = {
        name: LaunchConfiguration(name).perform(context)
        for name in LAUNCH_ARGUMENTS
        if name not in pinned
    }
    values.update(pinned)
    with_planner = LaunchConfiguration("with_planner").perform(context) == "true"
    nodes = []
    for spec in GRAPH:
        if spec.name == "planner" and not with_planner:
            continue
        given = {
            param: ParameterValue(values[arg], value_type=str)
            for param, arg in spec.launch_params.items()
            if values[arg] != ""
        }
        nodes.append(
            Node(
                package=spec.package,
                executable=spec.executable,
                name=spec.name,
                output="screen",
                parameters=[values["params_file"], given],
                ros_arguments=["--log-level", values["log_level"]],
            )
        )
    return [GroupAction([PushROSNamespace(values["namespace"]), *nodes])]
