"""The 256 x int32 header every llm.c file starts with: read and check magic and version."""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


def read_header(path: str | os.PathLike, *, magic: int, version: int | None,
                what: str) -> tuple[np.ndarray, int]:
    """(the 256 header ints, the file size); InputError naming the file for anything wrong.
    version None: the caller checks it (formats with several versions)."""
    try:
        size = os.path.getsize(path)
        header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from None
    if header.size < HEADER_INTS:
        raise InputError(path, f"file is {size} bytes: too short for the {HEADER_BYTES}-byte header")
    if header[0] != magic:
        raise InputError(path, f"bad magic {int(header[0])}: not {what} ({magic})")
    if version is not None and header[1] != version:
        raise InputError(path, f"{what} version {int(header[1])}; only version {version} is known")
    return header, size
