"""DeepAf: single-shot autofocus with a spatio-spectral dual encoder.

References:
    Yeganeh, Farshad, et al. "DeepAf: One-Shot Spatiospectral Auto-Focus Model for Digital
    Pathology" (the network, training recipe and metrics reproduced here).
    Farshad, Yeganeh, Gehlbach, Navab. "Y-Net: A Spatiospectral Dual-Encoder Network for
    Medical Image Segmentation", MICCAI 2022 (the dual encoder).
    Chi, Jiang, Mu. "Fast Fourier Convolution", NeurIPS 2020 (the spectral encoder's layers).

One RGB tile goes through a spatial U-Net-style encoder (four double-conv blocks) and a
spectral encoder (four FFC layers); the two 128-channel maps are concatenated, a double-conv
bottleneck makes 512 channels, and average pooling plus a linear layer regress the signed
distance to best focus (micrometres; ``best_focus_z - current_z``).

With the paper configuration (``init_features=32``, 224x224 tiles) the parameter counts are
4,172,321 (spatio-spectral), 4,707,265 (spatial-only: two spatial encoders) and 3,637,377
(spectral-only: two FFC encoders). ``init_features`` and ``patch_size`` scale the network
down for CPUs.

Example:
    >>> model = deepaf_spatio_spectral()
    >>> y_um = model(torch.rand(2, 3, 224, 224))  # float RGB in [0, 1], NCHW
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .ffc import FFCBlock

__all__ = [
    "VARIANTS",
    "DeepAf",
    "DeepAfConfig",
    "build_model",
    "count_parameters",
    "deepaf_spatial",
    "deepaf_spatio_spectral",
    "deepaf_spectral",
]

VARIANTS = ("spatio_spectral", "spatial", "spectral")
NORMALIZATIONS = ("image", "dataset", "none")


@dataclass
class DeepAfConfig:
    """Everything needed to rebuild a DeepAf network and feed it correctly.

    Args:
        variant: ``spatio_spectral`` (paper), ``spatial`` (two spatial encoders) or
            ``spectral`` (two FFC encoders).
        init_features: Width of the first block; the paper uses 32.
        in_chans: Input channels (RGB).
        patch_size: Tile edge in pixels the network is trained and served at.
        normalization: ``image`` standardises each channel of each tile (per-image
            normalisation, robust to stain colour and lamp brightness), ``dataset`` uses
            ``mean``/``std``, ``none`` passes [0, 1] input through.
        mean: Channel means for ``dataset`` normalisation.
        std: Channel standard deviations for ``dataset`` normalisation.
        enable_lfu: Local Fourier unit in the FFC layers (paper/Y-Net: on).
        spectral_act: ReLU after each FFC layer's BatchNorm (Y-Net: off).
        output_scale_um: The head's output times this is the offset in micrometres.
        profile: Microscope profile the weights are for (``20x``, ``4x``), informational.
        pixel_size_m: Object-side pixel size the weights were trained at, informational.
    """

    variant: str = "spatio_spectral"
    init_features: int = 32
    in_chans: int = 3
    patch_size: int = 224
    normalization: str = "image"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    enable_lfu: bool = True
    spectral_act: bool = False
    output_scale_um: float = 1.0
    profile: str = "20x"
    pixel_size_m: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}"
            )
        if self.init_features < 2 or self.init_features % 2:
            raise ValueError(f"init_features must be an even number >= 2, got {self.init_features}")
        if self.patch_size < 16:
            raise ValueError(f"patch_size must be >= 16 (four 2x2 poolings), got {self.patch_size}")
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)

    def to_dict(self) -> dict[str, Any]:
        """Plain-python dict (safe to store in a ``weights_only`` checkpoint or YAML)."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeepAfConfig:
        """Build from a dict, rejecting unknown keys with a clear message."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SpatialEncoder(nn.Module):
    """U-Net-style encoder: four double-conv blocks, each followed by 2x2 max-pooling.

    Args:
        in_chans: Input channels.
        features: Width of the first block; channels go f, 2f, 4f, 4f.
    """

    def __init__(self, in_chans: int, features: int) -> None:
        super().__init__()
        chans = [in_chans, features, 2 * features, 4 * features, 4 * features]
        self.blocks = nn.ModuleList(_double_conv(a, b) for a, b in itertools.pairwise(chans))
        self.out_channels = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = F.max_pool2d(block(x), 2, ceil_mode=True)
        return x


class SpectralEncoder(nn.Module):
    """Four FFC + BN layers (kernel 1); local and global maps max-pooled separately.

    Args:
        in_chans: Input channels (all local at the input).
        features: Width of the first layer; channels go f, 2f, 4f, 4f.
        enable_lfu: Local Fourier unit in the spectral transforms.
        act: ReLU after each layer's BatchNorm.
    """

    def __init__(self, in_chans: int, features: int, enable_lfu: bool, act: bool) -> None:
        super().__init__()
        chans = [in_chans, features, 2 * features, 4 * features, 4 * features]
        self.blocks = nn.ModuleList(
            FFCBlock(a, b, 0.0 if i == 0 else 0.5, 0.5, act=act, enable_lfu=enable_lfu)
            for i, (a, b) in enumerate(itertools.pairwise(chans))
        )
        self.out_channels = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_l, x_g = x, None
        for block in self.blocks:
            x_l, x_g = block(x_l, x_g)
            x_l = F.max_pool2d(x_l, 2, ceil_mode=True)
            x_g = F.max_pool2d(x_g, 2, ceil_mode=True)
        return torch.cat([x_l, x_g], dim=1)


class DeepAf(nn.Module):
    """DeepAf regressor: two encoders, concatenation, bottleneck, average pool, linear head.

    Args:
        cfg: Network configuration; see :class:`DeepAfConfig`.

    Input: float RGB in [0, 1], shape (N, 3, H, W) with H, W >= 1 (trained at
    ``cfg.patch_size``). Output: shape (N,), signed offset to best focus in micrometres.
    """

    def __init__(self, cfg: DeepAfConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or DeepAfConfig()
        f = cfg.init_features

        def spectral() -> SpectralEncoder:
            return SpectralEncoder(cfg.in_chans, f, cfg.enable_lfu, cfg.spectral_act)

        if cfg.variant == "spatio_spectral":
            self.encoder_a, self.encoder_b = SpatialEncoder(cfg.in_chans, f), spectral()
        elif cfg.variant == "spatial":
            self.encoder_a = SpatialEncoder(cfg.in_chans, f)
            self.encoder_b = SpatialEncoder(cfg.in_chans, f)
        else:
            self.encoder_a, self.encoder_b = spectral(), spectral()
        merged = self.encoder_a.out_channels + self.encoder_b.out_channels
        self.num_features = 16 * f
        self.bottleneck = _double_conv(merged, self.num_features)
        self.head = nn.Linear(self.num_features, 1)
        self.register_buffer("_mean", torch.tensor(cfg.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(cfg.std).view(1, -1, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the configured input normalisation to float [0, 1] images."""
        if self.cfg.normalization == "image":
            mean = x.mean(dim=(-2, -1), keepdim=True)
            std = x.std(dim=(-2, -1), keepdim=True) if x.shape[-1] * x.shape[-2] > 1 else 1.0
            return (x - mean) / (std + 1e-3)
        if self.cfg.normalization == "dataset":
            return (x - self._mean) / self._std
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input -> bottleneck feature map (N, 16*init_features, H/16, W/16)."""
        x = self.normalize(x)
        x = torch.cat([self.encoder_a(x), self.encoder_b(x)], dim=1)
        return self.bottleneck(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> pooled features (``pre_logits``) or offset in micrometres (N,)."""
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        if pre_logits:
            return x
        return self.head(x).squeeze(1) * self.cfg.output_scale_um

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(
                f"expected input of shape (N, {self.cfg.in_chans}, H, W), got {tuple(x.shape)}"
            )
        return self.forward_head(self.forward_features(x))


def build_model(cfg: DeepAfConfig | dict[str, Any] | None = None, **overrides: Any) -> DeepAf:
    """Build a DeepAf network from a config (dataclass or dict) plus keyword overrides."""
    if isinstance(cfg, dict):
        cfg = DeepAfConfig.from_dict({**cfg, **overrides})
    elif cfg is None:
        cfg = DeepAfConfig(**overrides)
    elif overrides:
        cfg = DeepAfConfig.from_dict({**cfg.to_dict(), **overrides})
    return DeepAf(cfg)


def deepaf_spatio_spectral(**kwargs: Any) -> DeepAf:
    """DeepAf as in the paper: spatial + FFC encoders (4,172,321 parameters at width 32)."""
    return build_model(None, **{**kwargs, "variant": "spatio_spectral"})


def deepaf_spatial(**kwargs: Any) -> DeepAf:
    """Spatial-only ablation: two spatial encoders (4,707,265 parameters at width 32)."""
    return build_model(None, **{**kwargs, "variant": "spatial"})


def deepaf_spectral(**kwargs: Any) -> DeepAf:
    """Spectral-only ablation: two FFC encoders (3,637,377 parameters at width 32)."""
    return build_model(None, **{**kwargs, "variant": "spectral"})


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
