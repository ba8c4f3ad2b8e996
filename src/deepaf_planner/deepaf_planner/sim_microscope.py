"""The scan engine's :class:`~deepaf_planner.scanner.Microscope` on the virtual microscope, in
process and without ROS: the simulator's stage (with its timing model) and camera, and the
focus predictor called directly. For library tests and for comparing focus strategies in
simulated seconds without DDS in the loop; the ROS graph uses
:class:`~deepaf_planner.ros_microscope.RosMicroscope` instead.
"""

from __future__ import annotations

import time

from deepaf_driver.sim.camera import PREVIEW_BINNING, preview_size_for

from deepaf_planner.scanner import FocusDecision, Frame, HardwareError, Limits, Moved


class SimMicroscope:
    """Virtual microscope + predictor behind the scanner's Microscope protocol.

    Args:
        scope: a `deepaf_driver.sim.VirtualMicroscope`.
        predictor: a `deepaf_focus.predictor.FocusPredictor` (None: `deepaf` focus unavailable).
        capture_size: (width, height) of captures; the preview keeps the capture/preview
            sampling ratio of the real camera (4056/1280), so a focus model sees the pixel size
            it was trained on.
    """

    def __init__(self, scope, predictor=None, capture_size: tuple[int, int] = (4056, 3040)):
        self.scope = scope
        self.predictor = predictor
        self.capture_size = capture_size
        self.preview_size = preview_size_for(capture_size)
        self._preview_pixel = scope.pixel_size_m * PREVIEW_BINNING

    @property
    def limits(self) -> Limits:
        """The simulated stage's soft limits."""
        lim = self.scope.stage.limits
        return Limits(
            (lim.x_min_m, lim.x_max_m), (lim.y_min_m, lim.y_max_m), (lim.z_min_m, lim.z_max_m)
        )

    def position(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.scope.stage.position)

    def move_to(
        self, x: float | None = None, y: float | None = None, z: float | None = None
    ) -> Moved:
        try:
            seconds = self.scope.stage.move_to(x=x, y=y, z=z)
        except ValueError as exc:
            raise HardwareError(f"stage refused the move: {exc}") from exc
        return Moved(self.position(), float(seconds))

    def _pose(self) -> tuple[float, float, float]:
        x, y, _ = self.scope.stage.position
        return x, y, self.scope.stage.actual_z_m

    def preview(self) -> Frame:
        x, y, z = self._pose()
        rgb = self.scope.render(
            x, y, z, self.preview_size, pixel_size_m=self._preview_pixel, binning=PREVIEW_BINNING
        )
        return Frame(rgb, self.scope.exposure_s)

    def capture(self) -> Frame:
        x, y, z = self._pose()
        rgb = self.scope.render(x, y, z, self.capture_size)
        return Frame(rgb, self.scope.exposure_s + self.scope.camera.capture_readout_s)

    def can_predict(self) -> bool:
        """Whether a focus predictor is loaded."""
        return self.predictor is not None

    def predict_focus(self, frame: Frame, focus_z: float) -> FocusDecision:
        if self.predictor is None:
            raise HardwareError("no focus predictor loaded")
        start = time.perf_counter()
        result = self.predictor.predict(frame.rgb)
        return FocusDecision(
            result.status,
            result.offset_m if result.ok else 0.0,
            result.confidence,
            time.perf_counter() - start,
            result.message,
            result.expected_error_m,
        )
