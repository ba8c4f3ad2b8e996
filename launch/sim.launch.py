"""Launch the DeepAf graph on the virtual microscope (sim camera and stage backends).

    ros2 launch deepaf sim.launch.py                          # 4x, lab_a_standard, slide 0
    ros2 launch deepaf sim.launch.py profile:=20x namespace:=virtual2

The same graph as scan.launch.py (which it includes), with the backends pinned to `sim`, so a
parameter file made for real hardware cannot switch this launch to hardware by accident.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    """Declarations, then the included graph with sim backends."""
    scan = os.path.join(get_package_share_directory("deepaf"), "launch", "scan.launch.py")
    forwarded = ("namespace", "profile", "log_level")
    declarations = [
        DeclareLaunchArgument(
            "namespace", default_value="microscope", description="namespace of every node and topic"
        ),
        DeclareLaunchArgument(
            "profile", default_value="4x", description="virtual microscope optics profile: 4x | 20x"
        ),
        DeclareLaunchArgument(
            "log_level", default_value="info", description="log level of every node"
        ),
    ]
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(scan),
        launch_arguments={
            **{name: LaunchConfiguration(name) for name in forwarded},
            "camera_backend": "sim",
            "stage_backend": "sim",
        }.items(),
    )
    return LaunchDescription([*declarations, include])
