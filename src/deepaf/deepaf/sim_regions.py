"""Scan regions on a virtual slide: where the tissue's edge is, so a short demo or test scan
both captures tissue and skips empty glass. Uses the simulator's tissue map (ground truth), not
the planner's detector.
"""

from __future__ import annotations

import numpy as np

Region = tuple[tuple[float, float], tuple[float, float]]


def field_tissue_fraction(scope, x: float, y: float, fov: tuple[float, float]) -> float:
    """Share of a field of view centred at (x, y) [m] covered by tissue (simulator truth)."""
    xs = np.linspace(x - fov[0] / 2, x + fov[0] / 2, 24)
    ys = np.linspace(y - fov[1] / 2, y + fov[1] / 2, 18)
    return float(np.mean(scope.slide.tissue_fraction(xs, ys)[0]))


def edge_region(
    scope,
    fov: tuple[float, float],
    cols: int = 4,
    rows: int = 3,
    overlap: float = 0.1,
    min_empty: int = 2,
) -> Region:
    """A region of `cols` x `rows` fields with the most tissue that still has `min_empty`
    empty fields. Returns ((x0, y0), (x1, y1)) in metres, inside the slide.

    Raises:
        ValueError: no such region on this slide.
    """
    step = (fov[0] * (1 - overlap), fov[1] * (1 - overlap))
    w, h = scope.slide_size_m
    nx, ny = int((w - fov[0]) // step[0]), int((h - fov[1]) // step[1])
    xs = fov[0] / 2 + step[0] * np.arange(nx + 1)
    ys = fov[1] / 2 + step[1] * np.arange(ny + 1)
    grid = np.array([[field_tissue_fraction(scope, x, y, fov) for x in xs] for y in ys])
    best, best_score = None, -1.0
    for j in range(len(ys) - rows + 1):
        for i in range(len(xs) - cols + 1):
            block = grid[j : j + rows, i : i + cols]
            if (block <= 0.002).sum() >= min_empty and block.sum() > best_score:
                best, best_score = (i, j), float(block.sum())
    if best is None or best_score <= 0:
        raise ValueError("no tissue edge on this slide")
    i, j = best
    half = (fov[0] / 2 * 0.98, fov[1] / 2 * 0.98)
    lo = (float(xs[i] - half[0]), float(ys[j] - half[1]))
    hi = (float(xs[i + cols - 1] + half[0]), float(ys[j + rows - 1] + half[1]))
    return lo, hi


def tissue_region(
    scope,
    fov: tuple[float, float],
    cols: int = 2,
    rows: int = 2,
    overlap: float = 0.1,
    min_fraction: float = 0.9,
) -> Region:
    """A region of `cols` x `rows` fields that are all (at least `min_fraction`) tissue, the
    one nearest the slide's centre; cheap at any magnification (it tries candidate blocks
    outward from the centre instead of mapping the whole slide). Returns ((x0, y0), (x1, y1))
    in metres, inside the slide.

    Raises:
        ValueError: no such region near the centre of this slide.
    """
    step = (fov[0] * (1 - overlap), fov[1] * (1 - overlap))
    w, h = scope.slide_size_m
    span = (fov[0] + step[0] * (cols - 1), fov[1] + step[1] * (rows - 1))
    cx, cy = w / 2, h / 2
    for ring in range(12):
        offsets = [(i, j) for i in range(-ring, ring + 1) for j in range(-ring, ring + 1)
                   if max(abs(i), abs(j)) == ring]  # fmt: skip
        for i, j in offsets:
            x0, y0 = cx + i * span[0] - span[0] / 2, cy + j * span[1] - span[1] / 2
            if x0 < 0 or y0 < 0 or x0 + span[0] > w or y0 + span[1] > h:
                continue
            xs = x0 + fov[0] / 2 + step[0] * np.arange(cols)
            ys = y0 + fov[1] / 2 + step[1] * np.arange(rows)
            if all(field_tissue_fraction(scope, x, y, fov) >= min_fraction for x in xs for y in ys):
                half = (fov[0] / 2 * 0.98, fov[1] / 2 * 0.98)
                lo = (float(xs[0] - half[0]), float(ys[0] - half[1]))
                hi = (float(xs[-1] + half[0]), float(ys[-1] + half[1]))
                return lo, hi
    raise ValueError("no all-tissue region near the centre of this slide")
