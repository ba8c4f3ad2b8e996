"""Replay recorded previews into a running focus server: it predicts what the bag recorded."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from deepaf.bags import BagWriter, make_qos
from deepaf.bags.typestore import deepaf_typestore
from deepaf.testing import NodeProcess, spin_until, wait_future

pytestmark = pytest.mark.ros

N_PREVIEWS = 3
PERIOD_S = 1.2


def _recorded_session(path: Path, model: Path) -> dict[int, float]:
    """A bag as a focus server would have left it: previews, poses and its predictions.

    Returns the recorded offsets (m) by image stamp (ns).
    """
    from deepaf_focus.predictor import FocusPredictor
    from deepaf_focus.synthetic import render, texture

    store = deepaf_typestore()
    types = store.types
    predictor = FocusPredictor.from_checkpoint(model, profile="20x", num_threads=1)
    rng = np.random.default_rng(7)
    recorded = {}
    with BagWriter(path, {"namespace": "/microscope", "profile": "20x"}) as writer:
        writer.add_topic("/microscope/joint_states", "sensor_msgs/msg/JointState")
        writer.add_topic("/microscope/camera/image_raw", "sensor_msgs/msg/Image", make_qos(False))
        writer.add_topic("/microscope/focus/prediction", "deepaf_msgs/msg/FocusPrediction")
        for i in range(N_PREVIEWS):
            rgb = render(texture(rng, 128), -2.0 + 2.0 * i)
            header = types["std_msgs/msg/Header"](
                types["builtin_interfaces/msg/Time"](100 + i, 0), "cam"
            )
            t = int((1 + i * PERIOD_S) * 1e9)
            joints = types["sensor_msgs/msg/JointState"](
                header,
                ["stage_x", "stage_y", "focus_z"],
                np.array([0.01, 0.01, i * 1e-6]),
                np.zeros(0),
                np.zeros(0),
            )
            writer.write_msg("/microscope/joint_states", t, joints)
            image = types["sensor_msgs/msg/Image"](
                header, 128, 128, "rgb8", 0, 384, rgb.reshape(-1)
            )
            writer.write_msg("/microscope/camera/image_raw", t + 1000, image)
            res = predictor.predict(rgb)
            assert res.ok, res.message
            pred = types["deepaf_msgs/msg/FocusPrediction"](
                header,
                0,
                "",
                res.offset_m,
                res.confidence,
                i * 1e-6,
                i * 1e-6 + res.offset_m,
                np.asarray(res.patch_offsets_m, float),
                res.tissue_fraction,
                model.name,
                0.0,
                res.expected_error_m,
            )
            writer.write_msg("/microscope/focus/prediction", t + 50_000_000, pred)
            recorded[(100 + i) * 10**9] = res.offset_m
    return recorded


# The focus server subscribes to previews with sensor-data QoS (best effort), as previews are
# meant to be: on a loaded 2-core machine a replayed frame can be dropped (the test's
# subscription misses it, or the server answers frame_unavailable); rerun then.
@pytest.mark.flaky(reruns=2)
def test_replayed_previews_give_the_recorded_predictions(ros_node, namespace, tmp_path):
    import torch
    from deepaf_focus.checkpoint import save_checkpoint
    from deepaf_focus.model import build_model
    from rclpy.action import ActionClient
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from deepaf_msgs.action import PredictFocus

    torch.manual_seed(0)
    model = save_checkpoint(
        tmp_path / "m.pt", build_model(init_features=4, patch_size=32, profile="20x")
    )
    bag = tmp_path / "session"
    recorded = _recorded_session(bag, model)

    frames: list[int] = []
    ros_node.create_subscription(
        Image,
        f"{namespace}/camera/image_raw",
        lambda m: frames.append(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec),
        qos_profile_sensor_data,
    )
    client = ActionClient(ros_node, PredictFocus, f"{namespace}/focus/predict")
    server = NodeProcess(
        ["-m", "deepaf_focus.focus_server"],
        [
            "-r",
            f"__ns:={namespace}",
            "-p",
            f"model:={model}",
            "-p",
            "profile:=20x",
            "-p",
            "num_threads:=1",
        ],
    )
    replayed: dict[int, float] = {}
    with server:
        spin_until(ros_node, lambda: client.server_is_ready(), 60, "the focus server")
        player = NodeProcess(
            [
                "-m",
                "deepaf.bag_command",
                "play",
                str(bag),
                "--namespace",
                namespace,
                "--topics",
                "camera/image_raw",
                "joint_states",
                "--wait-for",
                "camera/image_raw",
                "--delay",
                "4",  # --wait-for is met by this test's subscription; let the server match too
            ]
        )
        with player:
            # Name each replayed preview by its stamp: the server holds its last frames, so
            # the answer does not depend on how far the player got by the time a goal lands.
            spin_until(ros_node, lambda: len(frames) >= N_PREVIEWS, 30, "the replayed previews")
            for stamp_ns in frames[:N_PREVIEWS]:
                goal = PredictFocus.Goal()
                goal.preview_stamp.sec, goal.preview_stamp.nanosec = divmod(stamp_ns, 10**9)
                handle = wait_future(ros_node, client.send_goal_async(goal), 30, "goal accepted")
                assert handle.accepted
                result = wait_future(ros_node, handle.get_result_async(), 30, "prediction").result
                assert result.success, result.message
                stamp = result.prediction.header.stamp
                assert stamp.sec * 10**9 + stamp.nanosec == stamp_ns
                replayed[stamp_ns] = result.prediction.offset
            deadline = time.monotonic() + 20
            while player.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
        client.destroy()
    assert sorted(replayed) == sorted(recorded)
    for stamp, offset in recorded.items():
        assert replayed[stamp] == pytest.approx(offset, abs=1e-9), stamp
