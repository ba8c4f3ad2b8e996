"""Message <-> numpy conversions, defined once for every DeepAf package.

Images: `image_to_msg` fills `msg.data` with an `array.array("B")` built by one memcpy from the
array's buffer (the field's own type, so the setter keeps it as is). `msg.data = arr.tobytes()`
copies twice (bytes, then array.array), and assigning an ndarray, memoryview or list converts
element by element (100-400 ms at 720p): never do either.
`msg_to_rgb` reads with `np.frombuffer(...).reshape(...)`: zero copy for rgb8 without row
padding, one conversion otherwise.

Joints: the stage's joints are `stage_x`, `stage_y` and `focus_z` (metres, REP-103), in that
order (`JOINT_NAMES`). Poses travel as `(x, y, z)` tuples of floats, and a frame's pose at
exposure as a geometry_msgs/PointStamped (`pose_stamped`) in `STAGE_FRAME`, stamped like the
frame, so a subscriber pairs the two by `stamp_ns`.
"""

from __future__ import annotations

import array
import math
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, PointStamped
from sensor_msgs.msg import CameraInfo, Image, JointState

#: Joint names of the stage, in (x, y, z) order.
JOINT_X = "stage_x"
JOINT_Y = "stage_y"
JOINT_Z = "focus_z"
JOINT_NAMES: tuple[str, str, str] = (JOINT_X, JOINT_Y, JOINT_Z)

#: Default optical frame of the camera (REP-103 optical frame: z forward, x right, y down).
OPTICAL_FRAME = "camera_optical_frame"

#: frame_id of stage poses (x = stage_x, y = stage_y, z = focus_z joint positions [m]).
STAGE_FRAME = "stage"

Pose = tuple[float, float, float]

NAN_POSE: Pose = (math.nan, math.nan, math.nan)

# encoding -> (channels, order of R, G, B in the pixel; None for mono)
_ENCODINGS: dict[str, tuple[int, tuple[int, int, int] | None]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, None),
}


def image_to_msg(rgb: np.ndarray, stamp: Time, frame_id: str, encoding: str = "rgb8") -> Image:
    """Wrap an 8-bit image in a sensor_msgs/Image.

    Args:
        rgb: uint8 array, HxWx3 (rgb8/bgr8), HxWx4 (rgba8/bgra8) or HxW (mono8), already in
            the channel order `encoding` names.
        stamp: header stamp (time of exposure).
        frame_id: optical frame of the camera.
        encoding: one of rgb8, bgr8, rgba8, bgra8, mono8.

    Raises:
        ValueError: unknown encoding, wrong dtype or a shape that does not match it.
    """
    if encoding not in _ENCODINGS:
        raise ValueError(f"unsupported encoding {encoding!r}; use one of {', '.join(_ENCODINGS)}")
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {arr.dtype}; convert it first")
    channels = _ENCODINGS[encoding][0]
    expected = 2 if channels == 1 else 3
    if arr.ndim != expected or (channels > 1 and arr.shape[2] != channels):
        raise ValueError(
            f"{encoding} needs an array of shape (H, W{'' if channels == 1 else f', {channels}'})"
            f", got {arr.shape}"
        )
    height, width = arr.shape[:2]
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height = height
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = width * channels
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(arr).reshape(-1))  # one memcpy
    msg.data = data
    return msg


def msg_to_rgb(msg: Image) -> np.ndarray:
    """Return the image of a sensor_msgs/Image as uint8 HxWx3 RGB.

    rgb8 without row padding is a zero-copy view of `msg.data`; other encodings
    (bgr8, rgba8, bgra8, mono8) and padded rows are converted into a new array.

    Raises:
        ValueError: unsupported encoding, or data too short for height x step, or a step
            shorter than a row.
    """
    if msg.encoding not in _ENCODINGS:
        raise ValueError(
            f"unsupported image encoding {msg.encoding!r}; expected one of {', '.join(_ENCODINGS)}"
        )
    channels, order = _ENCODINGS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row = width * channels
    if step < row:
        raise ValueError(f"image step {step} is shorter than a row ({width} px x {channels} B)")
    buf = np.frombuffer(msg.data, np.uint8)
    if buf.size < height * step:
        raise ValueError(
            f"image data has {buf.size} bytes, {height * step} expected for {width}x{height} "
            f"{msg.encoding} with step {step}"
        )
    rows = buf[: height * step].reshape(height, step)
    if step != row:
        rows = rows[:, :row]
    pixels = rows.reshape(height, width, channels)
    if order is None:
        return np.repeat(pixels, 3, axis=2)
    if order == (0, 1, 2) and channels == 3:
        return pixels if step == row else np.ascontiguousarray(pixels)
    return np.ascontiguousarray(pixels[:, :, list(order)])


def camera_info(
    width: int,
    height: int,
    stamp: Time,
    frame_id: str,
    focal_length_px: float = 0.0,
) -> CameraInfo:
    """Return a sensor_msgs/CameraInfo for a distortion-free camera.

    Args:
        width, height: image size in pixels.
        stamp: header stamp (the stamp of the image it describes).
        frame_id: optical frame.
        focal_length_px: fx = fy in pixels; 0 leaves K, P all zero, which CameraInfo defines
            as "uncalibrated".
    """
    info = CameraInfo()
    info.header.stamp = stamp
    info.header.frame_id = frame_id
    info.width = int(width)
    info.height = int(height)
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    if focal_length_px > 0:
        f, cx, cy = float(focal_length_px), (width - 1) / 2.0, (height - 1) / 2.0
        info.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
        info.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def point(pose: Sequence[float]) -> Point:
    """Return a geometry_msgs/Point from an (x, y, z) pose in metres."""
    x, y, z = (float(v) for v in pose)
    return Point(x=x, y=y, z=z)


def point_to_pose(msg: Point) -> Pose:
    """Return the (x, y, z) pose of a geometry_msgs/Point."""
    return (float(msg.x), float(msg.y), float(msg.z))


def pose_stamped(pose: Sequence[float], stamp: Time) -> PointStamped:
    """The stage pose [m] a frame was exposed at, stamped with the frame's own header stamp."""
    msg = PointStamped(point=point(pose))
    msg.header.stamp = stamp
    msg.header.frame_id = STAGE_FRAME
    return msg


def stamp_ns(stamp: Time) -> int:
    """A builtin_interfaces/Time as integer nanoseconds (0 for an unset stamp)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def joint_state(pose: Sequence[float], stamp: Time, velocity: Sequence[float] = ()) -> JointState:
    """Return the stage's sensor_msgs/JointState (stage_x, stage_y, focus_z) at `pose` [m]."""
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(JOINT_NAMES)
    msg.position = [float(v) for v in pose]
    if velocity:
        msg.velocity = [float(v) for v in velocity]
    return msg


def joint_state_to_pose(msg: JointState) -> Pose:
    """Return (x, y, z) from a JointState holding stage_x, stage_y and focus_z (any order).

    Raises:
        ValueError: a stage joint is missing, or names and positions differ in length.
    """
    names = list(msg.name)
    positions = list(msg.position)
    if len(names) != len(positions):
        raise ValueError(f"JointState has {len(names)} names but {len(positions)} positions")
    index = {name: i for i, name in enumerate(names)}
    missing = [n for n in JOINT_NAMES if n not in index]
    if missing:
        raise ValueError(f"JointState lacks joint(s) {', '.join(missing)}; has {names}")
    x, y, z = (float(positions[index[n]]) for n in JOINT_NAMES)
    return (x, y, z)
