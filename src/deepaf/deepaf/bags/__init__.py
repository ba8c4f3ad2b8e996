"""rosbag2 bags of DeepAf sessions: record, read, replay, evaluate offline, convert.

Bags are standard rosbag2 (metadata version 9, mcap storage) with the deepaf_msgs
definitions inside, written and read with `rosbags` (no rosbag2 install needed); they play
with `ros2 bag play` on a full ROS 2 install and bags recorded there read here.

* :mod:`.typestore`: standard types + deepaf_msgs (RIHS01 hashes equal rosidl's).
* :mod:`.writer`, :mod:`.reader`: ROS-free bag I/O, streaming.
* :mod:`.recorder`, :mod:`.player`: rclpy nodes (raw CDR in, raw CDR out).
* :mod:`.evaluate`, :mod:`.to_dataset`: offline evaluation and focal-stack conversion.
"""

from .errors import BagError
from .reader import BagMessage, BagReader, TopicInfo
from .writer import SIDECAR, BagWriter, make_qos

__all__ = ["SIDECAR", "BagError", "BagMessage", "BagReader", "BagWriter", "TopicInfo", "make_qos"]
