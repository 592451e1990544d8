"""The layout of a ``.npy`` file, read from its header and checked against the file's size.

Shared by the readers that memory-map ``.npy`` arrays (``fastlocal.data``'s features,
``fastlocal.selective.LongMemory``): a file whose header claims more data than it holds is
refused before anything is mapped or allocated, with a message naming the file.
"""

from __future__ import annotations

import functools
import io
import math
import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np


class NpyLayout(NamedTuple):
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int  # bytes before the data


@functools.lru_cache(maxsize=256)
def _parse_header(prefix: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran order, dtype)`` from a ``.npy`` file's magic and header bytes (cached:
    LongMemory parses the header of its file on every read and write)."""
    f = io.BytesIO(prefix)
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    return tuple(shape), bool(fortran), dtype


def npy_layout(path: str | os.PathLike) -> NpyLayout:
    """The layout of the ``.npy`` file at ``path``.

    Raises ``FileNotFoundError`` when there is no file, ``ValueError`` naming the file when
    it is a directory, empty, not a ``.npy`` array of numbers, or shorter than its header says.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ValueError(f"{path} is an empty file (0 bytes), not a .npy array")
            start = f.read(12)  # magic (6), version (2), header length (2 in format 1.0, else 4)
            if len(start) < 10 or not start.startswith(b"\x93NUMPY") or start[6] not in (1, 2, 3):
                raise ValueError(f"{path} is not a .npy array file (its first bytes are {start[:8]!r})")
            (header,) = struct.unpack("<H", start[8:10]) if start[6] == 1 else struct.unpack("<I", start[8:12] or b"")
            offset = (10 if start[6] == 1 else 12) + header
            if offset > min(size, 1 << 20):
                raise ValueError(f"{path} is truncated or not a .npy file: its header claims {header} bytes")
            try:
                shape, fortran, dtype = _parse_header(start + f.read(offset - len(start)))
            except (ValueError, EOFError, SyntaxError, TypeError) as exc:
                raise ValueError(f"{path} is not a readable .npy array file ({exc})") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory, not a .npy array file") from None
    except struct.error:
        raise ValueError(f"{path} is truncated inside its .npy header") from None
    if dtype.hasobject:
        raise ValueError(f"{path} holds Python objects (a pickled array), not numbers")
    data = math.prod(shape) * dtype.itemsize
    if size - offset < data:
        raise ValueError(
            f"{path} is truncated: its header says shape {shape} {dtype} ({data} bytes of data), "
            f"but the file holds {size - offset} bytes after the header"
        )
    return NpyLayout(shape, dtype, fortran, offset)
