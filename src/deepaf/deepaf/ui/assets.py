"""The dashboard's one third-party browser asset, OpenSeadragon, pinned and fetched at set-up.

`./deepaf` runs this file (standard library only, before the environment is activated) as
`python src/deepaf/deepaf/ui/assets.py fetch DEST`: it downloads the npm tarball of the pinned
version, checks its sha512 against the registry's integrity string recorded here, and unpacks
`package/build/openseadragon/` into `DEST/openseadragon/`. The dashboard serves that folder
under /vendor/openseadragon/; without it the deep-zoom viewer says so and the rest works.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

#: npm package, version and the registry's `dist.integrity` of its tarball (`npm view
#: openseadragon@6.1.1 dist.integrity`).
OSD_NAME = "openseadragon"
OSD_VERSION = "6.1.1"
OSD_INTEGRITY = (
    "sha512-g4iKe2q8B642SaBT3+x4ZF3/8b1TxPPydyjmtrOLgDrlYWMKd9ZXM+1Cb/"
    "xa9DVySkvs/7l6HR1nHKfD5F3Tsw=="
)
OSD_URL = f"https://registry.npmjs.org/{OSD_NAME}/-/{OSD_NAME}-{OSD_VERSION}.tgz"
#: The file whose presence means the asset is installed (relative to the asset folder).
OSD_MAIN = "openseadragon/openseadragon.min.js"


def default_asset_dir() -> Path:
    """Where set-up puts the asset: `$VIRTUAL_ENV/share/deepaf-ui` (gitignored with .venv)."""
    venv = os.environ.get("VIRTUAL_ENV") or sys.prefix
    return Path(venv) / "share" / "deepaf-ui"


def integrity_ok(data: bytes, integrity: str = OSD_INTEGRITY) -> bool:
    """Whether `data` matches an npm `sha512-<base64>` integrity string."""
    algo, _, want = integrity.partition("-")
    if algo != "sha512":
        raise ValueError(f"unsupported integrity algorithm {algo!r} (expected sha512)")
    return base64.b64encode(hashlib.sha512(data).digest()).decode() == want


def unpack(data: bytes, dest: Path) -> Path:
    """Unpack the tarball's build/openseadragon/ into `dest`/openseadragon (replacing it)."""
    prefix = "package/build/openseadragon/"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        staged = Path(tmp) / "openseadragon"
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                if not member.isfile() or not member.name.startswith(prefix):
                    continue
                rel = Path(member.name[len(prefix) :])
                if rel.is_absolute() or ".." in rel.parts or rel.suffix == ".map":
                    continue
                target = staged / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src:  # type: ignore[union-attr]
                    target.write_bytes(src.read())
        if not (staged / "openseadragon.min.js").is_file():
            raise RuntimeError(f"{OSD_URL} holds no {prefix}openseadragon.min.js")
        final = dest / "openseadragon"
        if final.exists():
            shutil.rmtree(final)
        staged.rename(final)
    (dest / "VERSION").write_text(f"{OSD_NAME}@{OSD_VERSION} {OSD_INTEGRITY}\n")
    return final


def fetch(dest: Path, timeout: float = 60.0) -> Path:
    """Download, verify and unpack the pinned OpenSeadragon into `dest`.

    Raises:
        RuntimeError: the download failed or the tarball does not match the pinned integrity.
    """
    try:
        with urllib.request.urlopen(OSD_URL, timeout=timeout) as response:
            data = response.read()
    except OSError as exc:
        raise RuntimeError(f"could not download {OSD_URL}: {exc}") from exc
    if not integrity_ok(data):
        raise RuntimeError(f"{OSD_URL} does not match the pinned integrity {OSD_INTEGRITY}")
    return unpack(data, dest)


def installed(dest: Path | None = None) -> bool:
    """Whether the pinned version is unpacked in `dest` (default: :func:`default_asset_dir`)."""
    dest = dest or default_asset_dir()
    version = dest / "VERSION"
    return (dest / OSD_MAIN).is_file() and version.is_file() and OSD_VERSION in version.read_text()


def main(argv: list[str] | None = None) -> int:
    """`assets.py fetch [DEST]` (exit 1 with the reason when it fails) or `assets.py check`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in {"fetch", "check"}:
        print("usage: assets.py fetch|check [DEST]", file=sys.stderr)
        return 2
    dest = Path(args[1]) if len(args) > 1 else default_asset_dir()
    if args[0] == "check":
        return 0 if installed(dest) else 1
    try:
        print(fetch(dest))
    except (RuntimeError, OSError, tarfile.TarError) as exc:
        print(f"openseadragon: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
