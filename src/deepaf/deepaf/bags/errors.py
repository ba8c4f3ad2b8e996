"""The one exception bag code raises: it names the bag (or file) and the problem."""

from __future__ import annotations

from pathlib import Path

__all__ = ["BagError"]


class BagError(RuntimeError):
    """A bag that cannot be read, written or played, with the file and what to do.

    Args:
        path: The bag directory or the file inside it that is at fault.
        problem: What is wrong (and, where there is one, the fix).
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
