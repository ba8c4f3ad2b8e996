"""Launch the DeepAf graph on the virtual microscope (sim camera and stage backends).

    ros2 launch deepaf_bringup sim.launch.py                     # 4x, lab_a_standard, slide 0
    ros2 launch deepaf_bringup sim.launch.py profile:=20x namespace:=virtual2

The same graph as scan.launch.py with both backends pinned to `sim`: they are not arguments
here, and a parameter file made for real hardware cannot switch this launch to hardware.
"""

from __future__ import annotations

from deepaf.graph_launch import graph_launch_description

from launch import LaunchDescription

#: Backends this launch file fixes (scan.launch.py arguments it does not offer).
PINNED = {"camera_backend": "sim", "stage_backend": "sim"}


def generate_launch_description() -> LaunchDescription:
    """The graph of scan.launch.py with sim backends."""
    return graph_launch_description(PINNED)
