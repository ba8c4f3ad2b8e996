"""Optics profiles of the microscope: the one definition of magnification, pixel size and
depth of field (ROS-free, simulator-free, standard library only).

Everything that judges focus reads the depth of field from here: the virtual microscope
(`deepaf_driver.sim`), the focus metrics (`deepaf_focus.metrics`: DoF % of FE / FD / DoF),
the predictor's confidence, and the planner's in-focus criterion (`half_dof`) and scan
report (`within_dof_pct`). A prediction, tile or image is *in focus* when it is within half
the depth of field of best focus, :func:`half_dof_m`:

    20x (NA 0.75): depth of field 1.18 um, half 0.592 um
    4x  (NA 0.10): depth of field 58.9 um, half 29.4 um

(The DeepAf paper rounds these to 1 and 60 um; the figures here are the classical formula
for these optics, :attr:`OpticsProfile.depth_of_field_m`.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = [
    "OPTICS_PROFILES",
    "OpticsProfile",
    "get_profile",
    "half_dof_m",
    "half_dof_um",
]


@dataclass(frozen=True)
class OpticsProfile:
    """An objective + camera coupling. Lengths in metres.

    Attributes:
        name: "20x" or "4x" (or your own).
        magnification: objective magnification.
        na: numerical aperture.
        condenser_sigma: condenser NA / objective NA (partial coherence).
        immersion_n: refractive index of the immersion medium (1.0 = dry).
        chromatic_offsets_m: focus shift delta_c of the R, G, B channels (longitudinal CA).
        residual_sa_waves: objective's residual primary spherical aberration W040 (waves).
        sa_waves_per_m_coverslip: W040 per metre of coverslip thickness error.
        camera_pixel_m: physical sensor pixel pitch.
        relay_magnification: camera coupler magnification.
        z_step_m: smallest focus step of the stage.
        train_range_m: half-width of the defocus range used for training data.
        exposure_s: exposure time of one frame.
    """

    name: str
    magnification: float
    na: float
    condenser_sigma: float
    immersion_n: float
    chromatic_offsets_m: tuple[float, float, float]
    residual_sa_waves: float
    sa_waves_per_m_coverslip: float
    camera_pixel_m: float
    relay_magnification: float
    z_step_m: float
    train_range_m: float
    exposure_s: float

    @property
    def pixel_size_m(self) -> float:
        """Sample-plane size of one full-resolution camera pixel."""
        return self.camera_pixel_m / (self.magnification * self.relay_magnification)

    @property
    def depth_of_field_m(self) -> float:
        """Classical depth of field: lambda n / NA^2 + n e / (M NA), at 550 nm."""
        n = self.immersion_n
        total_mag = self.magnification * self.relay_magnification
        return 550e-9 * n / self.na**2 + n * self.camera_pixel_m / (total_mag * self.na)

    @property
    def half_dof_m(self) -> float:
        """Half the depth of field: the in-focus criterion everywhere (metres)."""
        return self.depth_of_field_m / 2

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["pixel_size_m"] = self.pixel_size_m
        d["depth_of_field_m"] = self.depth_of_field_m
        return d


OPTICS_PROFILES: dict[str, OpticsProfile] = {
    "20x": OpticsProfile(
        name="20x",
        magnification=20.0,
        na=0.75,
        condenser_sigma=0.6,
        immersion_n=1.0,
        chromatic_offsets_m=(0.35e-6, 0.0, -0.45e-6),
        residual_sa_waves=0.08,
        # Gibson-Lanni for a dry objective: W040 ~ dt (n_g^2 - 1) / (8 n_g^3) NA^4 / lambda
        sa_waves_per_m_coverslip=0.0268e6,
        camera_pixel_m=1.55e-6,
        relay_magnification=0.5,
        z_step_m=0.1e-6,
        train_range_m=10e-6,
        exposure_s=0.008,
    ),
    "4x": OpticsProfile(
        name="4x",
        magnification=4.0,
        na=0.10,
        condenser_sigma=0.6,
        immersion_n=1.0,
        # cues scaled with the depth of field (60 um) so the focus direction stays visible
        chromatic_offsets_m=(12e-6, 0.0, -16e-6),
        residual_sa_waves=0.15,
        sa_waves_per_m_coverslip=0.002e6,
        camera_pixel_m=1.55e-6,
        relay_magnification=1.0,
        z_step_m=2e-6,
        train_range_m=100e-6,
        exposure_s=0.004,
    ),
}


def get_profile(profile: str | OpticsProfile) -> OpticsProfile:
    """Return a profile by name (or pass an :class:`OpticsProfile` through).

    Raises:
        ValueError: unknown name, with the valid names.
    """
    if isinstance(profile, OpticsProfile):
        return profile
    try:
        return OPTICS_PROFILES[profile]
    except KeyError:
        raise ValueError(
            f"unknown optics profile {profile!r}; valid: {', '.join(OPTICS_PROFILES)}"
        ) from None


def half_dof_m(profile: str | OpticsProfile) -> float:
    """Half the depth of field (metres) of a profile, by name or as a profile.

    Raises:
        ValueError: unknown name, with the valid names.
    """
    return get_profile(profile).half_dof_m


def half_dof_um(profile: str | OpticsProfile) -> float:
    """Half the depth of field in micrometres (the unit of the focus metrics).

    Raises:
        ValueError: unknown name, with the valid names.
    """
    return half_dof_m(profile) * 1e6
