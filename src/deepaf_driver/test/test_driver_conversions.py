"""Message <-> numpy conversions: round trips, every encoding, padding, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from deepaf_driver.conversions import (
    JOINT_NAMES,
    camera_info,
    image_to_msg,
    joint_state,
    joint_state_to_pose,
    msg_to_rgb,
    point,
    point_to_pose,
)
from sensor_msgs.msg import Image, JointState

STAMP = Time(sec=12, nanosec=345)


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)


def test_rgb8_round_trip_is_exact_and_zero_copy(rgb):
    msg = image_to_msg(rgb, STAMP, "cam")
    assert (msg.width, msg.height, msg.step, msg.encoding) == (5, 6, 15, "rgb8")
    assert msg.header.stamp == STAMP and msg.header.frame_id == "cam"
    assert len(msg.data) == rgb.size
    out = msg_to_rgb(msg)
    np.testing.assert_array_equal(out, rgb)
    assert not out.flags.owndata  # a view of the message buffer


@pytest.mark.parametrize(
    ("encoding", "make"),
    [
        ("bgr8", lambda a: a[:, :, ::-1]),
        ("rgba8", lambda a: np.dstack([a, np.full(a.shape[:2], 255, np.uint8)])),
        ("bgra8", lambda a: np.dstack([a[:, :, ::-1], np.zeros(a.shape[:2], np.uint8)])),
    ],
)
def test_other_colour_encodings_come_back_as_rgb(rgb, encoding, make):
    msg = image_to_msg(np.ascontiguousarray(make(rgb)), STAMP, "cam", encoding)
    np.testing.assert_array_equal(msg_to_rgb(msg), rgb)


def test_mono8_is_replicated_to_three_channels(rgb):
    grey = rgb[:, :, 1].copy()
    out = msg_to_rgb(image_to_msg(grey, STAMP, "cam", "mono8"))
    assert out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out[:, :, 2], grey)


def test_row_padding_is_skipped(rgb):
    padded = np.zeros((6, 16), np.uint8)  # step 16 > 15 bytes per row
    padded[:, :15] = rgb.reshape(6, 15)
    msg = Image(height=6, width=5, encoding="rgb8", step=16)
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(msg_to_rgb(msg), rgb)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"encoding": "yuv422"}, "unsupported image encoding 'yuv422'"),
        ({"height": 7}, "bytes, 105 expected"),
        ({"step": 10}, "shorter than a row"),
    ],
)
def test_bad_messages_raise_clear_errors(rgb, change, error):
    msg = image_to_msg(rgb, STAMP, "cam")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ValueError, match=error):
        msg_to_rgb(msg)


@pytest.mark.parametrize(
    ("array", "encoding", "error"),
    [
        (np.zeros((4, 4, 3), np.float32), "rgb8", "must be uint8"),
        (np.zeros((4, 4), np.uint8), "rgb8", "shape"),
        (np.zeros((4, 4, 3), np.uint8), "rgba8", "shape"),
        (np.zeros((4, 4, 3), np.uint8), "jpeg", "unsupported encoding"),
    ],
)
def test_image_to_msg_refuses_mismatched_arrays(array, encoding, error):
    with pytest.raises(ValueError, match=error):
        image_to_msg(array, STAMP, "cam", encoding)


def test_camera_info_is_uncalibrated_unless_a_focal_length_is_given():
    info = camera_info(1280, 720, STAMP, "cam")
    assert (info.width, info.height, info.header.frame_id) == (1280, 720, "cam")
    assert list(info.k) == [0.0] * 9
    info = camera_info(1280, 720, STAMP, "cam", focal_length_px=1000.0)
    assert info.k[0] == info.k[4] == 1000.0 and info.k[2] == 639.5 and info.k[5] == 359.5


def test_joint_state_round_trip_and_any_joint_order():
    msg = joint_state((0.001, 0.002, -3e-6), STAMP)
    assert list(msg.name) == list(JOINT_NAMES) == ["stage_x", "stage_y", "focus_z"]
    assert joint_state_to_pose(msg) == (0.001, 0.002, -3e-6)
    shuffled = JointState(
        name=["focus_z", "gripper", "stage_x", "stage_y"], position=[1.0, 9.0, 2.0, 3.0]
    )
    assert joint_state_to_pose(shuffled) == (2.0, 3.0, 1.0)


@pytest.mark.parametrize(
    ("names", "positions", "error"),
    [
        (["stage_x", "stage_y"], [0.0, 0.0], "lacks joint"),
        (["stage_x", "stage_y", "focus_z"], [0.0], "3 names but 1 positions"),
    ],
)
def test_incomplete_joint_states_raise(names, positions, error):
    with pytest.raises(ValueError, match=error):
        joint_state_to_pose(JointState(name=names, position=positions))


def test_point_helpers_keep_nan():
    p = point((1.0, math.nan, 3.0))
    x, y, z = point_to_pose(p)
    assert (x, z) == (1.0, 3.0) and math.isnan(y)
