"""Scan report: per-tile focus decisions and scan totals, as ``report.json`` and a table.

``report.json`` top-level keys: ``tiles_total`` (fields visited), ``tiles_tissue``,
``tiles_skipped``, ``tiles_below_quality`` (captured tiles whose focus could not be
verified, ``focus_quality == "low"``), ``within_dof_pct``, ``sim_seconds``,
``wall_seconds``, then ``tiles_planned``, ``complete``, ``message``, ``depth_of_field_m``,
``focus_method`` and ``tiles`` (one object per field, :class:`TileRecord`). Non-finite
numbers (no simulator truth on hardware, no prediction) are written as ``null``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "FOCUS_QUALITY_LOW",
    "FOCUS_QUALITY_OK",
    "ScanReport",
    "TileRecord",
    "atomic_write_text",
    "completion_message",
    "json_safe",
]

FOCUS_QUALITY_OK = "ok"  # the focus of the tile was verified (deepaf_msgs/ScanTile)
FOCUS_QUALITY_LOW = "low"  # it could not be verified: the tile may be blurred


def json_safe(value: Any) -> Any:
    """Replace non-finite floats by ``None`` (JSON has no NaN), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically and durably (temporary file, fsync, rename).

    Raises:
        OSError: when the directory is not writable.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _field_value(name: str, kind: str, v: Any) -> Any:
    """A TileRecord field read back from JSON, checked against its type ("int", "float",
    "bool" or "str"; ``None`` is NaN for floats).

    Raises:
        ValueError: the value does not have that type.
    """
    if kind == "float" and v is None:
        return math.nan
    flag = type(v).__name__ in ("bool", "bool_")  # numpy's bool too
    check, convert = {
        "int": (isinstance(v, numbers.Integral) and not flag, int),
        "float": (isinstance(v, numbers.Real) and not flag, float),
        "bool": (flag, bool),
        "str": (isinstance(v, str), str),
    }.get(kind, (True, lambda x: x))
    if not check:
        raise ValueError(f"{name} must be {'an' if kind == 'int' else 'a'} {kind}, got {v!r}")
    return convert(v)


@dataclass(frozen=True)
class TileRecord:
    """The outcome of one field of the scan (also one line of the resume journal).

    Args:
        index: Position in scan order.
        row: Grid row (0 = lowest y).
        col: Grid column (0 = highest x).
        x_m: Stage x of the capture (m).
        y_m: Stage y (m).
        z_m: Focus height of the capture (m); the starting z for skipped fields.
        has_tissue: False when the field was skipped as empty glass.
        focus_method: ``"deepaf"``, ``"stack"`` or ``"fixed"`` (``""`` when skipped).
        predicted_offset_m: Focus offset predicted at the preview (m; NaN if none).
        focus_images: Images used to decide focus.
        focus_time_s: Time spent focusing (s; simulated on the virtual microscope).
        refocused: Verification failed (or the prediction was not confident) and the
            classical fallback search refocused the field.
        sharpness: Normalised sharpness of the captured tile (NaN when skipped).
        image_path: Tile image relative to the output directory (``""`` when skipped).
        focus_quality: ``"ok"`` (focus verified), ``"low"`` (it could not be verified: the
            tile may be blurred) or ``""`` (skipped field, or a journal from before the check).
        focus_check: How the focus was verified or why it failed, human readable.
        true_focus_error_m: Simulator truth ``z - best focus`` (m); NaN on hardware.
        tissue_score: Tissue detector score of the preview.
        sim_seconds: Simulated (or hardware) motion + exposure time of the field (s).
    """

    index: int
    row: int
    col: int
    x_m: float
    y_m: float
    z_m: float
    has_tissue: bool
    focus_method: str = ""
    predicted_offset_m: float = math.nan
    focus_images: int = 0
    focus_time_s: float = 0.0
    refocused: bool = False
    sharpness: float = math.nan
    image_path: str = ""
    true_focus_error_m: float = math.nan
    tissue_score: float = math.nan
    sim_seconds: float = math.nan
    focus_quality: str = ""
    focus_check: str = ""

    @property
    def below_quality(self) -> bool:
        """A captured tile whose focus could not be verified."""
        return self.has_tissue and self.focus_quality == FOCUS_QUALITY_LOW

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite floats as ``None``)."""
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TileRecord:
        """Inverse of :meth:`to_dict` (``None`` back to NaN; unknown keys ignored).

        Integers are accepted where floats are expected; nothing else is coerced.

        Raises:
            ValueError: when `d` is not a mapping, a required key is missing, or a value has
                the wrong type (an index that is a string, a flag that is a number, ...).
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"a tile record is a JSON object, not {type(d).__name__} {d!r}")
        kw = {}
        for f in fields(cls):
            if f.name in d:
                kw[f.name] = _field_value(f.name, str(f.type), d[f.name])
        try:
            return cls(**kw)
        except TypeError as e:
            raise ValueError(f"incomplete tile record {dict(d)}: {e}") from None

    @classmethod
    def coerce(cls, obj: Any) -> TileRecord:
        """A record from a :class:`TileRecord`, a mapping or any object with its fields.

        Raises:
            ValueError: when a required field is missing.
        """
        if isinstance(obj, cls):
            return obj
        if isinstance(obj, Mapping):
            return cls.from_dict(obj)
        return cls.from_dict({f.name: getattr(obj, f.name) for f in fields(cls)
                              if hasattr(obj, f.name)})  # fmt: skip


@dataclass
class ScanReport:
    """Totals and per-tile decisions of a scan.

    Args:
        tiles: One record per visited field.
        sim_seconds: Simulated motion + exposure time (s; NaN on hardware).
        wall_seconds: Wall-clock time of the scan (s).
        depth_of_field_m: Full depth of field (m); a tile counts as in focus when
            ``|true_focus_error| <= depth_of_field_m / 2``.
        tiles_planned: Fields in the scan plan (``None``: as many as visited).
        focus_method: Focus method of the scan.
        complete: Whether every planned field was visited.
        message: Why the scan stopped early, or ``""``.
        stitch_seconds: Wall time from the last tile to the written slide (s; the slide
            is stitched during the scan, so only this is left at its end).
        stitch_late_tiles: Tiles that landed beyond the blending margin after their part
            of the slide was written (those pixels are missing; normally 0).
    """

    tiles: list[TileRecord] = field(default_factory=list)
    sim_seconds: float = math.nan
    wall_seconds: float = math.nan
    depth_of_field_m: float = math.nan
    tiles_planned: int | None = None
    focus_method: str = ""
    complete: bool = True
    message: str = ""
    stitch_seconds: float = math.nan
    stitch_late_tiles: int = 0

    @property
    def tiles_total(self) -> int:
        """Fields visited."""
        return len(self.tiles)

    @property
    def tiles_tissue(self) -> int:
        """Fields captured because they hold tissue."""
        return sum(t.has_tissue for t in self.tiles)

    @property
    def tiles_skipped(self) -> int:
        """Fields skipped as empty glass."""
        return self.tiles_total - self.tiles_tissue

    @property
    def tiles_below_quality(self) -> int:
        """Captured tiles whose focus could not be verified (``focus_quality == "low"``)."""
        return sum(t.below_quality for t in self.tiles)

    @property
    def within_dof_pct(self) -> float:
        """Share (%) of tissue tiles within the depth of field; NaN without truth."""
        errs = [t.true_focus_error_m for t in self.tiles if t.has_tissue]
        errs = [e for e in errs if math.isfinite(e)]
        if not errs or not math.isfinite(self.depth_of_field_m):
            return math.nan
        return 100.0 * sum(abs(e) <= self.depth_of_field_m / 2 for e in errs) / len(errs)

    def to_dict(self) -> dict[str, Any]:
        """The ``report.json`` content (JSON-ready)."""
        return json_safe(
            {
                "tiles_total": self.tiles_total,
                "tiles_tissue": self.tiles_tissue,
                "tiles_skipped": self.tiles_skipped,
                "tiles_below_quality": self.tiles_below_quality,
                "within_dof_pct": self.within_dof_pct,
                "sim_seconds": self.sim_seconds,
                "wall_seconds": self.wall_seconds,
                "stitch_seconds": self.stitch_seconds,
                "stitch_late_tiles": self.stitch_late_tiles,
                "tiles_planned": self.tiles_planned
                if self.tiles_planned is not None
                else self.tiles_total,
                "complete": self.complete,
                "message": self.message,
                "depth_of_field_m": self.depth_of_field_m,
                "focus_method": self.focus_method,
                "tiles": [t.to_dict() for t in self.tiles],
            }
        )

    def write(self, path: str | Path) -> Path:
        """Write ``report.json`` atomically.

        Raises:
            OSError: when it cannot be written.
        """
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> ScanReport:
        """Load a ``report.json`` written by :meth:`write`.

        Raises:
            OSError: when it cannot be read.
            ValueError: when it is not a scan report.
        """
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(d, dict) or "tiles" not in d:
            raise ValueError(f"{path} is not a scan report (no 'tiles' key)")

        def num(key: str) -> float:
            v = d.get(key)
            return math.nan if v is None else float(v)

        return cls(
            tiles=[TileRecord.from_dict(t) for t in d["tiles"]],
            sim_seconds=num("sim_seconds"),
            wall_seconds=num("wall_seconds"),
            depth_of_field_m=num("depth_of_field_m"),
            tiles_planned=d.get("tiles_planned"),
            focus_method=d.get("focus_method", ""),
            complete=bool(d.get("complete", True)),
            message=d.get("message", ""),
            stitch_seconds=num("stitch_seconds"),
            stitch_late_tiles=int(d.get("stitch_late_tiles") or 0),
        )

    def summary_table(self, max_tiles: int = 0) -> Table:
        """A rich table of the totals, plus up to ``max_tiles`` per-tile rows."""
        table = Table(title="DeepAf scan", show_header=True, header_style="bold")
        table.add_column("quantity")
        table.add_column("value", justify="right")
        dof = self.within_dof_pct
        tissue = [t for t in self.tiles if t.has_tissue]
        focus_t = sum(t.focus_time_s for t in tissue)
        rows: Sequence[tuple[str, str]] = (
            ("fields visited / planned", f"{self.tiles_total} / {self.to_dict()['tiles_planned']}"),
            ("tissue tiles", str(self.tiles_tissue)),
            ("skipped (glass)", str(self.tiles_skipped)),
            ("refocused", str(sum(t.refocused for t in tissue))),
            ("below focus quality", str(self.tiles_below_quality)),
            ("within depth of field", "n/a" if math.isnan(dof) else f"{dof:.1f} %"),
            ("focus time per tissue tile", f"{focus_t / len(tissue):.2f} s" if tissue else "n/a"),
            ("simulated time", _seconds(self.sim_seconds)),
            ("wall time", _seconds(self.wall_seconds)),
            ("slide written after the last tile", self._stitch_text()),
            (
                "status",
                completion_message(self.tiles_below_quality)
                if self.complete
                else f"partial: {self.message}",
            ),
        )
        for k, v in rows:
            table.add_row(k, v)
        for t in self.tiles[:max_tiles]:
            err = t.true_focus_error_m
            err_s = "n/a" if math.isnan(err) else f"{err * 1e6:+.2f} um"
            quality = f", focus {t.focus_quality}" if t.focus_quality else ""
            table.add_row(
                f"tile {t.index} (r{t.row} c{t.col})",
                f"z {t.z_m * 1e6:.2f} um, err {err_s}{quality}" if t.has_tissue else "glass",
            )
        return table

    def _stitch_text(self) -> str:
        if math.isnan(self.stitch_seconds):
            return "n/a"
        share = ""
        if math.isfinite(self.sim_seconds) and self.sim_seconds > 0:
            share = f" ({100 * self.stitch_seconds / self.sim_seconds:.0f} % of the simulated scan)"
        return f"{self.stitch_seconds:.1f} s{share}"

    def print_summary(self, console: Console | None = None, max_tiles: int = 0) -> None:
        """Print :meth:`summary_table` to ``console`` (stdout by default)."""
        (console or Console()).print(self.summary_table(max_tiles))


def completion_message(tiles_below_quality: int) -> str:
    """The message of a complete scan: ``"complete"`` only when every tile's focus was
    verified, else ``"complete, N tiles below focus quality"`` (ScanSlide's result, word for
    word, also for N = 1, so clients can match it)."""
    if tiles_below_quality <= 0:
        return "complete"
    return f"complete, {tiles_below_quality} tiles below focus quality"


def _seconds(s: float) -> str:
    return "n/a" if not math.isfinite(s) else f"{s:.1f} s"
