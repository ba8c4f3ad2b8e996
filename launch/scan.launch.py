"""Launch the DeepAf graph: stage, camera, focus server and scan planner.

    ros2 launch deepaf scan.launch.py                      # virtual microscope, 4x profile
    ros2 launch deepaf scan.launch.py namespace:=scope2 camera_backend:=opencv
    ros2 launch deepaf scan.launch.py params_file:=/path/to/my_microscope.yaml

Then send a ScanSlide goal (`ros2 action send_goal /microscope/scan_slide ...`) or use the
Python client (deepaf.client). The node list comes from deepaf.graph, which the local runner
(`./deepaf scan`, for machines without launch_ros) uses too.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from deepaf.environment import NODE_ENVIRONMENT
from deepaf.graph import GRAPH, LAUNCH_ARGUMENTS
from launch.actions import DeclareLaunchArgument, GroupAction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node, PushROSNamespace

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    """Environment, then argument declarations, then the nodes under one namespace."""
    share = get_package_share_directory("deepaf")
    defaults = dict(LAUNCH_ARGUMENTS)
    defaults["params_file"] = (
        os.path.join(share, "config", "deepaf.yaml"),
        LAUNCH_ARGUMENTS["params_file"][1],
    )
    environment = [
        SetEnvironmentVariable(key, os.environ.get(key, value))
        for key, value in NODE_ENVIRONMENT.items()
    ]
    declarations = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in defaults.items()
    ]
    declarations.append(
        DeclareLaunchArgument(
            "with_planner", default_value="true", description="start the scan planner"
        )
    )
    nodes = [
        Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            output="screen",
            parameters=[
                LaunchConfiguration("params_file"),
                {param: LaunchConfiguration(arg) for param, arg in spec.launch_params.items()},
            ],
            arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
            condition=IfCondition(
                PythonExpression(
                    [
                        "'",
                        LaunchConfiguration("with_planner"),
                        "' == 'true' or '",
                        spec.name,
                        "' != 'planner'",
                    ]
                )
            ),
        )
        for spec in GRAPH
    ]
    group = GroupAction([PushROSNamespace(LaunchConfiguration("namespace")), *nodes])
    return LaunchDescription([*environment, *declarations, group])
