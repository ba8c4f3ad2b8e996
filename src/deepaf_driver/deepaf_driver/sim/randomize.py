"""Domain randomisation of the virtual microscope: everything a focus model must not rely on.

The sim-to-real practice of robotics: per focal stack, draw the optics, illumination, camera
and stain from wide ranges, so that a model trained on the result cannot key on one
renderer's cues (the simulator's own chromatic offsets, its gamma, its colours). The named
lab presets stay as they are; randomisation is the dataset option ``--randomize``.

Ranges (:class:`Ranges`; relative ranges are factors on the profile's value):

| group | quantity | range |
|---|---|---|
| optics | NA | x0.9 - x1.1 |
| | condenser sigma | 0.3 - 0.9 |
| | chromatic offset of R and B vs G | +-1.6 x the profile's largest, any sign |
| | near-apochromatic (offsets x0.05) | 20 % of stacks |
| | residual spherical aberration W040 | -0.3 - +0.3 waves (either sign) |
| | pixel size | x0.87 - x1.15 (relay magnification) |
| illumination | field non-uniformity / vignetting | 0 - 35 % fall-off to the corner, off-centre |
| | white balance residual | +-6 % per channel |
| camera | gamma | 1.6 - 2.8, plus an S-shaped tone curve in 30 % |
| | auto-exposure (glass level) | 0.45 - 0.95 of full scale |
| | full well / read noise | 4,000 - 20,000 e- / 1 - 8 e- |
| | Bayer RGGB mosaic + bilinear demosaic | 40 % of stacks |
| | JPEG | 50 % of stacks, quality 60 - 95 |
| | monochrome camera (luminance in all channels) | 10 % of stacks |
| stain | H and E optical-density vectors | any direction in the positive octant |
| | almost no red absorption (R <= 0.08) | 30 % of stacks |
| | strengths | H 0.25 - 1.0, E 0.08 - 0.5 |
| tissue | thickness, cellularity, delta n | 2.5 - 6 um, 0.1 - 0.95, 0.005 - 0.035 |
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from .camera import CameraModel
from .optics import OpticsProfile
from .protocols import Protocol


@dataclass(frozen=True)
class Ranges:
    """Documented randomisation ranges (see the module docstring)."""

    na_factor: tuple[float, float] = (0.9, 1.1)
    condenser_sigma: tuple[float, float] = (0.3, 0.9)
    chromatic_factor: float = 1.6
    p_apochromat: float = 0.2
    sa_waves: tuple[float, float] = (-0.3, 0.3)
    pixel_factor: tuple[float, float] = (0.87, 1.15)
    vignetting: tuple[float, float] = (0.0, 0.35)
    wb_error: float = 0.06
    gamma: tuple[float, float] = (1.6, 2.8)
    p_tone_curve: float = 0.3
    glass_level: tuple[float, float] = (0.45, 0.95)
    full_well_e: tuple[float, float] = (4000.0, 20000.0)
    read_noise_e: tuple[float, float] = (1.0, 8.0)
    p_bayer: float = 0.4
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (60, 95)
    p_mono: float = 0.1
    p_no_red: float = 0.3
    h_strength: tuple[float, float] = (0.25, 1.0)
    e_strength: tuple[float, float] = (0.08, 0.5)
    thickness_m: tuple[float, float] = (2.5e-6, 6e-6)
    cellularity: tuple[float, float] = (0.1, 0.95)
    delta_n: tuple[float, float] = (0.005, 0.035)


RANGES = Ranges()


@dataclass(frozen=True)
class CameraEffects:
    """Post-sensor effects applied to one stack's 8-bit frames and to its illumination."""

    vignetting: float = 0.0
    vignette_centre: tuple[float, float] = (0.5, 0.5)
    tone_curve: float = 0.0
    bayer: bool = False
    jpeg_quality: int = 0
    mono: bool = False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["vignette_centre"] = list(self.vignette_centre)
        return d


@dataclass(frozen=True)
class RandomMicroscope:
    """One drawn microscope: optics, protocol (stain + tissue), camera and effects."""

    optics: OpticsProfile
    protocol: Protocol
    camera: CameraModel
    effects: CameraEffects

    def to_dict(self) -> dict:
        cam = dataclasses.asdict(self.camera)
        return {
            "optics": self.optics.to_dict(),
            "camera": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cam.items()},
            "effects": self.effects.to_dict(),
        }


def _stain_vector(rng: np.random.Generator, no_red: bool) -> tuple[float, float, float]:
    v = rng.gamma(1.5, 1.0, 3) + 0.05
    v = v / np.linalg.norm(v)
    if no_red:
        v[0] = rng.uniform(0.0, 0.08)
        gb = v[1:] / np.linalg.norm(v[1:]) * np.sqrt(1 - v[0] ** 2)
        v[1:] = gb
    return (float(v[0]), float(v[1]), float(v[2]))


def random_stain_protocol(rng: np.random.Generator, name: str, ranges: Ranges = RANGES) -> Protocol:
    """A protocol with stain vectors anywhere in the positive octant and wide tissue ranges."""
    no_red = rng.random() < ranges.p_no_red
    lamp = np.clip(np.array([1.0, 0.9, 0.8]) + rng.normal(0, 0.12, 3), 0.4, 1.0)
    return Protocol(
        name=name,
        h_vector=_stain_vector(rng, no_red),
        e_vector=_stain_vector(rng, no_red and rng.random() < 0.7),
        h_strength=float(rng.uniform(*ranges.h_strength)),
        e_strength=float(rng.uniform(*ranges.e_strength)),
        thickness_m=float(rng.uniform(*ranges.thickness_m)),
        delta_n=float(rng.uniform(*ranges.delta_n)),
        coverslip_error_m=float(rng.uniform(-10e-6, 10e-6)),
        lamp_rgb=tuple(float(v) for v in lamp / lamp.max()),
        wb_error_rgb=tuple(float(v) for v in 1.0 + rng.uniform(-1, 1, 3) * ranges.wb_error),
        cellularity=float(rng.uniform(*ranges.cellularity)),
        background_od=float(rng.uniform(0.0, 0.06)),
    )


def random_optics(
    profile: OpticsProfile, rng: np.random.Generator, ranges: Ranges = RANGES
) -> OpticsProfile:
    """The profile with NA, condenser, chromatic and spherical aberration and pixel size drawn.

    The name stays the profile's (models and stage settings key on it).
    """
    scale = max(abs(v) for v in profile.chromatic_offsets_m) or 0.45e-6
    lim = ranges.chromatic_factor * scale
    red, blue = rng.uniform(-lim, lim, 2)
    if rng.random() < ranges.p_apochromat:
        red, blue = 0.05 * red, 0.05 * blue
    return dataclasses.replace(
        profile,
        na=float(min(0.95, profile.na * rng.uniform(*ranges.na_factor))),
        condenser_sigma=float(rng.uniform(*ranges.condenser_sigma)),
        chromatic_offsets_m=(float(red), 0.0, float(blue)),
        residual_sa_waves=float(rng.uniform(*ranges.sa_waves)),
        relay_magnification=float(profile.relay_magnification / rng.uniform(*ranges.pixel_factor)),
    )


def random_camera(
    rng: np.random.Generator, base: CameraModel | None = None, ranges: Ranges = RANGES
) -> tuple[CameraModel, CameraEffects]:
    """A camera (gamma, exposure, noise) and its post-sensor effects."""
    base = base or CameraModel()
    cam = dataclasses.replace(
        base,
        gamma=float(rng.uniform(*ranges.gamma)),
        glass_level=float(rng.uniform(*ranges.glass_level)),
        full_well_e=float(rng.uniform(*ranges.full_well_e)),
        read_noise_e=float(rng.uniform(*ranges.read_noise_e)),
        white_point=float(rng.uniform(0.85, 0.97)),
    )
    fx = CameraEffects(
        vignetting=float(rng.uniform(*ranges.vignetting)),
        vignette_centre=(float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8))),
        tone_curve=float(rng.uniform(0.1, 0.5)) if rng.random() < ranges.p_tone_curve else 0.0,
        bayer=bool(rng.random() < ranges.p_bayer),
        jpeg_quality=int(rng.integers(*ranges.jpeg_quality)) if rng.random() < ranges.p_jpeg else 0,
        mono=bool(rng.random() < ranges.p_mono),
    )
    return cam, fx


def draw_microscope(
    profile: OpticsProfile, rng: np.random.Generator, name: str, ranges: Ranges = RANGES
) -> RandomMicroscope:
    """Draw one whole microscope (optics, stain, camera) from ``rng``."""
    optics = random_optics(profile, rng, ranges)
    protocol = random_stain_protocol(rng, name, ranges)
    camera, effects = random_camera(rng, ranges=ranges)
    return RandomMicroscope(optics, protocol, camera, effects)


def illumination_field(
    shape: tuple[int, int],
    fx: CameraEffects,
    field_px: tuple[int, int] | None = None,
    origin_px: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Relative illumination (h, w) float32: radial fall-off around an off-centre point.

    Args:
        shape: (h, w) of the image.
        fx: the effects (vignetting strength and centre, as fractions of the field).
        field_px: (w, h) of the whole camera field the image is cut from (default: the image).
        origin_px: (x, y) of the image's top-left pixel inside that field.
    """
    h, w = shape
    fw, fh = field_px or (w, h)
    cx, cy = fx.vignette_centre[0] * fw, fx.vignette_centre[1] * fh
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx + origin_px[0] - cx) ** 2 + (yy + origin_px[1] - cy) ** 2) / (0.25 * (fw**2 + fh**2))
    return (1.0 - fx.vignetting * np.clip(r2, 0, 4) / 2).astype(np.float32)


def apply_effects(img: np.ndarray, fx: CameraEffects, rng: np.random.Generator) -> np.ndarray:
    """Tone curve, Bayer mosaic + demosaic, monochrome and JPEG on an 8-bit RGB image."""
    out = np.asarray(img, np.uint8)
    if fx.tone_curve > 0:
        x = np.arange(256, dtype=np.float32) / 255
        s = x + fx.tone_curve * (x - 0.5) * x * (1 - x) * 4
        lut = np.clip(np.rint(255 * s), 0, 255).astype(np.uint8)
        out = lut[out]
    if fx.bayer and out.shape[0] >= 2 and out.shape[1] >= 2:
        raw = np.empty(out.shape[:2], np.uint8)
        raw[0::2, 0::2] = out[0::2, 0::2, 0]  # R G / G B (RGGB)
        raw[0::2, 1::2] = out[0::2, 1::2, 1]
        raw[1::2, 0::2] = out[1::2, 0::2, 1]
        raw[1::2, 1::2] = out[1::2, 1::2, 2]
        # OpenCV names Bayer patterns by the second row; RGGB is COLOR_BayerBG2RGB
        out = cv2.cvtColor(raw, cv2.COLOR_BayerBG2RGB)
    if fx.mono:
        y = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
        out = np.repeat(y[..., None], 3, axis=2)
    if fx.jpeg_quality > 0:
        ok, buf = cv2.imencode(
            ".jpg",
            cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, fx.jpeg_quality],
        )
        if ok:
            out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(out)


def foreign_microscope(profile: OpticsProfile) -> RandomMicroscope:
    """A fixed microscope deliberately outside :class:`Ranges`, for transfer tests.

    Lower NA (x0.8), a near-coherent condenser (0.95), chromatic offsets of the opposite
    sign and 2.4-2.9x the profile's, strong negative spherical aberration, 25 % larger
    pixels; a thick (7 um), heavily stained section with a blue-grey stain, a flat gamma
    (1.4) on an under-exposed camera with JPEG.
    """
    scale = max(abs(v) for v in profile.chromatic_offsets_m) or 0.45e-6
    optics = dataclasses.replace(
        profile,
        na=profile.na * 0.8,
        condenser_sigma=0.95,
        chromatic_offsets_m=(-2.4 * scale, 0.0, 2.9 * scale),
        residual_sa_waves=-0.45,
        relay_magnification=profile.relay_magnification / 1.25,
    )
    protocol = Protocol(
        "foreign_scope",
        h_vector=(0.30, 0.45, 0.84),
        e_vector=(0.10, 0.35, 0.93),
        h_strength=1.3,
        e_strength=0.05,
        thickness_m=7e-6,
        delta_n=0.04,
        coverslip_error_m=-12e-6,
        lamp_rgb=(0.7, 0.9, 1.0),
        wb_error_rgb=(1.1, 1.0, 0.9),
        cellularity=0.6,
    )
    camera = dataclasses.replace(CameraModel(), gamma=1.4, glass_level=0.4, read_noise_e=9.0)
    effects = CameraEffects(vignetting=0.45, vignette_centre=(0.15, 0.85), jpeg_quality=55)
    return RandomMicroscope(optics, protocol, camera, effects)
