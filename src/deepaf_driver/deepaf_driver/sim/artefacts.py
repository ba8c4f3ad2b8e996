"""What makes a real slide harder to focus than a flat, clean section: the artefact spec.

A :class:`SlideArtefacts` sets the ranges a :class:`~.slide.VirtualSlide` draws its focus
surface and artefacts from; two named specs ship in :data:`SLIDE_SPECS`:

* ``plain``: the slide as it was before these specs, bit-exact: offset +-15 um, tilt
  +-2.5 um/mm per axis, three waves of 2-7 um over 4-14 mm, sections of the protocol's
  constant thickness, nothing else. The default of :class:`~.microscope.VirtualMicroscope`
  and of the focal-stack datasets (so the shipped models and their data stay reproducible).
* ``realistic``: the default of scans (``deepaf_driver.backends.sim.SCAN_SLIDE``). Tilt
  5-7 um/mm in a random direction plus waviness and bow, so best focus changes by more
  than the 4x depth of field (59 um) across 12 mm (~50 depths of field at 20x); sections
  that vary in thickness; folds, air bubbles, dust on the coverslip and debris in the
  mounting medium.

Published values the ranges rest on (orders of magnitude, not one lab's numbers):

* Focus topography: "from nanometers to several microns over a single millimeter (about
  one field of view)" (Montalto, McKay & Filkins, J Pathol Inform 2:44, 2011). Slide
  seating and glass flatness add a tilt of a few um/mm: tens of um over a whole slide.
  The realistic tilt sits at the top of that range, on purpose: fixed focus must fail.
* Section thickness: routine paraffin H&E sections are cut at 3-5 um (Bancroft's Theory
  and Practice of Histological Techniques, 8th ed., 2019); microtome chatter and uneven
  blocks make it vary within a section (here 10 % rms over ~1 mm).
* Folds, air bubbles under the coverslip and debris are among the commonest slide
  artefacts (Taqi et al., J Oral Maxillofac Pathol 22:279, 2018; HistoQC, Janowczyk et
  al., JCO Clin Cancer Inform 3:1, 2019). A fold doubles the section: there the tissue is
  twice as thick and its mid-plane is raised by about one section thickness (here 0.75:
  the flap rests on a film of trapped mountant half a section thick). Under a bubble the
  tissue is seen through air instead of index-matched mountant: a strong dark refractive
  rim, refractile bright/dark edges that flip across focus, and little stain contrast.
* Coverslips #1-#1.5 are 0.13-0.19 mm thick (ISO 8255-1: 0.17 mm nominal); with 10-30 um
  of mountant, dust on the coverslip's top lies 150-180 um above the section. It is sharp
  at its own height, the wrong one for the tissue: the known trap of contrast-based
  autofocus (a sharpness search that reaches it, on a field with little tissue, focuses on
  the dust). Debris in the mountant floats a few to tens of um above the section.

Lengths are metres, tilts m/m (1e-3 = 1 um/mm), densities per mm^2.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class SlideArtefacts:
    """Ranges of a virtual slide's focus surface and artefacts ((lo, hi) pairs are drawn
    uniformly per slide, or per artefact).

    Attributes:
        name: spec name.
        offset_m: best-focus offset at the slide centre, drawn in +-offset_m.
        tilt: per-axis tilt drawn in +-tilt (m/m).
        tilt_min: a tilt vector shorter than this is stretched to it (its direction kept).
        wave_amp_m, wave_length_m: amplitude and wavelength of three plane waves.
        bow_m: slide bow, a paraboloid this high at 7.5 mm from the centre (random sign).
        thickness_rel_std: relative standard deviation of the section thickness (clipped to
            +-3 std), varying over thickness_scale_m.
        folds: (min, max) folds per slide; fold_length_m, fold_width_m their size.
        fold_gap: mountant between section and folded flap, in section thicknesses; the
            doubled strip's mid-plane is raised by (1 + fold_gap) / 2 thicknesses.
        bubbles: (min, max) air bubbles per slide; bubble_radius_m their radius.
        bubble_stain: fraction of the stain contrast left under a bubble.
        bubble_phase_gain: phase (refractive) contrast of tissue in air vs in mountant.
        bubble_rim_od: optical density of the dark rim; bubble_rim_height_m its height above
            the section's mid-plane.
        dust_per_mm2: dust particles on the coverslip's top, per mm^2; dust_radius_m their
            size, dust_od their optical density; coverslip_height_m the height of that
            plane above the section.
        debris_per_mm2: particles in the mountant, per mm^2; debris_radius_m,
            debris_height_m (above the section) their size and height.
    """

    name: str = "custom"
    offset_m: float = 15e-6
    tilt: float = 2.5e-3
    tilt_min: float = 0.0
    wave_amp_m: tuple[float, float] = (2e-6, 7e-6)
    wave_length_m: tuple[float, float] = (4e-3, 14e-3)
    bow_m: tuple[float, float] = (0.0, 0.0)
    thickness_rel_std: float = 0.0
    thickness_scale_m: float = 1.2e-3
    folds: tuple[int, int] = (0, 0)
    fold_length_m: tuple[float, float] = (0.5e-3, 2.5e-3)
    fold_width_m: tuple[float, float] = (50e-6, 200e-6)
    fold_gap: float = 0.5
    bubbles: tuple[int, int] = (0, 0)
    bubble_radius_m: tuple[float, float] = (100e-6, 450e-6)
    bubble_stain: float = 0.35
    bubble_phase_gain: float = 6.0
    bubble_rim_od: float = 0.9
    bubble_rim_height_m: float = 3e-6
    dust_per_mm2: float = 0.0
    dust_radius_m: tuple[float, float] = (3e-6, 25e-6)
    dust_od: tuple[float, float] = (0.4, 1.3)
    coverslip_height_m: tuple[float, float] = (150e-6, 180e-6)
    debris_per_mm2: float = 0.0
    debris_radius_m: tuple[float, float] = (2e-6, 8e-6)
    debris_height_m: tuple[float, float] = (4e-6, 40e-6)

    def __post_init__(self) -> None:
        bad = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple) and not (len(v) == 2 and 0 <= v[0] <= v[1]):
                bad.append(f"{f.name}={v} (need 0 <= lo <= hi)")
            elif isinstance(v, float) and v < 0:
                bad.append(f"{f.name}={v} (need >= 0)")
        if self.tilt_min > 2**0.5 * self.tilt:
            bad.append(f"tilt_min={self.tilt_min} exceeds the largest drawable tilt")
        if self.thickness_rel_std > 0.3:
            bad.append(f"thickness_rel_std={self.thickness_rel_std} (at most 0.3)")
        if self.bubble_stain > 1:
            bad.append(f"bubble_stain={self.bubble_stain} (a fraction, at most 1)")
        if self.thickness_scale_m <= 0:
            bad.append("thickness_scale_m must be positive")
        if bad:
            raise ValueError(f"slide spec {self.name!r}: " + "; ".join(bad))

    @property
    def has_artefacts(self) -> bool:
        """Whether anything beyond the focus surface is drawn (plain: False)."""
        return bool(
            self.thickness_rel_std > 0
            or self.folds[1] > 0
            or self.bubbles[1] > 0
            or self.dust_per_mm2 > 0
            or self.debris_per_mm2 > 0
        )

    def to_dict(self) -> dict:
        """Plain-JSON form (tuples as lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


SLIDE_SPECS: dict[str, SlideArtefacts] = {
    "plain": SlideArtefacts(name="plain"),
    "realistic": SlideArtefacts(
        name="realistic",
        offset_m=20e-6,
        tilt=5e-3,
        tilt_min=5e-3,
        wave_amp_m=(3e-6, 8e-6),
        wave_length_m=(3e-3, 12e-3),
        bow_m=(4e-6, 12e-6),
        thickness_rel_std=0.1,
        folds=(1, 2),
        bubbles=(1, 2),
        dust_per_mm2=1.5,
        debris_per_mm2=0.4,
    ),
}


def get_slide_spec(spec: str | SlideArtefacts) -> SlideArtefacts:
    """A named spec (or pass a :class:`SlideArtefacts` through).

    Raises:
        ValueError: unknown name, with the valid names.
    """
    if isinstance(spec, SlideArtefacts):
        return spec
    try:
        return SLIDE_SPECS[spec]
    except KeyError:
        raise ValueError(f"unknown slide {spec!r}; valid: {', '.join(SLIDE_SPECS)}") from None
