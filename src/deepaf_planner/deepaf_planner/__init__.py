"""deepaf_planner: whole-slide scan planning, focus surface, stitching and slide output.

The scan library (``scan_path``, ``focus_surface``, ``sharpness``, ``stitching``,
``slide_writer``, ``report``) is ROS-free; the planner node translates messages into
calls to it. Units are SI (metres, seconds) throughout.
"""
