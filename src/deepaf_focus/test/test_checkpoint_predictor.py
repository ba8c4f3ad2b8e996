"""Checkpoint round trip and bad files; predictor results on good and bad inputs."""

import numpy as np
import pytest
import torch
from deepaf_focus.checkpoint import load_checkpoint, load_model, save_checkpoint
from deepaf_focus.export import export_torchscript
from deepaf_focus.model import build_model
from deepaf_focus.predictor import FocusPredictor
from deepaf_focus.synthetic import render, texture


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = build_model(init_features=4, patch_size=32, profile="20x")
    path = tmp_path_factory.mktemp("ck") / "m.pt"
    save_checkpoint(path, m, metrics={"fe": 1.0}, train_protocols=["p1"])
    return path, m


def test_round_trip(ckpt):
    path, m = ckpt
    loaded, meta = load_model(path)
    x = torch.rand(2, 3, 32, 32)
    m.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x), m(x))
    assert meta["metrics"] == {"fe": 1.0} and meta["preprocessing"]["patch_size"] == 32


def test_corrupt_truncated_foreign_checkpoints(ckpt, tmp_path):
    path, _ = ckpt
    data = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt, truncated"):
        load_checkpoint(tmp_path / "trunc.pt")
    with pytest.raises(ValueError, match="corrupt, truncated"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a DeepAf"):
        load_checkpoint(tmp_path / "other.pt")
    # weights of another architecture under this config
    ck = load_checkpoint(path)
    ck["model_config"]["variant"] = "spatial"
    torch.save(ck, tmp_path / "arch.pt")
    with pytest.raises(ValueError, match="do not match"):
        load_model(tmp_path / "arch.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "deepaf-focus-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(tmp_path / "evil.pt")


def test_predictor_ok_and_no_tissue(ckpt):
    pred = FocusPredictor.from_checkpoint(ckpt[0], max_patches=4)
    img = render(texture(np.random.default_rng(0), 96), 1.0)
    res = pred.predict(img)
    assert res.status == "ok" and res.ok
    assert 1 <= len(res.patch_offsets_m) <= 4 and np.isfinite(res.offset_m)
    assert res.offset_m == pytest.approx(np.median(res.patch_offsets_m))
    assert 0.0 <= res.confidence <= 1.0 and res.tissue_fraction > 0.5
    for value in (0, 255, 248):
        r = pred.predict(np.full((96, 96, 3), value, np.uint8))
        assert r.status == "no_tissue" and r.offset_m == 0.0 and r.confidence == 0.0


def test_predictor_bad_inputs(ckpt):
    pred = FocusPredictor.from_checkpoint(ckpt[0])
    with pytest.raises(ValueError, match="uint8"):
        pred.predict(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="H, W, 3"):
        pred.predict(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="smaller"):
        pred.predict(np.zeros((16, 64, 3), np.uint8))
    with pytest.raises(ValueError):
        FocusPredictor.from_checkpoint(ckpt[0], max_patches=0)


def test_optimized_predictor_matches_eager(ckpt):
    img = render(texture(np.random.default_rng(2), 96), -2.0)
    fast = FocusPredictor.from_checkpoint(ckpt[0], max_patches=4)
    eager = FocusPredictor.from_checkpoint(ckpt[0], max_patches=4, optimize=False)
    assert fast._net is not fast.model  # the traced, frozen network is in use
    a, b = fast.predict(img), eager.predict(img)
    assert np.allclose(a.patch_offsets_m, b.patch_offsets_m, atol=1e-10)


def test_predictor_nan_is_invalid(ckpt):
    pred = FocusPredictor.from_checkpoint(ckpt[0], optimize=False)
    with torch.no_grad():
        pred.model.head.bias.fill_(float("nan"))
    res = pred.predict(render(texture(np.random.default_rng(1), 64), 0.0))
    assert res.status == "invalid" and res.offset_m == 0.0 and "non-finite" in res.message


def test_torchscript_export_parity(ckpt, tmp_path):
    assert export_torchscript(ckpt[0], tmp_path / "m.ts") <= 1e-4
