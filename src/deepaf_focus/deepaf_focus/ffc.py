"""Fast Fourier Convolution (FFC) layers.

References:
    Chi, Jiang, Mu. "Fast Fourier Convolution", NeurIPS 2020.
    Farshad, Yeganeh, Gehlbach, Navab. "Y-Net: A Spatiospectral Dual-Encoder Network for
    Medical Image Segmentation", MICCAI 2022 (the FFC encoder configuration used here).

An FFC splits its channels into a local part (ordinary convolutions) and a global part whose
global-to-global path works in the Fourier domain, so a 1x1 layer already has an image-wide
receptive field. Defocus is a change of the image's spectrum, which is why DeepAf uses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FFC", "FFCBlock", "FourierUnit", "SpectralTransform"]


class FourierUnit(nn.Module):
    """Real 2-D FFT, 1x1 conv + BN + ReLU on stacked (real, imag) channels, inverse FFT.

    Args:
        in_channels: Input channels C.
        out_channels: Output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels * 2, out_channels * 2, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels * 2)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # FFT in float32 even under autocast: half precision FFT needs power-of-two sizes.
        ff = torch.fft.rfftn(x.float(), dim=(-2, -1), norm="ortho")
        y = torch.stack((ff.real, ff.imag), dim=2).reshape(n, 2 * c, h, ff.shape[-1])
        y = self.act(self.bn(self.conv(y.to(x.dtype))))
        y = y.float().reshape(n, -1, 2, h, ff.shape[-1])
        out = torch.complex(y[:, :, 0], y[:, :, 1])
        return torch.fft.irfftn(out, s=(h, w), dim=(-2, -1), norm="ortho").to(x.dtype)


class SpectralTransform(nn.Module):
    """Global-to-global path of an FFC: reduce, Fourier unit (+ local Fourier unit), expand.

    Args:
        in_channels: Input (global) channels.
        out_channels: Output (global) channels.
        enable_lfu: Add the local Fourier unit (FFT over the four quadrants of a quarter of
            the channels), as in the FFC paper and Y-Net.
    """

    def __init__(self, in_channels: int, out_channels: int, enable_lfu: bool = True) -> None:
        super().__init__()
        hidden = out_channels // 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.fu = FourierUnit(hidden, hidden)
        self.lfu = FourierUnit(hidden, hidden) if enable_lfu else None
        self.conv2 = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)

    def _local_fourier(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        # Odd sizes: pad to even so the four quadrants tile the map, crop back afterwards.
        ph, pw = h % 2, w % 2
        xe = (
            F.pad(x[:, : max(c // 4, 1)], (0, pw, 0, ph), mode="replicate")
            if ph or pw
            else (x[:, : max(c // 4, 1)])
        )
        hh, hw = xe.shape[-2] // 2, xe.shape[-1] // 2
        xs = torch.cat(torch.split(xe, hh, dim=-2), dim=1)
        xs = torch.cat(torch.split(xs, hw, dim=-1), dim=1)
        xs = xs[:, :c]
        if xs.shape[1] < c:  # fewer than four channels in total: repeat to fill
            xs = xs.repeat(1, -(-c // xs.shape[1]), 1, 1)[:, :c]
        xs = self.lfu(xs).repeat(1, 1, 2, 2)
        return xs[..., :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        out = x + self.fu(x)
        if self.lfu is not None:
            out = out + self._local_fourier(x)
        return self.conv2(out)


class FFC(nn.Module):
    """Fast Fourier Convolution on a (local, global) pair of feature maps.

    Args:
        in_channels: Total input channels (local + global).
        out_channels: Total output channels.
        kernel_size: Kernel of the local convolutions (DeepAf / Y-Net use 1).
        ratio_gin: Fraction of input channels that are global.
        ratio_gout: Fraction of output channels that are global.
        enable_lfu: Use the local Fourier unit in the spectral transform.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        ratio_gin: float = 0.5,
        ratio_gout: float = 0.5,
        enable_lfu: bool = True,
    ) -> None:
        super().__init__()
        self.in_cg = int(in_channels * ratio_gin)
        self.in_cl = in_channels - self.in_cg
        self.out_cg = int(out_channels * ratio_gout)
        self.out_cl = out_channels - self.out_cg
        pad = kernel_size // 2

        def conv(cin: int, cout: int) -> nn.Module | None:
            if cin == 0 or cout == 0:
                return None
            return nn.Conv2d(cin, cout, kernel_size, padding=pad, bias=False)

        self.convl2l = conv(self.in_cl, self.out_cl)
        self.convl2g = conv(self.in_cl, self.out_cg)
        self.convg2l = conv(self.in_cg, self.out_cl)
        self.convg2g = (
            SpectralTransform(self.in_cg, self.out_cg, enable_lfu)
            if self.in_cg and self.out_cg
            else None
        )

    def forward(
        self, x_l: torch.Tensor, x_g: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out_l = out_g = None
        if self.out_cl:
            out_l = self.convl2l(x_l) if self.convl2l is not None else 0
            if self.convg2l is not None and x_g is not None:
                out_l = out_l + self.convg2l(x_g)
        if self.out_cg:
            out_g = self.convl2g(x_l) if self.convl2g is not None else 0
            if self.convg2g is not None and x_g is not None:
                out_g = out_g + self.convg2g(x_g)
        return out_l, out_g


class FFCBlock(nn.Module):
    """FFC followed by separate BatchNorm (+ optional activation) on local and global maps.

    Args:
        in_channels: Total input channels.
        out_channels: Total output channels.
        ratio_gin: Global fraction of the input.
        ratio_gout: Global fraction of the output.
        act: Apply ReLU after the normalisation (Y-Net's encoder uses FFC + BN only).
        enable_lfu: Use the local Fourier unit.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ratio_gin: float = 0.5,
        ratio_gout: float = 0.5,
        act: bool = False,
        enable_lfu: bool = True,
    ) -> None:
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, 1, ratio_gin, ratio_gout, enable_lfu)
        self.bn_l = nn.BatchNorm2d(self.ffc.out_cl) if self.ffc.out_cl else None
        self.bn_g = nn.BatchNorm2d(self.ffc.out_cg) if self.ffc.out_cg else None
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(
        self, x_l: torch.Tensor, x_g: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        y_l, y_g = self.ffc(x_l, x_g)
        if self.bn_l is not None:
            y_l = self.act(self.bn_l(y_l))
        if self.bn_g is not None:
            y_g = self.act(self.bn_g(y_g))
        return y_l, y_g
