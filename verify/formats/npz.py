"""numpy .npz archives of named arrays, read with allow_pickle=False (object arrays are refused).

Keys are llm.c names (wte, qkvw stacked (L, 3C, C), ...) or state-dict keys; see statedict.py.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ..errors import InputError


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {}
            for key in z.files:
                try:
                    out[key] = z[key]
                except ValueError as e:  # object arrays need pickle
                    raise InputError(path, f"array {key!r} cannot be read without pickle "
                                           f"(object dtype refused): {' '.join(str(e).split())[:120]}"
                                     ) from None
            return out
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise InputError(path, f"not a readable .npz archive: {' '.join(str(e).split())[:160]}") from None
