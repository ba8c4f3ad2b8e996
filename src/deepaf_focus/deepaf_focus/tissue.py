"""Tissue detection: the one definition shared by the focus model, the data reader and the planner.

DeepAf only trusts tiles that contain tissue (a colour/saturation filter on HSV) and decides
whether a whole field is worth focusing on from its HSV statistics. Here a pixel is tissue
when it is coloured (HSV saturation above ``sat_min``) or clearly absorbs light relative to
the field's glass level (optical density above ``od_min``), and is neither saturated white
nor black. Defocused tissue keeps its colour, so the test still works far from focus.

Two tests run on each scanned field, on purpose (not one computed twice):

* the planner's field test, :func:`field_tissue_score` (or the paper's
  :func:`paper_field_has_tissue`), on the whole preview at about 128 px: skip glass before
  any focusing, for every focus method, and report ``tissue_score``;
* the predictor's :func:`tissue_patches`, which needs a tissue fraction per model tile (on
  the tile grid, up to 8x smaller) to choose the tiles it regresses. Its field-level
  ``no_tissue`` verdict is the mean of that same mask, so it costs nothing on top, and it
  protects every other client of the focus server (``PredictFocus`` from anyone).

The first cannot stand in for the second (no per-tile fractions, other geometry), and the
second comes only after a focus-server round trip, which glass fields should not pay.

Functions take 8-bit RGB arrays of shape (H, W, 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "PAPER_VALUE_THRESHOLD",
    "TissueParams",
    "check_rgb",
    "field_has_tissue",
    "field_tissue_score",
    "mean_hsv_value",
    "paper_field_has_tissue",
    "select_tissue_patches",
    "tissue_mask",
    "tissue_patches",
]


@dataclass(frozen=True)
class TissueParams:
    """Thresholds of the tissue test.

    Args:
        sat_min: HSV saturation (0..1) above which a pixel counts as stained.
        od_min: Summed RGB optical density relative to the glass level above which a pixel
            counts as absorbing.
        dark_max: HSV value (0..1) below which a pixel is black (not tissue: a closed
            shutter or a dead frame).
        min_field_fraction: Fraction of tissue pixels for a field to count as tissue.
        min_patch_fraction: Fraction of tissue pixels for a patch to be used.
        min_std: Grey-level standard deviation (0..255) below which a frame is blank.
    """

    sat_min: float = 0.12
    od_min: float = 0.25
    dark_max: float = 0.08
    min_field_fraction: float = 0.02
    min_patch_fraction: float = 0.25
    min_std: float = 1.5


DEFAULT = TissueParams()


def check_rgb(rgb: np.ndarray, min_size: int = 1) -> np.ndarray:
    """Validate an 8-bit RGB image and return it as a C-contiguous array.

    Raises:
        ValueError: when it is not a numpy uint8 array of shape (H, W, 3) with H, W >=
            ``min_size``.
    """
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(rgb).__name__}")
    if rgb.dtype != np.uint8:
        raise ValueError(
            f"expected dtype uint8 (8-bit RGB), got {rgb.dtype}; convert with "
            "np.clip(img * 255, 0, 255).astype(np.uint8) for float images in [0, 1]"
        )
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(
            f"expected shape (H, W, 3) RGB, got {rgb.shape}; stack grey images to 3 channels "
            "and drop alpha channels first"
        )
    if rgb.shape[0] < min_size or rgb.shape[1] < min_size:
        raise ValueError(f"image {rgb.shape[1]}x{rgb.shape[0]} is smaller than {min_size}px")
    return np.ascontiguousarray(rgb)


def _glass_level(rgb: np.ndarray) -> np.ndarray:
    """Per-channel brightness of empty glass: a high percentile, floored to stay sane."""
    flat = rgb.reshape(-1, 3)
    if flat.shape[0] > 16384:
        flat = flat[:: flat.shape[0] // 16384]
    return np.maximum(np.percentile(flat, 99.0, axis=0), 64.0)


def _shrink(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Area-average by an integer factor (cv2 INTER_AREA); colour statistics are kept."""
    if factor <= 1:
        return rgb
    h, w = rgb.shape[0] // factor, rgb.shape[1] // factor
    return cv2.resize(rgb[: h * factor, : w * factor], (w, h), interpolation=cv2.INTER_AREA)


def tissue_mask(rgb: np.ndarray, params: TissueParams = DEFAULT) -> np.ndarray:
    """Boolean (H, W) mask of tissue pixels.

    Args:
        rgb: uint8 image (H, W, 3).
        params: Thresholds.

    Raises:
        ValueError: for images that are not uint8 (H, W, 3).
    """
    rgb = check_rgb(rgb)
    x = rgb.astype(np.float32)
    vmax = x.max(axis=2)
    sat = (vmax - x.min(axis=2)) / np.maximum(vmax, 1.0)
    glass = _glass_level(rgb).astype(np.float32)
    od = -np.log10(np.clip((x + 1.0) / (glass + 1.0), 1e-3, 1.0)).sum(axis=2)
    return ((sat > params.sat_min) | (od > params.od_min)) & (vmax > 255.0 * params.dark_max)


def _field_score(small: np.ndarray, params: TissueParams) -> float:
    grey = small.astype(np.float32).mean(axis=2)
    if grey.std() < params.min_std or grey.mean() < 255 * params.dark_max:
        return 0.0
    return float(tissue_mask(small, params).mean())


def field_tissue_score(rgb: np.ndarray, params: TissueParams = DEFAULT) -> float:
    """Fraction (0..1) of tissue pixels in a field; 0 for blank, all-white or all-black frames.

    Computed on an area-averaged copy about 128 px on its short side (colour is what counts).

    Raises:
        ValueError: for images that are not uint8 (H, W, 3).
    """
    rgb = check_rgb(rgb)
    return _field_score(_shrink(rgb, max(1, min(rgb.shape[:2]) // 128)), params)


def field_has_tissue(rgb: np.ndarray, params: TissueParams = DEFAULT) -> bool:
    """Whether a field holds enough tissue to focus on (see :func:`field_tissue_score`)."""
    return field_tissue_score(rgb, params) >= params.min_field_fraction


def mean_hsv_value(rgb: np.ndarray) -> float:
    """Mean HSV value (max of R, G, B; 0..1) of a field: the DeepAf paper's whole-field test.

    Empty glass is bright (about 0.97 on the virtual microscope), tissue darker (0.55-0.88).

    Raises:
        ValueError: for images that are not uint8 (H, W, 3).
    """
    rgb = check_rgb(rgb)
    small = _shrink(rgb, max(1, min(rgb.shape[:2]) // 128))
    return float(small.max(axis=2).mean() / 255.0)


PAPER_VALUE_THRESHOLD = 0.92
"""A field whose mean HSV value is below this holds tissue (paper-style test)."""


def paper_field_has_tissue(
    rgb: np.ndarray, threshold: float = PAPER_VALUE_THRESHOLD, params: TissueParams = DEFAULT
) -> bool:
    """The paper's field test: mean HSV value below ``threshold``; black or blank frames
    (mean value below ``params.dark_max``, no contrast) never count as tissue.

    Raises:
        ValueError: for images that are not uint8 (H, W, 3).
    """
    rgb = check_rgb(rgb)
    small = _shrink(rgb, max(1, min(rgb.shape[:2]) // 128))
    value = small.max(axis=2).astype(np.float32) / 255.0
    grey_std = small.astype(np.float32).mean(axis=2).std()
    return bool(params.dark_max < value.mean() < threshold and grey_std >= params.min_std)


def select_tissue_patches(
    rgb: np.ndarray,
    patch: int,
    max_patches: int = 16,
    params: TissueParams = DEFAULT,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a field into non-overlapping patches and keep the most tissue-rich ones.

    The grid is centred on the image. Patches with less than ``params.min_patch_fraction``
    tissue are dropped; of the rest, the ``max_patches`` with the most tissue are returned
    (ties keep grid order, so the result is deterministic). Tissue fractions are measured
    on an area-averaged copy (up to 8x smaller), which keeps this fast on large previews.

    Args:
        rgb: uint8 field (H, W, 3), H and W >= ``patch``.
        patch: Patch edge in pixels.
        max_patches: Upper bound on returned patches.
        params: Thresholds.

    Returns:
        ``(patches, boxes)``: uint8 array (N, patch, patch, 3) and int array (N, 4) of
        ``(x, y, w, h)`` boxes in the image; N may be 0.

    Raises:
        ValueError: for bad images or an image smaller than one patch.
    """
    patches, boxes, _ = tissue_patches(rgb, patch, max_patches, params)
    return patches, boxes


def tissue_patches(
    rgb: np.ndarray,
    patch: int,
    max_patches: int = 16,
    params: TissueParams = DEFAULT,
) -> tuple[np.ndarray, np.ndarray, float]:
    """:func:`select_tissue_patches` plus the field's tissue fraction, in one pass.

    Returns:
        ``(patches, boxes, fraction)``; ``fraction`` is 0 for blank, white or black frames
        and is measured over the patch grid.

    Raises:
        ValueError: for bad images or an image smaller than one patch.
    """
    rgb = check_rgb(rgb)
    if patch < 1 or max_patches < 1:
        raise ValueError(f"patch and max_patches must be positive, got {patch}, {max_patches}")
    h, w = rgb.shape[:2]
    if h < patch or w < patch:
        raise ValueError(f"image {w}x{h} is smaller than one {patch}x{patch} patch")
    ny, nx = h // patch, w // patch
    y0, x0 = (h - ny * patch) // 2, (w - nx * patch) // 2
    grid = rgb[y0 : y0 + ny * patch, x0 : x0 + nx * patch]
    f = next(k for k in (8, 4, 2, 1) if patch % k == 0 and patch // k >= 4)
    small = _shrink(grid, f)
    empty = (np.zeros((0, patch, patch, 3), np.uint8), np.zeros((0, 4), np.int64))
    grey = small.astype(np.float32).mean(axis=2)
    if grey.std() < params.min_std or grey.mean() < 255 * params.dark_max:
        return (*empty, 0.0)
    cell = patch // f
    m = tissue_mask(small, params)
    fraction = float(m.mean())
    if fraction < params.min_field_fraction:
        return (*empty, fraction)
    frac = m.reshape(ny, cell, nx, cell).mean(axis=(1, 3)).ravel()
    order = np.argsort(-frac, kind="stable")
    keep = [i for i in order if frac[i] >= params.min_patch_fraction][:max_patches]
    if not keep:
        return (*empty, fraction)
    boxes = np.array(
        [(x0 + (i % nx) * patch, y0 + (i // nx) * patch, patch, patch) for i in keep], np.int64
    )
    patches = np.stack([rgb[y : y + patch, x : x + patch] for x, y, _, _ in boxes])
    return patches, boxes, fraction
