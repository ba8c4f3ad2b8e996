"""The stage's absolute reference (ROS-free): machine coordinates, the limits in force, the file.

A backend counts positions from an origin of its own: stepper counters start wherever the
stage was when the board powered up, a simulator counts from its truth. The stage node keeps
an offset, machine = backend + offset, fixed by a reference: the endstops (`seek_endstops`) or
an operator who jogged the stage to its mechanical reference and called `stage/set_reference`
(the stage is then at the `reference_position` parameter). Until then the stage is
*unreferenced*: absolute moves are refused, relative moves (jogs) are limited to `jog_limit`
per axis and to the backend's hard travel, and the soft limits, which are machine coordinates,
cannot be enforced.

A reference is saved as `stage-<stage_id>.json` under the state directory
(`$XDG_STATE_HOME/deepaf`, default `~/.local/state/deepaf`) with the backend's
`counter_session()`. At start-up it is restored only when the backend reports the same
non-None session: the counters still count from the same origin. Stepper boards cannot tell
(a power cycle, a node restart with released coils, a knob turned by hand), so they report
None and every start needs a new reference.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from deepaf_driver.backends.base import Limits, Pose

#: A stage_id: letters, digits, '_', '.', '-' (it names the reference file).
STAGE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
#: Version of the reference file's layout.
FILE_FORMAT = 1

#: Kinds of refusal `StageFrame.check` returns ("" = the move may run).
NOT_REFERENCED = "not_referenced"
OUT_OF_LIMITS = "out_of_limits"


def default_state_dir() -> Path:
    """`$XDG_STATE_HOME/deepaf`, or `~/.local/state/deepaf` (where references are saved)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "deepaf"


def derive_stage_id(backend: str, namespace: str) -> str:
    """A default stage_id from the backend and the node's namespace ("sim_microscope")."""
    raw = backend + namespace.replace("/", "_")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw).strip("_.-")[:100] or "stage"


def check_stage_id(stage_id: str) -> str:
    """Return `stage_id` if it can name a file.

    Raises:
        ValueError: other characters, or empty.
    """
    if not STAGE_ID_PATTERN.fullmatch(stage_id):
        raise ValueError(
            f"stage_id {stage_id!r} must be 1-100 letters, digits, '_', '.' or '-' "
            "(it names the stage's reference file)"
        )
    return stage_id


def three_finite(name: str, values: Sequence[float]) -> Pose:
    """Return three finite floats (x, y, z), or raise ValueError naming `name`."""
    vals = [float(v) for v in values]
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{name} needs three finite values (x, y, z) [m], got {list(values)}")
    return (vals[0], vals[1], vals[2])


def _mm(pose: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v * 1e3:.4f}" for v in pose) + ") mm"


@dataclass(frozen=True)
class SavedReference:
    """What the reference file holds."""

    stage_id: str
    backend: str
    counter_session: str
    offset: Pose  # [m] machine = backend + offset
    source: str  # "set_reference" | "endstops"
    reference_position: Pose  # [m] machine pose the stage was referenced at
    saved_at: str  # ISO 8601, local time


class ReferenceFile:
    """The reference of one stage, `<state_dir>/stage-<stage_id>.json`.

    Args:
        state_dir: directory (created on save).
        stage_id: the stage's identity (see `check_stage_id`).
    """

    def __init__(self, state_dir: str | os.PathLike, stage_id: str) -> None:
        self.stage_id = check_stage_id(stage_id)
        self.path = Path(state_dir).expanduser() / f"stage-{stage_id}.json"

    def save(self, saved: SavedReference) -> None:
        """Write atomically (a crash leaves the old file or the new one, never half).

        Raises:
            OSError: the directory cannot be created or written.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"format": FILE_FORMAT, **asdict(saved)}, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(body)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def remove(self) -> None:
        """Forget the saved reference (no error when there is none)."""
        self.path.unlink(missing_ok=True)

    def load(self) -> SavedReference:
        """Read the file.

        Raises:
            FileNotFoundError: no reference saved.
            ValueError: the file is not a reference of this layout.
        """
        try:
            data = json.loads(self.path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{self.path} is not JSON ({exc})") from None
        try:
            if data.get("format") != FILE_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FILE_FORMAT}")
            text = {k: data[k] for k in ("stage_id", "backend", "counter_session", "source")}
            if not all(isinstance(v, str) for v in text.values()):
                raise ValueError("stage_id, backend, counter_session and source must be strings")
            return SavedReference(
                offset=three_finite("offset", data["offset"]),
                reference_position=three_finite("reference_position", data["reference_position"]),
                saved_at=str(data.get("saved_at", "")),
                **text,
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{self.path} is not a stage reference ({exc})") from None

    def restorable(self, backend: str, session: str | None) -> tuple[SavedReference | None, str]:
        """Return (the saved reference, "") if it is valid now, else (None, why not)."""
        try:
            saved = self.load()
        except FileNotFoundError:
            return None, f"no reference saved for stage {self.stage_id} ({self.path})"
        except (OSError, ValueError) as exc:
            return None, f"reference file unusable: {exc}"
        if saved.stage_id != self.stage_id or saved.backend != backend:
            return None, (
                f"{self.path} belongs to stage {saved.stage_id!r} on backend {saved.backend!r}, "
                f"not {self.stage_id!r} on {backend!r}"
            )
        if not session or not saved.counter_session:
            return None, (
                f"the {backend} backend cannot confirm its position counters survived since "
                f"the reference was saved ({saved.saved_at}: a restart or power cycle loses "
                "steps)"
            )
        if session != saved.counter_session:
            return None, (
                f"the {backend} backend's counters restarted since the reference was saved "
                f"(session {saved.counter_session!r}, now {session!r})"
            )
        return saved, ""

    def saved(
        self,
        backend: str,
        session: str | None,
        offset: Pose,
        source: str,
        reference_position: Pose,
    ) -> SavedReference:
        """Build the record `save` writes (session None is stored as "": never restored)."""
        return SavedReference(
            stage_id=self.stage_id,
            backend=backend,
            counter_session=session or "",
            offset=offset,
            source=source,
            reference_position=reference_position,
            saved_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )


class StageFrame:
    """Machine coordinates of one stage: the offset, whether it is referenced, the limits.

    Args:
        soft: soft limits in machine coordinates (the parameters x_min .. z_max).
        hard: the mechanism's travel in backend coordinates (None: unknown).
        jog_limit: largest relative move per axis while unreferenced [m].
    """

    #: What to do when the stage is not referenced (goal results, diagnostics, logs).
    HOW_TO_REFERENCE = (
        "jog it to its mechanical reference (relative moves of at most {jog} mm per axis) and "
        "call stage/set_reference, or call stage/home on a stage with endstops "
        "(README: Stage reference)"
    )

    def __init__(self, soft: Limits, hard: Limits | None, jog_limit: float) -> None:
        if not jog_limit > 0:
            raise ValueError(f"jog_limit must be > 0 m, got {jog_limit}")
        self.soft, self.hard, self.jog_limit = soft, hard, float(jog_limit)
        self.offset: Pose = (0.0, 0.0, 0.0)
        self.referenced = False
        self.source = ""  # how the reference was made ("" while unreferenced)

    @property
    def how_to_reference(self) -> str:
        """The reference procedure, with this stage's jog limit."""
        return self.HOW_TO_REFERENCE.format(jog=f"{self.jog_limit * 1e3:.3f}")

    def hard_machine(self, offset: Pose | None = None) -> Limits | None:
        """The mechanism's travel in machine coordinates (at `offset`, default the current)."""
        return None if self.hard is None else self.hard.shifted(offset or self.offset)

    def limits_at(self, offset: Pose) -> Limits:
        """The limits in force at `offset`: soft limits within the travel."""
        hard = self.hard_machine(offset)
        return self.soft if hard is None else self.soft.intersect(hard)

    @property
    def limits(self) -> Limits:
        """The limits in force now (machine coordinates)."""
        return self.limits_at(self.offset)

    def to_machine(self, pose: Sequence[float]) -> Pose:
        """Backend -> machine coordinates."""
        x, y, z = (p + o for p, o in zip(pose, self.offset, strict=True))
        return (x, y, z)

    def to_backend(self, pose: Sequence[float]) -> Pose:
        """Machine -> backend coordinates."""
        x, y, z = (p - o for p, o in zip(pose, self.offset, strict=True))
        return (x, y, z)

    def adopt(self, offset: Sequence[float], source: str) -> None:
        """Make the stage referenced with `offset` (machine = backend + offset).

        Raises:
            ValueError: the soft limits and the travel do not overlap at that offset.
        """
        offset = three_finite("offset", offset)
        empty = self.limits_at(offset).empty_axes()
        if empty:
            raise ValueError(
                f"with this reference the soft limits of {', '.join(empty)} lie outside the "
                f"stage's travel {self.hard_machine(offset).axes()} m; check "
                "reference_position and x_min..z_max"
            )
        self.offset, self.referenced, self.source = offset, True, source

    def invalidate(self) -> None:
        """Mark the stage unreferenced (positions keep their offset, so they do not jump)."""
        self.referenced, self.source = False, ""

    def check(self, current: Pose, target: Pose, relative: bool) -> tuple[str, str]:
        """Whether a move from `current` to `target` (machine coordinates) may run.

        Axes that do not move are not checked, so a stage parked outside new limits can
        leave. Returns ("", "") or (NOT_REFERENCED | OUT_OF_LIMITS, the reason).
        """
        moving = [t != c for t, c in zip(target, current, strict=True)]
        if self.referenced:
            limits: Limits | None = self.limits
        elif not relative:
            return NOT_REFERENCED, (
                f"the stage is not referenced, so absolute moves are refused; "
                f"{self.how_to_reference}"
            )
        else:
            jog = self.jog_limit * (1 + 1e-9)
            big = [
                f"{name} {abs(t - c) * 1e3:.4f} mm"
                for name, t, c in zip(
                    ("stage_x", "stage_y", "focus_z"), target, current, strict=True
                )
                if abs(t - c) > jog
            ]
            if big:
                return NOT_REFERENCED, (
                    f"the stage is not referenced, so relative moves are limited to "
                    f"{self.jog_limit * 1e3:.3f} mm per axis ({', '.join(big)}); "
                    f"{self.how_to_reference}"
                )
            limits = self.hard_machine()
            if limits is None:
                return "", ""
        checked = [
            t if m else (lo + hi) / 2
            for t, m, (lo, hi) in zip(target, moving, limits.axes(), strict=True)
        ]
        reason = limits.violation(checked)
        if reason and not self.referenced:
            reason = reason.replace("soft limits", "stage's travel")
        return (OUT_OF_LIMITS, reason) if reason else ("", "")

    def describe_limits(self) -> str:
        """The limits in force, for logs: "x [0.000, 15.000], ..." in mm."""
        return ", ".join(
            f"{a} [{lo * 1e3:.3f}, {hi * 1e3:.3f}]"
            for a, (lo, hi) in zip("xyz", self.limits.axes(), strict=True)
        )

    def describe(self, pose: Sequence[float]) -> str:
        """A pose in mm, for messages."""
        return _mm(pose)
