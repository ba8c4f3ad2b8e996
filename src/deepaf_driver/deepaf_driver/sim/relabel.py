"""Move a simulated dataset's labels to the current best-focus definition, in place.

A stack written under an older definition (`best_focus_version` missing or below
:data:`~.microscope.BEST_FOCUS_VERSION`) gets the best focus its own virtual microscope
gives now (rebuilt from the dataset's arguments and the stack's index, so exactly the
microscope that rendered it); its images are not re-rendered. The images are renamed to
their new dz: new names are hard-linked first, then `meta.json` is replaced atomically,
then the old names are removed, so an interrupted run leaves every stack readable, and a
re-run finishes it. The previous label is kept as `best_focus_z_m_v<version>`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..dataset_format import META_FILE, dz_file_name, read_index, read_stack_meta, write_stack_meta
from .dataset import planned_scope, spec_from_args
from .microscope import BEST_FOCUS_VERSION


@dataclass(frozen=True)
class Relabelled:
    """One stack: its name and how far its best focus moved [m] (0 when already current)."""

    name: str
    shift_m: float


def relabel_stack(root: str | Path, args: dict, name: str) -> Relabelled:
    """Relabel one stack of the dataset at `root` written with index `args`."""
    sdir = Path(root) / name
    meta = read_stack_meta(sdir)
    if meta is None:
        raise ValueError(f"{sdir}: no readable {META_FILE}; re-run `deepaf sim dataset`")
    old_version = int(meta.get("best_focus_version", 1))
    if old_version >= BEST_FOCUS_VERSION:
        return Relabelled(name, 0.0)
    spec = spec_from_args(args)
    scope, _, _ = planned_scope(spec, int(name.rsplit("_", 1)[1]))
    old = float(meta["best_focus_z_m"])
    new = float(scope.best_focus_z(float(meta["x_m"]), float(meta["y_m"])))
    entries, seen, stale = [], {}, []
    for e in meta["images"]:
        dz = round((float(e["z_m"]) - new) * 1e9) / 1e9
        k = seen[dz] = seen.get(dz, -1) + 1
        fname = dz_file_name(dz, k)
        if fname != e["file"]:
            target = sdir / fname
            if target.exists():
                target.unlink()  # a link left by an interrupted run
            os.link(sdir / e["file"], target)
            stale.append(sdir / e["file"])
        entries.append({**e, "file": fname})
    keep = {e["file"] for e in entries}
    write_stack_meta(
        sdir,
        {
            **meta,
            f"best_focus_z_m_v{old_version}": old,
            "best_focus_z_m": new,
            "best_focus_version": BEST_FOCUS_VERSION,
            "images": entries,
        },
    )
    for path in stale:
        if path.name not in keep:
            path.unlink(missing_ok=True)
    return Relabelled(name, new - old)


def relabel_dataset(
    root: str | Path,
    workers: int = 2,
    on_stack: Callable[[Relabelled], None] | None = None,
) -> list[Relabelled]:
    """Relabel every stack of a `deepaf sim dataset` directory (see the module docstring).

    Raises:
        ValueError: not a dataset written by `deepaf sim dataset` (no arguments to rebuild
            its microscopes from), or a stack without readable metadata.
    """
    index = read_index(root)
    args = index.get("args")
    if not isinstance(args, dict) or "range_um" not in args:
        raise ValueError(
            f"{root}: its index has no `deepaf sim dataset` arguments, so its microscopes "
            "cannot be rebuilt (only simulated datasets can be relabelled)"
        )
    names = [n for n in index["stacks"] if (Path(root) / n / META_FILE).exists()]
    done: list[Relabelled] = []
    if workers <= 1 or len(names) <= 1:
        for n in names:
            done.append(relabel_stack(root, args, n))
            if on_stack:
                on_stack(done[-1])
        return done
    with ProcessPoolExecutor(max_workers=int(workers)) as ex:
        for r in ex.map(relabel_stack, [root] * len(names), [args] * len(names), names):
            done.append(r)
            if on_stack:
                on_stack(r)
    return done
