"""Hardware backends against fakes at their library boundary (adafruit_motorkit, sangaboard,
cv2, picamera2): unit conversion, backlash, stop, colour order, and missing libraries."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from deepaf_driver.backends import create_camera, create_stage
from deepaf_driver.backends.base import BackendError

FAST = (1e3, 1e3, 1e3)  # m/s: step periods of nanoseconds, so tests do not sleep


# ---------------------------------------------------------------------------- fakes
class FakeStepper:
    def __init__(self, calls: list, name: tuple[int, int]) -> None:
        self.calls, self.name = calls, name

    def onestep(self, *, direction, style):
        self.calls.append((self.name, direction, style))

    def release(self):
        self.calls.append((self.name, "release", None))


def fake_motorkit(monkeypatch) -> list:
    """Install fake adafruit_motorkit / adafruit_motor.stepper; return the call log."""
    calls: list = []

    class MotorKit:
        def __init__(self, address=0x60, i2c=None):
            calls.append(("MotorKit", address, i2c))
            self.stepper1 = FakeStepper(calls, (address, 1))
            self.stepper2 = FakeStepper(calls, (address, 2))

    kit = types.ModuleType("adafruit_motorkit")
    kit.MotorKit = MotorKit
    stepper = types.ModuleType("adafruit_motor.stepper")
    stepper.FORWARD, stepper.BACKWARD = "fwd", "back"
    stepper.SINGLE, stepper.DOUBLE, stepper.INTERLEAVE, stepper.MICROSTEP = "s", "d", "i", "m"
    parent = types.ModuleType("adafruit_motor")
    parent.stepper = stepper
    monkeypatch.setitem(sys.modules, "adafruit_motorkit", kit)
    monkeypatch.setitem(sys.modules, "adafruit_motor", parent)
    monkeypatch.setitem(sys.modules, "adafruit_motor.stepper", stepper)
    return calls


def steps(calls: list, motor: tuple[int, int]) -> list[str]:
    return [c[1] for c in calls if c[0] == motor and c[1] != "release"]


def test_motorkit_converts_metres_to_steps_and_compensates_backlash(monkeypatch):
    calls = fake_motorkit(monkeypatch)
    stage = create_stage(
        "motorkit",
        steps_per_m=(1e5, -1e5, 1e6),
        backlash=(0.0, 0.0, 5e-6),
        max_speed=FAST,
        steppers=("0x60:1", "0x60:2", "0x61:1"),
        step_style="double",
    )
    assert calls == []  # nothing opened before start()
    stage.start()
    assert [c for c in calls if c[0] == "MotorKit"] == [
        ("MotorKit", 0x60, None),
        ("MotorKit", 0x61, None),
    ]
    calls.clear()
    result = stage.move((1e-3, 2e-4, 10e-6))
    assert steps(calls, (0x60, 1)) == ["fwd"] * 100
    assert steps(calls, (0x60, 2)) == ["back"] * 20  # negative steps_per_m reverses y
    assert steps(calls, (0x61, 1)) == ["fwd"] * 10
    assert calls[0][0] == (0x61, 1)  # z goes up first: away from the slide
    assert {c[2] for c in calls} == {"d"}
    assert result.position == pytest.approx((1e-3, 2e-4, 10e-6)) and not result.stopped

    calls.clear()
    stage.move((1e-3, 2e-4, 2e-6))  # down: overshoot by the backlash, come back up
    assert steps(calls, (0x61, 1)) == ["back"] * 13 + ["fwd"] * 5
    assert stage.position() == pytest.approx((1e-3, 2e-4, 2e-6))

    calls.clear()
    stage.move((0.0, 2e-4, 1e-6))  # z moves down: x first, then z
    assert calls[0][0] == (0x60, 1) and calls[-1][0] == (0x61, 1)


def test_motorkit_stops_mid_move_with_counters_matching_the_steps_taken(monkeypatch):
    calls = fake_motorkit(monkeypatch)
    stage = create_stage("motorkit", steps_per_m=(1e5, 1e5, 1e6), max_speed=FAST)
    stage.start()
    result = stage.move((1e-3, 0.0, 0.0), stop_requested=lambda: len(calls) >= 2 + 30)
    assert result.stopped
    assert stage.position() == pytest.approx((30 / 1e5, 0.0, 0.0)) == result.position
    # no endstops: nothing re-zeroes the counters (a reference comes from the stage node)
    assert not stage.has_endstops() and stage.counter_session() is None
    with pytest.raises(BackendError, match="no endstops; jog it to its mechanical reference"):
        stage.seek_endstops()
    assert stage.position() == pytest.approx((30 / 1e5, 0.0, 0.0))
    stage.stop()
    assert [c[0] for c in calls if c[1] == "release"] == [(0x60, 1), (0x60, 2), (0x61, 1)]


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"steppers": ("0x60:1", "0x60:1", "0x61:1")}, "drive one motor twice"),
        ({"steppers": ("0x60:3", "0x60:1", "0x61:1")}, "steppers 1 and 2"),
        ({"steppers": ("sixty", "0x60:1", "0x61:1")}, "must look like"),
        ({"step_style": "wave"}, "step style"),
        ({"steps_per_m": (1e5, 0.0, 1e6)}, "non-zero"),
        ({"backlash": (0.0, -1e-6, 0.0)}, "backlash"),
    ],
)
def test_motorkit_bad_configuration_is_refused(config, error):
    with pytest.raises(ValueError, match=error):
        create_stage("motorkit", **config)


def switches_at(stage_box: list, x_min: float, y_min: float, z_max: float) -> list:
    """Fake endstops that close when the stage (stage_box[0]) is past a position [m]."""
    return [
        lambda: stage_box[0].position()[0] <= x_min,
        lambda: stage_box[0].position()[1] <= y_min,
        lambda: stage_box[0].position()[2] >= z_max,
    ]


def test_motorkit_homes_z_first_onto_its_endstops_and_reports_where_they_closed(monkeypatch):
    calls = fake_motorkit(monkeypatch)
    box: list = []
    stage = create_stage(
        "motorkit",
        steps_per_m=(1e5, -1e5, 1e6),  # y reversed: its min is found stepping forward
        max_speed=FAST,
        endstops=("D17:min", "D27:min", "D22:max"),
        endstop_travel=(5e-3, 5e-3, 1e-3),
        switches=switches_at(box, -1e-3, -0.5e-3, 0.2e-3),
    )
    box.append(stage)
    stage.start()
    assert stage.has_endstops()
    switches = stage.seek_endstops()
    assert switches == pytest.approx((-1e-3, -0.5e-3, 0.2e-3), abs=1e-5)
    first = next(c[0] for c in calls if c[0] != "MotorKit" and c[1] != "release")
    assert first == (0x61, 1)  # z (away from the slide) before x and y
    # backed off each switch so it is open again
    assert stage.position() == pytest.approx((-0.8e-3, -0.3e-3, 0.0), abs=1e-5)
    # a second homing from next to the switches finds the same edges
    assert stage.seek_endstops() == pytest.approx(switches, abs=1e-5)


def test_endstop_faults_are_clear_errors(monkeypatch):
    fake_motorkit(monkeypatch)
    box: list = []
    far = create_stage(
        "motorkit",
        steps_per_m=(1e5, 1e5, 1e6),
        max_speed=FAST,
        endstop_travel=(1e-3, 1e-3, 1e-4),
        switches=switches_at(box, -9.0, -9.0, 9.0),  # never reached
    )
    box.append(far)
    far.start()
    with pytest.raises(BackendError, match=r"focus_z endstop did not close within 0\.1 mm"):
        far.seek_endstops()
    stuck = create_stage(
        "motorkit", max_speed=FAST, switches=[lambda: True, lambda: True, lambda: True]
    )
    stuck.start()
    with pytest.raises(BackendError, match=r"stays closed 1\.0 mm away"):
        stuck.seek_endstops()
    stuck_box: list = []
    stopped = create_stage(
        "motorkit", max_speed=FAST, switches=switches_at(stuck_box, -1e-3, -1e-3, 1e-3)
    )
    stuck_box.append(stopped)
    stopped.start()
    with pytest.raises(BackendError, match="homing stopped while seeking the focus_z"):
        stopped.seek_endstops(stop_requested=lambda: True)


@pytest.mark.parametrize(
    ("endstops", "error"),
    [
        (("D17:min", "", ""), "all three axes or none"),
        (("D17", "D27:min", "D22:max"), "must look like"),
        (("D17:left", "D27:min", "D22:max"), "must look like"),
        (("D17:min:maybe", "D27:min", "D22:max"), "low or high"),
    ],
)
def test_bad_endstop_configuration_is_refused(endstops, error):
    with pytest.raises(ValueError, match=error):
        create_stage("motorkit", endstops=endstops)


def test_stepper_move_time_counts_steps_and_backlash():
    stage = create_stage(
        "motorkit", steps_per_m=(1e5, 1e5, 1e6), backlash=(0, 0, 5e-6), max_speed=(1e-3, 1e-3, 1e-4)
    )
    # 1 mm of x at 1 mm/s; z down 10 um at 0.1 mm/s, 5 um past the target and back up
    assert stage.move_time((0, 0, 0), (1e-3, 0, -1e-5)) == pytest.approx(1.0 + 0.2)
    assert stage.move_time((0, 0, 0), (1e-3, 0, 0), speed_scale=0.5) == pytest.approx(2.0)


def fake_sangaboard(monkeypatch) -> list:
    calls: list = []

    class Sangaboard:
        def __init__(self, port=None):
            calls.append(("open", port))
            self.position = [10, 0, -5]

        def move_rel(self, displacement):
            calls.append(("move_rel", list(displacement)))
            self.position = [p + d for p, d in zip(self.position, displacement, strict=True)]

        def zero_position(self):
            calls.append(("zero",))
            self.position = [0, 0, 0]

        def close(self):
            calls.append(("close",))

    module = types.ModuleType("sangaboard")
    module.Sangaboard = Sangaboard
    monkeypatch.setitem(sys.modules, "sangaboard", module)
    return calls


def test_sangaboard_moves_in_chunks_with_backlash_and_reads_its_counters(monkeypatch):
    calls = fake_sangaboard(monkeypatch)
    stage = create_stage(
        "sangaboard",
        steps_per_m=(1e4, 1e4, 1e5),
        backlash=(0.0, 0.0, 2e-5),
        max_speed=(1e-3, 1e-3, 1e-4),
        port="/dev/ttyUSB0",
    )
    stage.start()
    assert calls == [("open", "/dev/ttyUSB0")]
    assert stage.position() == pytest.approx((1e-3, 0.0, -5e-5))
    stage.move((2e-3, 1e-3, -1e-4))  # x +10, y +10, z down 5 -> overshoot 2 more, back 2
    moves = [c[1] for c in calls if c[0] == "move_rel"]
    totals = np.sum(moves, axis=0).tolist()
    assert totals == [10, 10, -5]
    assert all(abs(m[0]) <= 1 for m in moves)  # 10 steps/s x 50 ms: one step per chunk
    assert any(m[2] < 0 for m in moves) and moves[-1][2] > 0  # approached z from below
    assert stage.position() == pytest.approx((2e-3, 1e-3, -1e-4))
    assert not hasattr(stage, "home") and ("zero",) not in calls  # counters never re-zeroed
    stage.stop()
    assert calls[-1] == ("close",)


def test_sangaboard_stop_between_chunks(monkeypatch):
    calls = fake_sangaboard(monkeypatch)
    stage = create_stage(
        "sangaboard", steps_per_m=(1e4, 1e4, 1e5), backlash=(0, 0, 0), max_speed=(1e-3, 1e-3, 1e-4)
    )
    stage.start()
    result = stage.move((2e-3, 0.0, -5e-5), stop_requested=lambda: len(calls) > 3)
    assert result.stopped
    assert result.position == stage.position() == pytest.approx((1.3e-3, 0.0, -5e-5))


def fake_cv2(monkeypatch, frames_ok: bool = True) -> list:
    calls: list = []
    module = types.ModuleType("cv2")
    module.CAP_PROP_FRAME_WIDTH, module.CAP_PROP_FRAME_HEIGHT, module.CAP_PROP_EXPOSURE = 3, 4, 15
    module.COLOR_BGR2RGB = 4

    class VideoCapture:
        def __init__(self, device):
            calls.append(("open", device))
            self.size = [640, 480]

        def isOpened(self):
            return frames_ok

        def set(self, prop, value):
            calls.append(("set", prop, value))
            self.size[prop - 3] = value

        def get(self, prop):
            return 0.01

        def grab(self):
            calls.append(("grab",))

        def read(self):
            w, h = self.size
            bgr = np.zeros((h, w, 3), np.uint8)
            bgr[..., 0] = 200  # blue
            return True, bgr

        def release(self):
            calls.append(("release",))

    module.VideoCapture = VideoCapture
    module.cvtColor = lambda img, code: np.ascontiguousarray(img[:, :, ::-1])
    monkeypatch.setitem(sys.modules, "cv2", module)
    return calls


def test_opencv_camera_streams_rgb_and_switches_size_for_captures(monkeypatch):
    calls = fake_cv2(monkeypatch)
    cam = create_camera(
        "opencv", preview_size=(64, 48), capture_size=(160, 120), device="/dev/video2"
    )
    cam.start()
    assert calls[:3] == [("open", "/dev/video2"), ("set", 3, 64), ("set", 4, 48)]
    frame = cam.preview((0.0, 0.0, 0.0))
    assert frame.shape == (48, 64, 3) and frame[0, 0].tolist() == [0, 0, 200]
    calls.clear()
    shot = cam.capture((0.0, 0.0, 0.0), timeout=5)
    assert shot.image.shape == (120, 160, 3) and shot.exposure_time == 0.01
    assert calls == [
        ("set", 3, 160),
        ("set", 4, 120),
        ("grab",),
        ("grab",),
        ("set", 3, 64),
        ("set", 4, 48),
    ]
    cam.stop()
    assert calls[-1] == ("release",)


def test_opencv_camera_that_cannot_open_says_so(monkeypatch):
    fake_cv2(monkeypatch, frames_ok=False)
    with pytest.raises(BackendError, match="cannot open camera 0"):
        create_camera("opencv").start()


def test_picamera2_uses_preview_and_still_configurations(monkeypatch):
    calls: list = []

    class Picamera2:
        def __init__(self, num):
            calls.append(("open", num))

        def create_preview_configuration(self, main):
            return {"kind": "preview", **main}

        def create_still_configuration(self, main):
            return {"kind": "still", **main}

        def configure(self, config):
            calls.append(("configure", config["kind"], config["size"], config["format"]))

        def start(self):
            calls.append(("start",))

        def capture_array(self, stream):
            return np.tile(np.array([1, 2, 3], np.uint8), (720, 1280, 1))  # B, G, R

        def switch_mode_and_capture_array(self, config, stream):
            calls.append(("still", config["size"]))
            w, h = config["size"]
            return np.tile(np.array([1, 2, 3], np.uint8), (h, w, 1))

        def capture_metadata(self):
            return {"ExposureTime": 2500}

        def stop(self):
            calls.append(("stop",))

        def close(self):
            calls.append(("close",))

    module = types.ModuleType("picamera2")
    module.Picamera2 = Picamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    cam = create_camera("picamera2", preview_size=(1280, 720), capture_size=(4056, 3040))
    cam.start()
    assert calls == [("open", 0), ("configure", "preview", (1280, 720), "RGB888"), ("start",)]
    assert cam.preview((0, 0, 0))[0, 0].tolist() == [3, 2, 1]
    shot = cam.capture((0, 0, 0), timeout=5)
    assert shot.image.shape == (3040, 4056, 3) and shot.image[5, 5].tolist() == [3, 2, 1]
    assert shot.exposure_time == pytest.approx(2.5e-3)
    assert ("still", (4056, 3040)) in calls
    cam.stop()
    assert calls[-2:] == [("stop",), ("close",)]


@pytest.mark.parametrize(
    ("kind", "name", "module", "install"),
    [
        ("stage", "motorkit", "adafruit_motorkit", "pip install adafruit-circuitpython-motorkit"),
        ("stage", "sangaboard", "sangaboard", "pip install sangaboard"),
        ("camera", "picamera2", "picamera2", "pip install picamera2"),
        ("camera", "opencv", "cv2", "pip install opencv-python-headless"),
    ],
)
def test_missing_library_names_what_to_install(monkeypatch, kind, name, module, install):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    backend = (create_stage if kind == "stage" else create_camera)(name)  # constructs fine
    with pytest.raises(BackendError, match=install):
        backend.start()
