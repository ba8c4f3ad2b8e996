"""Focal-stack acquisition through the real camera and stage, into the training dataset format.

The format (docs/dataset-format.md) is the one the virtual microscope's dataset writer uses and
`./deepaf train --data` reads: DIR/dataset.json lists the stacks; DIR/stack_NNNNN/ holds one PNG
per z (named by dz from best focus) and meta.json, written last, so a stack without meta.json
is incomplete and ignored. Best focus is the simulator's truth when known, else the peak of the
Brenner curve of the stack (parabola-refined), which is what a lab without ground truth has.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from deepaf_driver.sim.dataset import FORMAT, VERSION, dz_file_name, stack_name
from deepaf_focus.baselines import brenner

from deepaf_planner.report import atomic_write_text
from deepaf_planner.scanner import Limits, Microscope


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
    by live acquisition and by `deepaf bag to-dataset`.
    """
    order = np.argsort(zs)
    zs, scores = np.asarray(zs, float)[order], np.asarray(scores, float)[order]
    i = int(np.argmax(scores))
    if 0 < i < len(zs) - 1:
        a, b, _ = np.polyfit(zs[i - 1 : i + 2] - zs[i], scores[i - 1 : i + 2], 2)
        if a < 0:
            dz = float(np.clip(-b / (2 * a), zs[i - 1] - zs[i], zs[i + 1] - zs[i]))
            return float(zs[i] + dz)
    return float(zs[i])


def _centre_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    if size <= 0:
        return rgb
    h, w = rgb.shape[:2]
    if size > min(h, w):
        raise ValueError(f"crop_size {size} exceeds the frame ({w}x{h})")
    y0, x0 = (h - size) // 2, (w - size) // 2
    return rgb[y0 : y0 + size, x0 : x0 + size]


def _register(out: Path, name: str) -> None:
    """Add a stack to DIR/dataset.json (created when missing)."""
    index = out / "dataset.json"
    head: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "stacks": [],
        "created_by": "deepaf acquire_focal_stack",
        "args": {},
    }
    if index.exists():
        head = json.loads(index.read_text())
        if head.get("format") != FORMAT:
            raise ValueError(f"{index} is not a {FORMAT} dataset; choose another output_dir")
    if name not in head["stacks"]:
        head["stacks"].append(name)
    atomic_write_text(index, json.dumps(head, indent=1))


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

    Raises:
        ValueError: bad range/step, a z outside the soft limits, an unwritable output.
        HardwareError: the stage or camera failed.
    """
    if not (goal.z_step > 0 and goal.z_range > 0 and math.isfinite(goal.z_range)):
        raise ValueError(
            f"z_range and z_step must be positive, got {goal.z_range}, {goal.z_step} m"
        )
    if not goal.output_dir:
        raise ValueError("output_dir is empty: say where the dataset is")
    x, y, z0 = (
        scope.position()
        if goal.use_current_position
        else (goal.position.x, goal.position.y, goal.position.z)
    )
    n = math.floor(2 * goal.z_range / goal.z_step + 1e-6) + 1
    zs = z0 - goal.z_range + goal.z_step * np.arange(n)
    if zs[0] < limits.z[0] or zs[-1] > limits.z[1]:
        raise ValueError(
            f"stack z [{zs[0] * 1e6:.1f}, {zs[-1] * 1e6:.1f}] um leaves the soft "
            f"limits [{limits.z[0] * 1e6:.1f}, {limits.z[1] * 1e6:.1f}] um"
        )
    out = Path(goal.output_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    name = goal.stack_name or next(
        stack_name(i) for i in range(100000) if not (out / stack_name(i)).exists()
    )
    sdir = out / name
    if (sdir / "meta.json").exists():
        raise ValueError(f"{sdir} already holds a finished stack; choose another stack_name")
    tmp = out / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    scope.move_to(x, y, float(zs[0]))
    images, scores = [], []
    for i, z in enumerate(zs):
        if should_cancel():
            shutil.rmtree(tmp, ignore_errors=True)
            return None
        moved = scope.move_to(z=float(z))
        frame = scope.capture() if goal.full_resolution else scope.preview()
        rgb = _centre_crop(frame.rgb, int(goal.crop_size))
        images.append((moved.pose[2], rgb))
        scores.append(brenner(rgb))
        feedback(i + 1, n, moved.pose[2])
    if truth is not None:
        best, source = float(truth(x, y)), "simulator"
    else:
        best, source = (
            sharpness_peak(np.array([z for z, _ in images]), np.array(scores)),
            "sharpness_peak",
        )
    entries = []
    for z, rgb in images:
        fname = dz_file_name(z - best)
        if not cv2.imwrite(str(tmp / fname), np.ascontiguousarray(rgb[..., ::-1])):
            raise OSError(f"could not write {tmp / fname}")
        entries.append({"file": fname, "z_m": float(z)})
    meta = {
        "format": FORMAT,
        "version": VERSION,
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
        "images": entries,
    }
    atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1))
    tmp.rename(sdir)
    _register(out, name)
    return StackOutcome(sdir, len(entries), best, source)
