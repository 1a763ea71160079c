"""PyTorch state dicts (.pt / .pth / .bin): torch.save's zip format and the legacy pickle format.

Loaded ONLY with `torch.load(..., weights_only=True)`: torch's restricted unpickler builds
tensors, dicts, lists and numbers and refuses everything else (no __reduce__ callables, no
imports), so a malicious pickle is rejected before anything in it runs. Zip files are also
memory-mapped (`mmap=True`): tensors are read from the file as they are used.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import Any

from ..errors import InputError

ZIP_MAGIC = b"PK\x03\x04"


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split("\n")[0].split())
    return text[:200] or type(e).__name__


def load_state_dict(path: str | os.PathLike) -> Any:
    try:
        import torch
    except ImportError:
        raise InputError(path, "reading a PyTorch file needs torch: pip install torch") from None
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == ZIP_MAGIC
    if is_zip:
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise InputError(path, f"truncated or corrupt zip archive: {_first_line(e)}") from None
        if bad is not None:
            raise InputError(path, f"corrupt zip archive: member {bad} fails its CRC check")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        raise InputError(path, "refused: the pickle holds code or objects other than tensors "
                               f"(loaded with weights_only=True, nothing was executed): {_first_line(e)}"
                         ) from None
    except Exception as e:  # noqa: BLE001 - a damaged legacy pickle fails in many ways (IndexError ...)
        what = type(e).__name__ + (f": {_first_line(e)}" if str(e).strip() else "")
        raise InputError(path, f"not a readable PyTorch file ({what})") from None
