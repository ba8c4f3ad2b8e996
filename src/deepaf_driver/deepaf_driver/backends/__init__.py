"""Camera and stage backends, chosen by name; hardware libraries load only when chosen.

`create_camera("sim", ...)` / `create_stage("motorkit", ...)` import the backend's module on
demand, so a machine without picamera2 or the Adafruit libraries runs the simulator, and a
missing library is reported with the command that installs it when that backend starts. A
name of the form `package.module:Class` loads a backend from elsewhere (a plugin or a test).
"""

from __future__ import annotations

import importlib
from typing import Any

from deepaf_driver.backends.base import (
    BackendError,
    CameraBackend,
    CapturedFrame,
    Limits,
    MoveResult,
    StageBackend,
)

#: Camera backend name -> "module:Class".
CAMERA_BACKENDS: dict[str, str] = {
    "sim": "deepaf_driver.backends.sim:SimCamera",
    "opencv": "deepaf_driver.backends.opencv_camera:OpenCVCamera",
    "picamera2": "deepaf_driver.backends.picamera2_camera:Picamera2Camera",
}

#: Stage backend name -> "module:Class".
STAGE_BACKENDS: dict[str, str] = {
    "sim": "deepaf_driver.backends.sim:SimStage",
    "motorkit": "deepaf_driver.backends.motorkit_stage:MotorKitStage",
    "sangaboard": "deepaf_driver.backends.sangaboard_stage:SangaboardStage",
}

__all__ = [
    "CAMERA_BACKENDS",
    "STAGE_BACKENDS",
    "BackendError",
    "CameraBackend",
    "CapturedFrame",
    "Limits",
    "MoveResult",
    "StageBackend",
    "create_camera",
    "create_stage",
]


def _load(name: str, registry: dict[str, str], kind: str, base: type) -> type:
    target = registry.get(name) or (name if ":" in name else None)
    if target is None:
        raise ValueError(
            f"unknown {kind} backend {name!r}; choose one of {', '.join(registry)} "
            "(or give package.module:Class)"
        )
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load {kind} backend {name!r} ({target}): {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{kind} backend {target} is not a {base.__name__}")
    return cls


def camera_class(name: str) -> type[CameraBackend]:
    """Return the camera backend class called `name` (raises ValueError when unknown)."""
    return _load(name, CAMERA_BACKENDS, "camera", CameraBackend)


def stage_class(name: str) -> type[StageBackend]:
    """Return the stage backend class called `name` (raises ValueError when unknown)."""
    return _load(name, STAGE_BACKENDS, "stage", StageBackend)


def create_camera(name: str, **config: Any) -> CameraBackend:
    """Construct (not start) the camera backend `name` with its keyword configuration."""
    return camera_class(name)(**config)


def create_stage(name: str, **config: Any) -> StageBackend:
    """Construct (not start) the stage backend `name` with its keyword configuration."""
    return stage_class(name)(**config)
