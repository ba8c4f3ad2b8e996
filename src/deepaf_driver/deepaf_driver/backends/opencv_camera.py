"""USB / V4L2 camera backend through OpenCV (`cv2.VideoCapture`).

Previews stream at the preview size; a capture switches the device to the capture size,
drops a few frames while exposure settles, grabs one, and switches back. The pose is not
used (the camera sees the real slide). Frames arrive BGR and leave RGB.

Needs `pip install opencv-python-headless` (imported only when this backend starts).
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

INSTALL = "pip install opencv-python-headless"


class OpenCVCamera(CameraBackend):
    """A camera opened with `cv2.VideoCapture`.

    Args:
        preview_size, capture_size: (width, height) requested from the device.
        device: V4L2 index ("0") or a device path ("/dev/video2").
        settle_frames: frames dropped after a resolution change.
    """

    def __init__(
        self,
        preview_size: tuple[int, int] = (1280, 720),
        capture_size: tuple[int, int] = (4056, 3040),
        device: str = "0",
        settle_frames: int = 2,
    ) -> None:
        super().__init__(preview_size, capture_size)
        self.device = int(device) if str(device).isdigit() else str(device)
        self.settle_frames = settle_frames
        self._cv2 = None
        self._cap = None
        self._lock = threading.Lock()  # preview and capture share one device

    def start(self) -> None:
        """Open the device at the preview size."""
        self._cv2 = import_backend_library("cv2", INSTALL)
        self._cap = self._cv2.VideoCapture(self.device)
        if not self._cap.isOpened():
            raise BackendError(f"cannot open camera {self.device!r}; is it plugged in?")
        self._set_size(self.preview_size)

    def stop(self) -> None:
        """Release the device."""
        if self._cap is not None:
            self._cap.release()

    def _set_size(self, size: tuple[int, int]) -> None:
        cv2 = self._cv2
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])

    def _read(self) -> np.ndarray:
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise BackendError(f"camera {self.device!r} returned no frame")
        return self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)

    def preview(self, pose: Pose) -> np.ndarray:
        """Read the next preview frame."""
        with self._lock:
            return self._read()

    def capture(self, pose: Pose, timeout: float) -> CapturedFrame:
        """Switch to the capture size, read one frame, switch back."""
        with self._lock:
            self._set_size(self.capture_size)
            try:
                for _ in range(self.settle_frames):
                    self._cap.grab()
                image = self._read()
                exposure = float(self._cap.get(self._cv2.CAP_PROP_EXPOSURE) or 0.0)
            finally:
                self._set_size(self.preview_size)
        if (image.shape[1], image.shape[0]) != tuple(self.capture_size):
            raise BackendError(
                f"camera {self.device!r} delivered {image.shape[1]}x{image.shape[0]}, not "
                f"{self.capture_size[0]}x{self.capture_size[1]}; set capture_width/height to "
                "a mode it supports"
            )
        return CapturedFrame(image, max(exposure, 0.0))
