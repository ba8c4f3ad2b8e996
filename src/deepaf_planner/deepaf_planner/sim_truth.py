"""Ground truth and optics from the virtual microscope, for scans run in simulation.

When the graph runs on the virtual microscope, the planner builds the same simulator the
driver nodes use (the shared `profile`, `sim_protocol`, `sim_slide_seed` and `sim_slide`
parameters) to score every tile against the true best focus. The truth is used only while the camera
node's `backend` is "sim" (the planner asks the camera node at each goal), so with a
hardware camera, or with `sim_truth` false, the report's truth fields stay empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from deepaf_driver.profiles import get_profile
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node


@dataclass(frozen=True)
class ProfileOptics:
    """Optics the planner needs: capture pixel size at the sample and half the DoF [m]."""

    pixel_size_m: float
    half_dof_m: float


def profile_optics(profile: str) -> ProfileOptics:
    """Optics of a named profile (`deepaf_driver.profiles`, the one definition of the depth
    of field; no simulator needed); ValueError when unknown."""
    p = get_profile(profile)
    return ProfileOptics(p.pixel_size_m, p.half_dof_m)


def sim_truth_from_parameters(node: Node, profile: str) -> Callable[[float, float], float] | None:
    """Declare the shared sim parameters; return best_focus_z(x, y) when `sim_truth` is on."""
    d = ParameterDescriptor
    enabled = node.declare_parameter(
        "sim_truth",
        True,
        d(description="score tiles against the virtual microscope's true focus", read_only=True),
    ).value
    protocol = node.declare_parameter(
        "sim_protocol",
        "lab_a_standard",
        d(description="sim: staining protocol preset", read_only=True),
    ).value
    seed = node.declare_parameter(
        "sim_slide_seed", 0, d(description="sim: virtual slide identity", read_only=True)
    ).value
    from deepaf_driver.backends.sim import SCAN_SLIDE

    slide = node.declare_parameter(
        "sim_slide",
        SCAN_SLIDE,
        d(description="sim: the virtual slide's artefacts (realistic | plain)", read_only=True),
    ).value
    if not enabled:
        return None
    from deepaf_driver.sim import VirtualMicroscope

    scope = VirtualMicroscope(profile, protocol, slide_seed=seed, slide=slide)
    return lambda x, y: float(scope.best_focus_z(x, y))
