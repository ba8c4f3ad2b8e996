"""QoS of the driver's topics, defined once for publishers and subscribers in every package.

Previews are published RELIABLE, keep-last 5, volatile. Measured here (two processes,
LARGE_DATA transport): a 1280x720 rgb8 frame is ~2.8 MB, and best-effort delivery (the
"sensor data" profile) delivered 0 of 360 frames, while reliable delivered ~29 of 30 per
second. A reliable publisher still matches best-effort subscribers (for small messages such
as camera_info they work), but image subscribers should use `PREVIEW_QOS`. Each preview's stage
pose at exposure travels on camera/pose (`POSE_QOS`).
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

#: camera/image_raw and camera/camera_info (publishers and image subscribers).
PREVIEW_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=5,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

#: camera/pose (geometry_msgs/PointStamped, one per preview, stamped like the frame): reliable,
#: deeper than the images so a subscriber can pair the pose of any image it still holds.
POSE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=20,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
