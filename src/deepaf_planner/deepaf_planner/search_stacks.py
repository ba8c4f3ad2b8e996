"""The scan's classical focus searches, kept as labelled focal stacks (ROS-free).

Every golden-section search the scan runs (the `stack` method, the `focus_map` survey, the
verified loop's fallback) images one field at several z. When its peak is trusted, those
previews with the peak as best focus are a focal stack for free: :class:`SearchStackWriter`
writes them in the dataset format (`deepaf_driver.dataset_format`, docs/dataset-format.md),
so `./deepaf calibrate --data DIR` or a later training run can use them. Best focus is the
search's peak (``best_focus_source`` "search_peak"), what a lab without ground truth has.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from deepaf_driver.dataset_format import (
    add_to_index,
    dz_file_name,
    stack_name,
    write_image,
    write_stack_meta,
)

CREATED_BY = "deepaf scan (classical focus searches)"


class SearchStackWriter:
    """Writes searches as stacks under `root` (created when needed).

    Args:
        root: the dataset folder (the scan's `focus_stacks/`).
        profile: optics profile of the microscope.
        pixel_size_m: [m] per preview pixel at the sample (the searches image previews).
        protocol: the lab's protocol name when known.
    """

    def __init__(self, root: Path, profile: str, pixel_size_m: float, protocol: str = "unknown"):
        self.root = Path(root)
        self.profile, self.pixel_size_m, self.protocol = profile, pixel_size_m, protocol
        self.written = 0

    def _next_name(self) -> str:
        i = 0
        while (self.root / stack_name(i)).exists() or (self.root / f".{stack_name(i)}").exists():
            i += 1
        return stack_name(i)

    def write(
        self, x: float, y: float, frames: list[tuple[float, np.ndarray]], best_z: float
    ) -> Path:
        """Write one search (`frames`: (z [m], RGB preview) pairs) with best focus `best_z`;
        returns the stack's folder. Slices at the same z get distinct names.

        Raises:
            OSError: a file could not be written.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        name = self._next_name()
        tmp = self.root / f".{name}"
        tmp.mkdir()
        seen: dict[str, int] = {}
        entries = []
        for z, rgb in sorted(frames, key=lambda f: f[0]):
            base = dz_file_name(z - best_z)
            k = seen.get(base, 0)
            seen[base] = k + 1
            fname = dz_file_name(z - best_z, duplicate=k)
            write_image(tmp / fname, rgb)
            entries.append({"file": fname, "z_m": float(z)})
        write_stack_meta(
            tmp,
            {
                "profile": self.profile,
                "pixel_size_m": self.pixel_size_m,
                "sampling": "preview",
                "protocol": self.protocol,
                "slide": "scanned",
                "x_m": float(x),
                "y_m": float(y),
                "best_focus_z_m": float(best_z),
                "best_focus_source": "search_peak",
                "images": entries,
            },
        )
        tmp.rename(self.root / name)
        add_to_index(self.root, name, CREATED_BY)
        self.written += 1
        return self.root / name
