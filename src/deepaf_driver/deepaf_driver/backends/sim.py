"""Virtual-microscope backends: a camera that renders the slide at the pose it is given, and
the simulator's stage model with its simulated timing.

Camera and stage run in different processes (as on hardware), each with its own
`VirtualMicroscope` built from the same profile, protocol and slide seed; the camera renders at
the pose the stage publishes on `joint_states`, as a Gazebo camera renders its world.
"""

from __future__ import annotations

import copy
import math
import threading
import time

import numpy as np

from deepaf_driver.backends.base import (
    BackendError,
    CameraBackend,
    CapturedFrame,
    Limits,
    MoveResult,
    Pose,
    ProgressCallback,
    StageBackend,
    StopRequested,
)

#: Artefact spec of the virtual slide the sim backends show by default (`deepaf_driver.sim`).
SCAN_SLIDE = "realistic"
#: Faults the simulated camera can be told to show (tests of the node's error paths).
CAMERA_FAULTS = ("", "hang_capture", "hang_preview")
#: Faults the simulated stage can be told to show (tests of the stage node's watchdog).
STAGE_FAULTS = ("", "stall")


def make_microscope(
    profile: str,
    protocol: str,
    slide_seed: int,
    preview_size: tuple[int, int] | None = None,
    capture_size: tuple[int, int] | None = None,
    slide: str = SCAN_SLIDE,
):
    """Build the `VirtualMicroscope` the sim backends (and tests comparing with them) use;
    `slide` is the artefact spec ("realistic", the default of scans, or "plain").

    Raises:
        ValueError: unknown profile, protocol or slide spec.
    """
    from deepaf_driver.sim import CameraModel, VirtualMicroscope

    camera = CameraModel()
    if preview_size is not None and capture_size is not None:
        camera = CameraModel(sensor_px=tuple(capture_size), preview_px=tuple(preview_size))
    return VirtualMicroscope(
        profile=profile, protocol=protocol, slide_seed=slide_seed, camera=camera, slide=slide
    )


class SimCamera(CameraBackend):
    """Renders previews and captures of the virtual slide.

    Args:
        preview_size, capture_size: (width, height); the preview shows the capture's field
            width cropped to the preview's aspect ratio.
        profile, protocol, slide_seed: the virtual microscope (see `deepaf_driver.sim`).
        slide: the slide's artefact spec ("realistic" or "plain"; `make_microscope`).
        noise: shot and read noise on (off makes frames exactly reproducible, and repeated
            captures at one pose are served from a cache).
        fault: "" or one of `CAMERA_FAULTS` ("hang_capture": capture never returns).
    """

    renders_pose = True

    def __init__(
        self,
        preview_size: tuple[int, int] = (1280, 720),
        capture_size: tuple[int, int] = (4056, 3040),
        profile: str = "4x",
        protocol: str = "lab_a_standard",
        slide_seed: int = 0,
        noise: bool = True,
        fault: str = "",
        slide: str = SCAN_SLIDE,
    ) -> None:
        super().__init__(preview_size, capture_size)
        if fault not in CAMERA_FAULTS:
            raise ValueError(f"unknown sim fault {fault!r}; use one of {CAMERA_FAULTS}")
        self._config = (profile, protocol, slide_seed)
        self._slide = slide
        self.noise = noise
        self.fault = fault
        self._scope = None
        self._released = threading.Event()
        self._preview_cache: tuple[Pose, np.ndarray] | None = None
        self._capture_cache: tuple[Pose, np.ndarray] | None = None
        self.last_render_time = math.nan

    def start(self) -> None:
        """Build the virtual microscope."""
        self._scope = make_microscope(
            *self._config, self.preview_size, self.capture_size, slide=self._slide
        )
        self._released.clear()

    def stop(self) -> None:
        """Release any call blocked by a simulated fault."""
        self._released.set()

    def _pose(self, pose: Pose) -> Pose:
        if self._scope is None:
            raise BackendError("sim camera used before start()")
        if all(math.isfinite(v) for v in pose):
            return pose
        return self._scope.stage.position  # no joint_states heard yet: the stage's start pose

    def _hang(self, what: str) -> None:
        self._released.wait()
        raise BackendError(f"sim camera stopped while {what} hung (sim fault)")

    def preview(self, pose: Pose) -> np.ndarray:
        """Return the preview at `pose` (re-rendered only when the pose changes)."""
        if self.fault == "hang_preview":
            self._hang("preview")
        pose = self._pose(pose)
        cached = self._preview_cache
        if cached is not None and cached[0] == pose:
            return cached[1]
        frame = self._scope.preview(*pose, noise=self.noise)
        self._preview_cache = (pose, frame)
        return frame

    def capture(self, pose: Pose, timeout: float) -> CapturedFrame:
        """Render the full-resolution frame at `pose`."""
        if self.fault == "hang_capture":
            self._hang("capture")
        pose = self._pose(pose)
        scope = self._scope
        exposure = scope.exposure_s + scope.camera.capture_readout_s
        cached = self._capture_cache
        if not self.noise and cached is not None and cached[0] == pose:
            self.last_render_time = 0.0
            return CapturedFrame(cached[1], exposure)
        t0 = time.perf_counter()
        image = scope.capture(*pose, noise=self.noise)
        self.last_render_time = time.perf_counter() - t0
        if not self.noise:
            self._capture_cache = (pose, image)
        return CapturedFrame(image, exposure)


class SimStage(StageBackend):
    """The virtual microscope's stage model with its simulated timing.

    Moves take the simulator's trapezoidal-profile time (plus settling and z backlash
    compensation, which the stage model does itself). The backend sleeps `time_scale` x the
    simulated time while reporting progress, so feedback, cancel and e-stop behave as on
    hardware; results report the simulated duration. Its positions are the simulator's truth:
    absolute, and the same after every start (`counter_session()` is constant), so a reference
    persisted by the stage node stays valid across restarts.

    Args:
        profile, protocol, slide_seed: the virtual microscope (limits = the slide area,
            z +-500 um, the profile's z step and backlash).
        slide: the slide's artefact spec (as the camera's; the stage model ignores it).
        time_scale: wall seconds per simulated second (0 = moves complete at once).
        tick: feedback period in wall seconds.
        endstops: simulated switches at x min, y min and z max of the travel (`seek_endstops`).
        fault: "" or one of `STAGE_FAULTS` ("stall": every move stops advancing half way and
            never finishes until it is stopped; tests of the node's watchdog).
    """

    absolute = True

    def __init__(
        self,
        profile: str = "4x",
        protocol: str = "lab_a_standard",
        slide_seed: int = 0,
        time_scale: float = 0.1,
        tick: float = 0.02,
        endstops: bool = False,
        fault: str = "",
        slide: str = SCAN_SLIDE,
    ) -> None:
        if time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale}")
        if fault not in STAGE_FAULTS:
            raise ValueError(f"unknown sim stage fault {fault!r}; use one of {STAGE_FAULTS}")
        self._config = (profile, protocol, slide_seed)
        self._slide = slide
        self.time_scale = time_scale
        self.tick = tick
        self.endstops = endstops
        self.fault = fault
        self._stage = None
        self._lock = threading.Lock()
        self._moving_pose: Pose | None = None
        self._halt = threading.Event()

    def start(self) -> None:
        """Build the stage model."""
        self._stage = make_microscope(*self._config, slide=self._slide).stage

    def stop(self) -> None:
        """Nothing to release."""
        self._halt.set()

    def _settled(self) -> Pose:
        x, y, _ = self._stage.position
        return (x, y, self._stage.actual_z_m)

    def position(self) -> Pose:
        """Return the pose now (interpolated during a move)."""
        with self._lock:
            if self._stage is None:
                raise BackendError("sim stage used before start()")
            return self._moving_pose or self._settled()

    def limits(self) -> Limits:
        """The simulator's travel limits."""
        lim = self._stage.limits
        return Limits(
            (lim.x_min_m, lim.x_max_m), (lim.y_min_m, lim.y_max_m), (lim.z_min_m, lim.z_max_m)
        )

    def counter_session(self) -> str:
        """The simulator never loses steps: one session for every start."""
        return "sim:" + ":".join(str(c) for c in self._config)

    def halt(self) -> None:
        """Stop the running move at its current pose."""
        self._halt.set()

    def move_time(self, start: Pose, target: Pose, speed_scale: float = 1.0) -> float | None:
        """Wall seconds of the move: simulated time x time_scale (None: not a valid move)."""
        if self._stage is None:
            return None
        planned = copy.deepcopy(self._stage)
        try:
            return planned.move_to(*target) / speed_scale * self.time_scale
        except ValueError:
            return None

    def move(
        self,
        target: Pose,
        speed_scale: float = 1.0,
        stop_requested: StopRequested = lambda: False,
        progress: ProgressCallback = lambda pose: None,
    ) -> MoveResult:
        """Move with simulated timing; stop part way when asked."""
        if self._stage is None:
            raise BackendError("sim stage used before start()")
        self._halt.clear()
        start = self.position()
        planned = copy.deepcopy(self._stage)
        try:
            sim_duration = planned.move_to(*target) / speed_scale
        except ValueError as exc:
            raise BackendError(str(exc)) from exc
        wall_total = sim_duration * self.time_scale
        stall = self.fault == "stall" and target != start
        t0 = time.monotonic()
        while True:
            elapsed = time.monotonic() - t0
            if elapsed >= wall_total and not stall:
                break
            frac = elapsed / wall_total if wall_total > 0 else 1.0
            if stall:
                frac = min(frac, 0.5)
            pose = tuple(s + (t - s) * frac for s, t in zip(start, target, strict=True))
            if stop_requested() or self._halt.is_set():
                with self._lock:
                    sim_partial = self._stage.move_to(*pose) / speed_scale
                    self._moving_pose = None
                    reached = self._settled()
                progress(reached)
                return MoveResult(reached, sim_partial, stopped=True)
            with self._lock:
                self._moving_pose = pose
            progress(pose)
            time.sleep(self.tick if stall else min(self.tick, max(0.0, wall_total - elapsed)))
        with self._lock:
            self._stage = planned
            self._moving_pose = None
            reached = self._settled()
        progress(reached)
        return MoveResult(reached, sim_duration)

    def has_endstops(self) -> bool:
        """True when the simulated switches are on (`endstops`)."""
        return self.endstops

    def seek_endstops(self, stop_requested: StopRequested = lambda: False) -> Pose:
        """Drive z up to its top, then x and y to their minimum: the simulated switches."""
        if not self.endstops:
            return super().seek_endstops(stop_requested)
        lim = self._stage.limits
        x, y, _ = self.position()
        for target in ((x, y, lim.z_max_m), (lim.x_min_m, y, lim.z_max_m)):
            if self.move(target, 1.0, stop_requested).stopped:
                raise BackendError("homing stopped while seeking the sim endstops")
        switches = (lim.x_min_m, lim.y_min_m, lim.z_max_m)
        if self.move(switches, 1.0, stop_requested).stopped:
            raise BackendError("homing stopped while seeking the sim endstops")
        return switches

    def home_target(self) -> Pose:
        """The slide centre at z = 0 (the simulator's start pose)."""
        lim = self._stage.limits
        return ((lim.x_min_m + lim.x_max_m) / 2, (lim.y_min_m + lim.y_max_m) / 2, 0.0)

    def home(self) -> Pose:
        """Move to `home_target()`."""
        return self.move(self.home_target()).position
