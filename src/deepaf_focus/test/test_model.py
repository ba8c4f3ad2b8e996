"""Model smoke tests: parameter counts, shapes, no NaN, gradients, tiny inputs, config."""

import pytest
import torch
from deepaf_focus.model import (
    VARIANTS,
    DeepAf,
    DeepAfConfig,
    build_model,
    count_parameters,
    deepaf_spatial,
    deepaf_spatio_spectral,
    deepaf_spectral,
)


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (deepaf_spatio_spectral, 4_172_321),
        (deepaf_spatial, 4_707_265),
        (deepaf_spectral, 3_637_377),
    ],
)
def test_paper_parameter_counts(factory, expected):
    assert count_parameters(factory()) == expected


def test_component_counts():
    m = deepaf_spatio_spectral()
    assert count_parameters(m.encoder_a) == 582_880
    assert count_parameters(m.encoder_b) == 47_936
    assert count_parameters(m.bottleneck) == 3_540_992
    assert count_parameters(m.head) == 513


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_shapes_no_nan_and_gradients(variant):
    torch.manual_seed(0)
    m = build_model(variant=variant, init_features=4, patch_size=32)
    x = torch.rand(3, 3, 32, 32)
    feats = m.forward_features(x)
    assert feats.shape == (3, 64, 2, 2)
    assert m.forward_head(feats, pre_logits=True).shape == (3, 64)
    y = m(x)
    assert y.shape == (3,) and torch.isfinite(y).all()
    y.pow(2).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (16, 16), (33, 20)])
@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_and_odd_inputs(variant, size):
    m = build_model(variant=variant, init_features=4, patch_size=32).eval()
    with torch.no_grad():
        y = m(torch.rand(2, 3, *size))
    assert y.shape == (2,) and torch.isfinite(y).all()


def test_paper_config_forward_224():
    m = deepaf_spatio_spectral().eval()
    with torch.no_grad():
        y = m(torch.rand(1, 3, 224, 224))
    assert y.shape == (1,) and torch.isfinite(y).all()
    assert m.forward_features(torch.rand(1, 3, 224, 224)).shape == (1, 512, 14, 14)


def test_normalisation_makes_brightness_irrelevant():
    m = build_model(init_features=4, patch_size=32, normalization="image").eval()
    x = torch.rand(2, 3, 32, 32) * 0.5
    with torch.no_grad():
        assert torch.allclose(m(x), m(x * 1.5 + 0.1), atol=1e-3)


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="variant"):
        DeepAfConfig(variant="resnet")
    with pytest.raises(ValueError, match="unknown model config keys"):
        DeepAfConfig.from_dict({"width": 3})
    with pytest.raises(ValueError, match="init_features"):
        DeepAfConfig(init_features=3)
    with pytest.raises(ValueError, match="expected input"):
        DeepAf(DeepAfConfig(init_features=4))(torch.rand(1, 1, 32, 32))


def test_config_round_trip():
    cfg = DeepAfConfig(variant="spectral", init_features=6, patch_size=64, mean=(0.1, 0.2, 0.3))
    assert DeepAfConfig.from_dict(cfg.to_dict()) == cfg
