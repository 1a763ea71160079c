"""PyTorch state dicts (.pt / .pth / .bin): torch.save's zip format and the legacy pickle format.

Loaded ONLY with `torch.load(..., weights_only=True)`: torch's restricted unpickler builds
tensors, dicts, lists and numbers and refuses everything else (no __reduce__ callables, no
imports), so a malicious pickle is rejected before anything in it runs. Zip files are also
memory-mapped (`mmap=True`): tensors are read from the file as they are used.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import zipfile
from typing import Any

from ..errors import InputError

ZIP_MAGIC = b"PK\x03\x04"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
LIBRARY_MODULES = ("torch", "collections", "builtins", "copyreg", "_codecs", "numpy")


def _first_line(e: BaseException) -> str:
    text = " ".join(_ANSI.sub("", str(e)).split("\n")[0].split())
    return text[:200] or type(e).__name__


def _pickle_bytes(path, is_zip: bool) -> bytes:
    if not is_zip:
        with open(path, "rb") as fh:
            return fh.read(1 << 24)
    with zipfile.ZipFile(path) as z:
        name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
        return z.read(name) if name else b""


def pickled_class(path, is_zip: bool) -> str | None:
    """When the pickle builds PyTorch modules (a class from torch.nn.modules), the class of the
    whole model (its first class from outside torch and the standard library, e.g. model.GPT),
    read from the opcodes with pickletools: nothing is imported or executed. None when it builds
    no module or cannot be walked."""
    try:
        data = _pickle_bytes(path, is_zip)
        strings: list[str] = []
        found: list[tuple[str, str]] = []
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif op.name == "GLOBAL":
                found.append(tuple(str(arg).split(" ", 1)))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append((strings[-2], strings[-1]))
    except Exception:  # noqa: BLE001 - a damaged pickle: no hint, the caller's error stands
        return None
    if not any(m.startswith("torch.nn.modules.") for m, _ in found):
        return None
    user = [f"{m}.{n}" for m, n in found if m.split(".")[0] not in LIBRARY_MODULES]
    return user[0] if user else next(f"{m}.{n}" for m, n in found if m.startswith("torch.nn.modules."))


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
        cls = pickled_class(path, is_zip)
        if cls is not None:
            raise InputError(path, f"this file holds a pickled module ({cls}), not a state dict: save "
                                   "model.state_dict() instead (torch.save(model.state_dict(), path)); "
                                   "it was not unpickled, nothing in it was executed") from None
        raise InputError(path, "refused: the pickle holds code or objects other than tensors "
                               f"(loaded with weights_only=True, nothing was executed): {_first_line(e)}"
                         ) from None
    except Exception as e:  # noqa: BLE001 - a damaged legacy pickle fails in many ways (IndexError ...)
        what = type(e).__name__ + (f": {_first_line(e)}" if str(e).strip() else "")
        raise InputError(path, f"not a readable PyTorch file ({what})") from None
