"""``deepaf sim``: list protocols, render frames, write focal-stack datasets, montages.

Units on the command line are um and mm (as the flag names say); the library is SI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .artefacts import SLIDE_SPECS
from .optics import OPTICS_PROFILES
from .protocols import PROTOCOL_PRESETS

_SLIDE_HELP = (
    "the slide's artefacts: realistic (tilt 5-7 um/mm, waviness, thickness variation, "
    "folds, air bubbles, dust and debris above the section; what scans see) or plain (the "
    "clean slide the shipped models were trained on)"
)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 224x224, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def _protocol_list(text: str) -> tuple[str, ...] | str:
    if text.strip() == "random":
        return "random"
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in names if p not in PROTOCOL_PRESETS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown protocol(s) {', '.join(bad) or text!r}; valid: "
            f"{', '.join(PROTOCOL_PRESETS)}, or 'random'"
        )
    return names


def _writable_file(path: str) -> Path:
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"directory {str(parent)!r} of --out does not exist; create it first")
    return p


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="deepaf sim", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    profiles = list(OPTICS_PROFILES)

    sub.add_parser(
        "protocols",
        help="list the protocol presets, one name a line",
        description="List the protocol presets, one name a line.",
    )

    r = sub.add_parser(
        "render",
        help="render one frame at a defocus from best focus",
        description="Render one frame D um from best focus at (X, Y) mm.",
    )
    r.add_argument("--protocol", default="lab_a_standard", help="preset name (see protocols)")
    r.add_argument(
        "--x-mm", type=float, default=None, help="field centre x (mm); default: a tissue position"
    )
    r.add_argument("--y-mm", type=float, default=None, help="field centre y (mm)")
    r.add_argument("--dz-um", type=float, default=0.0, help="defocus from best focus (um)")
    r.add_argument(
        "--size",
        type=_size,
        default=(1280, 720),
        help="WxH pixels (default "
        "1280x720); 1280x720 renders the preview stream, 4056x3040 the capture, "
        "anything else full-resolution sampling",
    )
    r.add_argument("--profile", choices=profiles, default="20x")
    r.add_argument("--seed", type=int, default=0, help="slide seed")
    r.add_argument(
        "--slide",
        choices=list(SLIDE_SPECS),
        default="realistic",
        help=_SLIDE_HELP + "; default realistic",
    )
    r.add_argument("--no-noise", action="store_true", help="turn camera noise off")
    r.add_argument("--out", required=True, help="output PNG")

    d = sub.add_parser(
        "dataset",
        help="write a focal-stack dataset",
        description="Write (or resume) a focal-stack dataset; see docs/dataset-format.md.",
    )
    d.add_argument("--out", required=True, help="output directory")
    d.add_argument("--stacks", type=int, required=True, help="number of stacks")
    d.add_argument(
        "--protocols",
        type=_protocol_list,
        default=("lab_a_standard",),
        help="comma-separated presets, or 'random' (new protocols per seed)",
    )
    d.add_argument("--range-um", type=float, default=10.0, help="dz from -R to +R (um)")
    d.add_argument("--step-um", type=float, default=0.5, help="dz step (um)")
    d.add_argument("--patch", type=int, default=224, help="patch side (pixels)")
    d.add_argument("--seed", type=int, default=0, help="master seed")
    d.add_argument("--profile", choices=profiles, default="20x")
    d.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    d.add_argument("--no-noise", action="store_true", help="turn camera noise off")
    d.add_argument(
        "--sampling",
        choices=("preview", "capture"),
        default="preview",
        help="pixel size of the patches: the preview stream's (default; what the "
        "focus server sees) or full resolution",
    )
    d.add_argument(
        "--microscope",
        choices=("profile", "random", "foreign"),
        default="profile",
        help="profile: the profile's optics and default camera (default); random: domain "
        "randomisation of optics, illumination, camera and stain per stack (ranges in "
        "deepaf_driver/sim/randomize.py; --protocols is ignored); foreign: one fixed "
        "microscope outside those ranges, for transfer and calibration tests",
    )
    d.add_argument(
        "--slide", choices=list(SLIDE_SPECS), default="plain", help=_SLIDE_HELP + "; default plain"
    )
    d.add_argument("--no-progress", action="store_true", help="no progress bar")

    rl = sub.add_parser(
        "relabel",
        help="move simulated datasets' labels to the current best-focus definition",
        description="Move each stack's best focus (its label) to the current definition "
        "(deepaf_driver.sim.microscope.focus_offset_m, BEST_FOCUS_VERSION), in place and "
        "resumably; images are renamed to their new dz, not re-rendered. Stacks already "
        "current are skipped.",
    )
    rl.add_argument("data", nargs="+", help="dataset directories written by `deepaf sim dataset`")
    rl.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    rl.add_argument("--no-progress", action="store_true", help="no progress bar")

    m = sub.add_parser(
        "montage",
        help="save a through-focus montage of three protocols",
        description="Save a through-focus montage of three protocols.",
    )
    m.add_argument("--out", required=True, help="output PNG")
    m.add_argument("--profile", choices=profiles, default="20x")
    m.add_argument("--seed", type=int, default=0, help="slide seed")
    m.add_argument(
        "--microscope",
        choices=("profile", "random", "foreign"),
        default="profile",
        help="profile: three lab presets (default); random: four domain-randomised "
        "microscopes; foreign: the foreign microscope",
    )
    m.add_argument(
        "--artefacts",
        action="store_true",
        help="instead: a fold, an air bubble and coverslip dust of a realistic slide, each "
        "at the tissue's best focus and away from it (the dust at its own height)",
    )
    return ap


def _render(a) -> int:
    from PIL import Image

    from .microscope import VirtualMicroscope

    out = _writable_file(a.out)
    scope = VirtualMicroscope(
        a.profile, a.protocol, slide_seed=a.seed, noise_seed=a.seed, slide=a.slide
    )
    if a.x_mm is None or a.y_mm is None:
        x, y = scope.random_tissue_position(np.random.default_rng(a.seed))
        x = x if a.x_mm is None else a.x_mm * 1e-3
        y = y if a.y_mm is None else a.y_mm * 1e-3
    else:
        x, y = a.x_mm * 1e-3, a.y_mm * 1e-3
    scope.stage.limits.check(x, y)
    z = float(scope.best_focus_z(x, y)) + a.dz_um * 1e-6
    noise = not a.no_noise
    if tuple(a.size) == scope.camera.preview_px:
        img = scope.preview(x, y, z, noise)
    elif tuple(a.size) == scope.camera.sensor_px:
        img = scope.capture(x, y, z, noise)
    else:
        img = scope.render(x, y, z, a.size, noise)
    Image.fromarray(img).save(out)
    print(
        f"{out}: {a.size[0]}x{a.size[1]} at x={x * 1e3:.4f} mm y={y * 1e3:.4f} mm "
        f"dz={a.dz_um:+.3f} um (z={z * 1e6:.3f} um)"
    )
    return 0


def _dataset(a) -> int:
    from .dataset import DatasetInterrupted, DatasetSpec, write_dataset

    spec = DatasetSpec(
        stacks=a.stacks,
        protocols=a.protocols,
        range_m=a.range_um * 1e-6,
        step_m=a.step_um * 1e-6,
        patch=a.patch,
        seed=a.seed,
        profile=a.profile,
        noise=not a.no_noise,
        sampling=a.sampling,
        microscope=a.microscope,
        slide=a.slide,
    )
    try:
        out = write_dataset(a.out, spec, workers=a.workers, progress=not a.no_progress)
    except DatasetInterrupted as e:
        print(f"deepaf sim dataset: {e}", file=sys.stderr)
        return 130
    print(f"{out}: {spec.stacks} stacks")
    return 0


def _relabel(a) -> int:
    import numpy as np

    from ..dataset_format import read_index
    from .dataset import _Progress
    from .relabel import relabel_dataset

    if a.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {a.workers}")
    for root in a.data:
        bar = _Progress(len(read_index(root)["stacks"]), 0, enabled=not a.no_progress)
        try:
            shifts = relabel_dataset(root, a.workers, on_stack=lambda r, bar=bar: bar.advance())
        finally:
            bar.close()
        moved = np.array([r.shift_m for r in shifts if r.shift_m != 0.0]) * 1e6
        if moved.size:
            print(
                f"{root}: {moved.size} of {len(shifts)} stacks relabelled; best focus moved "
                f"median {np.median(moved):+.3f} um, |max| {np.abs(moved).max():.3f} um"
            )
        else:
            print(f"{root}: all {len(shifts)} stacks already current")
    return 0


def montage(
    out: str | Path,
    profile: str = "20x",
    seed: int = 0,
    protocols=("lab_a_standard", "lab_b_pale_eosin", "other_lab"),
    dz_um=(-6, -3, -1, 0, 1, 3, 6),
    size: int = 320,
    microscope: str = "profile",
) -> Path:
    """Through-focus montage: one row per protocol (or per drawn microscope with
    ``microscope`` "random" / "foreign"), one column per dz (um, scaled for 4x)."""
    import cv2
    from PIL import Image

    from .dataset import DatasetSpec, render_planned_stack
    from .microscope import VirtualMicroscope

    out = _writable_file(str(out))
    scale = 1.0 if profile == "20x" else 10.0
    dzs = np.array([d * scale * 1e-6 for d in dz_um])
    rows = []
    if microscope != "profile":
        spec = DatasetSpec(
            1,
            "random",
            1e-5,
            1e-6,
            size,
            seed,
            profile,
            sampling="capture",
            microscope=microscope,
        )
        n = 4 if microscope == "random" else 1
        labels = []
        for i in range(n):
            imgs, _, meta = render_planned_stack(spec, i, dzs)
            rows.append(imgs)
            m = meta["microscope"]
            fx = m["effects"]
            tags = [k for k in ("bayer", "mono") if fx[k]] + (
                [f"jpeg{fx['jpeg_quality']}"] if fx["jpeg_quality"] else []
            )
            ca = m["optics"]["chromatic_offsets_m"]
            labels.append(
                f"{microscope} {i}: NA {m['optics']['na']:.2f} "
                f"CA {ca[0] * 1e6:+.1f}/{ca[2] * 1e6:+.1f} {' '.join(tags)}"
            )
    else:
        labels = list(protocols)
        for p in protocols:
            scope = VirtualMicroscope(profile, p, slide_seed=seed, noise_seed=seed)
            x, y = scope.random_tissue_position(np.random.default_rng(seed + 3))
            zb = float(scope.best_focus_z(x, y))
            rows.append(scope.render_stack(x, y, [zb + d for d in dzs], size))
    label_h, gap, left = 22, 4, 150 if microscope == "profile" else 230
    w = left + len(dz_um) * (size + gap)
    h = label_h + len(labels) * (size + gap)
    canvas = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for j, d in enumerate(dz_um):
        cv2.putText(
            canvas,
            f"dz {d * scale:+g} um",
            (left + j * (size + gap) + 6, 16),
            font,
            0.45,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    for i, (p, tiles) in enumerate(zip(labels, rows, strict=True)):
        y0 = label_h + i * (size + gap)
        cv2.putText(canvas, p, (4, y0 + size // 2), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        for j, t in enumerate(tiles):
            x0 = left + j * (size + gap)
            canvas[y0 : y0 + size, x0 : x0 + size] = t
    Image.fromarray(canvas).save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``deepaf sim``; returns the exit status."""
    a = build_parser().parse_args(argv)
    try:
        if a.cmd == "protocols":
            print("\n".join(PROTOCOL_PRESETS))
            return 0
        if a.cmd == "render":
            return _render(a)
        if a.cmd == "dataset":
            return _dataset(a)
        if a.cmd == "relabel":
            return _relabel(a)
        if a.cmd == "montage" and a.artefacts:
            from .artefact_montage import artefact_montage

            path = artefact_montage(_writable_file(a.out), a.seed)
            print(f"{path}: slide artefacts (fold and bubble at 20x, dust at 4x)")
            return 0
        if a.cmd == "montage":
            path = montage(a.out, a.profile, a.seed, microscope=a.microscope)
            print(f"{path}: through-focus montage ({a.profile})")
            return 0
    except ValueError as e:
        print(f"deepaf sim {a.cmd}: error: {e}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
