"""Partially coherent transfer functions of a brightfield microscope.

The optics profiles (objective, camera coupling, depth of field) are defined in
:mod:`deepaf_driver.profiles`, which needs no simulator; they are re-exported here.

Image formation (per colour channel c, tissue layer l; see shared notes):

* thin-layer transmittance ``exp(-mu_cl + i phi_cl)``, ``mu = ln10 * OD`` (Beer-Lambert),
  ``phi = 2 pi / lambda_c * delta_n * layer thickness * density``;
* Koehler illumination with a disc source of radius ``sigma * NA``; the weak-object
  transfer function ``C(f) = <P(s + f) P*(s)>_source`` gives the absorption transfer
  ``Re C`` (even in defocus) and the phase transfer ``-Im C`` (odd in defocus);
* pupil ``P(rho) = exp(i 2 pi [u / lambda * sqrt(n^2 - (NA rho)^2) + W040 Z40(rho)])``
  with defocus ``u = z + delta_c - z_layer`` (longitudinal chromatic aberration
  ``delta_c``) and primary spherical aberration ``W040`` (waves; objective residual plus
  a Gibson-Lanni coverslip-error term);
* image ``I_c = exp(-sum_l mu_cl (x) hA_cl) * (1 + 2 sum_l phi_cl (x) hP_cl)``.

Transfer functions are radially symmetric and tabulated as 1-D radial profiles, cached
per (profile, wavelength, defocus, aberration).

Best focus is defined once, here: :func:`best_focus_offset` is the defocus (relative to
the section's mid-plane) that maximises the *expected* Brenner sharpness (green channel,
noise-free, 2-pixel horizontal difference) of a reference object with a power-law
spectrum spread over the section's layers. It is a property of the optics and the
protocol only, so it is exact and cheap for any (x, y).
"""

from __future__ import annotations

import functools
import math

import numpy as np

# the profiles are defined simulator-free in deepaf_driver.profiles; re-exported here
from ..profiles import OPTICS_PROFILES, OpticsProfile, get_profile  # noqa: F401
from .protocols import Protocol

#: Centre wavelengths (m) of the camera's R, G, B channels.
WAVELENGTHS_M = (610e-9, 540e-9, 465e-9)
#: Number of depth layers a section is split into.
N_LAYERS = 3
_N_RADIAL = 384


def layer_heights_m(thickness_m: float) -> np.ndarray:
    """Heights of the depth layers relative to the section's mid-plane (metres)."""
    return (np.arange(N_LAYERS) - (N_LAYERS - 1) / 2) * thickness_m / N_LAYERS


def sa_waves(profile: OpticsProfile, protocol: Protocol) -> float:
    """Total primary spherical aberration W040 (waves) for this profile and protocol."""
    return profile.residual_sa_waves + profile.sa_waves_per_m_coverslip * protocol.coverslip_error_m


@functools.lru_cache(maxsize=64)
def _source_points(sigma: float, n_r: int = 8, n_t: int = 10) -> tuple[np.ndarray, np.ndarray]:
    # equal-area polar grid over the half disc; the other half mirrors it (radial pupil)
    r = sigma * np.sqrt((np.arange(n_r) + 0.5) / n_r)
    t = np.pi * (np.arange(n_t) + 0.5) / n_t
    return (r[:, None] * np.cos(t)[None, :]).ravel(), (r[:, None] * np.sin(t)[None, :]).ravel()


@functools.lru_cache(maxsize=64)
def _pupil_geometry(na: float, sigma: float, n_imm: float, wavelength: float):
    """Defocus phase per metre (A), aberration shape (2 pi Z40) and support at the shifted
    pupil points s + f (rows 0..N-1) and at the source points s themselves (last row)."""
    f = np.linspace(0.0, 1.0 + sigma, _N_RADIAL)
    sx, sy = _source_points(sigma)
    rx = np.concatenate([sx[None, :] + f[:, None], sx[None, :]], axis=0)
    ry = np.broadcast_to(sy[None, :], rx.shape)
    r2 = rx**2 + ry**2
    inside = (r2 <= 1.0).astype(np.float32)
    r2c = np.minimum(r2, 1.0)
    a = 2 * np.pi / wavelength * (np.sqrt(np.maximum(n_imm**2 - na**2 * r2c, 0)) - n_imm)
    z40 = 2 * np.pi * (6 * r2c**2 - 6 * r2c + 1)
    return a.astype(np.float32), z40.astype(np.float32), inside


def radial_transfer_batch(
    na: float, sigma: float, n_imm: float, wavelength: float, defocus_m: np.ndarray, w040: float
) -> tuple[np.ndarray, np.ndarray]:
    """Radial tables (hA, hP), shape (len(defocus_m), N), over f = |k| lambda / NA in
    [0, 1 + sigma].

    The last sample is zero so indices past the cut-off read zero.
    """
    a, z40, inside = _pupil_geometry(na, sigma, n_imm, wavelength)
    u = np.asarray(defocus_m, np.float32).reshape(-1, 1, 1)
    phase = u * a[None] + np.float32(w040) * z40[None]
    p = (np.cos(phase) + 1j * np.sin(phase)).astype(np.complex64) * inside[None]
    c = (p[:, :-1, :] * np.conj(p[:, -1:, :])).mean(axis=2) / np.mean(inside[-1])
    ha = c.real.astype(np.float32)
    hp = (-c.imag).astype(np.float32)
    ha[:, -1] = 0.0
    hp[:, -1] = 0.0
    return ha, hp


@functools.lru_cache(maxsize=4096)
def radial_transfer(
    na: float, sigma: float, n_imm: float, wavelength: float, defocus_m: float, w040: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cached single-defocus version of :func:`radial_transfer_batch`."""
    ha, hp = radial_transfer_batch(na, sigma, n_imm, wavelength, np.array([defocus_m]), w040)
    return ha[0], hp[0]


def quantize_defocus(u: float) -> float:
    """Round a defocus to 1 nm so transfer-function caches hit."""
    return round(float(u) * 1e9) / 1e9


def channel_layer_defocus(profile: OpticsProfile, protocol: Protocol, dz_m: float) -> np.ndarray:
    """Defocus u[c, l] (metres) of channel c on layer l when the stage is dz from mid-plane."""
    d = np.asarray(profile.chromatic_offsets_m)[:, None]
    h = layer_heights_m(protocol.thickness_m)[None, :]
    return dz_m + d - h


#: Resolution of the lookup tables used on 2-D spectra (linear resampling of the radial
#: profiles, so spectra of different sizes sample the same continuous function).
LOOKUP_N = 8192


def transfer_tables(profile: OpticsProfile, protocol: Protocol, dz_m: float):
    """(hA, hP) lookup tables, shape (3, N_LAYERS, LOOKUP_N), for stage defocus dz from
    the section's mid-plane; index with :func:`radial_index`."""
    u = channel_layer_defocus(profile, protocol, dz_m)
    w040 = sa_waves(profile, protocol)
    ha = np.empty((3, N_LAYERS, LOOKUP_N), np.float32)
    hp = np.empty_like(ha)
    coarse = np.linspace(0.0, 1.0, _N_RADIAL)
    fine = np.linspace(0.0, 1.0, LOOKUP_N)
    for c in range(3):
        for lyr in range(N_LAYERS):
            a, p = radial_transfer(
                profile.na,
                profile.condenser_sigma,
                profile.immersion_n,
                WAVELENGTHS_M[c],
                quantize_defocus(u[c, lyr]),
                round(w040, 6),
            )
            ha[c, lyr] = np.interp(fine, coarse, a)
            hp[c, lyr] = np.interp(fine, coarse, p)
    return ha, hp


def radial_index(
    shape: tuple[int, int], pixel_m: float, wavelength: float, na: float, sigma: float
) -> np.ndarray:
    """Index into the lookup tables for every bin of an rfft2 spectrum of ``shape``."""
    return _radial_index(tuple(shape), float(pixel_m), float(wavelength), float(na), float(sigma))


@functools.lru_cache(maxsize=32)
def _radial_index(shape, pixel_m, wavelength, na, sigma):
    ny, nx = shape
    ky = np.fft.fftfreq(ny, pixel_m)
    kx = np.fft.rfftfreq(nx, pixel_m)
    fn = np.hypot(ky[:, None], kx[None, :]) * (wavelength / na)
    idx = np.rint(fn / (1.0 + sigma) * (LOOKUP_N - 1))
    return np.minimum(idx, LOOKUP_N - 1).astype(np.int32)


def blur_radius_m(profile: OpticsProfile, max_defocus_m: float) -> float:
    """Radius beyond which the defocused point-spread function is negligible."""
    tan_theta = profile.na / math.sqrt(max(profile.immersion_n**2 - profile.na**2, 1e-6))
    return abs(max_defocus_m) * tan_theta * 1.15 + 4 * 550e-9 / profile.na


@functools.lru_cache(maxsize=512)
def _best_focus_offset(
    profile: OpticsProfile, thickness_m: float, delta_n: float, w040: float, od_scale: float
) -> float:
    pix = profile.pixel_size_m
    lam = WAVELENGTHS_M[1]
    f = np.linspace(0.0, 1.0 + profile.condenser_sigma, _N_RADIAL)
    k = f * profile.na / lam  # cycles per metre
    from scipy.special import j0

    # Brenner: squared difference over 2 pixels in x, averaged over orientations
    brenner = 2.0 * (1.0 - j0(4 * np.pi * k * pix))
    nyq = 0.5 / pix
    band = np.clip((nyq - k) / (0.1 * nyq), 0, 1)  # frequencies the camera can sample
    spectrum = 1.0 / (k + 0.05 * profile.na / lam) ** 1.5  # reference object spectrum
    weight = brenner * band * spectrum * k
    h = layer_heights_m(thickness_m)
    phase_w = (2 * np.pi / lam * delta_n * thickness_m / N_LAYERS * 2.0) / max(od_scale, 1e-6)
    dof = profile.depth_of_field_m

    def scores(dz: np.ndarray) -> np.ndarray:
        u = (dz[:, None] + profile.chromatic_offsets_m[1] - h[None, :]).ravel()
        ha, hp = radial_transfer_batch(
            profile.na, profile.condenser_sigma, profile.immersion_n, lam, u, w040
        )
        s = (ha.astype(float) ** 2 + (phase_w * hp.astype(float)) ** 2) @ weight
        return s.reshape(len(dz), len(h)).sum(axis=1)

    grid = np.linspace(-1.5 * dof, 1.5 * dof, 31)
    i = int(np.argmax(scores(grid)))
    step = grid[1] - grid[0]
    fine = grid[i] + np.linspace(-step, step, 21)
    return quantize_defocus(float(fine[int(np.argmax(scores(fine)))]))


def best_focus_offset(profile: OpticsProfile, protocol: Protocol) -> float:
    """Best-focus stage z minus the section's mid-plane z (metres); see module docstring."""
    od_scale = math.log(10) * (
        protocol.h_strength * protocol.h_vector[1] + protocol.e_strength * protocol.e_vector[1]
    )
    return _best_focus_offset(
        profile,
        round(protocol.thickness_m, 9),
        round(protocol.delta_n, 6),
        round(sa_waves(profile, protocol), 6),
        round(od_scale, 4),
    )
