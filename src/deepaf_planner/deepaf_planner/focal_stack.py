"""Focal-stack acquisition through the real camera and stage, into the training dataset format.

The format (docs/dataset-format.md) is the one the virtual microscope's dataset writer uses and
`./deepaf train --data` reads, written through `deepaf_driver.dataset_format`: DIR/dataset.json
lists the stacks; DIR/stack_NNNNN/ holds one PNG per z (named by dz from best focus) and
meta.json, written last, so a stack without meta.json is incomplete and ignored. Best focus is
the simulator's truth when known, else the peak of the Brenner curve of the stack
(parabola-refined), which is what a lab without ground truth has.

Safety of the output directory: `stack_name` must be one plain path component (no separator,
no "..", no leading dot), so a stack is only ever written inside `output_dir`; slices are
written as they are taken into a temporary folder this goal creates (and only that folder is
ever removed), so memory holds one image whatever the count; counts are bounded
(MAX_STACK_IMAGES) and the slices' estimated size must fit on the disk; dataset.json is
checked before anything moves and again before the finished stack is moved into place.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from deepaf_driver.dataset_format import (
    INDEX_FILE,
    META_FILE,
    add_to_index,
    dz_file_name,
    read_index,
    stack_name,
    write_image,
    write_stack_meta,
)
from deepaf_driver.focus_measure import brenner, refine_peak

from deepaf_planner.paths import goal_output_dir
from deepaf_planner.scanner import Limits, Microscope

#: Most slices one stack may have (2 x 1000 steps plus the centre).
MAX_STACK_IMAGES = 2001

#: [m] smallest z_step: slice file names resolve 1 nm (`dz_file_name`).
MIN_Z_STEP = 1e-9


@dataclass(frozen=True)
class StackOutcome:
    """A written stack: folder, image count, best focus [m] and where it came from."""

    stack_dir: Path
    images: int
    best_focus_z: float
    source: str


def sharpness_peak(zs: np.ndarray, scores: np.ndarray) -> float:
    """z of the sharpness maximum, refined by a parabola through it and its neighbours.

    The one definition of a stack's best focus without ground truth ("sharpness_peak"), used
    by live acquisition and by `deepaf bag to-dataset`: the shared peak refinement,
    :func:`deepaf_driver.focus_measure.refine_peak`, of the stack's Brenner scores.
    """
    return refine_peak(zs, scores)


def _centre_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    if size <= 0:
        return rgb
    h, w = rgb.shape[:2]
    if size > min(h, w):
        raise ValueError(f"crop_size {size} exceeds the frame ({w}x{h})")
    y0, x0 = (h - size) // 2, (w - size) // 2
    return rgb[y0 : y0 + size, x0 : x0 + size]


def check_stack_name(name: str) -> None:
    """Refuse a stack name that is not one plain folder name inside the output directory.

    Raises:
        ValueError: a path separator, "..", a leading dot, a NUL, surrounding spaces or more
            than 200 bytes.
    """
    if (
        not name
        or name != name.strip()
        or any(c in name for c in "/\\\0")
        or name.startswith(".")
        or len(name.encode()) > 200
    ):
        raise ValueError(
            f"stack_name {name!r} is not a plain folder name: give one path component without "
            "'/', '\\', '..' or a leading dot (e.g. stack_00007), or '' for the next free one"
        )


def _check_index(out: Path) -> None:
    """Refuse an output directory whose dataset.json is not a usable index (when it has one).

    Raises:
        ValueError: unreadable, another format or version, or `stacks` not a list of names.
    """
    if not (out / INDEX_FILE).exists():
        return
    try:
        stacks = read_index(out).get("stacks", [])
    except ValueError as exc:
        raise ValueError(f"{exc}; fix or remove it, or choose another output_dir") from None
    if not isinstance(stacks, list) or not all(isinstance(n, str) for n in stacks):
        raise ValueError(
            f"{out / INDEX_FILE}: 'stacks' is not a list of folder names; fix or remove it, "
            "or choose another output_dir"
        )


def _check_goal(goal: Any, limits: Limits) -> None:
    """Refuse bad numbers before anything moves.

    Raises:
        ValueError: non-finite or non-positive range/step, a step below MIN_Z_STEP, a
            non-finite position or one outside the x/y limits.
    """
    r, step = goal.z_range, goal.z_step
    if not (math.isfinite(r) and math.isfinite(step) and r > 0 and step > 0):
        raise ValueError(f"z_range and z_step must be positive, got {r}, {step} m")
    if step < MIN_Z_STEP:
        raise ValueError(f"z_step {step} m is below {MIN_Z_STEP:g} m (the slice names' resolution)")
    if not goal.use_current_position:
        pos = (goal.position.x, goal.position.y, goal.position.z)
        if not all(math.isfinite(v) for v in pos):
            raise ValueError(f"position {pos} is not finite; give x, y, z in metres")
        for axis, v, (lo, hi) in (("x", pos[0], limits.x), ("y", pos[1], limits.y)):
            if not lo <= v <= hi:
                raise ValueError(
                    f"position {axis} {v * 1e3:.3f} mm is outside the soft limits "
                    f"[{lo * 1e3:.3f}, {hi * 1e3:.3f}] mm"
                )


def _check_count(goal: Any, n: int) -> None:
    """Refuse more than MAX_STACK_IMAGES slices (memory and disk stay bounded).

    Raises:
        ValueError: more slices than that.
    """
    r, step = goal.z_range, goal.z_step
    if n > MAX_STACK_IMAGES:
        raise ValueError(
            f"z_range {r * 1e6:g} um with z_step {step * 1e6:g} um makes {n} slices; at most "
            f"{MAX_STACK_IMAGES} per stack: use a larger step or a smaller range"
        )


def _check_disk(first: Path, n: int) -> None:
    """Refuse a stack whose slices (estimated from the first) would not fit on the disk."""
    size = first.stat().st_size
    need, free = size * n * 1.2, shutil.disk_usage(first.parent).free
    if need > free:
        raise ValueError(
            f"{n} slices of about {size / 1e6:.1f} MB need {need / 1e9:.1f} GB; only "
            f"{free / 1e9:.1f} GB free in {first.parent.parent}"
        )


def acquire_focal_stack(
    scope: Microscope,
    goal: Any,
    limits: Limits,
    profile: str,
    pixel_size_m: float,
    truth: Callable[[float, float], float] | None,
    feedback: Callable[[int, int, float], None],
    should_cancel: Callable[[], bool],
) -> StackOutcome | None:
    """Acquire the stack an AcquireFocalStack goal asks for; None when cancelled.

    Nothing moves until the goal, the stack name and the output directory's dataset.json
    have been checked; nothing outside the goal's own temporary folder is ever deleted.

    Raises:
        ValueError: bad range/step/count/position, a bad stack name, a z outside the soft
            limits, a stack that exists, a corrupt dataset.json, too little disk space.
        HardwareError: the stage or camera failed.
    """
    _check_goal(goal, limits)
    out = goal_output_dir(goal.output_dir, "dataset")
    if goal.stack_name:
        check_stack_name(goal.stack_name)
    x, y, z0 = (
        scope.position()
        if goal.use_current_position
        else (goal.position.x, goal.position.y, goal.position.z)
    )
    n = math.floor(2 * goal.z_range / goal.z_step + 1e-6) + 1
    z_lo, z_hi = z0 - goal.z_range, z0 - goal.z_range + goal.z_step * (n - 1)
    if z_lo < limits.z[0] or z_hi > limits.z[1]:
        raise ValueError(
            f"stack z [{z_lo * 1e6:.1f}, {z_hi * 1e6:.1f}] um leaves the soft "
            f"limits [{limits.z[0] * 1e6:.1f}, {limits.z[1] * 1e6:.1f}] um"
        )
    _check_count(goal, n)
    zs = z_lo + goal.z_step * np.arange(n)
    out.mkdir(parents=True, exist_ok=True)
    _check_index(out)  # a corrupt index fails before anything moves
    name = goal.stack_name or next(
        stack_name(i) for i in range(100000) if not (out / stack_name(i)).exists()
    )
    sdir = out / name
    if (sdir / META_FILE).exists():
        raise ValueError(f"{sdir} already holds a finished stack; choose another stack_name")
    if sdir.exists() or sdir.is_symlink():
        raise ValueError(f"{sdir} already exists and is not a stack; choose another stack_name")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=out))  # ours alone
    try:
        taken = _acquire_into(scope, goal, tmp, (x, y), zs, feedback, should_cancel)
        if taken is None:
            return None
        z_done, scores = taken
        if truth is not None:
            best, source = float(truth(x, y)), "simulator"
        else:
            best, source = sharpness_peak(np.array(z_done), np.array(scores)), "sharpness_peak"
        meta = {
            "profile": profile,
            "pixel_size_m": pixel_size_m,
            "protocol": goal.protocol or "unknown",
            "protocol_params": {},
            "slide": "acquired",
            "slide_seed": None,
            "x_m": float(x),
            "y_m": float(y),
            "best_focus_z_m": best,
            "best_focus_source": source,
            "images": _name_slices(tmp, z_done, best),
        }
        write_stack_meta(tmp, meta)
        _check_index(out)  # again: never move a stack in beside an index it cannot join
        if sdir.exists() or sdir.is_symlink():
            raise ValueError(f"{sdir} appeared while the stack was taken; nothing was moved")
        tmp.rename(sdir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when it became the stack
    try:
        add_to_index(out, name, "deepaf acquire_focal_stack")
    except ValueError as exc:
        raise ValueError(f"{exc}; choose another output_dir") from None
    return StackOutcome(sdir, len(z_done), best, source)


def _acquire_into(
    scope: Microscope,
    goal: Any,
    tmp: Path,
    xy: tuple[float, float],
    zs: np.ndarray,
    feedback: Callable[[int, int, float], None],
    should_cancel: Callable[[], bool],
) -> tuple[list[float], list[float]] | None:
    """Take the slices into `tmp` as slice_NNNNN.png, one in memory at a time; return the z
    reached and the Brenner score of each, or None when cancelled."""
    scope.move_to(xy[0], xy[1], float(zs[0]))
    z_done, scores = [], []
    for i, z in enumerate(zs):
        if should_cancel():
            return None
        moved = scope.move_to(z=float(z))
        frame = scope.capture() if goal.full_resolution else scope.preview()
        rgb = _centre_crop(frame.rgb, int(goal.crop_size))
        write_image(tmp / f"slice_{i:05d}.png", rgb)
        if i == 0:
            _check_disk(tmp / "slice_00000.png", len(zs))
        z_done.append(moved.pose[2])
        scores.append(brenner(rgb))
        feedback(i + 1, len(zs), moved.pose[2])
    return z_done, scores


def _name_slices(tmp: Path, zs: list[float], best: float) -> list[dict[str, Any]]:
    """Rename tmp's slices by their dz from best focus; return meta.json's image entries."""
    entries, used = [], set()
    for i, z in enumerate(zs):
        k, fname = 0, dz_file_name(z - best)
        while fname in used:  # two slices at the same z (a stage that could not step)
            k += 1
            fname = dz_file_name(z - best, k)
        used.add(fname)
        (tmp / f"slice_{i:05d}.png").rename(tmp / fname)
        entries.append({"file": fname, "z_m": float(z)})
    return entries
