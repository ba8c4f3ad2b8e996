"""The focus server in its own process over DDS: predictions from a goal image and from the
latest preview, explicit no-tissue and invalid results, and the published FocusPrediction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from deepaf.testing import NodeProcess, spin_until, wait_future
from deepaf_driver.conversions import image_to_msg
from rclpy.action import ActionClient

from deepaf_msgs.action import PredictFocus
from deepaf_msgs.msg import FocusPrediction

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A checkpoint of the shipped 4x architecture (weights untrained: behaviour, not accuracy)."""
    import yaml
    from deepaf.environment import repo_root
    from deepaf_focus.checkpoint import save_checkpoint
    from deepaf_focus.model import build_model

    cfg = yaml.safe_load((repo_root() / "src/deepaf_focus/config/shipped_4x.yaml").read_text())
    path = tmp_path_factory.mktemp("model") / "net.pt"
    save_checkpoint(path, build_model(cfg["model"]))
    return path


def _tissue_preview() -> np.ndarray:
    from deepaf_driver.sim import VirtualMicroscope

    scope = VirtualMicroscope("4x", "lab_a_standard", slide_seed=0)
    x, y = scope.random_tissue_position(np.random.default_rng(1))
    return scope.preview(x, y, scope.best_focus_z(x, y) + 20e-6)


def _predict(node, client, goal, timeout=60.0):
    handle = wait_future(node, client.send_goal_async(goal), timeout, "goal response")
    assert handle.accepted
    return wait_future(node, handle.get_result_async(), timeout, "result").result


def test_predictions_from_images_and_empty_glass(ros_node, namespace, model_path):
    published: list[FocusPrediction] = []
    ros_node.create_subscription(
        FocusPrediction, f"{namespace}/focus/prediction", published.append, 10
    )
    args = ["-r", f"__ns:={namespace}", "-r", "__node:=focus", "-p", f"model:={model_path}"]
    with NodeProcess(["-m", "deepaf_focus.focus_server"], args) as server:
        client = ActionClient(ros_node, PredictFocus, f"{namespace}/focus/predict")
        assert client.wait_for_server(timeout_sec=60), server.output()
        stamp = ros_node.get_clock().now().to_msg()

        rgb = _tissue_preview()
        result = _predict(
            ros_node,
            client,
            PredictFocus.Goal(image=image_to_msg(rgb, stamp, "camera_optical_frame"), focus_z=1e-5),
        )
        pred = result.prediction
        assert result.success and pred.status == FocusPrediction.STATUS_OK, result.message
        assert math.isfinite(pred.offset) and pred.patch_offsets
        assert pred.offset == pytest.approx(float(np.median(pred.patch_offsets)), abs=1e-9)
        assert pred.target_z == pytest.approx(1e-5 + pred.offset)
        assert pred.model.startswith("net.pt@") and pred.tissue_fraction > 0.1

        glass = np.full((720, 1280, 3), 235, np.uint8)
        result = _predict(
            ros_node,
            client,
            PredictFocus.Goal(image=image_to_msg(glass, stamp, "camera_optical_frame")),
        )
        assert result.success
        assert result.prediction.status == FocusPrediction.STATUS_NO_TISSUE
        assert math.isnan(result.prediction.offset) and "tissue" in result.prediction.message

        tiny = np.zeros((8, 8, 3), np.uint8)  # smaller than one model tile
        result = _predict(
            ros_node,
            client,
            PredictFocus.Goal(image=image_to_msg(tiny, stamp, "camera_optical_frame")),
        )
        assert not result.success and "bad image" in result.message
        assert result.prediction.status == FocusPrediction.STATUS_INVALID

        spin_until(ros_node, lambda: len(published) >= 2, 10, "published predictions")
        assert published[0].offset == pytest.approx(pred.offset)
        assert server.alive()


def test_latest_preview_goal_uses_the_camera_stream(ros_node, namespace, model_path):
    cam_args = ["-r", f"__ns:={namespace}", "-p", "preview_rate:=5.0", "-p", "profile:=4x"]
    focus_args = [
        "-r",
        f"__ns:={namespace}",
        "-p",
        f"model:={model_path}",
        "-p",
        "image_timeout:=60.0",
    ]
    with (
        NodeProcess(["-m", "deepaf_driver.stage_node"], ["-r", f"__ns:={namespace}"]),
        NodeProcess(["-m", "deepaf_driver.camera_node"], cam_args),
        NodeProcess(["-m", "deepaf_focus.focus_server"], focus_args) as server,
    ):
        client = ActionClient(ros_node, PredictFocus, f"{namespace}/focus/predict")
        assert client.wait_for_server(timeout_sec=60), server.output()
        result = _predict(ros_node, client, PredictFocus.Goal(use_latest_preview=True), 120)
        assert result.prediction.header.frame_id == "camera_optical_frame"
        assert result.prediction.status in (
            FocusPrediction.STATUS_OK,
            FocusPrediction.STATUS_NO_TISSUE,
        )
        assert math.isfinite(result.prediction.focus_z)  # from joint_states


def test_corrupt_or_missing_model_stops_the_node_with_the_reason(namespace, tmp_path):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    for model, words in ((bad, "truncated.pt"), (tmp_path / "missing.pt", "missing.pt")):
        node = NodeProcess(
            ["-m", "deepaf_focus.focus_server"],
            ["-r", f"__ns:={namespace}", "-p", f"model:={model}"],
        ).start()
        assert node.proc.wait(timeout=60) == 2
        assert words in node.output() and "cannot" in node.output()
        node.stop()


def _graph_args(namespace, model_path, *camera_params):
    cam = ["-r", f"__ns:={namespace}", "-p", "profile:=4x"]
    for p in camera_params:
        cam += ["-p", p]
    focus = ["-r", f"__ns:={namespace}", "-p", f"model:={model_path}"]
    return cam, focus


def test_concurrent_latest_preview_goals_all_get_a_frame(ros_node, namespace, model_path):
    """More waiting goals than executor threads (4) used to starve the image subscription:
    2 to 4 of 6 failed with "no preview within 5.0 s" while the camera streamed at 30 Hz."""
    cam, focus = _graph_args(namespace, model_path, "preview_rate:=30.0", "noise:=false",
                             "preview_width:=640", "preview_height:=360")  # fmt: skip
    with (
        NodeProcess(["-m", "deepaf_driver.camera_node"], cam),
        NodeProcess(["-m", "deepaf_focus.focus_server"], focus) as server,
    ):
        client = ActionClient(ros_node, PredictFocus, f"{namespace}/focus/predict")
        assert client.wait_for_server(timeout_sec=60), server.output()
        warm = _predict(ros_node, client, PredictFocus.Goal(use_latest_preview=True), 60)
        assert warm.success, warm.message  # the stream is up
        for _ in range(2):
            futures = [
                client.send_goal_async(PredictFocus.Goal(use_latest_preview=True)) for _ in range(6)
            ]
            handles = [wait_future(ros_node, f, 30, "goal response") for f in futures]
            assert all(h.accepted for h in handles)
            results = [wait_future(ros_node, h.get_result_async(), 60, "result").result
                       for h in handles]  # fmt: skip
            failed = [r.message for r in results if not r.success]
            assert not failed, failed
        assert server.alive()


def test_preview_stamp_goals_use_the_held_frame_or_say_it_is_gone(ros_node, namespace, model_path):
    from deepaf_driver.conversions import stamp_ns
    from deepaf_driver.qos import PREVIEW_QOS
    from sensor_msgs.msg import Image

    cam, focus = _graph_args(namespace, model_path, "preview_rate:=10.0", "noise:=false",
                             "preview_width:=640", "preview_height:=360")  # fmt: skip
    frames: list[Image] = []
    ros_node.create_subscription(Image, f"{namespace}/camera/image_raw", frames.append, PREVIEW_QOS)
    with (
        NodeProcess(["-m", "deepaf_driver.stage_node"], ["-r", f"__ns:={namespace}"]),
        NodeProcess(["-m", "deepaf_driver.camera_node"], cam),
        NodeProcess(["-m", "deepaf_focus.focus_server"], focus) as server,
    ):
        client = ActionClient(ros_node, PredictFocus, f"{namespace}/focus/predict")
        assert client.wait_for_server(timeout_sec=60), server.output()
        assert _predict(ros_node, client, PredictFocus.Goal(use_latest_preview=True), 60).success
        spin_until(ros_node, lambda: len(frames) >= 2, 30, "previews")
        frame = frames[-1]
        by_stamp = _predict(ros_node, client, PredictFocus.Goal(preview_stamp=frame.header.stamp))
        assert by_stamp.success and not by_stamp.frame_unavailable, by_stamp.message
        assert stamp_ns(by_stamp.prediction.header.stamp) == stamp_ns(frame.header.stamp)
        assert math.isfinite(by_stamp.prediction.focus_z)  # the frame's camera/pose z
        sent = _predict(ros_node, client, PredictFocus.Goal(image=frame, focus_z=0.0))
        assert sent.prediction.status == by_stamp.prediction.status
        if sent.prediction.status == FocusPrediction.STATUS_OK:  # the very same frame
            assert by_stamp.prediction.offset == pytest.approx(sent.prediction.offset, abs=1e-12)

        gone = frame.header.stamp
        gone.nanosec = (gone.nanosec + 1) % 1_000_000_000  # never published, older than newest
        lost = _predict(ros_node, client, PredictFocus.Goal(preview_stamp=gone), 10)
        assert not lost.success and lost.frame_unavailable
        assert "is not held" in lost.message and "send the image" in lost.message
        assert lost.prediction.status == FocusPrediction.STATUS_INVALID

        future = ros_node.get_clock().now().to_msg()
        future.sec += 60
        t0 = ros_node.get_clock().now().nanoseconds
        late = _predict(ros_node, client, PredictFocus.Goal(preview_stamp=future), 10)
        assert not late.success and late.frame_unavailable and "1.0 s" in late.message
        assert (ros_node.get_clock().now().nanoseconds - t0) * 1e-9 < 5.0
        assert server.alive()
