"""Launch the DeepAf graph: stage, camera, focus server and scan planner.

    ros2 launch deepaf_bringup scan.launch.py                    # config/deepaf.yaml: sim, 4x
    ros2 launch deepaf_bringup scan.launch.py params_file:=my_scope.yaml   # the file's hardware
    ros2 launch deepaf_bringup scan.launch.py namespace:=scope2 camera_backend:=opencv

Parameters: the node's defaults, then `params_file`, then the arguments given here
(`camera_backend`, `stage_backend`, `profile`; left empty they set nothing). Then send a
ScanSlide goal (`ros2 action send_goal /microscope/scan_slide ...`) or use the Python client
(deepaf.client). The node list is deepaf.graph.GRAPH, which the local runner (`./deepaf scan`,
for machines without launch_ros) starts too.
"""

from __future__ import annotations

from deepaf.graph_launch import graph_launch_description

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    """Environment, then argument declarations, then the nodes under one namespace."""
    return graph_launch_description()
