"""Staining protocols ("labs"): stain vectors and strengths, section, mountant, lamp.

A :class:`Protocol` is everything about a slide's preparation and illumination that
changes its colour and contrast but not its tissue: H and E optical-density vectors
(colour deconvolution, Ruifrok & Johnston 2001; defaults are the Macenko et al. 2009
reference vectors) and strengths, section thickness,
refractive-index contrast Δn against the mountant (weak phase), coverslip thickness
error (spherical aberration), lamp tint and the camera's residual white-balance error,
and cellularity. Presets name typical labs; :func:`random_protocol` samples new ones
(never equal to a preset) so whole protocols can be held out of training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

RGB = tuple[float, float, float]


def _unit(v) -> RGB:
    a = np.asarray(v, float)
    n = np.linalg.norm(a)
    if not np.isfinite(n) or n <= 0:
        raise ValueError(f"stain vector {v} must be non-zero and finite")
    if abs(n - 1) > 1e-12:  # keep already-unit vectors bit-exact (JSON round trips)
        a = a / n
    return (float(a[0]), float(a[1]), float(a[2]))


@dataclass(frozen=True)
class Protocol:
    """One lab's preparation of H&E slides. All lengths in metres.

    Attributes:
        name: identifier (presets: ``lab_*`` / ``other_lab``; sampled: ``random_*``).
        h_vector, e_vector: unit optical-density vectors (R, G, B) of haematoxylin and eosin.
        h_strength, e_strength: optical density of a fully stained 4 um layer.
        thickness_m: section thickness (3-5 um typical).
        delta_n: refractive-index contrast of tissue against the mountant.
        coverslip_error_m: coverslip thickness error (drives spherical aberration).
        lamp_rgb: relative lamp intensity per channel before white balance.
        wb_error_rgb: residual camera white-balance gains after auto white balance.
        cellularity: 0..1, density of nuclei and share of cellular regions.
        background_od: optical density of glass + mountant.
    """

    name: str
    h_vector: RGB = (0.5626, 0.7201, 0.4062)
    e_vector: RGB = (0.2159, 0.8012, 0.5581)
    h_strength: float = 0.55
    e_strength: float = 0.30
    thickness_m: float = 4e-6
    delta_n: float = 0.015
    coverslip_error_m: float = 0.0
    lamp_rgb: RGB = (1.0, 0.93, 0.80)
    wb_error_rgb: RGB = (1.0, 1.0, 1.0)
    cellularity: float = 0.5
    background_od: float = 0.02

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("Protocol.name must be a non-empty string")
        if not 0.5e-6 <= self.thickness_m <= 20e-6:
            raise ValueError(f"thickness_m={self.thickness_m} outside 0.5-20 um")
        if not 0.0 <= self.cellularity <= 1.0:
            raise ValueError(f"cellularity={self.cellularity} outside [0, 1]")
        object.__setattr__(self, "h_vector", _unit(self.h_vector))
        object.__setattr__(self, "e_vector", _unit(self.e_vector))

    def to_dict(self) -> dict:
        """JSON-ready parameters (lists for vectors)."""
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> Protocol:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        extra = set(d) - names
        if extra:
            raise ValueError(f"unknown protocol fields {sorted(extra)}; valid: {sorted(names)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


# reference H&E stain vectors estimated from real slides (Macenko et al. 2009)
_H_STD = (0.5626, 0.7201, 0.4062)
_E_STD = (0.2159, 0.8012, 0.5581)

PROTOCOL_PRESETS: dict[str, Protocol] = {
    p.name: p
    for p in [
        Protocol("lab_a_standard"),
        Protocol("lab_b_pale_eosin", e_strength=0.16, h_strength=0.50, delta_n=0.012),
        Protocol(
            "lab_c_dark_hematoxylin", h_strength=0.85, h_vector=(0.65, 0.70, 0.29), e_strength=0.26
        ),
        Protocol("lab_d_thick_section", thickness_m=5e-6, delta_n=0.02, coverslip_error_m=5e-6),
        Protocol(
            "lab_e_thin_section",
            thickness_m=3e-6,
            h_strength=0.5,
            e_strength=0.28,
            coverslip_error_m=-5e-6,
        ),
        Protocol("lab_f_warm_lamp", lamp_rgb=(1.0, 0.82, 0.60), wb_error_rgb=(1.05, 1.0, 0.93)),
        Protocol(
            "lab_g_cool_led",
            lamp_rgb=(0.85, 0.95, 1.0),
            wb_error_rgb=(0.96, 1.0, 1.05),
            delta_n=0.02,
        ),
        Protocol("lab_h_high_cellularity", cellularity=0.85, h_strength=0.6),
        Protocol("lab_i_low_index_mountant", delta_n=0.03, e_strength=0.34, coverslip_error_m=8e-6),
        Protocol(
            "lab_j_magenta_eosin",
            e_vector=(0.07, 0.99, 0.11),
            h_vector=(0.55, 0.78, 0.30),
            e_strength=0.36,
            cellularity=0.35,
        ),
        # deliberately outside the colour range of the training presets and of random sampling
        Protocol(
            "other_lab",
            h_vector=(0.25, 0.55, 0.80),
            e_vector=(0.02, 0.62, 0.78),
            h_strength=0.7,
            e_strength=0.22,
            lamp_rgb=(0.9, 1.0, 0.9),
            wb_error_rgb=(0.97, 1.03, 0.97),
            delta_n=0.008,
            coverslip_error_m=-8e-6,
        ),
    ]
}


RANDOM_PREFIX = "random_"


def get_protocol(protocol: str | Protocol) -> Protocol:
    """Return a preset by name, ``random_N`` as ``random_protocol(N)`` (a held-out lab for
    any seed N never used in training), or pass a :class:`Protocol` through.

    Raises:
        ValueError: unknown name; the message lists the valid presets.
    """
    if isinstance(protocol, Protocol):
        return protocol
    if protocol in PROTOCOL_PRESETS:
        return PROTOCOL_PRESETS[protocol]
    seed = protocol.removeprefix(RANDOM_PREFIX) if isinstance(protocol, str) else ""
    if protocol.startswith(RANDOM_PREFIX) and seed.isdigit():
        return random_protocol(int(seed))
    raise ValueError(
        f"unknown protocol {protocol!r}; valid presets: {', '.join(PROTOCOL_PRESETS)}, or "
        f"{RANDOM_PREFIX}N for the lab random_protocol(N) samples "
        "(and 'random' in the dataset command)"
    )


def random_protocol(rng: np.random.Generator | int) -> Protocol:
    """Sample a new protocol around the standard H&E range (never one of the presets).

    Args:
        rng: a numpy Generator or an integer seed (same seed, same protocol).
    """
    seed_name = None
    if not isinstance(rng, np.random.Generator):
        seed_name = int(rng)
        rng = np.random.default_rng([int(rng), 0x5EED])
    jit = lambda v, s: np.asarray(v) + rng.normal(0, s, 3)  # noqa: E731
    h = np.clip(jit(_H_STD, 0.06), 0.05, None)
    e = np.clip(jit(_E_STD, 0.06), 0.01, None)
    lamp = np.clip(np.array([1.0, 0.9, 0.78]) + rng.normal(0, 0.08, 3), 0.45, 1.0)
    tag = f"{seed_name}" if seed_name is not None else f"{rng.integers(1 << 30):09d}"
    return Protocol(
        name=f"{RANDOM_PREFIX}{tag}",
        h_vector=tuple(h),
        e_vector=tuple(e),
        h_strength=float(rng.uniform(0.35, 0.9)),
        e_strength=float(rng.uniform(0.12, 0.42)),
        thickness_m=float(rng.choice([3e-6, 4e-6, 5e-6]) + rng.uniform(-0.3e-6, 0.3e-6)),
        delta_n=float(rng.uniform(0.006, 0.03)),
        coverslip_error_m=float(rng.uniform(-10e-6, 10e-6)),
        lamp_rgb=tuple(lamp / lamp.max()),
        wb_error_rgb=tuple(1.0 + rng.normal(0, 0.03, 3)),
        cellularity=float(rng.uniform(0.2, 0.9)),
        background_od=float(rng.uniform(0.0, 0.05)),
    )
