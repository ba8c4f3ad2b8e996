"""Adafruit MotorKit (DC & Stepper Motor HAT for Raspberry Pi) stage backend.

One HAT drives two steppers, so three axes use two stacked HATs (I2C 0x60 and 0x61 by
default). Each axis is configured as "address:stepper", e.g. "0x61:1". Motion is one
`onestep()` at a time, axis by axis: focus_z first when it moves up (away from the slide)
and last when it moves down, so the objective approaches the slide only once x and y are in
place. Coils are released when the node stops.

Needs `pip install adafruit-circuitpython-motorkit` (imported only when this backend starts).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from deepaf_driver.backends.base import ProgressCallback, StopRequested, import_backend_library
from deepaf_driver.backends.stepper import StepperStage

INSTALL = "pip install adafruit-circuitpython-motorkit"
STEP_STYLES = ("single", "double", "interleave", "microstep")


def parse_stepper(spec: str) -> tuple[int, int]:
    """Parse "0x60:1" into (I2C address, stepper number 1|2).

    Raises:
        ValueError: not of the form ADDRESS:1 or ADDRESS:2.
    """
    try:
        address, number = spec.split(":")
        parsed = (int(address, 0), int(number))
    except ValueError:
        raise ValueError(f"motorkit stepper {spec!r} must look like '0x60:1'") from None
    if parsed[1] not in (1, 2):
        raise ValueError(f"motorkit stepper {spec!r}: a HAT has steppers 1 and 2")
    return parsed


class MotorKitStage(StepperStage):
    """Three steppers on Adafruit MotorKit HATs.

    Args:
        steps_per_m, backlash, max_speed, endstops, endstop_travel, homing_speed, switches:
            see `StepperStage`.
        steppers: "address:stepper" of x, y and z.
        step_style: single | double | interleave | microstep.
        i2c: I2C bus object (default: `board.I2C()`), for tests and unusual buses.
    """

    def __init__(
        self,
        steps_per_m: Sequence[float] = (2e5, 2e5, 2e6),
        backlash: Sequence[float] = (0.0, 0.0, 5e-6),
        max_speed: Sequence[float] = (2e-3, 2e-3, 0.5e-3),
        steppers: Sequence[str] = ("0x60:1", "0x60:2", "0x61:1"),
        step_style: str = "double",
        i2c: object | None = None,
        **stepper: object,
    ) -> None:
        super().__init__(steps_per_m, backlash, max_speed, **stepper)
        if len(steppers) != 3:
            raise ValueError(f"motorkit_steppers needs three entries (x, y, z): {steppers}")
        self.steppers = [parse_stepper(s) for s in steppers]
        if len(set(self.steppers)) != 3:
            raise ValueError(f"motorkit_steppers drive one motor twice: {list(steppers)}")
        if step_style not in STEP_STYLES:
            raise ValueError(f"motorkit step style {step_style!r}; use one of {STEP_STYLES}")
        self.step_style = step_style
        self._i2c = i2c
        self._motors: list[object] = []
        self._stepper_module = None

    def start(self) -> None:
        """Open the HATs (imports the Adafruit libraries)."""
        kit_module = import_backend_library("adafruit_motorkit", INSTALL)
        self._stepper_module = import_backend_library("adafruit_motor.stepper", INSTALL)
        kits = {}
        for address, _ in self.steppers:
            if address not in kits:
                kits[address] = kit_module.MotorKit(address=address, i2c=self._i2c)
        self._motors = [getattr(kits[a], f"stepper{n}") for a, n in self.steppers]
        self._open_endstops()

    def stop(self) -> None:
        """Release the coils."""
        self._halt.set()
        for motor in self._motors:
            motor.release()

    def _drive(
        self,
        deltas: list[int],
        speed_scale: float,
        stop: StopRequested,
        progress: ProgressCallback,
    ) -> None:
        """Step the axes one after the other (z first going up, last going down)."""
        mod = self._stepper_module
        style = getattr(mod, self.step_style.upper())
        order = [2, 0, 1] if deltas[2] > 0 else [0, 1, 2]
        for axis in order:
            n = deltas[axis]
            if n == 0:
                continue
            direction = mod.FORWARD if n > 0 else mod.BACKWARD
            sign = 1 if n > 0 else -1
            period = self.step_period(axis, speed_scale)
            for i in range(abs(n)):
                if stop():
                    return
                self._motors[axis].onestep(direction=direction, style=style)
                self._count(axis, sign)
                if i % 50 == 0:
                    progress(self.position())
                time.sleep(period)
