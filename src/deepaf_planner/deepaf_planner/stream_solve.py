"""Tile positions solved while the scan runs, each frozen for good once its neighbours are in.

A global least-squares solve (:func:`~.stitching.solve_positions`) moves every tile a little
whenever a tile is added anywhere, so nothing could be blended before the last tile. Here
the fields are visited in scan order; after each captured tile the positions of the tiles
not yet frozen are solved with the frozen ones held fixed (matches to them are constraints),
with the same outlier rejection and stage map (similarity and backlash) as the global
solve. A tile freezes
once every planned field within ``freeze_ring`` grid steps of it (8-connected) has been
visited: all its matches, and those of its neighbours, are then known. Its position is
final, so the slide around it can be blended, encoded and forgotten during the scan. A tile
with fewer than ``loose_matches`` accepted matches (by default: none; faint tissue) is
placed by the stage through the stage map alone, which later rows still refine (on
the pale bench slide the rotation fitted after 4 of 16 rows was a third of the true one):
it waits until every field within ``loose_ring`` has been visited.

The positions depend only on the tiles, their matches and the scan order, so a resumed scan
that feeds its finished tiles again gets those of an uninterrupted one. Compared with the
global solve, a tile cannot profit from matches made after it froze: seams stay exact
(neighbours are placed relative to each other), but the slide's absolute drift over many
rows is a little larger (``./deepaf bench stitch`` measures both).

Cost per tile: one sparse solve over the unfrozen tiles (about ``2 * freeze_ring + 1`` rows of
the grid, independent of the slide's size) and an O(N) numpy fit of the stage map.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from .stitching import (
    Match,
    StageMap,
    StitchConfig,
    approach_signs,
    fit_stage_map,
    solve_robust,
    solve_weighted,
)

__all__ = ["StreamingSolver"]


class StreamingSolver:
    """Positions of tiles captured in scan order, frozen as their neighbourhoods complete.

    Args:
        order: Every planned field's index, in scan order (visited, captured or not, in
            this order).
        cells: Grid (row, col) of each planned field index.
        nominal_px: Stage-derived top-left (row, col) pixel of each planned field index.
        config: Settings (sigmas, residual threshold, ``freeze_ring``).

    Raises:
        ValueError: for fields without a cell or a nominal position, or duplicates.
    """

    def __init__(
        self,
        order: Sequence[int],
        cells: Mapping[int, tuple[int, int]],
        nominal_px: Mapping[int, Sequence[float]],
        config: StitchConfig,
    ) -> None:
        order = [int(i) for i in order]
        if len(set(order)) != len(order):
            raise ValueError("field indices must be unique")
        missing = [i for i in order if i not in cells or i not in nominal_px]
        if missing:
            raise ValueError(f"fields {missing[:5]} have no grid cell or stage position")
        self.config = config
        self._rank = {idx: k for k, idx in enumerate(order)}  # scan position
        self._nominal = np.array([nominal_px[i] for i in order], float).reshape(-1, 2)
        self._signs = approach_signs(self._nominal)  # the stage visits every field in order
        by_cell = {tuple(cells[i]): self._rank[i] for i in order}
        ring = max(0, int(config.freeze_ring))
        # the scan position after which a field's neighbourhood is fully visited
        self._ready_at = _ready_after(order, cells, by_cell, ring)
        self._ready_loose = _ready_after(order, cells, by_cell, max(ring, config.loose_ring))
        self.visited = -1  # scan position of the last visited field
        self.frozen: dict[int, np.ndarray] = {}  # index -> final top-left (row, col) px
        self.current: dict[int, np.ndarray] = {}  # index -> position of a tile not frozen
        self.matches: list[Match] = []
        self.stage_map: StageMap | None = None  # the last accepted fit

    @property
    def unfrozen(self) -> list[int]:
        """Captured tiles whose position may still change, in scan order."""
        return list(self.current)

    def rank(self, index: int) -> int:
        """Scan position of a planned field."""
        return self._rank[index]

    def predicted(self, indices: Sequence[int]) -> np.ndarray:
        """(K, 2) best guess of where fields would go: their stage positions through the
        stage map fitted so far (the raw stage positions before there is one)."""
        k = [self._rank[i] for i in indices]
        if self.stage_map is None:
            return self._nominal[k]  # a copy (indexed by a list)
        return self.stage_map.apply(self._nominal[k], self._signs[k])

    def add(self, index: int, matches: Sequence[Match] = ()) -> list[int]:
        """A captured tile (its matches with tiles added before it); every field before it
        in scan order counts as visited. Returns the tiles frozen by it, in scan order.

        Raises:
            ValueError: for an unplanned field, one added twice or out of scan order.
        """
        self.check(index)
        k = self._rank[index]
        self.visited = k
        self.current[index] = self._nominal[k].copy()
        self.matches.extend(matches)
        return self._step()

    def visit(self, index: int) -> list[int]:
        """A field passed without a capture (glass); every field before it counts as
        visited too. Returns the tiles frozen by it.

        Raises:
            ValueError: for an unplanned field or one out of scan order.
        """
        self.check(index)
        self.visited = self._rank[index]
        return self._step()

    def check(self, index: int) -> None:
        """Raise ValueError unless ``index`` may be added next (planned, after the last)."""
        if index not in self._rank:
            raise ValueError(f"field {index} is not in the plan")
        if self._rank[index] <= self.visited:
            raise ValueError(f"field {index} comes after the field at scan position {self.visited}")

    def visit_all(self) -> list[int]:
        """The scan is over: every field is visited, every tile frozen. Returns those frozen."""
        self.visited = len(self._ready_at) - 1
        return self._step()

    def positions(self, indices: Sequence[int]) -> np.ndarray:
        """(K, 2) final positions of frozen tiles.

        Raises:
            KeyError: for a tile not frozen.
        """
        return np.array([self.frozen[i] for i in indices], float).reshape(-1, 2)

    def _step(self) -> list[int]:
        free = list(self.current)
        if not free:
            return []
        pos = {idx: n for n, idx in enumerate(free)}
        live = [m for m in self.matches if m.a in pos or m.b in pos]
        prior = self._nominal[[self._rank[i] for i in free]]
        out, live = solve_robust(prior, pos, live, self.config, self.frozen)
        dropped = {(m.a, m.b) for m in live if m.reason == "inconsistent"}
        if dropped:
            self.matches = [
                Match(m.a, m.b, m.dy, m.dx, m.confidence, False, "inconsistent")
                if m.accepted and (m.a, m.b) in dropped
                else m
                for m in self.matches
            ]
        out = self._with_stage_map(free, pos, out, live)
        for idx, p in zip(free, out, strict=True):
            self.current[idx] = p
        matched = Counter(i for m in live if m.accepted for i in (m.a, m.b))
        done = [i for i in free if self._ready(i, matched[i])]
        for i in done:
            self.frozen[i] = self.current.pop(i)
        return done

    def _ready(self, index: int, matched: int) -> bool:
        """Whether a free tile freezes now: its ring is visited and it has the matches to
        be placed by its neighbours, or the wider ring of a loosely matched tile is."""
        k = self._rank[index]
        if self._ready_loose[k] <= self.visited:
            return True
        if self._ready_at[k] > self.visited:
            return False
        return matched >= self.config.loose_matches

    def _with_stage_map(
        self, free: list[int], pos: dict[int, int], out: np.ndarray, live: list[Match]
    ) -> np.ndarray:
        """Solve the free tiles again with the stage positions mapped through the stage map
        (similarity and backlash, :class:`~.stitching.StageMap`) fitted to every placed tile
        so far.

        Once a map has been fitted it stays (the last one) when a later fit is not accepted,
        e.g. when the tiles placed so far no longer span half of a grown extent: switching
        the prior off again would move every unmatched tile back to the raw stage, further
        than the slide's blending margin allows for."""
        present = list(self.frozen) + free
        rows = {idx: n for n, idx in enumerate(present)}
        k = [self._rank[i] for i in present]
        solved = np.concatenate([self.positions(list(self.frozen)), out]) if self.frozen else out
        fit = fit_stage_map(self._nominal[k], solved, rows, self.matches, self._signs[k])
        self.stage_map = fit or self.stage_map
        if self.stage_map is None:
            return out
        mapped = self.predicted(free)
        return solve_weighted(mapped, pos, live, self.config, self.frozen)


def _ready_after(
    order: Sequence[int],
    cells: Mapping[int, tuple[int, int]],
    by_cell: Mapping[tuple[int, int], int],
    ring: int,
) -> np.ndarray:
    """Per scan position, the scan position after which every field within ``ring`` grid
    steps (8-connected) of that field has been visited."""
    out = np.empty(len(order), np.int64)
    for k, idx in enumerate(order):
        r, c = cells[idx]
        out[k] = max(
            by_cell[(r + a, c + b)]
            for a in range(-ring, ring + 1)
            for b in range(-ring, ring + 1)
            if (r + a, c + b) in by_cell
        )
    return out
