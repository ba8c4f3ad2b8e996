"""deepaf_driver.sim: a ROS-free virtual brightfield microscope of H&E slides.

Quick start::

    from deepaf_driver.sim import VirtualMicroscope
    scope = VirtualMicroscope(profile="20x", protocol="lab_a_standard", slide_seed=0)
    x, y = scope.random_tissue_position(np.random.default_rng(0))
    z = scope.best_focus_z(x, y)
    img = scope.render_patch(x, y, z + 2e-6, size=224)   # 2 um above best focus

All public quantities are SI (metres, seconds); see :mod:`.microscope` for the
coordinate conventions and the definition of best focus. ``slide="realistic"`` adds
tilt, waviness, thickness variation, folds, bubbles and debris (:mod:`.artefacts`).
"""

from .artefacts import SLIDE_SPECS, SlideArtefacts, get_slide_spec
from .camera import CameraModel
from .microscope import Frame, VirtualMicroscope, brenner_green, focus_offset_m
from .optics import OPTICS_PROFILES, OpticsProfile, best_focus_offset, get_profile
from .protocols import PROTOCOL_PRESETS, Protocol, get_protocol, random_protocol
from .slide import VirtualSlide
from .stage import AxisDynamics, SimStage, StageLimits

__all__ = [
    "OPTICS_PROFILES",
    "PROTOCOL_PRESETS",
    "SLIDE_SPECS",
    "AxisDynamics",
    "CameraModel",
    "Frame",
    "OpticsProfile",
    "Protocol",
    "SimStage",
    "SlideArtefacts",
    "StageLimits",
    "VirtualMicroscope",
    "VirtualSlide",
    "best_focus_offset",
    "brenner_green",
    "focus_offset_m",
    "get_profile",
    "get_protocol",
    "get_slide_spec",
    "random_protocol",
]
