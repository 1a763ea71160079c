"""Small helpers the statistics tests share (tests import this, never each other)."""

from __future__ import annotations

import numpy as np


def to_bf16(x: np.ndarray) -> np.ndarray:
    """Round to bfloat16 (nearest even), returned as float32."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    u = (u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return u.view(np.float32)


def round_bits(x: np.ndarray, bits: int) -> np.ndarray:
    """Round to `bits` significant bits: relative error <= 2**-bits."""
    m, e = np.frexp(x)
    return np.ldexp(np.round(m * 2.0 ** bits) / 2.0 ** bits, e)


def failing(res) -> set[str]:
    return {t.name for t in res.tests if not t.passed}
