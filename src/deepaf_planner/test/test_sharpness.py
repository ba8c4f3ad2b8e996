"""Tile sharpness check on a stained-tissue texture blurred by known amounts."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from deepaf_planner.sharpness import assess_sharpness, normalized_sharpness
from skimage import data

from deepaf_focus import baselines
from deepaf_planner import sharpness


@pytest.fixture(scope="module")
def tissue() -> np.ndarray:
    return data.immunohistochemistry()  # 512x512 RGB uint8, stained tissue


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0 else img


def test_focus_measures_are_imported_not_redefined() -> None:
    assert sharpness.brenner is baselines.brenner
    assert sharpness.tenengrad is baselines.tenengrad


@pytest.mark.parametrize("measure", ["brenner", "tenengrad"])
def test_sharpness_falls_with_blur(tissue: np.ndarray, measure: str) -> None:
    scores = [normalized_sharpness(_blur(tissue, s), measure) for s in (0, 1, 2, 4)]
    assert all(a > b for a, b in itertools.pairwise(scores))


def test_invariant_to_gain_and_comparable_across_resolution(tissue: np.ndarray) -> None:
    s = normalized_sharpness(tissue)
    dimmer = np.clip(tissue.astype(np.float32) * 0.8, 0, 255).astype(np.uint8)
    assert normalized_sharpness(dimmer) == pytest.approx(s, rel=0.1)
    big = cv2.resize(tissue, (1024, 1024), interpolation=cv2.INTER_NEAREST)
    assert normalized_sharpness(big, work_px=512) == pytest.approx(s, rel=0.05)


def test_sparse_tissue_is_not_penalised_for_glass(tissue: np.ndarray) -> None:
    half_glass = tissue.copy()
    half_glass[:, 256:] = 250  # right half empty glass
    full = normalized_sharpness(tissue[:, :256])
    assert normalized_sharpness(half_glass) == pytest.approx(full, rel=0.35)


def test_assess_against_neighbours_and_preview(tissue: np.ndarray) -> None:
    neighbours = [normalized_sharpness(tissue[i : i + 256, j : j + 256])
                  for i in (0, 256) for j in (0, 256)]  # fmt: skip
    sharp = normalized_sharpness(tissue[128:384, 128:384])
    blurred = normalized_sharpness(_blur(tissue[128:384, 128:384], 3))
    ok = assess_sharpness(sharp, neighbours)
    assert ok.ok and ok.ratio > 0.6
    bad = assess_sharpness(blurred, neighbours)
    assert not bad.ok and "neighbours" in bad.reason and bad.ratio < 0.6
    worse_than_preview = assess_sharpness(blurred, (), preview_score=sharp)
    assert not worse_than_preview.ok and "preview" in worse_than_preview.reason
    alone = assess_sharpness(blurred)
    assert alone.ok and np.isnan(alone.reference)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown measure"):
        normalized_sharpness(np.zeros((8, 8, 3), np.uint8), "nope")
    with pytest.raises(ValueError, match="uint8"):
        normalized_sharpness(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="ratios"):
        assess_sharpness(1.0, min_ratio=0)
    with pytest.raises(ValueError, match="finite"):
        assess_sharpness(float("nan"))


def test_a_far_focus_move_must_sharpen(tissue: np.ndarray) -> None:
    before = normalized_sharpness(_blur(tissue, 2))
    same = assess_sharpness(before, (), preview_score=before, must_sharpen=True)
    assert not same.ok and "did not rise" in same.reason
    assert assess_sharpness(before, (), preview_score=before).ok  # a small move may keep it
    sharper = normalized_sharpness(tissue)
    assert assess_sharpness(sharper, (), preview_score=before, must_sharpen=True).ok


def test_resample_to_width_keeps_aspect_and_sampling(tissue: np.ndarray) -> None:
    wide = cv2.resize(tissue, (1014, 760), interpolation=cv2.INTER_AREA)
    small = sharpness.resample_to_width(wide, 320)
    assert small.shape == (240, 320, 3) and small.dtype == np.uint8
    assert sharpness.resample_to_width(small, 640) is small  # never upsampled
    assert normalized_sharpness(small) == pytest.approx(
        normalized_sharpness(wide, work_px=320), rel=1e-6
    )
