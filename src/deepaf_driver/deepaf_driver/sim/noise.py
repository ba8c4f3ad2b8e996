"""Deterministic, resolution-independent procedural noise in slide coordinates.

Every field here is a pure function of (seed, salt, world x, world y): values come from
hashing integer lattice coordinates and are interpolated with separable cubic B-spline
weights in a fixed order, so two frames that share a pixel compute bit-identical values
for it, whatever their size or position. Coordinates are metres; ``xs`` are the x
coordinates of the columns and ``ys`` those of the rows of a regular pixel grid.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x165667B19E3779F9)
_S1 = np.uint64(0xBF58476D1CE4E5B9)
_S2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1


def hash_uniform(seed: int, salt: int, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) float32 values hashed from integer coordinates (broadcasting)."""
    key = np.uint64(((int(seed) * 1_000_003 + int(salt) * 7_919) * 0x2545F4914F6CDD1D) & _MASK)
    with np.errstate(over="ignore"):
        h = (np.asarray(ix).astype(np.int64).astype(np.uint64) * _M1) ^ (
            np.asarray(iy).astype(np.int64).astype(np.uint64) * _M2
        )
        h = (h ^ key) * _M3
        h ^= h >> np.uint64(30)
        h *= _S1
        h ^= h >> np.uint64(27)
        h *= _S2
        h ^= h >> np.uint64(31)
    return ((h >> np.uint64(40)).astype(np.float32)) * np.float32(1.0 / (1 << 24))


def _bspline_weights(u: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Lattice index of the first tap and the four cubic B-spline weights at positions u."""
    i0 = np.floor(u).astype(np.int64)
    t = (u - i0).astype(np.float32)
    t2 = t * t
    t3 = t2 * t
    w = [
        (1 - t) ** 3 / 6,
        (3 * t3 - 6 * t2 + 4) / 6,
        (-3 * t3 + 3 * t2 + 3 * t + 1) / 6,
        t3 / 6,
    ]
    return i0 - 1, w


def _linear_weights(u: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    i0 = np.floor(u).astype(np.int64)
    t = (u - i0).astype(np.float32)
    return i0, [1 - t, t]


def interp_lattice(
    values, xs: np.ndarray, ys: np.ndarray, spacing: float, order: int = 3
) -> np.ndarray:
    """Smoothly interpolate lattice values onto the pixel grid (xs, ys).

    Args:
        values: callable ``values(gx, gy) -> (len(gy), len(gx))`` float32 array giving
            the value at integer lattice indices gx (columns) and gy (rows).
        xs, ys: pixel-centre coordinates (metres) of columns and rows.
        spacing: lattice spacing in metres.
        order: 3 = cubic B-spline (smooth, 4 taps), 1 = linear (2 taps).

    Returns:
        float32 array of shape (len(ys), len(xs)).
    """
    weights = _bspline_weights if order == 3 else _linear_weights
    bx, wx = weights(np.asarray(xs, np.float64) / spacing)
    by, wy = weights(np.asarray(ys, np.float64) / spacing)
    taps = len(wx)
    gx = np.arange(bx.min(), bx.max() + taps)
    gy = np.arange(by.min(), by.max() + taps)
    grid = np.asarray(values(gx, gy), np.float32)
    cx = bx - gx[0]
    cy = by - gy[0]
    tmp = grid[:, cx] * wx[0]
    for k in range(1, taps):
        tmp += grid[:, cx + k] * wx[k]
    out = tmp[cy] * wy[0][:, None]
    for k in range(1, taps):
        out += tmp[cy + k] * wy[k][:, None]
    return out


# std of a B-spline-smoothed uniform lattice, so value_noise is roughly unit variance
_NOISE_STD = np.float32(0.139)


def value_noise(seed: int, salt: int, xs: np.ndarray, ys: np.ndarray, spacing: float) -> np.ndarray:
    """Zero-mean, roughly unit-variance smooth noise with feature size ``spacing`` (metres).

    Features finer than 1.5 pixels are not representable on the grid; they are returned
    as their mean (zero), a band limit that keeps previews free of aliasing.
    """
    pixel = abs(float(xs[1] - xs[0])) if len(xs) > 1 else spacing
    if spacing < 1.5 * pixel:
        return np.zeros((len(ys), len(xs)), np.float32)
    field = interp_lattice(
        lambda gx, gy: hash_uniform(seed, salt, gx[None, :], gy[:, None]), xs, ys, spacing
    )
    field -= np.float32(0.5)
    field /= _NOISE_STD
    return field


def fractal_noise(
    seed: int, salt: int, xs, ys, spacing: float, octaves: int = 3, gain: float = 0.5
) -> np.ndarray:
    """Sum of value-noise octaves (spacing, spacing/2, ...), normalised to about unit std."""
    out = np.zeros((len(ys), len(xs)), np.float32)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        out += np.float32(amp) * value_noise(seed, salt * 16 + o, xs, ys, spacing / 2**o)
        norm += amp * amp
        amp *= gain
    out /= np.float32(np.sqrt(norm))
    return out


def value_noise_at(seed: int, salt: int, x, y, spacing: float) -> np.ndarray:
    """:func:`value_noise` at scattered points (x, y broadcast together), in float64.

    The same B-spline of the same lattice hashes, so it agrees with the grid version to
    float32 rounding (no band limit: callers use it for fields far coarser than a pixel).
    """
    bx, wx = _bspline_weights(np.asarray(x, np.float64) / spacing)
    by, wy = _bspline_weights(np.asarray(y, np.float64) / spacing)
    out = np.zeros(np.broadcast(bx, by).shape, np.float64)
    for i in range(4):
        for j in range(4):
            out += wx[i] * wy[j] * hash_uniform(seed, salt, bx + i, by + j)
    return (out - 0.5) / float(_NOISE_STD)
