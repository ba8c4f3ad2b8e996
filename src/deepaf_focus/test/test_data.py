"""Dataset readers, leak-free splits, patch loading and augmentation."""

import json

import numpy as np
import pytest
import torch
from deepaf_focus.data import (
    AugmentConfig,
    augment_batch,
    load_patches,
    parse_incoherent_name,
    read_dataset,
    read_image,
    split_records,
)


def test_reads_focal_stack_format(focal_dataset):
    recs = read_dataset(focal_dataset)
    assert len(recs) == 7 * 7
    meta = json.loads((focal_dataset / "stack_00000" / "meta.json").read_text())
    r0 = [r for r in recs if r.stack.endswith("stack_00000")]
    for r, img in zip(r0, meta["images"], strict=True):
        assert r.label_um == pytest.approx((meta["best_focus_z_m"] - img["z_m"]) * 1e6)
    assert {r.protocol for r in recs} == {"p1", "p2"}
    assert all(r.split is None for r in recs)
    assert read_image(r0[0].path).shape == (48, 48, 3)


def test_incoherent_layout(tmp_path):
    import cv2

    img = np.full((32, 32, 3), 128, np.uint8)
    for split in ("testRawData_incoherent_sameProtocol", "testRawData_incoherent_diffProtocol"):
        d = tmp_path / split / "Seg1"
        d.mkdir(parents=True)
        for nm in (-1500, 0, 2000):
            cv2.imwrite(str(d / f"Seg1_defocus{nm}.jpg"), img)
    (tmp_path / "readme.txt").write_text("x")
    recs = read_dataset(tmp_path)
    assert len(recs) == 6
    assert sorted({r.split for r in recs}) == ["held-out protocol", "same protocol"]
    assert sorted(r.label_um for r in recs if r.split == "same protocol") == [-1.5, 0.0, 2.0]
    assert len({r.stack for r in recs}) == 2
    assert parse_incoherent_name("Seg3_defocus-250.png") == -250
    assert parse_incoherent_name("img_+1200nm.tif") == 1200
    with pytest.raises(ValueError, match="no defocus"):
        parse_incoherent_name("image.png")


def test_bad_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_dataset(tmp_path / "missing")
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format"):
        read_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{broken")
    with pytest.raises(ValueError, match="cannot read"):
        read_dataset(tmp_path)
    with pytest.raises(ValueError, match="cannot read image"):
        read_image(tmp_path / "nope.png")


@pytest.mark.parametrize("by", ["stack", "slide", "protocol"])
def test_splits_never_leak(focal_dataset, by):
    recs = read_dataset(focal_dataset)
    train, val = split_records(recs, 0.3, by=by, seed=1)
    key = {"stack": "stack", "slide": "slide", "protocol": "protocol"}[by]
    assert train and val and len(train) + len(val) == len(recs)
    assert not {getattr(r, key) for r in train} & {getattr(r, key) for r in val}
    # no stack ever straddles the split, whatever the grouping
    assert not {r.stack for r in train} & {r.stack for r in val}
    assert split_records(recs, 0.3, by=by, seed=1) == (train, val)  # deterministic


def test_load_patches_drops_glass_stacks(focal_dataset):
    recs = read_dataset(focal_dataset)
    x, y, stacks = load_patches(recs, 32)
    assert x.shape == (6 * 7, 32, 32, 3) and x.dtype == np.uint8 and y.shape == (42,)
    assert not any(s.endswith("stack_00006") for s in stacks)  # the glass stack
    x2, y2, _ = load_patches(recs, 32, label_range_um=1.0)
    assert np.abs(y2).max() <= 1.0 and len(x2) == 6 * 3


def test_augment_batch_range_shape_and_determinism():
    x = torch.rand(6, 3, 40, 40)
    cfg = AugmentConfig(
        p_blur=1.0, p_perspective=1.0, p_erase=1.0, p_autocontrast=1.0, p_channel_fade=1.0
    )
    a = augment_batch(x.clone(), cfg, torch.Generator().manual_seed(0), crop=32)
    b = augment_batch(x.clone(), cfg, torch.Generator().manual_seed(0), crop=32)
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and torch.isfinite(a).all()
    off = AugmentConfig(
        flip=False,
        brightness=0,
        contrast=0,
        saturation=0,
        hue=0,
        p_autocontrast=0,
        p_blur=0,
        p_perspective=0,
        p_erase=0,
        noise_std=0,
    )
    assert torch.allclose(augment_batch(x.clone(), off, torch.Generator()), x)
