"""Test publisher for the bag tests: a small DeepAf-like graph in its own process.

Usage: python bag_peer.py NAMESPACE COUNT [PERIOD_S]

Publishes COUNT messages on camera/image_raw (sensor-data QoS, 64x48 rgb8, pixel value = i),
joint_states (focus_z = i um), focus/prediction (offset = i um) and camera/image_full
(reliable, 96x64 rgb8), plus one latched scan/status, PERIOD_S apart, once every topic has a
subscriber (at most 20 s), then waits 1 s and exits.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from deepaf_driver.conversions import image_to_msg, joint_state
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from deepaf_msgs.msg import FocusPrediction, ScanStatus


def main() -> int:
    namespace, count = sys.argv[1], int(sys.argv[2])
    period = float(sys.argv[3]) if len(sys.argv) > 3 else 0.05
    with rclpy.init():
        node = rclpy.create_node("bag_peer", namespace=namespace)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        pubs = {
            "preview": node.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data),
            "joints": node.create_publisher(JointState, "joint_states", 10),
            "pred": node.create_publisher(FocusPrediction, "focus/prediction", 10),
            "full": node.create_publisher(Image, "camera/image_full", 10),
            "status": node.create_publisher(ScanStatus, "scan/status", latched),
        }
        status = ScanStatus(scan_id="peer", state=ScanStatus.STATE_DONE, tiles_total=count)
        pubs["status"].publish(status)
        deadline = time.monotonic() + 20.0
        while any(p.get_subscription_count() == 0 for p in pubs.values()):
            if time.monotonic() > deadline:
                print("no subscriber after 20 s", flush=True)
                return 1
            time.sleep(0.05)
        time.sleep(0.3)  # let the subscriptions' readers settle
        print("publishing", flush=True)
        for i in range(count):
            stamp = node.get_clock().now().to_msg()
            z = i * 1e-6
            pubs["joints"].publish(joint_state((1e-3, 2e-3, z), stamp))
            time.sleep(0.01)  # the stage reports its pose before the camera frame arrives
            pubs["preview"].publish(image_to_msg(np.full((48, 64, 3), i, np.uint8), stamp, "cam"))
            full = np.zeros((64, 96, 3), np.uint8)
            full[:, :, 0] = i
            full[:, :, 1] = np.arange(96, dtype=np.uint8)
            pubs["full"].publish(image_to_msg(full, stamp, "cam"))
            pred = FocusPrediction(offset=float(i) * 1e-6, focus_z=z, model="peer")
            pred.header.stamp = stamp
            pubs["pred"].publish(pred)
            time.sleep(period)
        time.sleep(1.0)
        node.destroy_node()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
