"""Resume journal of a scan: what an output directory holds and which tiles are finished.

An output directory holds:

* ``scan.json``: the parameters that define the tile set (region, step, overlap, focus
  method, profile, ...). Resuming with other parameters, or starting a new scan in a
  directory holding another one, is rejected with the differing keys.
* ``tiles.jsonl``: one :class:`~deepaf_planner.report.TileRecord` per finished field,
  appended and fsync'd after the tile image is safely on disk.
* ``tiles/``: tile images, each written to a temporary file, fsync'd and renamed, so a
  killed process never leaves a half-written tile that the journal counts.

A truncated last journal line (killed mid-write; cut off when the journal is reopened) and
records whose image is missing are ignored, so those fields are simply redone. A finished
line that is not a tile record, or a record whose image lies outside the scan directory,
fails the resume with the file and line number (nothing from outside is ever used).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .report import TileRecord, atomic_write_text, json_safe

__all__ = [
    "SCAN_FILE",
    "TILES_DIR",
    "TILES_JOURNAL",
    "ScanJournal",
    "load_journal",
    "stored_parameters",
]

SCAN_FILE = "scan.json"
TILES_JOURNAL = "tiles.jsonl"
TILES_DIR = "tiles"
_FORMAT = 1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _normalise(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as they read back from JSON (tuples -> lists, NaN -> null)."""
    return json.loads(json.dumps(json_safe(dict(params)), sort_keys=True))


def _drop_partial_line(path: Path) -> None:
    """Cut a line left unfinished by a killed writer, so the next append starts clean."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)
            fh.flush()
            os.fsync(fh.fileno())


def image_inside(out_dir: Path, image_path: str) -> bool:
    """Whether a record's image path stays inside the scan directory (symlinks resolved)."""
    root = Path(out_dir).resolve()
    try:
        (root / image_path).resolve().relative_to(root)
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def load_journal(out_dir: str | Path) -> dict[int, TileRecord]:
    """The finished tiles of a scan directory, by index (the last record of an index wins).

    Records of tissue tiles whose image file is missing are ignored (redone), and so is an
    unfinished last line (no newline: the writer was killed while appending).

    Raises:
        ValueError: naming the file and line, when a finished line is not a tile record
            (not JSON, not an object, a field of the wrong type, ...) or names an image
            outside the scan directory.
    """
    out_dir = Path(out_dir)
    path = out_dir / TILES_JOURNAL
    if not path.exists():
        return {}
    data = path.read_bytes()
    lines = data.split(b"\n")
    unfinished = len(lines) - 1 if not data.endswith(b"\n") else -1
    done: dict[int, TileRecord] = {}
    for n, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rec = TileRecord.from_dict(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
            if n == unfinished:
                break  # killed while appending: that tile is redone
            raise ValueError(
                f"{path}:{n + 1} is not a tile record ({e}); remove the line to resume "
                "(that tile is then redone)"
            ) from None
        if rec.image_path and not image_inside(out_dir, rec.image_path):
            raise ValueError(
                f"{path}:{n + 1} names the image {rec.image_path!r}, outside the scan "
                f"directory {out_dir}; refusing that record (remove the line to redo tile "
                f"{rec.index})"
            )
        if rec.has_tissue and not (rec.image_path and (out_dir / rec.image_path).is_file()):
            continue
        done[rec.index] = rec
    return done


def stored_parameters(out_dir: str | Path) -> dict[str, Any] | None:
    """The parameters in a scan directory's scan.json (None when there is none, or it is
    unreadable: :meth:`ScanJournal.open` then says why)."""
    try:
        body = json.loads((Path(out_dir).expanduser() / SCAN_FILE).read_text(encoding="utf-8"))
        params = body.get("params")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return params if isinstance(params, dict) else None


class ScanJournal:
    """The scan directory: parameters, finished-tile journal and atomic tile images.

    Use :meth:`open`, which validates the directory, rather than the constructor.

    Args:
        out_dir: The scan output directory.
        params: The scan parameters (as stored in ``scan.json``).
    """

    def __init__(self, out_dir: Path, params: dict[str, Any]) -> None:
        self.out_dir = out_dir
        self.params = params
        _drop_partial_line(out_dir / TILES_JOURNAL)
        self._finished = load_journal(out_dir)

    @classmethod
    def open(
        cls, out_dir: str | Path, params: Mapping[str, Any], resume: bool = False
    ) -> ScanJournal:
        """Open (or create) a scan directory for writing.

        Args:
            out_dir: The output directory (created if missing).
            params: Parameters that define the tile set; must be JSON-serialisable.
                Do not include ``resume`` or the output directory itself.
            resume: Continue the scan already there (a directory without one starts fresh).

        Raises:
            ValueError: when the directory holds a scan with other parameters, or holds a
                scan and ``resume`` is false.
            PermissionError: when the directory is not writable.
        """
        out_dir = Path(out_dir).expanduser().resolve()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PermissionError(f"cannot create output directory {out_dir}: {e}") from e
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise PermissionError(f"output directory {out_dir} is not writable; choose another")
        want = _normalise(params)
        scan_file = out_dir / SCAN_FILE
        if scan_file.exists():
            try:
                stored = json.loads(scan_file.read_text(encoding="utf-8")).get("params", {})
            except (json.JSONDecodeError, AttributeError) as e:
                raise ValueError(
                    f"{scan_file} is unreadable ({e}); choose another directory"
                ) from e
            if stored != want:
                keys = sorted(k for k in set(stored) | set(want) if stored.get(k) != want.get(k))
                diff = ", ".join(f"{k}: {stored.get(k)!r} there, {want.get(k)!r} now" for k in keys)
                raise ValueError(
                    f"{out_dir} already holds a different scan ({diff}); "
                    "choose another output directory or repeat the original parameters"
                )
            if not resume:
                raise ValueError(
                    f"{out_dir} already holds this scan; pass resume to continue it "
                    "or choose another output directory"
                )
        elif any(out_dir.glob(f"{TILES_DIR}/*")) or (out_dir / TILES_JOURNAL).exists():
            raise ValueError(f"{out_dir} holds tiles of an unknown scan; choose another directory")
        else:
            body = {"format": _FORMAT, "params": want}
            atomic_write_text(scan_file, json.dumps(body, indent=2, sort_keys=True) + "\n")
        (out_dir / TILES_DIR).mkdir(exist_ok=True)
        return cls(out_dir, want)

    @property
    def finished(self) -> dict[int, TileRecord]:
        """Finished tiles by index (including those journalled in this session)."""
        return dict(self._finished)

    def tiles(self) -> list[TileRecord]:
        """Finished tiles in scan order."""
        return [self._finished[i] for i in sorted(self._finished)]

    def is_finished(self, index: int) -> bool:
        """Whether field ``index`` is done and need not be redone."""
        return index in self._finished

    def write_tile_image(self, index: int, rgb: np.ndarray, row: int = 0, col: int = 0) -> str:
        """Write a tile image atomically (temporary file, fsync, rename) as PNG.

        Args:
            index: Scan index.
            rgb: uint8 (H, W, 3) image.
            row: Grid row (part of the file name).
            col: Grid column.

        Returns:
            The path relative to the output directory, for :attr:`TileRecord.image_path`.

        Raises:
            ValueError: for a non-uint8 RGB image.
            OSError: when it cannot be written.
        """
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) tile, got {rgb.dtype} {rgb.shape}")
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]),
                               [cv2.IMWRITE_PNG_COMPRESSION, 1])  # fmt: skip
        if not ok:
            raise OSError(f"could not encode tile {index}")
        rel = f"{TILES_DIR}/tile_{index:05d}_r{row:03d}_c{col:03d}.png"
        path = self.out_dir / rel
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(buf.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        return rel

    write_tile = write_tile_image

    def append(self, record: TileRecord | Any) -> TileRecord:
        """Journal a finished field (one fsync'd JSON line). Write its image first.

        Args:
            record: A :class:`TileRecord` or any object with its fields.

        Returns:
            The record as journalled.

        Raises:
            ValueError: when a tissue record's image is not in the output directory.
        """
        record = TileRecord.coerce(record)
        if record.image_path and not image_inside(self.out_dir, record.image_path):
            raise ValueError(
                f"tile {record.index}: image {record.image_path!r} is outside the scan "
                f"directory {self.out_dir}"
            )
        if record.has_tissue and not (self.out_dir / record.image_path).is_file():
            raise ValueError(
                f"tile {record.index}: image {record.image_path!r} is missing; "
                "write it with write_tile_image before journalling the tile"
            )
        line = json.dumps(record.to_dict(), sort_keys=True) + "\n"
        with open(self.out_dir / TILES_JOURNAL, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._finished[record.index] = record
        return record
