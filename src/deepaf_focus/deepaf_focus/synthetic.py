"""Tiny synthetic focal stacks (per-channel Gaussian defocus with a chromatic shift).

Not a microscope model (that is the virtual microscope in ``deepaf_driver.sim``): just enough
structure for fast tests and smoke runs of the readers, training loop and evaluation, with a
learnable sign (each colour channel focuses at a different z).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from deepaf_driver.dataset_format import (
    dz_file_name,
    stack_name,
    write_image,
    write_index,
    write_stack_meta,
)

__all__ = ["make_focal_stack_dataset", "render", "texture"]

CHROMATIC_UM = (0.35, 0.0, -0.45)  # R, G, B focus shifts: makes the sign learnable


def render(tex: np.ndarray, dz_um: float) -> np.ndarray:
    """Blur each channel of a float texture by its own defocus; return uint8 RGB."""
    out = np.empty_like(tex)
    for c in range(3):
        sigma = 0.3 + 0.6 * abs(dz_um + CHROMATIC_UM[c])
        out[..., c] = cv2.GaussianBlur(tex[..., c], (0, 0), sigma)
    return np.clip(out * 255, 0, 255).astype(np.uint8)


def texture(rng: np.random.Generator, size: int, tint=(0.85, 0.55, 0.75)) -> np.ndarray:
    """Pink stroma with purple nuclei: float RGB in [0, 1]."""
    tex = np.ones((size, size, 3), np.float32) * np.array(tint, np.float32)
    noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 1.0)
    tex *= (0.8 + 0.4 * noise)[..., None]
    for _ in range(size * size // 60):
        y, x = rng.integers(0, size, 2)
        cv2.circle(tex, (int(x), int(y)), int(rng.integers(1, 3)), (0.35, 0.2, 0.55), -1)
    return np.clip(tex, 0, 1)


def make_focal_stack_dataset(
    root: Path,
    n_stacks: int = 6,
    zs_um=(-4, -2, -1, 0, 1, 2, 4),
    size: int = 48,
    protocols=("p1", "p2"),
    seed: int = 0,
    random_protocols: bool = False,
    glass_stacks: int = 0,
) -> Path:
    """Write a deepaf-focal-stack dataset; stacks alternate over protocols."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n_stacks + glass_stacks):
        name = stack_name(i)
        d = root / name
        d.mkdir()
        best = float(rng.uniform(-2e-6, 2e-6))
        glass = i >= n_stacks
        tex = np.ones((size, size, 3), np.float32) * 0.97 if glass else texture(rng, size)
        images = []
        for dz in zs_um:
            z = best - dz * 1e-6  # label = best - z = dz
            fname = dz_file_name(z - best)
            write_image(d / fname, render(tex, dz))
            images.append({"file": fname, "z_m": z})
        meta = {
            "profile": "20x",
            "pixel_size_m": 0.25e-6,
            "protocol": protocols[i % len(protocols)],
            "protocol_params": {},
            "slide": f"sim:seed={seed * 100 + i}",
            "slide_seed": seed * 100 + i,
            "x_m": 0.0,
            "y_m": 0.0,
            "best_focus_z_m": best,
            "images": images,
        }
        write_stack_meta(d, meta)
        names.append(name)
    args = {"protocols": "random" if random_protocols else ",".join(protocols), "seed": seed}
    write_index(root, names, "test", args)
    return root
