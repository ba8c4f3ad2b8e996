"""Convert a recorded focal-stack acquisition into the deepaf-focal-stack dataset format.

A focal stack in a bag is a run of images (full-resolution `camera/image_full`, its
`/compressed` form, or previews) taken at one x, y and several z, with `joint_states` giving
each image's pose. Consecutive images at the same x, y (within 1 um) form one stack. The
best-focus z of a stack is the ground truth the bag knows (see :mod:`.truth`) or else the
Brenner sharpness peak (parabola through the best slice and its neighbours). The output is
what `./deepaf sim dataset` writes (`docs/dataset-format.md`, through the one writer in
`deepaf_driver.dataset_format`), read by `./deepaf train`.
Images are written as they are read: memory holds one image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from deepaf_driver.dataset_format import (
    dz_file_name,
    stack_name,
    write_image,
    write_index,
    write_stack_meta,
)
from deepaf_driver.focus_measure import brenner
from deepaf_planner.focal_stack import sharpness_peak

from .errors import BagError
from .images import COMPRESSED, IMAGE, IMAGE_TYPES, decode_image
from .reader import BagReader
from .truth import PoseTrack, TruthSource, stamp_ns, truth_source

__all__ = ["bag_to_dataset", "sharpness_peak"]

XY_TOLERANCE_M = 1e-6


class _Stack:
    """One stack being written: images under temporary names until best focus is known."""

    def __init__(self, root: Path, index: int, pose: tuple[float, float, float]) -> None:
        self.name = stack_name(index)
        self.dir = root / self.name
        self.dir.mkdir(parents=True)
        self.x, self.y = pose[0], pose[1]
        self.items: list[tuple[str, float, float]] = []  # (temporary file, z, sharpness)

    def same_place(self, pose: tuple[float, float, float]) -> bool:
        return abs(pose[0] - self.x) <= XY_TOLERANCE_M and abs(pose[1] - self.y) <= XY_TOLERANCE_M

    def add(self, rgb: np.ndarray, z: float) -> None:
        tmp = f".slice_{len(self.items):05d}.png"
        write_image(self.dir / tmp, rgb)
        self.items.append((tmp, z, float(brenner(rgb))))

    def finish(self, truth: TruthSource | None, meta: dict[str, Any]) -> str:
        """Name the slices by dz, write meta.json; return the best-focus source."""
        zs = np.array([z for _, z, _ in self.items])
        if truth is not None:
            best, source = truth.best_z(self.x, self.y), truth.name
        else:
            best = sharpness_peak(zs, np.array([s for _, _, s in self.items]))
            source = "sharpness_peak"
        images = []
        for tmp, z, _ in sorted(self.items, key=lambda item: item[1]):
            k = 0
            while (self.dir / dz_file_name(z - best, k)).exists():
                k += 1
            name = dz_file_name(z - best, k)
            (self.dir / tmp).rename(self.dir / name)
            images.append({"file": name, "z_m": float(z)})
        doc = {
            **meta,
            "x_m": self.x,
            "y_m": self.y,
            "best_focus_z_m": float(best),
            "best_focus_source": source,
            "images": images,
        }
        write_stack_meta(self.dir, doc)
        return source


def _pixel_size(profile: str, msgtype_topic: str) -> float | None:
    from deepaf_driver.sim import CameraModel, get_profile

    try:
        size = get_profile(profile).pixel_size_m
    except ValueError:
        return None
    return size if "image_full" in msgtype_topic else size * CameraModel().preview_binning


def bag_to_dataset(
    bag: str | Path, out: str | Path, topic: str | None = None, crop: int = 0
) -> dict[str, Any]:
    """Write the focal stacks of `bag` as a dataset at `out`; return a summary.

    Args:
        bag: Bag directory.
        out: Dataset directory (must not exist, or be empty).
        topic: Image topic (default: full frames, compressed or raw, else previews).
        crop: Keep a centred square crop of this many pixels (0: the full frame).

    Raises:
        BagError: no image or joint_states topic, a non-empty `out`, unreadable messages.
    """
    out = Path(out)
    with BagReader(bag) as reader:
        if out.exists() and any(out.iterdir()):
            raise BagError(out, "exists and is not empty; choose a new --out directory")
        if topic:
            image_topic = reader.check_topics([topic])[0]
        else:
            image_topic = (
                reader.find_topic("camera/image_full/compressed", [COMPRESSED])
                or reader.find_topic("camera/image_full", [IMAGE])
                or reader.find_topic("camera/image_raw", IMAGE_TYPES)
            )
        if image_topic is None:
            raise BagError(
                reader.path,
                "no image topic (camera/image_full[/compressed] or camera/image_raw); it has "
                f"{', '.join(sorted(reader.topics)) or 'no topics'}",
            )
        joints = reader.find_topic("joint_states", ["sensor_msgs/msg/JointState"])
        if joints is None:
            raise BagError(reader.path, "no joint_states topic: the z of each image is unknown")
        info = reader.info
        profile = str(info.get("profile") or "20x")
        truth = truth_source(info, profile)
        meta = {
            "profile": profile,
            "pixel_size_m": _pixel_size(profile, image_topic),
            "protocol": str(info.get("protocol") or "unknown"),
            "slide": f"sim:seed={info['slide_seed']}"
            if info.get("slide_seed") not in (None, "")
            else f"bag:{reader.path.name}",
            "source_bag": str(reader.path),
            "source_topic": image_topic,
        }
        out.mkdir(parents=True, exist_ok=True)
        track = PoseTrack()
        stacks: list[_Stack] = []
        sources: set[str] = set()
        n_images = no_pose = 0
        for msg in reader.messages([joints, image_topic]):
            decoded = reader.deserialize(msg)
            if msg.topic == joints:
                track.add(decoded)
                continue
            pose = track.at(stamp_ns(decoded.header))
            if pose is None:
                no_pose += 1
                continue
            try:
                rgb = decode_image(decoded, msg.msgtype)
            except ValueError as exc:
                raise BagError(reader.path, f"image at {msg.timestamp_ns} ns: {exc}") from exc
            if crop:
                h, w = rgb.shape[:2]
                c = min(crop, h, w)
                rgb = rgb[(h - c) // 2 : (h - c) // 2 + c, (w - c) // 2 : (w - c) // 2 + c]
            if not stacks or not stacks[-1].same_place(pose):
                if stacks:
                    sources.add(stacks[-1].finish(truth, meta))
                stacks.append(_Stack(out, len(stacks), pose))
            stacks[-1].add(np.ascontiguousarray(rgb), pose[2])
            n_images += 1
        if not stacks:
            raise BagError(
                reader.path,
                f"no image on {image_topic} has a stage pose (no joint_states before it)",
            )
        sources.add(stacks[-1].finish(truth, meta))
    write_index(
        out,
        [s.name for s in stacks],
        "deepaf bag to-dataset",
        {"bag": str(bag), "topic": image_topic, "crop": crop},
    )
    return {
        "stacks": len(stacks),
        "images": n_images,
        "skipped_no_pose": no_pose,
        "topic": image_topic,
        "best_focus_source": ", ".join(sorted(sources)),
    }
