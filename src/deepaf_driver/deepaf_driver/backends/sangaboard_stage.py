"""OpenFlexure Sangaboard stage backend (the `sangaboard` package, serial).

The board moves all three axes together (`move_rel` in steps, blocking) and keeps its own
step counters (`position`), which are the truth this backend reports. Moves are sent in
chunks of at most ~50 ms, so cancel and e-stop act within one chunk. The board's counters
survive a restart of the node but not a power cycle (or a knob turned by hand), and neither
can be detected, so the stage is referenced again after every start (`counter_session()` is
None); endstops, when wired to the Pi's GPIO, are read as in `StepperStage`.

Needs `pip install sangaboard` (imported only when this backend starts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from deepaf_driver.backends.base import (
    BackendError,
    ProgressCallback,
    StopRequested,
    import_backend_library,
)
from deepaf_driver.backends.stepper import StepperStage

INSTALL = "pip install sangaboard"
CHUNK_S = 0.05


class SangaboardStage(StepperStage):
    """A Sangaboard motor controller.

    Args:
        steps_per_m, backlash, max_speed, endstops, endstop_travel, homing_speed, switches:
            see `StepperStage`.
        port: serial port ("" = let the library find the board).
    """

    def __init__(
        self,
        steps_per_m: Sequence[float] = (2e5, 2e5, 2e6),
        backlash: Sequence[float] = (0.0, 0.0, 5e-6),
        max_speed: Sequence[float] = (2e-3, 2e-3, 0.5e-3),
        port: str = "",
        **stepper: object,
    ) -> None:
        super().__init__(steps_per_m, backlash, max_speed, **stepper)
        self.port = port
        self._board = None

    def start(self) -> None:
        """Open the board and read its step counters."""
        module = import_backend_library("sangaboard", INSTALL)
        try:
            self._board = module.Sangaboard(self.port or None)
        except Exception as exc:  # serial errors come in many types
            raise BackendError(
                f"cannot open the Sangaboard on {self.port or 'auto'}: {exc}"
            ) from exc
        self._sync()
        self._open_endstops()

    def stop(self) -> None:
        """Close the serial port."""
        self._halt.set()
        if self._board is not None:
            self._board.close()
            self._board = None

    def _sync(self) -> None:
        with self._lock:
            self._steps = [int(n) for n in self._board.position][:3]

    def _drive(
        self,
        deltas: list[int],
        speed_scale: float,
        stop: StopRequested,
        progress: ProgressCallback,
    ) -> None:
        """Send the move in chunks no longer than ~50 ms each, checking `stop` in between."""
        rates = [1.0 / self.step_period(a, speed_scale) for a in range(3)]
        chunks = max(
            math.ceil(abs(d) / max(1.0, r * CHUNK_S)) for d, r in zip(deltas, rates, strict=True)
        )
        sent = [0, 0, 0]
        for k in range(1, chunks + 1):
            if stop():
                return
            goal = [round(d * k / chunks) for d in deltas]
            step = [g - s for g, s in zip(goal, sent, strict=True)]
            try:
                self._board.move_rel(step)
            except Exception as exc:
                self._sync()
                raise BackendError(f"Sangaboard move failed: {exc}") from exc
            sent = goal
            self._sync()
            progress(self.position())
