"""Focal-stack datasets rendered on the virtual microscope (``./deepaf sim dataset``).

The files are the ``deepaf-focal-stack`` format, read and written only through
:mod:`deepaf_driver.dataset_format` (its names are re-exported here: ``read_dataset``,
``StackRecord``, ``FORMAT``, ...). A stack counts as written only when its meta.json
exists; meta.json is written last by atomic rename, so an interrupted run leaves finished
stacks intact and a re-run with the same arguments skips them and redoes partial ones.
Stacks are independent: each draws its own slide seed, tissue position and protocol from
(seed, stack index), so the result does not depend on the number of workers or on
interruptions.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dataset_format import (  # noqa: F401  (some names only re-exported)
    FORMAT,
    INDEX_FILE,
    META_FILE,
    VERSION,
    StackRecord,
    dz_file_name,
    read_dataset,
    stack_name,
    write_image,
    write_index,
    write_stack_meta,
)
from .artefacts import get_slide_spec
from .microscope import BEST_FOCUS_VERSION
from .optics import get_profile
from .protocols import Protocol, get_protocol, random_protocol

MICROSCOPES = ("profile", "random", "foreign")


class DatasetInterrupted(RuntimeError):
    """Raised when a dataset run stops early; finished stacks stay valid."""


@dataclass(frozen=True)
class DatasetSpec:
    """Arguments of one dataset run (SI units).

    Attributes:
        stacks: number of stacks.
        protocols: preset names to draw from, or "random" for freshly sampled protocols.
        range_m: half-width R of the defocus range (dz from -R to +R).
        step_m: defocus step S.
        patch: patch side in pixels.
        seed: master seed.
        profile: optics profile name.
        noise: camera noise on.
        sampling: "preview" (default: the binned 1280x720 preview stream's pixel size, which
            is what the focus server predicts from) or "capture" (full-resolution pixels).
        microscope: "profile" (the profile's optics and the default camera, as deployed),
            "random" (domain randomisation: optics, illumination, camera and stain drawn per
            stack from :mod:`.randomize`'s documented ranges; `protocols` is then ignored) or
            "foreign" (a fixed microscope outside those ranges, for transfer tests).
        slide: the slides' artefact spec (:mod:`.artefacts`): "plain" (default: the slides
            the shipped models were trained on) or "realistic".
    """

    stacks: int
    protocols: tuple[str, ...] | str
    range_m: float
    step_m: float
    patch: int
    seed: int = 0
    profile: str = "20x"
    noise: bool = True
    sampling: str = "preview"
    microscope: str = "profile"
    slide: str = "plain"

    def validate(self) -> None:
        """Raise ``ValueError`` with what to change for any bad argument."""
        if int(self.stacks) < 1:
            raise ValueError(f"--stacks must be >= 1, got {self.stacks}")
        if not self.range_m > 0:
            raise ValueError(f"--range-um must be positive, got {self.range_m * 1e6:g}")
        if not self.step_m > 0:
            raise ValueError(f"--step-um must be positive, got {self.step_m * 1e6:g}")
        if self.step_m > 2 * self.range_m:
            raise ValueError("--step-um must not exceed twice --range-um")
        if 2 * self.range_m / self.step_m > 4000:
            raise ValueError("more than 4000 images per stack; increase --step-um")
        if int(self.patch) <= 0 or int(self.patch) > 4096:
            raise ValueError(f"--patch must be in 1..4096 pixels, got {self.patch}")
        get_profile(self.profile)
        if self.sampling not in ("preview", "capture"):
            raise ValueError(f"--sampling must be preview or capture, got {self.sampling!r}")
        if self.microscope not in MICROSCOPES:
            raise ValueError(f"--microscope must be one of {MICROSCOPES}, got {self.microscope!r}")
        get_slide_spec(self.slide)
        if self.protocols != "random":
            if not self.protocols:
                raise ValueError("--protocols is empty; give preset names or 'random'")
            for p in self.protocols:
                get_protocol(p)

    def to_args(self) -> dict:
        return {
            "stacks": int(self.stacks),
            "protocols": self.protocols
            if isinstance(self.protocols, str)
            else list(self.protocols),
            "range_um": self.range_m * 1e6,
            "step_um": self.step_m * 1e6,
            "patch": int(self.patch),
            "seed": int(self.seed),
            "profile": self.profile,
            "noise": bool(self.noise),
            "sampling": self.sampling,
            **({"microscope": self.microscope} if self.microscope != "profile" else {}),
            **({"slide": self.slide} if self.slide != "plain" else {}),
        }


def defocus_grid(range_m: float, step_m: float) -> np.ndarray:
    """dz values from -R to +R (inclusive where the step divides the range), 1 nm rounded."""
    n = int(np.floor(2 * range_m / step_m + 1e-6))
    return np.round((-range_m + step_m * np.arange(n + 1)) * 1e9) / 1e9


def stack_plan(spec: DatasetSpec, i: int) -> tuple[int, Protocol, np.random.Generator]:
    """(slide seed, protocol, rng) of stack i; a pure function of (seed, i)."""
    rng = np.random.default_rng([int(spec.seed), int(i), 0xDA7A])
    slide_seed = int(rng.integers(0, 2**31 - 1))
    if spec.protocols == "random":
        protocol = random_protocol(np.random.default_rng([int(spec.seed), int(i), 0x9207]))
        protocol = Protocol.from_dict(
            {**protocol.to_dict(), "name": f"random_s{spec.seed}_{i:05d}"}
        )
    else:
        protocol = get_protocol(spec.protocols[int(rng.integers(len(spec.protocols)))])
    return slide_seed, protocol, rng


def planned_scope(spec: DatasetSpec, i: int) -> tuple:
    """The virtual microscope stack i of ``spec`` is rendered with: (scope, the drawn
    microscope or None, the stack's rng positioned after the scope's draws)."""
    from .microscope import VirtualMicroscope

    slide_seed, protocol, rng = stack_plan(spec, i)
    drawn = None
    if spec.microscope != "profile":
        from . import randomize

        profile = get_profile(spec.profile)
        if spec.microscope == "foreign":
            drawn = randomize.foreign_microscope(profile)
        else:
            mrng = np.random.default_rng([int(spec.seed), int(i), 0x0D12])
            drawn = randomize.draw_microscope(profile, mrng, f"random_s{spec.seed}_{i:05d}")
        protocol = drawn.protocol
    scope = VirtualMicroscope(
        drawn.optics if drawn else spec.profile,
        protocol,
        slide_seed=slide_seed,
        camera=drawn.camera if drawn else None,
        noise_seed=int(rng.integers(1 << 31)),
        slide=spec.slide,
    )
    return scope, drawn, rng


def spec_from_args(args: dict) -> DatasetSpec:
    """The :class:`DatasetSpec` a dataset index's ``args`` (:meth:`DatasetSpec.to_args`)
    was written from."""
    protocols = args["protocols"]
    return DatasetSpec(
        stacks=int(args["stacks"]),
        protocols=protocols if isinstance(protocols, str) else tuple(protocols),
        range_m=float(args["range_um"]) * 1e-6,
        step_m=float(args["step_um"]) * 1e-6,
        patch=int(args["patch"]),
        seed=int(args.get("seed", 0)),
        profile=args.get("profile", "20x"),
        noise=bool(args.get("noise", True)),
        sampling=args.get("sampling", "preview"),
        microscope=args.get("microscope", "profile"),
        slide=args.get("slide", "plain"),
    )


def render_planned_stack(spec: DatasetSpec, i: int, dzs: np.ndarray | None = None) -> tuple:
    """Render stack i of ``spec`` at defocus ``dzs`` (default: the spec's grid).

    Returns:
        (images, zs, meta): 8-bit RGB images, absolute z of each [m], and the stack's
        metadata without its image list.
    """
    from . import randomize

    scope, drawn, rng = planned_scope(spec, i)
    protocol, slide_seed = scope.protocol, scope.slide.seed
    x, y = scope.random_tissue_position(rng)
    zbest = float(scope.best_focus_z(x, y))
    if dzs is None:
        dzs = defocus_grid(spec.range_m, spec.step_m)
    zs = [zbest + float(d) for d in dzs]
    illum = None
    if drawn is not None:
        side = int(spec.patch)
        fw, fh = scope.camera.preview_px if spec.sampling == "preview" else scope.camera.sensor_px
        ox, oy = rng.uniform(0, max(fw - side, 1)), rng.uniform(0, max(fh - side, 1))
        illum = randomize.illumination_field((side, side), drawn.effects, (fw, fh), (ox, oy))
    images = scope.render_stack(
        x,
        y,
        zs,
        size=int(spec.patch),
        noise=spec.noise,
        sampling=spec.sampling,
        illumination=illum,
    )
    if drawn is not None:
        erng = np.random.default_rng([int(spec.seed), int(i), 0xEFF])
        images = [randomize.apply_effects(img, drawn.effects, erng) for img in images]
    meta = {
        "profile": scope.profile.name,
        "pixel_size_m": (
            scope.preview_pixel_size_m if spec.sampling == "preview" else scope.pixel_size_m
        ),
        "sampling": spec.sampling,
        "protocol": protocol.name,
        "protocol_params": protocol.to_dict(),
        "slide": f"sim:seed={slide_seed}" + ("" if spec.slide == "plain" else f":{spec.slide}"),
        "slide_seed": slide_seed,
        "x_m": x,
        "y_m": y,
        "best_focus_z_m": zbest,
        "best_focus_version": BEST_FOCUS_VERSION,
    }

    if drawn is not None:
        meta["microscope"] = {"kind": spec.microscope, **drawn.to_dict()}
    return images, zs, meta


def write_stack(out_dir: str | Path, spec: DatasetSpec, i: int) -> str:
    """Render and write stack i (images first, meta.json last). Returns its name."""
    name = stack_name(i)
    sdir = Path(out_dir) / name
    if (sdir / META_FILE).exists():
        return name
    sdir.mkdir(parents=True, exist_ok=True)
    dzs = defocus_grid(spec.range_m, spec.step_m)
    images, zs, meta = render_planned_stack(spec, i, dzs)
    entries = []
    for dz, z, img in zip(dzs, zs, images, strict=True):
        fname = dz_file_name(float(dz))
        write_image(sdir / fname, img)
        entries.append({"file": fname, "z_m": z})
    write_stack_meta(sdir, {**meta, "images": entries})
    return name


def _worker_init() -> None:
    from . import microscope

    microscope.set_fft_workers(1)


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write_test_", dir=out)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ValueError(
            f"output directory {str(out)!r} is not writable ({e.strerror}); choose another --out"
        ) from None


def write_dataset(
    out_dir: str | Path,
    spec: DatasetSpec,
    workers: int = 2,
    progress: bool = True,
    on_stack: Callable[[str], None] | None = None,
) -> Path:
    """Write (or resume) a focal-stack dataset.

    Args:
        out_dir: output directory (created if needed).
        spec: what to write.
        workers: processes (1 = in this process).
        progress: show a progress bar on stderr.
        on_stack: called with each finished stack name (in this process).

    Returns:
        The dataset directory.

    Raises:
        ValueError: bad arguments, unwritable directory, or an existing dataset there
            written with different arguments.
        DatasetInterrupted: the run was interrupted (Ctrl-C); finished stacks are kept,
            re-run the same command to resume.
    """
    spec.validate()
    if int(workers) < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a directory")
    _check_writable(out)
    names = [stack_name(i) for i in range(int(spec.stacks))]
    args = spec.to_args()
    index = out / INDEX_FILE
    if index.exists():
        try:
            old = json.loads(index.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(
                f"{index} is unreadable ({e}); move it away or use a new --out"
            ) from None
        if old.get("args") != args:
            raise ValueError(
                f"{out} already holds a dataset written with other arguments "
                f"({old.get('args')}); use a new --out, or the same arguments to resume"
            )
    else:
        write_index(out, names, "deepaf sim dataset", args)
    todo = [i for i, n in enumerate(names) if not (out / n / META_FILE).exists()]
    done = len(names) - len(todo)
    bar = _Progress(len(names), done, enabled=progress)
    try:
        if workers == 1 or len(todo) <= 1:
            for i in todo:
                n = write_stack(out, spec, i)
                bar.advance()
                if on_stack:
                    on_stack(n)
        else:
            with ProcessPoolExecutor(max_workers=int(workers), initializer=_worker_init) as ex:
                futures = [ex.submit(write_stack, out, spec, i) for i in todo]
                try:
                    for f in as_completed(futures):
                        n = f.result()
                        bar.advance()
                        if on_stack:
                            on_stack(n)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    except (KeyboardInterrupt, BrokenProcessPool):
        finished = sum((out / n / META_FILE).exists() for n in names)
        raise DatasetInterrupted(
            f"interrupted: {finished} of {len(names)} stacks are complete in {out}; "
            "re-run the same command to resume (partial stacks are redone)"
        ) from None
    finally:
        bar.close()
    return out


class _Progress:
    """A rich progress bar on stderr (silent when disabled or rich is missing)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self._p = None
        if not enabled:
            return
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
        except ImportError:  # pragma: no cover
            return
        self._p = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._p.start()
        self._task = self._p.add_task("focal stacks", total=total, completed=done)

    def advance(self) -> None:
        if self._p is not None:
            self._p.advance(self._task)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
