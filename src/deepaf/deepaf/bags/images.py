"""Images inside bags: decode recorded Image / CompressedImage messages, compress full frames.

Raw `sensor_msgs/Image` goes through :func:`deepaf_driver.conversions.msg_to_rgb` (the one
message-to-numpy conversion of the project; it reads rosbags' decoded messages as well as
rclpy's). `sensor_msgs/CompressedImage` follows image_transport's `compressed` convention:
`format` is `"<encoding>; png compressed bgr8"`, `data` the PNG file.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

__all__ = ["COMPRESSED", "IMAGE", "IMAGE_TYPES", "compress_image", "decode_image"]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED)
_PNG_LEVEL = 1  # fastest zlib level: 12 MP frames in ~0.3 s, lossless


def decode_image(msg: Any, msgtype: str) -> np.ndarray:
    """uint8 RGB (H, W, 3) of a decoded Image or CompressedImage message.

    Raises:
        ValueError: for another type, an unsupported encoding, or undecodable data.
    """
    if msgtype == IMAGE:
        from deepaf_driver.conversions import msg_to_rgb

        return msg_to_rgb(msg)
    if msgtype == COMPRESSED:
        buf = np.frombuffer(memoryview(msg.data), np.uint8)
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"CompressedImage ({msg.format!r}) does not decode as an image")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    raise ValueError(f"{msgtype} is not an image type ({', '.join(IMAGE_TYPES)})")


def compress_image(msg: Any, typestore: Any) -> Any:
    """A lossless CompressedImage (PNG) of a decoded Image, same header.

    Raises:
        ValueError: for an unsupported encoding or a failed encode.
    """
    rgb = decode_image(msg, IMAGE)
    ok, png = cv2.imencode(
        ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, _PNG_LEVEL]
    )
    if not ok:
        raise ValueError("PNG encoding of the image failed")
    compressed = typestore.types[COMPRESSED]
    return compressed(msg.header, f"{msg.encoding}; png compressed bgr8", png.reshape(-1))
