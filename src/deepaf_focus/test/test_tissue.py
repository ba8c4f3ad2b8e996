"""Tissue detection: glass, blank and black frames versus stained tissue."""

import numpy as np
import pytest
from deepaf_focus.synthetic import render, texture
from deepaf_focus.tissue import (
    PAPER_VALUE_THRESHOLD,
    check_rgb,
    field_has_tissue,
    field_tissue_score,
    mean_hsv_value,
    paper_field_has_tissue,
    select_tissue_patches,
    tissue_mask,
)


def tissue_image(size=128, seed=0, dz=0.0):
    return render(texture(np.random.default_rng(seed), size), dz)


def test_tissue_field_detected_even_defocused():
    for dz in (0.0, 8.0, -8.0):
        assert field_has_tissue(tissue_image(dz=dz))
        assert field_tissue_score(tissue_image(dz=dz)) > 0.5


@pytest.mark.parametrize("value", [0, 3, 255, 240])
def test_blank_frames_have_no_tissue(value):
    img = np.full((100, 120, 3), value, np.uint8)
    assert field_tissue_score(img) == 0.0
    assert not field_has_tissue(img)


def test_tinted_noisy_glass_is_not_tissue():
    rng = np.random.default_rng(0)
    glass = np.clip(np.array([245, 238, 225]) + rng.normal(0, 2, (90, 160, 3)), 0, 255)
    assert not field_has_tissue(glass.astype(np.uint8))


def test_select_patches_prefers_tissue_and_skips_glass():
    img = np.full((128, 256, 3), 246, np.uint8)
    img[:, 128:] = tissue_image(128)
    patches, boxes = select_tissue_patches(img, 64, max_patches=10)
    assert len(patches) == 4 and patches.shape[1:] == (64, 64, 3)
    assert (boxes[:, 0] >= 128).all()
    assert tissue_mask(img)[:, :128].mean() < 0.01
    patches, boxes = select_tissue_patches(img, 64, max_patches=2)
    assert len(patches) == 2


def test_select_patches_empty_and_errors():
    patches, boxes = select_tissue_patches(np.full((64, 64, 3), 250, np.uint8), 32)
    assert patches.shape == (0, 32, 32, 3) and boxes.shape == (0, 4)
    with pytest.raises(ValueError, match="smaller than one"):
        select_tissue_patches(tissue_image(32), 64)
    with pytest.raises(ValueError, match="uint8"):
        check_rgb(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="H, W, 3"):
        check_rgb(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="numpy"):
        check_rgb([[1, 2, 3]])


def test_paper_mean_hsv_value_test():
    tissue = tissue_image(128)
    glass = np.full((96, 128, 3), 247, np.uint8)
    glass[::7] = 240  # a little structure, still glass
    assert mean_hsv_value(tissue) < PAPER_VALUE_THRESHOLD < mean_hsv_value(glass)
    assert paper_field_has_tissue(tissue)
    assert not paper_field_has_tissue(glass)
    assert not paper_field_has_tissue(np.zeros((64, 64, 3), np.uint8))  # black frame
    assert not paper_field_has_tissue(np.full((64, 64, 3), 128, np.uint8))  # blank grey
