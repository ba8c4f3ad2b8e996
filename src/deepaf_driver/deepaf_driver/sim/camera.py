"""Camera model: lamp, white balance, shot and read noise, binning, gamma, 8-bit.

Input is the optical intensity per channel relative to the lamp through clear glass
(1.0 = no absorption); output is an 8-bit sRGB-like ``(h, w, 3)`` uint8 image.
A 4056x3040 sensor (Raspberry Pi HQ class, 1.55 um pixels) gives the full capture; the
1280x720 preview is the full field of view cropped to 16:9 and binned, so each preview
pixel collects the light of about ``binning**2`` sensor pixels (less relative noise).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .protocols import Protocol


@dataclass(frozen=True)
class CameraModel:
    """Sensor and processing parameters.

    Attributes:
        sensor_px: (width, height) of the full-resolution capture.
        preview_px: (width, height) of the preview stream.
        full_well_e: electrons at saturation.
        read_noise_e: read noise (electrons rms) per sensor pixel.
        glass_level: fraction of full well reached by clear glass in the brightest channel.
        white_point: processed value that clear glass maps to before gamma.
        gamma: display gamma.
        capture_readout_s, preview_frame_s: simulated frame readout / frame period.
    """

    sensor_px: tuple[int, int] = (4056, 3040)
    preview_px: tuple[int, int] = (1280, 720)
    full_well_e: float = 10500.0
    read_noise_e: float = 3.0
    glass_level: float = 0.8
    white_point: float = 0.93
    gamma: float = 2.2
    capture_readout_s: float = 0.25
    preview_frame_s: float = 1 / 30

    @property
    def preview_binning(self) -> float:
        """Sensor pixels per preview pixel along one axis."""
        return self.sensor_px[0] / self.preview_px[0]

    def expose(
        self,
        intensity: np.ndarray,
        protocol: Protocol,
        binning: float = 1.0,
        noise: bool = True,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Turn optical intensity (3, h, w) into an 8-bit RGB image (h, w, 3).

        Args:
            intensity: float32 transmitted intensity per channel (1.0 = glass).
            protocol: lamp tint and residual white-balance error.
            binning: sensor pixels per output pixel along one axis (noise averaging).
            noise: add shot and read noise.
            rng: noise source (default: a fresh unseeded generator).
        """
        lamp = np.asarray(protocol.lamp_rgb, np.float32)
        lamp = lamp / lamp.max()
        # auto white balance on glass removes the lamp tint up to the residual error
        gain = np.asarray(protocol.wb_error_rgb, np.float32) / lamp
        scale = (lamp * np.float32(self.glass_level)).reshape(3, 1, 1)
        e_per_px = self.full_well_e * binning * binning  # electrons at full scale
        sig = np.asarray(intensity, np.float32) * scale  # fraction of full scale
        if noise:
            if rng is None:
                rng = np.random.default_rng()
            var = np.maximum(sig, 0) * np.float32(1 / e_per_px)
            var += np.float32((self.read_noise_e * binning / e_per_px) ** 2)
            sig = sig + np.sqrt(var) * _gaussian(rng, sig.shape)
        g = (gain * np.float32(self.white_point / self.glass_level)).reshape(3, 1, 1)
        v = np.clip(sig * g, 0, 1)
        lut_in = np.rint(v * np.float32(4095)).astype(np.uint16)
        out = _gamma_lut(self.gamma)[lut_in]
        return np.ascontiguousarray(out.transpose(1, 2, 0))


_BANK_N = 1 << 22


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    return np.random.default_rng(0x6A55).standard_normal(_BANK_N + 4096, dtype=np.float32)


def _gaussian(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal noise; large frames reuse a fixed bank at random offsets and strides
    per row (statistically white, much cheaper than fresh samples)."""
    n = int(np.prod(shape))
    if n <= 1 << 20:
        return rng.standard_normal(shape, dtype=np.float32)
    bank = _noise_bank()
    *lead, w = shape
    rows = int(np.prod(lead))
    out = np.empty((rows, w), np.float32)
    step = 4096
    for r0 in range(0, rows, step // 8):
        r1 = min(rows, r0 + step // 8)
        off = int(rng.integers(0, _BANK_N - (r1 - r0) * w))
        block = bank[off : off + (r1 - r0) * w].reshape(r1 - r0, w)
        out[r0:r1] = block if rng.integers(2) else -block
    return out.reshape(shape)


@functools.lru_cache(maxsize=8)
def _gamma_lut(gamma: float) -> np.ndarray:
    """12-bit linear -> 8-bit gamma-encoded lookup table."""
    x = np.arange(4096, dtype=np.float64) / 4095
    return np.rint(255 * x ** (1 / gamma)).astype(np.uint8)


#: Full-resolution width over preview width of the Raspberry Pi HQ camera set-up (4056 / 1280):
#: the focus models are trained at the preview sampling this ratio gives.
PREVIEW_BINNING = 4056 / 1280


def preview_size_for(capture_px: tuple[int, int]) -> tuple[int, int]:
    """16:9 preview size with the standard binning for a (smaller) capture size, e.g. for fast
    tests and demos that keep the pixel size the focus model was trained at."""
    width = round(capture_px[0] / PREVIEW_BINNING)
    return width, round(width * 9 / 16)
