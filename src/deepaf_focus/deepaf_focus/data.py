"""Focal-stack datasets: readers, tissue filtering, leak-free splits and the paper's augmentations.

Two on-disk layouts are read:

* ``deepaf-focal-stack`` (what ``./deepaf sim dataset``, live acquisition and ``deepaf bag
  to-dataset`` write), read through its one definition, :mod:`deepaf_driver.dataset_format`::

      DIR/dataset.json            {"format": "deepaf-focal-stack", "version": 1, "stacks": [...]}
      DIR/stack_00000/meta.json   {"profile", "pixel_size_m", "protocol", "slide",
                                   "best_focus_z_m", "images": [{"file", "z_m"}, ...], ...}
      DIR/stack_00000/z_-0010.000um.png

* the public *Incoherent* dataset (Jiang et al., Biomed. Opt. Express 2018) as used by the
  DeepAf paper: image files anywhere below ``DIR`` whose names carry the defocus in
  nanometres (``Seg12_defocus-1500.jpg``); folders named ``*sameProtocol*`` /
  ``*diffProtocol*`` mark the two test splits.

Labels are always ``best_focus_z - z`` in micrometres: the signed move that brings the image
into focus. Splits are made by slide (or stack, or protocol), never by patch, because
patches of one stack are nearly identical and would leak between train and validation.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from deepaf_driver.dataset_format import read_dataset as read_stacks
from deepaf_driver.dataset_format import read_image, read_index

from .tissue import DEFAULT as TISSUE_DEFAULT
from .tissue import TissueParams, tissue_mask

__all__ = [
    "AugmentConfig",
    "FocusRecord",
    "augment_batch",
    "load_patches",
    "read_dataset",
    "read_focal_stack_dataset",
    "read_image",
    "read_incoherent_dataset",
    "split_records",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_DEFOCUS_RE = re.compile(r"defocus[_\s=-]*?(?P<v>[-+]?\d+(?:\.\d+)?)", re.IGNORECASE)
_NM_RE = re.compile(r"(?P<v>[-+]?\d+(?:\.\d+)?)\s*nm", re.IGNORECASE)


@dataclass
class FocusRecord:
    """One image with its label and the groups it belongs to."""

    path: Path
    label_um: float
    stack: str
    slide: str
    protocol: str
    profile: str = "20x"
    split: str | None = None
    z_m: float | None = None
    best_focus_z_m: float | None = None
    pixel_size_m: float | None = None
    extra: dict = field(default_factory=dict)


def _split_mark(dataset: dict) -> str | None:
    """Split name a dataset marks for itself (explicit ``split`` or random protocols)."""
    if dataset.get("split"):
        return str(dataset["split"])
    protocols = str((dataset.get("args") or {}).get("protocols", ""))
    if protocols.strip().lower() == "random":
        return "held-out protocol"
    return None


def read_focal_stack_dataset(root: str | Path) -> list[FocusRecord]:
    """Read a ``deepaf-focal-stack`` dataset directory (its complete stacks: a stack without
    meta.json is still being written) as one record per image.

    Raises:
        ValueError: when ``root/dataset.json`` is missing, unreadable or of another format or
            version, a stack's ``meta.json`` is unreadable or of another format, or no
            stack is complete.
    """
    root = Path(root)
    mark = _split_mark(read_index(root))
    records: list[FocusRecord] = []
    for stack in read_stacks(root):
        name, meta = stack.name, stack.meta
        best = float(meta["best_focus_z_m"])
        slide = str(meta.get("slide") or f"{root.name}/{name}")
        for img in meta["images"]:
            z = float(img["z_m"])
            records.append(
                FocusRecord(
                    path=root / name / img["file"],
                    label_um=(best - z) * 1e6,
                    stack=f"{root.name}/{name}",
                    slide=slide,
                    protocol=str(meta.get("protocol", "unknown")),
                    profile=str(meta.get("profile", "20x")),
                    split=meta.get("split") or mark,
                    z_m=z,
                    best_focus_z_m=best,
                    pixel_size_m=meta.get("pixel_size_m"),
                )
            )
    if not records:
        raise ValueError(f"{root}: dataset lists no stacks/images")
    return records


def parse_incoherent_name(name: str) -> float:
    """Defocus in nanometres from an Incoherent-dataset file name.

    Raises:
        ValueError: when the name carries no defocus value.
    """
    stem = Path(name).stem
    m = _DEFOCUS_RE.search(stem) or _NM_RE.search(stem)
    if m is None:
        raise ValueError(f"no defocus value (nm) in file name {name!r}")
    return float(m.group("v"))


def read_incoherent_dataset(
    root: str | Path, profile: str = "20x", sign: float = 1.0
) -> list[FocusRecord]:
    """Read the Incoherent dataset layout (defocus in nm in each file name).

    Args:
        root: Directory searched recursively for images.
        profile: Microscope profile (the Incoherent dataset is 20x).
        sign: Multiplies the file's defocus to give ``best_focus_z - z``; use -1 if your
            copy stores ``z - best_focus_z``.

    Raises:
        ValueError: when no image with a defocus value is found.
    """
    root = Path(root)
    records = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            nm = parse_incoherent_name(path.name)
        except ValueError:
            continue
        rel = path.relative_to(root)
        parts = "/".join(rel.parts[:-1]).lower()
        split = None
        if "sameprotocol" in parts.replace("_", ""):
            split = "same protocol"
        elif "diffprotocol" in parts.replace("_", ""):
            split = "held-out protocol"
        seg = _DEFOCUS_RE.sub("", path.stem).strip("_- ") or path.parent.name
        stack = "/".join([*rel.parts[:-1], seg])
        records.append(
            FocusRecord(
                path=path,
                label_um=sign * nm / 1000.0,
                stack=stack,
                slide=stack,
                protocol=split or "incoherent",
                profile=profile,
                split=split,
            )
        )
    if not records:
        raise ValueError(f"{root}: no images with a defocus value (nm) in their names")
    return records


def read_dataset(roots: str | Path | Sequence[str | Path]) -> list[FocusRecord]:
    """Read one or more dataset directories, detecting each one's layout.

    Raises:
        ValueError: when a directory does not exist or holds no usable images.
    """
    if isinstance(roots, str | Path):
        roots = [roots]
    records: list[FocusRecord] = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise ValueError(f"dataset directory {root} does not exist")
        if (root / "dataset.json").exists():
            records += read_focal_stack_dataset(root)
        else:
            records += read_incoherent_dataset(root)
    return records


def _group_key(rec: FocusRecord, by: str) -> str:
    if by == "stack":
        return rec.stack
    if by == "slide":
        return rec.slide
    if by == "protocol":
        return rec.protocol
    raise ValueError(f"split 'by' must be stack, slide or protocol, got {by!r}")


def split_records(
    records: Iterable[FocusRecord], val_fraction: float = 0.2, by: str = "slide", seed: int = 0
) -> tuple[list[FocusRecord], list[FocusRecord]]:
    """Split into train/validation by whole groups (slide, stack or protocol), never by patch.

    Group membership comes from a hash of (seed, group name), so the split is stable when
    records are added or reordered. At least one group goes to each side when possible.
    """
    records = list(records)
    keys = sorted({_group_key(r, by) for r in records})

    def score(k: str) -> float:
        h = hashlib.sha256(f"{seed}:{k}".encode()).hexdigest()
        return int(h[:12], 16) / 16**12

    ranked = sorted(keys, key=score)
    n_val = min(max(1, round(len(keys) * val_fraction)), len(keys) - 1) if len(keys) > 1 else 0
    val_keys = set(ranked[:n_val])
    train = [r for r in records if _group_key(r, by) not in val_keys]
    val = [r for r in records if _group_key(r, by) in val_keys]
    return train, val


def _center_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    if h < size or w < size:
        img = cv2.resize(img, (max(w, size), max(h, size)), interpolation=cv2.INTER_LINEAR)
        h, w = img.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return img[y : y + size, x : x + size]


def load_patches(
    records: Sequence[FocusRecord],
    size: int,
    label_range_um: float | None = None,
    tissue: TissueParams | None = TISSUE_DEFAULT,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load centre crops of every record into memory, dropping glass-only stacks.

    A stack is kept when the centre crop of its image nearest focus passes the tissue test
    (``tissue.min_patch_fraction``); all images of a stack share that decision.

    Returns:
        ``(images uint8 (N, size, size, 3), labels_um float32 (N,), stack names)``.
    """
    by_stack: dict[str, list[FocusRecord]] = {}
    for r in records:
        if label_range_um is None or abs(r.label_um) <= label_range_um:
            by_stack.setdefault(r.stack, []).append(r)
    images, labels, stacks = [], [], []
    for name, recs in by_stack.items():
        if tissue is not None:
            nearest = min(recs, key=lambda r: abs(r.label_um))
            crop = _center_crop(read_image(nearest.path), size)
            if tissue_mask(crop, tissue).mean() < tissue.min_patch_fraction:
                continue
        for r in recs:
            images.append(_center_crop(read_image(r.path), size))
            labels.append(r.label_um)
            stacks.append(name)
    if not images:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.float32), []
    return np.stack(images), np.asarray(labels, np.float32), stacks


# --------------------------------------------------------------------------- augmentation


@dataclass
class AugmentConfig:
    """The paper's augmentations (probabilities and strengths), plus dihedral flips.

    Gaussian blur and perspective change the apparent defocus, so keep them weak.
    ``p_channel_fade`` scales one colour channel's contrast by ``channel_fade`` (stains that
    barely absorb in one band); off by default.
    """

    flip: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.03
    p_autocontrast: float = 0.2
    p_blur: float = 0.1
    blur_sigma: tuple[float, float] = (0.1, 0.5)
    p_perspective: float = 0.2
    perspective: float = 0.1
    p_erase: float = 0.2
    erase_area: tuple[float, float] = (0.02, 0.1)
    noise_std: float = 0.01
    p_channel_fade: float = 0.0
    channel_fade: tuple[float, float] = (0.02, 0.5)


def _grey(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _hue_rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``angle`` (radians, per image) in YIQ space."""
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    from_yiq = torch.linalg.inv(to_yiq)
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(x.shape[0], 3, 3, dtype=x.dtype, device=x.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = from_yiq @ rot @ to_yiq
    return torch.einsum("nij,njhw->nihw", m, x)


def _perspective_grid(
    n: int, h: int, w: int, d: float, gen: torch.Generator, device
) -> torch.Tensor:
    """Sampling grid of a random homography moving each corner by up to ``d`` (fraction)."""
    src = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    grids = []
    for _ in range(n):
        dst = src + (torch.rand(4, 2, generator=gen) * 2 - 1) * d * 2
        a = []
        b = []
        for (x, y), (u, v) in zip(dst.tolist(), src.tolist(), strict=True):
            a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
            a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
            b += [u, v]
        coef = torch.linalg.solve(torch.tensor(a), torch.tensor(b))
        hm = torch.cat([coef, torch.ones(1)]).view(3, 3)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        pts = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ hm.T
        grids.append(pts[..., :2] / pts[..., 2:].clamp(min=1e-6))
    return torch.stack(grids).to(device)


def augment_batch(
    x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator, crop: int | None = None
) -> torch.Tensor:
    """Augment a float batch (N, 3, H, W) in [0, 1] with torch ops; returns the same range.

    Args:
        x: Images.
        cfg: Strengths and probabilities.
        gen: CPU random generator (seeded by the trainer, so runs are reproducible).
        crop: Random crop to this size first (translation jitter).
    """
    n, _, h, w = x.shape

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(x.device)

    if crop is not None and (h > crop or w > crop):
        ys = torch.randint(0, h - crop + 1, (n,), generator=gen).tolist()
        xs = torch.randint(0, w - crop + 1, (n,), generator=gen).tolist()
        pairs = enumerate(zip(ys, xs, strict=True))
        x = torch.stack([x[i, :, y : y + crop, xx : xx + crop] for i, (y, xx) in pairs])
        n, _, h, w = x.shape
    if cfg.flip:
        k = int(torch.randint(0, 4, (1,), generator=gen))
        x = torch.rot90(x, k, dims=(2, 3)) if h == w else x
        if rand(1).item() < 0.5:
            x = x.flip(3)
    if cfg.p_perspective > 0 and cfg.perspective > 0:
        sel = (rand(n) < cfg.p_perspective).nonzero().flatten()
        if len(sel):
            grid = _perspective_grid(len(sel), h, w, cfg.perspective, gen, x.device)
            warped = F.grid_sample(
                x[sel], grid, mode="bilinear", padding_mode="reflection", align_corners=True
            )
            x = x.clone()
            x[sel] = warped
    # colour jitter: brightness, contrast, saturation, hue (per image, random strengths)
    if cfg.brightness > 0:
        x = x * (1 + (rand(n, 1, 1, 1) * 2 - 1) * cfg.brightness)
    if cfg.contrast > 0:
        f = 1 + (rand(n, 1, 1, 1) * 2 - 1) * cfg.contrast
        x = (x - _grey(x).mean(dim=(2, 3), keepdim=True)) * f + _grey(x).mean(
            dim=(2, 3), keepdim=True
        )
    if cfg.saturation > 0:
        f = 1 + (rand(n, 1, 1, 1) * 2 - 1) * cfg.saturation
        g = _grey(x)
        x = (x - g) * f + g
    if cfg.hue > 0:
        x = _hue_rotate(x, (rand(n) * 2 - 1) * cfg.hue * 2 * math.pi)
    x = x.clamp(0, 1)
    if cfg.p_autocontrast > 0:
        sel = rand(n, 1, 1, 1) < cfg.p_autocontrast
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        stretched = (x - lo) / (hi - lo).clamp(min=1e-3)
        x = torch.where(sel, stretched, x)
    if cfg.p_blur > 0:
        sel = (rand(n) < cfg.p_blur).nonzero().flatten()
        for i in sel.tolist():
            sigma = cfg.blur_sigma[0] + rand(1).item() * (cfg.blur_sigma[1] - cfg.blur_sigma[0])
            r = max(1, math.ceil(3 * sigma))
            t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
            k = torch.exp(-(t**2) / (2 * sigma**2))
            k = k / k.sum()
            xi = F.pad(x[i : i + 1], (r, r, r, r), mode="reflect")
            xi = F.conv2d(xi, k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
            x[i : i + 1] = F.conv2d(xi, k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
    if cfg.p_channel_fade > 0:
        # a stain that barely absorbs in one colour band: that channel keeps little contrast
        sel = rand(n) < cfg.p_channel_fade
        ch = torch.randint(0, 3, (n,), generator=gen).to(x.device)
        lo, hi = cfg.channel_fade
        f = lo + rand(n) * (hi - lo)
        scale = torch.ones(n, 3, 1, 1, dtype=x.dtype, device=x.device)
        idx = sel.nonzero().flatten()
        scale[idx, ch[idx], 0, 0] = f[idx]
        mean = x.mean(dim=(2, 3), keepdim=True)
        x = (x - mean) * scale + mean
    if cfg.noise_std > 0:
        x = x + torch.randn(x.shape, generator=gen).to(x.device) * cfg.noise_std * rand(n, 1, 1, 1)
    if cfg.p_erase > 0:
        sel = (rand(n) < cfg.p_erase).nonzero().flatten()
        for i in sel.tolist():
            area = (
                (cfg.erase_area[0] + rand(1).item() * (cfg.erase_area[1] - cfg.erase_area[0]))
                * h
                * w
            )
            ar = math.exp((rand(1).item() * 2 - 1) * math.log(3))
            eh = min(h, max(1, round(math.sqrt(area * ar))))
            ew = min(w, max(1, round(math.sqrt(area / ar))))
            y0 = int(rand(1).item() * (h - eh + 1))
            x0 = int(rand(1).item() * (w - ew + 1))
            x[i, :, y0 : y0 + eh, x0 : x0 + ew] = x[i].mean(dim=(1, 2), keepdim=True)
    return x.clamp(0, 1)
