"""A rosbags typestore that knows ROS 2 Kilted's standard types and our `deepaf_msgs`.

The `deepaf_msgs` definitions are read from the `.msg`, `.srv` and `.action` files: those
installed in the package's share directory when the workspace is built (what rosidl compiled),
else the sources in `src/deepaf_msgs`. Services and actions are registered the way rosidl
names their parts (`CaptureImage_Request`, `ScanSlide_Goal`, `ScanSlide_FeedbackMessage`, ...),
so the RIHS01 hashes written into bags equal those rosidl generates.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

__all__ = ["PACKAGE", "deepaf_typestore", "interface_dir", "message_types"]

PACKAGE = "deepaf_msgs"
_SEPARATOR = "\n---\n"


def interface_dir() -> Path:
    """Directory holding `msg/`, `srv/` and `action/` of deepaf_msgs.

    Raises:
        FileNotFoundError: when neither the installed package nor the sources are found.
    """
    candidates: list[Path] = []
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / PACKAGE)
    candidates.append(Path(__file__).resolve().parents[4] / PACKAGE)  # src/deepaf_msgs
    for folder in candidates:
        if (folder / "msg").is_dir():
            return folder
    raise FileNotFoundError(
        f"cannot find the {PACKAGE} interface files (looked in {[str(c) for c in candidates]}); "
        "build the workspace (./deepaf does it) or source install/setup.bash"
    )


def _strip(text: str) -> str:
    """Drop a trailing newline so empty sections stay empty."""
    return text.strip("\n") + "\n"


def message_types(folder: Path | None = None) -> dict[str, str]:
    """Every message type of deepaf_msgs (with service and action parts) -> `.msg` text.

    Raises:
        FileNotFoundError: see :func:`interface_dir`.
        ValueError: for a `.srv` / `.action` file without the right number of sections.
    """
    folder = folder or interface_dir()
    out: dict[str, str] = {}
    for path in sorted((folder / "msg").glob("*.msg")):
        out[f"{PACKAGE}/msg/{path.stem}"] = path.read_text()
    for kind, parts in (
        ("srv", ("Request", "Response")),
        ("action", ("Goal", "Result", "Feedback")),
    ):
        for path in sorted((folder / kind).glob(f"*.{kind}")):
            sections = ("\n" + path.read_text()).split(_SEPARATOR)
            if len(sections) != len(parts):
                raise ValueError(f"{path}: expected {len(parts)} sections separated by '---'")
            for part, text in zip(parts, sections, strict=True):
                out[f"{PACKAGE}/{kind}/{path.stem}_{part}"] = _strip(text)
            if kind == "action":
                name = f"{PACKAGE}/action/{path.stem}"
                out[f"{name}_FeedbackMessage"] = (
                    f"unique_identifier_msgs/UUID goal_id\n{name}_Feedback feedback\n"
                )
    return out


@functools.lru_cache(maxsize=1)
def deepaf_typestore() -> Typestore:
    """ROS 2 Kilted's standard types plus deepaf_msgs (cached; do not register into it).

    Raises:
        FileNotFoundError: see :func:`interface_dir`.
    """
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict = {}
    for name, text in message_types().items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store
