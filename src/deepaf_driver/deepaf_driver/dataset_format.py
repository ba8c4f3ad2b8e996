"""The focal-stack dataset format (``deepaf-focal-stack`` version 1): the one reader and
writer of its files, used by every producer and consumer (ROS-free, simulator-free).

Writers: the virtual microscope's dataset writer (`deepaf_driver.sim.dataset`), live
acquisition (`deepaf_planner.focal_stack`), `deepaf bag to-dataset`, `deepaf calibrate
--live`. Readers: the trainer, evaluation and calibration (`deepaf_focus.data`, which turns
stacks into labelled records) and :func:`read_dataset` here. The layout and every key are
documented in docs/dataset-format.md::

    DIR/dataset.json                   {"format", "version", "stacks": [...], "created_by", "args"}
    DIR/stack_00000/meta.json          META_REQUIRED (+ META_OPTIONAL) keys,
                                       images: [{"file", "z_m"}, ...]
    DIR/stack_00000/z_-0010.000um.png  8-bit RGB; the name carries dz = z - best focus (um)

The label of an image is ``best_focus_z_m - z_m`` (metres). A stack counts as written only
when its meta.json exists; writers write it last (atomic rename), and readers skip stacks
without one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = [
    "FORMAT",
    "INDEX_FILE",
    "META_FILE",
    "META_OPTIONAL",
    "META_REQUIRED",
    "VERSION",
    "StackRecord",
    "add_to_index",
    "atomic_write_json",
    "dz_file_name",
    "read_dataset",
    "read_image",
    "read_index",
    "read_stack_meta",
    "remove_from_index",
    "stack_name",
    "write_image",
    "write_index",
    "write_stack_meta",
]

FORMAT = "deepaf-focal-stack"
VERSION = 1
INDEX_FILE = "dataset.json"
META_FILE = "meta.json"
#: Keys every stack's meta.json has (besides ``format`` and ``version``).
META_REQUIRED = ("profile", "pixel_size_m", "protocol", "best_focus_z_m", "images")
#: Keys a writer may add (docs/dataset-format.md says what each means).
META_OPTIONAL = (
    "sampling",
    "protocol_params",
    "slide",
    "slide_seed",
    "x_m",
    "y_m",
    "best_focus_source",
    "microscope",
    "split",
    "source_bag",
    "source_topic",
    "pixel_size_note",
)


def stack_name(i: int) -> str:
    """Folder name of stack i: ``stack_00000``."""
    return f"stack_{i:05d}"


def dz_file_name(dz_m: float, duplicate: int = 0) -> str:
    """File name for a slice at dz (m): ``z_-0010.000um.png`` / ``z_+0002.500um.png``; the
    k-th further slice at the same dz gets ``_k`` (``z_+0002.500um_1.png``)."""
    suffix = f"_{duplicate}" if duplicate else ""
    return f"z_{dz_m * 1e6:+09.3f}um{suffix}.png"


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write JSON to ``path`` by a synced temporary file and a rename (never half-written)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


# ------------------------------------------------------------------------ dataset.json
def write_index(
    root: str | Path, stacks: Iterable[str], created_by: str, args: dict | None = None
) -> dict:
    """Write ``root/dataset.json`` listing ``stacks``; returns what was written."""
    head = {
        "format": FORMAT,
        "version": VERSION,
        "stacks": list(stacks),
        "created_by": created_by,
        "args": dict(args or {}),
    }
    atomic_write_json(Path(root) / INDEX_FILE, head)
    return head


def read_index(root: str | Path) -> dict:
    """``root/dataset.json``, checked to be this format and version.

    Raises:
        ValueError: missing, unreadable, or another format or version.
    """
    index = Path(root) / INDEX_FILE
    if not index.is_file():
        raise ValueError(f"{Path(root)} has no {INDEX_FILE}; is it a deepaf focal-stack dataset?")
    head = _load_json(index)
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        got = head.get("format") if isinstance(head, dict) else type(head).__name__
        raise ValueError(f"{index}: format is {got!r}, not {FORMAT!r}")
    if head.get("version") != VERSION:
        raise ValueError(f"{index}: version {head.get('version')!r} is not {VERSION}")
    return head


def add_to_index(root: str | Path, name: str, created_by: str) -> None:
    """List stack ``name`` in ``root/dataset.json`` (created when missing).

    Raises:
        ValueError: the folder holds another format's dataset.json.
    """
    root = Path(root)
    if (root / INDEX_FILE).exists():
        head = read_index(root)
        stacks = list(head.get("stacks", []))
        if name not in stacks:
            stacks.append(name)
        write_index(root, stacks, head.get("created_by", created_by), head.get("args"))
    else:
        write_index(root, [name], created_by)


def remove_from_index(root: str | Path, name: str) -> None:
    """Drop stack ``name`` from ``root/dataset.json`` (nothing when there is none)."""
    root = Path(root)
    if not (root / INDEX_FILE).is_file():
        return
    head = read_index(root)
    head["stacks"] = [s for s in head.get("stacks", []) if s != name]
    atomic_write_json(root / INDEX_FILE, head)


# ------------------------------------------------------------------------- meta.json
def write_stack_meta(stack_dir: str | Path, meta: dict) -> dict:
    """Write a stack's meta.json (format and version first), marking the stack complete.

    Raises:
        ValueError: a required key (:data:`META_REQUIRED`) is missing.
    """
    missing = [k for k in META_REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"stack meta.json lacks {', '.join(missing)}")
    doc = {"format": FORMAT, "version": VERSION, **meta}
    atomic_write_json(Path(stack_dir) / META_FILE, doc)
    return doc


def read_stack_meta(stack_dir: str | Path) -> dict | None:
    """A stack's meta.json, or None while the stack is incomplete (no meta.json yet).

    Raises:
        ValueError: unreadable, or another format.
    """
    path = Path(stack_dir) / META_FILE
    if not path.is_file():
        return None
    meta = _load_json(path)
    if not isinstance(meta, dict) or meta.get("format", FORMAT) != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path}: unexpected format {got!r}")
    return meta


# ---------------------------------------------------------------------------- images
def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """Write an 8-bit RGB slice as PNG (fast compression).

    Raises:
        OSError: it could not be written.
    """
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"could not write {path}")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3).

    Raises:
        ValueError: when the file is missing or not a readable image.
    """
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}: missing, truncated or not an image file")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------- reader
@dataclass(frozen=True)
class StackRecord:
    """One stack as read back: its folder and metadata."""

    path: Path
    meta: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def files(self) -> list[Path]:
        return [self.path / e["file"] for e in self.meta["images"]]

    @property
    def labels_m(self) -> np.ndarray:
        """Training labels best_focus_z_m - z_m, one per image."""
        return np.array([self.meta["best_focus_z_m"] - e["z_m"] for e in self.meta["images"]])

    def load_images(self) -> list[np.ndarray]:
        """The stack's images as RGB uint8 arrays."""
        return [read_image(f) for f in self.files]


def read_dataset(path: str | Path, complete_only: bool = True) -> list[StackRecord]:
    """Read a dataset's index and the meta.json of every complete stack, in index order.

    Args:
        path: The dataset folder.
        complete_only: Skip stacks without meta.json (being written); False: refuse them.

    Raises:
        ValueError: not a deepaf focal-stack dataset (or another version), an unreadable
            meta.json, or (``complete_only=False``) an incomplete stack.
    """
    root = Path(path)
    out = []
    for name in read_index(root).get("stacks", []):
        meta = read_stack_meta(root / name)
        if meta is None:
            if complete_only:
                continue
            raise ValueError(f"stack {name} is incomplete; re-run the writer to finish it")
        out.append(StackRecord(root / name, meta))
    return out
