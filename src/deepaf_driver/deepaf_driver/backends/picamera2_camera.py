"""Raspberry Pi HQ camera backend through picamera2: preview stream plus still mode.

The camera runs a preview configuration; a capture uses `switch_mode_and_capture_array`
with a still configuration at the full sensor size and returns to the preview afterwards.
picamera2's "RGB888" format is laid out B, G, R in memory, so frames are reordered to RGB.

Needs `pip install picamera2` (or `apt install python3-picamera2` on Raspberry Pi OS);
imported only when this backend starts.
"""

from __future__ import annotations

import threading

import numpy as np

from deepaf_driver.backends.base import (
    BackendError,
    CameraBackend,
    CapturedFrame,
    Pose,
    import_backend_library,
)

INSTALL = "pip install picamera2  (on Raspberry Pi OS: sudo apt install python3-picamera2)"


class Picamera2Camera(CameraBackend):
    """The Raspberry Pi HQ camera (or any libcamera camera picamera2 supports).

    Args:
        preview_size, capture_size: (width, height) of the two configurations.
        camera_num: which camera on a multi-camera Pi.
    """

    def __init__(
        self,
        preview_size: tuple[int, int] = (1280, 720),
        capture_size: tuple[int, int] = (4056, 3040),
        camera_num: int = 0,
    ) -> None:
        super().__init__(preview_size, capture_size)
        self.camera_num = camera_num
        self._cam = None
        self._still = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Open the camera in its preview configuration."""
        module = import_backend_library("picamera2", INSTALL)
        try:
            self._cam = module.Picamera2(self.camera_num)
        except Exception as exc:  # libcamera raises plain RuntimeError/IndexError
            raise BackendError(f"cannot open Pi camera {self.camera_num}: {exc}") from exc
        fmt = "RGB888"
        preview = self._cam.create_preview_configuration(
            main={"size": tuple(self.preview_size), "format": fmt}
        )
        self._still = self._cam.create_still_configuration(
            main={"size": tuple(self.capture_size), "format": fmt}
        )
        self._cam.configure(preview)
        self._cam.start()

    def stop(self) -> None:
        """Stop and close the camera."""
        if self._cam is not None:
            self._cam.stop()
            self._cam.close()
            self._cam = None

    @staticmethod
    def _rgb(bgr: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(bgr[:, :, 2::-1])

    def preview(self, pose: Pose) -> np.ndarray:
        """Return the next preview frame."""
        with self._lock:
            return self._rgb(self._cam.capture_array("main"))

    def capture(self, pose: Pose, timeout: float) -> CapturedFrame:
        """Capture a still at full resolution and return to the preview."""
        with self._lock:
            array = self._cam.switch_mode_and_capture_array(self._still, "main")
            metadata = self._cam.capture_metadata() or {}
        exposure = float(metadata.get("ExposureTime", 0)) * 1e-6  # microseconds
        return CapturedFrame(self._rgb(array), exposure)
