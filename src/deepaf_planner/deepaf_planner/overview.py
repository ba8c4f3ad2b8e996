"""Whole-slide scans: where the tissue is, from a coarse sweep of previews.

A technician scans a slide, not a region. Before a whole-slide scan the planner visits a
coarse serpentine grid of points (every `step_fields` fields of view) over the region (by
default the whole stage), takes one preview at each and runs the same tissue test as the
scan. The region to scan is the bounding box of the points that saw tissue, grown on every
side to the edge of what the neighbouring points saw (tissue between two sample points can
reach no farther), and clipped to the swept region. No ROS here: the scanner passes its
microscope and tissue test in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Overview", "sweep_points", "tissue_box"]

Region = tuple[tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class Overview:
    """What a sweep found.

    Args:
        region: ((x0, y0), (x1, y1)) [m] to scan, or None when no point saw tissue.
        points: (x, y, has_tissue) of every preview, in sweep order.
        seconds: simulated (or hardware) motion and exposure time of the sweep [s].
    """

    region: Region | None
    points: list[tuple[float, float, bool]]
    seconds: float

    @property
    def text(self) -> str:
        """One line for logs and the scan's result."""
        n, hit = len(self.points), sum(p[2] for p in self.points)
        if self.region is None:
            return f"overview: no tissue in {n} previews"
        (x0, y0), (x1, y1) = self.region
        return (
            f"overview: tissue in {hit} of {n} previews; scanning x {x0 * 1e3:.2f}-"
            f"{x1 * 1e3:.2f} mm, y {y0 * 1e3:.2f}-{y1 * 1e3:.2f} mm"
        )


def _axis(lo: float, hi: float, step: float) -> np.ndarray:
    n = max(1, math.ceil((hi - lo) / step))
    return lo + (np.arange(n) + 0.5) * (hi - lo) / n


def sweep_points(region: Region, step: tuple[float, float]) -> list[tuple[float, float]]:
    """Centres of a serpentine grid over `region` [m], spaced at most `step` (x, y) apart,
    from the bottom-right (highest x, lowest y), as the scan goes.

    Raises:
        ValueError: for an empty region or a non-positive step.
    """
    (x0, y0), (x1, y1) = region
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"overview region must have an area, got {region}")
    if not (min(step) > 0 and all(math.isfinite(s) for s in step)):
        raise ValueError(f"overview step must be positive, got {step}")
    xs, ys = _axis(x0, x1, step[0])[::-1], _axis(y0, y1, step[1])
    return [
        (float(x), float(y)) for j, y in enumerate(ys) for x in (xs if j % 2 == 0 else xs[::-1])
    ]


def tissue_box(
    points: list[tuple[float, float, bool]], region: Region, view: tuple[float, float]
) -> Region | None:
    """Bounding box of the points that saw tissue, grown to what their neighbours saw.

    Args:
        points: (x, y, has_tissue) per preview, on one grid.
        region: the swept region [m]; the box is clipped to it.
        view: (w, h) [m] of what one preview sees.
    """
    hits = [(x, y) for x, y, t in points if t]
    if not hits:
        return None
    xs = sorted({p[0] for p in points})
    ys = sorted({p[1] for p in points})
    dx = (xs[1] - xs[0]) if len(xs) > 1 else view[0]
    dy = (ys[1] - ys[0]) if len(ys) > 1 else view[1]
    # tissue seen at a point may extend until the next point's view begins
    gx, gy = max(view[0] / 2, dx - view[0] / 2), max(view[1] / 2, dy - view[1] / 2)
    (rx0, ry0), (rx1, ry1) = region
    hx, hy = [h[0] for h in hits], [h[1] for h in hits]
    return (
        (max(rx0, min(hx) - gx), max(ry0, min(hy) - gy)),
        (min(rx1, max(hx) + gx), min(ry1, max(hy) + gy)),
    )


def sweep(
    region: Region,
    step: tuple[float, float],
    view: tuple[float, float],
    look: Callable[[float, float], tuple[bool, float]],
    on_point: Callable[[int, int], None] | None = None,
) -> Overview:
    """Run the sweep: `look(x, y)` moves there, previews, and returns (has_tissue, seconds).

    `on_point(done, total)` reports progress (and may raise to cancel).
    """
    where = sweep_points(region, step)
    seen: list[tuple[float, float, bool]] = []
    seconds = 0.0
    for k, (x, y) in enumerate(where):
        hit, s = look(x, y)
        seen.append((x, y, bool(hit)))
        seconds += s
        if on_point is not None:
            on_point(k + 1, len(where))
    return Overview(tissue_box(seen, region, view), seen, seconds)
