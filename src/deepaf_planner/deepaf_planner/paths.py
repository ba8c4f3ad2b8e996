"""Where a goal may write: the one check of a goal's `output_dir` (ROS-free)."""

from __future__ import annotations

from pathlib import Path


def goal_output_dir(text: str, what: str) -> Path:
    """The directory a goal's `output_dir` names: absolute, or starting with ~ (the planner's
    home). A relative path is refused: it would resolve against the planner process's working
    directory, not the caller's (the Python client and `./deepaf` resolve them on the
    caller's side before sending).

    Raises:
        ValueError: empty or relative, with what to send instead.
    """
    if not text:
        raise ValueError(f"output_dir is empty: say where the {what} should be written")
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise ValueError(
            f"output_dir {text!r} is relative; send an absolute path (the planner's working "
            f"directory, {Path.cwd()}, is not yours)"
        )
    return path.resolve()
