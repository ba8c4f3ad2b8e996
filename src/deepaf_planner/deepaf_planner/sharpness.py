"""Sharpness check of captured tiles: is this tile acceptably sharp?

The focus measures themselves are defined once in :mod:`deepaf_focus.baselines`
(Brenner, Tenengrad, on the green channel); this module only normalises them so tiles of
different resolution, brightness and tissue coverage compare, and decides whether a
captured tile passes relative to its scanned neighbours and the field's preview.

Scores are computed at a common working resolution (long side ``work_px``, the preview
width by default) so a 4056x3040 capture and its 1280x720 preview are comparable;
:func:`resample_to_width` brings a capture to the preview's pixel sampling (the scan loop
scores it and re-runs the focus prediction on it, so verifying a tile costs no exposure).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from deepaf_focus.baselines import brenner, tenengrad
from deepaf_focus.tissue import check_rgb, tissue_mask

__all__ = ["SharpnessVerdict", "assess_sharpness", "normalized_sharpness", "resample_to_width"]

_MEASURES = {"brenner": brenner, "tenengrad": tenengrad}
_MIN_COVERAGE = 0.05  # tissue fraction below which the coverage normalisation stops


def _resize_long_side(rgb: np.ndarray, work_px: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = work_px / max(h, w)
    if s >= 1.0:
        return rgb
    return cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def resample_to_width(rgb: np.ndarray, width: int) -> np.ndarray:
    """Area-downsample an image to ``width`` pixels across, keeping its aspect ratio.

    A capture resampled to its preview's width has the preview's pixel sampling (the
    preview spans the capture's full width), which is what a focus model trained on
    previews expects. Images already at most ``width`` wide are returned as they are.

    Raises:
        ValueError: for a non-positive width.
    """
    if width < 1:
        raise ValueError(f"width must be positive, got {width}")
    h, w = rgb.shape[:2]
    if w <= width:
        return rgb
    return cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def normalized_sharpness(rgb: np.ndarray, measure: str = "brenner", work_px: int = 1280) -> float:
    """Brightness- and coverage-normalised focus measure of an RGB image.

    The measure (on green) is divided by the squared illumination level (99th percentile of
    green: gain invariance) and by the tissue fraction (empty glass adds no gradient), at
    ``work_px`` resolution.

    Args:
        rgb: uint8 image (H, W, 3).
        measure: ``"brenner"`` or ``"tenengrad"`` (from :mod:`deepaf_focus.baselines`).
        work_px: Long side of the working resolution (the image is area-downsampled).

    Raises:
        ValueError: for an unknown measure or a non-uint8 RGB image.
    """
    if measure not in _MEASURES:
        raise ValueError(f"unknown measure {measure!r}; choose one of {sorted(_MEASURES)}")
    small = _resize_long_side(check_rgb(rgb, min_size=3), work_px)
    light = max(float(np.percentile(small[..., 1], 99)), 1.0)  # illumination (glass) level
    coverage = max(float(tissue_mask(small).mean()), _MIN_COVERAGE)
    return _MEASURES[measure](small) / (light**2 * coverage)


@dataclass(frozen=True)
class SharpnessVerdict:
    """Outcome of a sharpness check.

    Args:
        ok: The tile is acceptably sharp.
        score: Its normalised sharpness.
        reference: The score it was compared with (``nan`` when nothing to compare).
        ratio: ``score / reference`` (``nan`` without a reference).
        reason: Human-readable explanation.
    """

    ok: bool
    score: float
    reference: float
    ratio: float
    reason: str


def assess_sharpness(
    score: float,
    neighbour_scores: Sequence[float] = (),
    preview_score: float | None = None,
    min_ratio: float = 0.6,
    preview_margin: float = 0.9,
    must_sharpen: bool = False,
) -> SharpnessVerdict:
    """Judge a captured tile's sharpness against its neighbours and its preview.

    The tile fails when its score is below ``min_ratio`` times the median of the
    neighbours' scores (neighbouring tissue looks alike and the surface is smooth), or
    below ``preview_margin`` times the preview's score (refocusing made it worse), or, with
    ``must_sharpen``, not above the preview's score (a large focus move toward best focus
    must sharpen the image). With neither reference it passes.

    Args:
        score: :func:`normalized_sharpness` of the captured tile.
        neighbour_scores: Scores of already accepted tiles nearby.
        preview_score: Score of the field's preview before the focus move, at the same
            working resolution.
        min_ratio: Fraction of the neighbours' median a tile must reach, in (0, 1].
        preview_margin: Fraction of the preview's score a tile must reach, in (0, 1].
        must_sharpen: The tile must be sharper than the preview (the focus moved far).

    Raises:
        ValueError: for ratios outside (0, 1] or a non-finite score.
    """
    if not (0 < min_ratio <= 1 and 0 < preview_margin <= 1):
        raise ValueError(f"ratios must be in (0, 1], got {min_ratio}, {preview_margin}")
    if not np.isfinite(score):
        raise ValueError(f"score must be finite, got {score}")
    refs = [float(s) for s in neighbour_scores if np.isfinite(s) and s > 0]
    if refs:
        ref = float(np.median(refs))
        ratio = score / ref
        if ratio < min_ratio:
            return SharpnessVerdict(
                False, score, ref, ratio,
                f"sharpness {score:.3g} is {ratio:.0%} of the neighbours' median {ref:.3g} "
                f"(needs {min_ratio:.0%}); refocus",
            )  # fmt: skip
    else:
        ref, ratio = float("nan"), float("nan")
    if preview_score is not None and preview_score > 0:
        if must_sharpen and score <= preview_score:
            return SharpnessVerdict(
                False, score, preview_score, score / preview_score,
                f"sharpness {score:.3g} did not rise above the preview's {preview_score:.3g} "
                "although the focus moved far; refocus",
            )  # fmt: skip
        if score < preview_margin * preview_score:
            return SharpnessVerdict(
                False, score, preview_score, score / preview_score,
                f"sharpness {score:.3g} fell below the preview's {preview_score:.3g}; refocus",
            )  # fmt: skip
    return SharpnessVerdict(True, score, ref, ratio, "sharp enough")
