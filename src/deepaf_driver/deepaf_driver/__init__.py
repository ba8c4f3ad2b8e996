"""deepaf_driver: the DeepAf camera and stage nodes, their backends and the virtual microscope.

- `deepaf_driver.camera_node`, `deepaf_driver.stage_node`: the ROS 2 nodes (thin).
- `deepaf_driver.backends`: camera and stage backends behind one small interface each
  (`sim` by default; `opencv`, `picamera2`, `motorkit`, `sangaboard` on hardware).
- `deepaf_driver.conversions`: the one place for message <-> numpy conversions.
- `deepaf_driver.sim`: the ROS-free virtual microscope.
"""
