"""safetensors files, read with the safetensors package after our own header checks.

Layout:

    u64 little-endian  N, the header's length in bytes
    N bytes            JSON object: name -> {"dtype", "shape", "data_offsets": [begin, end]}
                       (and an optional "__metadata__": {str: str})
    data               each tensor's bytes at [8 + N + begin, 8 + N + end), row-major

Checked before any tensor is read, so a hostile header fails fast and allocates nothing large:
N <= file size - 8 and N <= 100 MB; the header is a JSON object; every dtype is a float type
(F32, BF16, F16, F64); every shape is a list of non-negative ints; end - begin equals the shape's
size times the item size; every range lies inside the data area; no two ranges overlap.
"""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np
from gpt2_verify.reference.bf16 import bf16_bits_to_f32

from ..errors import InputError

MAX_HEADER = 100 * 1024 * 1024
ITEMSIZE = {"F32": 4, "BF16": 2, "F16": 2, "F64": 8}
NUMPY = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2"}


def read_header(path: str | os.PathLike) -> tuple[dict, int]:
    """(entries, data offset), validated."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise InputError(path, f"file is {size} bytes: too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > MAX_HEADER:
            raise InputError(path, f"header length {n:,} is impossible (file {size:,} bytes, limit "
                                   f"{MAX_HEADER:,})")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(path, f"header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise InputError(path, "header is not a JSON object")
    header.pop("__metadata__", None)
    data_len = size - 8 - n
    spans = []
    for key, e in header.items():
        if not isinstance(e, dict):
            raise InputError(path, f"tensor {key!r}: header entry is not an object")
        dt, shape, offs = e.get("dtype"), e.get("shape"), e.get("data_offsets")
        if dt not in ITEMSIZE:
            raise InputError(path, f"tensor {key!r} has dtype {dt!r}: GPT-2 weights must be F32, BF16, "
                                   f"F16 or F64")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InputError(path, f"tensor {key!r} has an invalid shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                or not 0 <= offs[0] <= offs[1] <= data_len):
            raise InputError(path, f"tensor {key!r}: data_offsets {offs!r} outside the data area "
                                   f"(0..{data_len})")
        if offs[1] - offs[0] != math.prod(shape) * ITEMSIZE[dt]:
            raise InputError(path, f"tensor {key!r}: {offs[1] - offs[0]} bytes for shape {shape} {dt} "
                                   f"(needs {math.prod(shape) * ITEMSIZE[dt]})")
        spans.append((offs[0], offs[1], key))
    spans.sort()
    for (_b0, e0, k0), (b1, _e1, k1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise InputError(path, f"tensors {k0!r} and {k1!r} overlap in the data area")
    return header, 8 + n


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """name -> numpy array (bf16 decoded exactly to float32)."""
    header, _start = read_header(path)
    try:
        from safetensors import safe_open
    except ImportError:
        raise InputError(path, "reading safetensors needs the safetensors package: "
                               "pip install safetensors") from None
    out = {}
    try:
        with safe_open(os.fspath(path), framework="numpy") as f:
            for key, e in header.items():
                if e["dtype"] == "BF16":  # numpy has no bfloat16: decode the bits ourselves
                    out[key] = _bf16(path, e, _start)
                else:
                    out[key] = f.get_tensor(key)
    except (OSError, ValueError, RuntimeError) as e:  # SafetensorError derives from Exception
        raise InputError(path, f"safetensors refused it: {' '.join(str(e).split())[:160]}") from None
    except Exception as e:  # noqa: BLE001 - the package's own error type
        if type(e).__name__ == "SafetensorError":
            raise InputError(path, f"safetensors refused it: {' '.join(str(e).split())[:160]}") from None
        raise
    return out


def _bf16(path, e: dict, start: int) -> np.ndarray:
    b, _end = e["data_offsets"]
    n = math.prod(e["shape"])
    bits = np.fromfile(path, dtype="<u2", count=n, offset=start + b)
    return bf16_bits_to_f32(bits.astype(np.uint16)).reshape(e["shape"])
