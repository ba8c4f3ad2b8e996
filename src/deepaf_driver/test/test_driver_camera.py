"""The camera node (with the stage node) in their own processes over real DDS: a capture after
a move shows the new pose, a 12 MP capture arrives intact, a hung backend fails in bounded
time, unusable timeouts are refused, one capture at a time, and the preview stream."""

from __future__ import annotations

import hashlib
import math
import time

import numpy as np
import pytest
from deepaf.testing import NodeProcess, spin_until, wait_future
from deepaf_driver.backends.sim import make_microscope
from deepaf_driver.conversions import msg_to_rgb
from deepaf_driver.qos import PREVIEW_QOS
from rclpy.action import ActionClient
from sensor_msgs.msg import CameraInfo, Image

pytestmark = pytest.mark.ros

CAMERA = ["-m", "deepaf_driver.camera_node"]
STAGE = ["-m", "deepaf_driver.stage_node"]
SIM = ("4x", "lab_a_standard", 0)


def _args(namespace: str, *params: str) -> list[str]:
    args = ["-r", f"__ns:={namespace}"]
    for p in params:
        args += ["-p", p]
    return args


def _capture_client(node, namespace: str, proc: NodeProcess):
    from deepaf_msgs.srv import CaptureImage

    client = node.create_client(CaptureImage, f"{namespace}/camera/capture")
    assert client.wait_for_service(timeout_sec=30), proc.output()
    return client, CaptureImage


def test_capture_after_a_move_shows_the_new_pose(ros_node, namespace):
    from deepaf_msgs.action import MoveStage

    small = (
        "preview_width:=320",
        "preview_height:=180",
        "capture_width:=400",
        "capture_height:=300",
    )
    with (
        NodeProcess(STAGE, _args(namespace, "time_scale:=0.05")) as stage,
        NodeProcess(CAMERA, _args(namespace, "noise:=false", "preview_rate:=10.0", *small)) as cam,
    ):
        mover = ActionClient(ros_node, MoveStage, f"{namespace}/stage/move")
        assert mover.wait_for_server(timeout_sec=30), stage.output()
        client, CaptureImage = _capture_client(ros_node, namespace, cam)
        scope = make_microscope(*SIM, preview_size=(320, 180), capture_size=(400, 300))
        x, y = scope.random_tissue_position(np.random.default_rng(3))
        step = scope.stage.z_step_m
        target = (x, y, round(float(scope.best_focus_z(x, y)) / step) * step)
        handle = wait_future(
            ros_node,
            mover.send_goal_async(MoveStage.Goal(x=target[0], y=target[1], z=target[2])),
            10,
            "goal",
        )
        result = wait_future(ros_node, handle.get_result_async(), 20, "move").result
        assert result.error_code == MoveStage.Result.CODE_SUCCEEDED, result.message
        pose = (result.position.x, result.position.y, result.position.z)
        assert np.allclose(pose, target, atol=1e-9)

        # the capture reports the pose the camera last heard; the final joint state can
        # arrive a moment after the move's result on a loaded machine (the planner waits
        # for it the same way), so it must become the new pose within a few seconds
        deadline = time.monotonic() + 10.0
        while True:
            response = wait_future(
                ros_node, client.call_async(CaptureImage.Request(timeout=20.0)), 30, "capture"
            )
            assert response.success, response.message
            got = (response.stage_position.x, response.stage_position.y, response.stage_position.z)
            if got == pose or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert got == pose
        assert response.image.header.frame_id == "camera_optical_frame"
        assert response.camera_info.width == 400 and response.camera_info.height == 300
        assert response.exposure_time > 0
        got = msg_to_rgb(response.image)
        np.testing.assert_array_equal(got, scope.capture(*pose, noise=False))
        assert got.std() > 5  # tissue in focus, not blank glass
        # the start pose renders something else: the frame really follows the stage
        assert not np.array_equal(got, scope.capture(*scope.stage.position, noise=False))


def test_full_resolution_capture_arrives_intact_one_at_a_time(ros_node, namespace):
    with NodeProcess(CAMERA, _args(namespace, "noise:=false")) as cam:
        client, CaptureImage = _capture_client(ros_node, namespace, cam)
        first = client.call_async(CaptureImage.Request(timeout=60.0))
        time.sleep(0.3)  # the first is rendering its 12 MP frame
        second = wait_future(ros_node, client.call_async(CaptureImage.Request()), 30, "second")
        assert not second.success
        assert "capture already running" in second.message
        response = wait_future(ros_node, first, 90, "12 MP capture")
        assert response.success, response.message
        image = response.image
        assert (image.width, image.height, image.encoding) == (4056, 3040, "rgb8")
        assert math.isnan(response.stage_position.x)  # no stage on the graph: pose unknown
        scope = make_microscope(*SIM)
        expected = scope.capture(*scope.stage.position, noise=False)
        assert (
            hashlib.sha256(bytes(image.data)).hexdigest()
            == hashlib.sha256(expected.tobytes()).hexdigest()
        )


def test_hung_backend_fails_capture_in_bounded_time_and_node_stays_up(ros_node, namespace):
    params = ("sim_fault:=hang_capture", "preview_width:=320", "preview_height:=180")
    with NodeProcess(CAMERA, _args(namespace, *params)) as cam:
        client, CaptureImage = _capture_client(ros_node, namespace, cam)
        t0 = time.monotonic()
        response = wait_future(
            ros_node, client.call_async(CaptureImage.Request(timeout=1.0)), 10, "capture"
        )
        assert time.monotonic() - t0 < 5.0
        assert not response.success
        assert "did not answer within 1.0 s" in response.message
        again = wait_future(ros_node, client.call_async(CaptureImage.Request()), 5, "again")
        assert not again.success and "not answering" in again.message
        frames: list[Image] = []
        ros_node.create_subscription(
            Image, f"{namespace}/camera/image_raw", frames.append, PREVIEW_QOS
        )
        spin_until(ros_node, lambda: len(frames) >= 3, 20, "previews after the hang")
        assert cam.alive()


def test_unusable_capture_timeouts_are_answered_and_node_stays_up(ros_node, namespace):
    """timeout 1e12 or inf used to kill the node (OverflowError in the worker's join)."""
    small = ("preview_width:=320", "preview_height:=180", "capture_width:=400")
    with NodeProcess(CAMERA, _args(namespace, *small, "capture_height:=300")) as cam:
        client, CaptureImage = _capture_client(ros_node, namespace, cam)
        for timeout in (math.inf, 1e12, math.nan, 600.001):
            response = wait_future(
                ros_node, client.call_async(CaptureImage.Request(timeout=timeout)), 10, "capture"
            )
            assert not response.success, timeout
            assert "not a usable capture timeout" in response.message, response.message
            assert "at most 600 s" in response.message
            assert len(response.image.data) == 0
            assert cam.alive(), cam.output()
        # the node still captures, with its default and with the longest allowed timeout
        for timeout in (0.0, 600.0):
            response = wait_future(
                ros_node, client.call_async(CaptureImage.Request(timeout=timeout)), 30, "capture"
            )
            assert response.success, response.message
            assert (response.image.width, response.image.height) == (400, 300)
        assert "OverflowError" not in cam.output()


def test_preview_stream_is_stamped_with_camera_info(ros_node, namespace):
    with NodeProcess(CAMERA, _args(namespace, "preview_rate:=20.0")) as cam:
        frames: list[Image] = []
        infos: list[CameraInfo] = []
        ros_node.create_subscription(
            Image, f"{namespace}/camera/image_raw", frames.append, PREVIEW_QOS
        )
        ros_node.create_subscription(
            CameraInfo, f"{namespace}/camera/camera_info", infos.append, PREVIEW_QOS
        )
        spin_until(ros_node, lambda: len(frames) >= 10 and infos, 30, cam.output() + "previews")
        frame = frames[-1]
        assert (frame.width, frame.height, frame.encoding) == (1280, 720, "rgb8")
        assert frame.header.frame_id == "camera_optical_frame"
        stamps = [f.header.stamp.sec + 1e-9 * f.header.stamp.nanosec for f in frames]
        assert stamps == sorted(stamps) and stamps[-1] > stamps[0] > 0
        assert msg_to_rgb(frame).shape == (720, 1280, 3)
        assert (infos[-1].width, infos[-1].height) == (1280, 720)


def test_every_preview_is_paired_with_the_pose_it_was_exposed_at(ros_node, namespace):
    """camera/pose carries each preview's stage pose, stamped like its image; after a move
    the frames tagged with the new pose are the ones rendered there."""
    from deepaf_driver.conversions import STAGE_FRAME, point_to_pose, stamp_ns
    from deepaf_driver.qos import POSE_QOS
    from geometry_msgs.msg import PointStamped

    from deepaf_msgs.action import MoveStage

    small = ("preview_width:=320", "preview_height:=180", "preview_rate:=10.0", "noise:=false")
    with (
        NodeProcess(STAGE, _args(namespace, "time_scale:=0.05")) as stage,
        NodeProcess(CAMERA, _args(namespace, *small)) as cam,
    ):
        frames: dict[int, Image] = {}
        poses: dict[int, PointStamped] = {}
        ros_node.create_subscription(
            Image,
            f"{namespace}/camera/image_raw",
            lambda m: frames.__setitem__(stamp_ns(m.header.stamp), m),
            PREVIEW_QOS,
        )
        ros_node.create_subscription(
            PointStamped,
            f"{namespace}/camera/pose",
            lambda m: poses.__setitem__(stamp_ns(m.header.stamp), m),
            POSE_QOS,
        )
        mover = ActionClient(ros_node, MoveStage, f"{namespace}/stage/move")
        assert mover.wait_for_server(timeout_sec=30), stage.output()
        scope = make_microscope(*SIM, preview_size=(320, 180), capture_size=(4056, 3040))
        x, y = scope.random_tissue_position(np.random.default_rng(5))
        step = scope.stage.z_step_m
        target = (x, y, round(float(scope.best_focus_z(x, y)) / step) * step)
        handle = wait_future(
            ros_node,
            mover.send_goal_async(MoveStage.Goal(x=target[0], y=target[1], z=target[2])),
            10,
            "goal",
        )
        result = wait_future(ros_node, handle.get_result_async(), 20, "move").result
        assert result.error_code == MoveStage.Result.CODE_SUCCEEDED, result.message
        reached = point_to_pose(result.position)

        def tagged_at_target() -> list[int]:
            return [s for s in frames if s in poses and point_to_pose(poses[s].point) == reached]

        spin_until(ros_node, lambda: tagged_at_target(), 30, cam.output() + "a frame at the pose")
        stamp = tagged_at_target()[0]
        assert poses[stamp].header.frame_id == STAGE_FRAME
        np.testing.assert_array_equal(
            msg_to_rgb(frames[stamp]), scope.preview(*reached, noise=False)
        )
        # a second paired frame (on a loaded machine the first at the pose may be the only one)
        spin_until(ros_node, lambda: len(set(frames) & set(poses)) >= 2, 30, "two paired frames")
        assert set(frames) <= set(poses) | {max(frames)}  # every frame has its pose (bar the
        # newest, whose pose may still be on its way), same stamp, and no pose without a frame
        paired = sorted(set(frames) & set(poses))
        assert len(paired) >= 2
        for s in paired[:-1]:
            pose = point_to_pose(poses[s].point)
            if pose != reached:  # exposed during the move or before it: not the target image
                assert not np.array_equal(
                    msg_to_rgb(frames[s]), scope.preview(*reached, noise=False)
                )


@pytest.mark.parametrize(
    ("param", "reason"),
    [
        ("backend:=hdmi_capture", "unknown camera backend 'hdmi_capture'"),
        ("preview_rate:=thirty", "preview_rate"),
        ("sim_fault:=explode", "unknown sim fault"),
        ("backend:=picamera2", "pip install picamera2"),
    ],
)
def test_bad_configuration_exits_non_zero_with_the_reason(param, reason, namespace):
    with NodeProcess(CAMERA, _args(namespace, param)) as proc:
        proc.proc.wait(timeout=30)
        assert proc.proc.returncode == 2, proc.output()
        assert reason in proc.output()
