"""The output folder of every synthetic dataset writer."""

from __future__ import annotations

import os
from pathlib import Path


def output_directory(out: object) -> Path:
    """``out`` as a directory, created if missing: a ``TypeError`` unless it is a ``str`` or
    ``os.PathLike``, a ``ValueError`` when it is empty or names a file."""
    if not isinstance(out, str | os.PathLike):
        raise TypeError(f"out must be a str or os.PathLike directory, got {type(out).__name__}")
    if not os.fspath(out):
        raise ValueError("out must be a directory path, got an empty one (use '.' for the current directory)")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ValueError(f"out must be a directory, but {root} is a file")
    root.mkdir(parents=True, exist_ok=True)
    return root
