"""deepaf_driver: the DeepAf camera and stage nodes, their backends and the virtual microscope.

- `deepaf_driver.camera_node`, `deepaf_driver.stage_node`: the ROS 2 nodes (thin).
- `deepaf_driver.backends`: camera and stage backends behind one small interface each
  (`sim` by default; `opencv`, `picamera2`, `motorkit`, `sangaboard` on hardware).
- `deepaf_driver.reference`: the stage's absolute reference (ROS-free): machine coordinates,
  the limits in force, the saved reference file.
- `deepaf_driver.conversions`: the one place for message <-> numpy conversions.
- `deepaf_driver.sim`: the ROS-free virtual microscope.
- Definitions shared by every package (ROS-free, no simulator): `deepaf_driver.profiles`
  (optics profiles, depth of field: the in-focus criterion), `deepaf_driver.dataset_format`
  (the focal-stack dataset files), `deepaf_driver.focus_measure` (Brenner, peak refinement).
"""
