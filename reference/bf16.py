"""bfloat16 <-> float32 conversion on bit patterns (numpy has no bfloat16 dtype).

A bf16 value is the top 16 bits of a float32: sign, 8 exponent bits, 7 mantissa bits. We keep
bf16 data as uint16 bit patterns. float32 -> bf16 rounds to nearest, ties to even, exactly as
llm.c does (`__float2bfloat16_rn`); bf16 -> float32 is exact (append 16 zero bits).
"""

from __future__ import annotations

import numpy as np

_QUIET = np.uint16(0x0040)  # top mantissa bit of a bf16: set in every NaN we produce


def f32_to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 values -> uint16 bf16 bit patterns (same shape), round to nearest even.

    Finite values that round past the largest bf16 become +-inf; inf stays inf; NaN stays NaN
    (sign and top payload bits kept, quiet bit set, so a NaN never truncates to inf).
    Input is converted to float32 first: pass float32 to avoid double rounding from float64.
    """
    f = np.asarray(a, dtype=np.float32)
    bits = f.view(np.uint32)
    nan = np.isnan(f)
    finite_bits = np.where(nan, np.uint32(0), bits)  # NaNs excluded: the add cannot wrap
    rounded = finite_bits + np.uint32(0x7FFF) + ((finite_bits >> np.uint32(16)) & np.uint32(1))
    out = np.asarray(rounded >> np.uint32(16)).astype(np.uint16)
    if nan.any():
        out[nan] = (bits[nan] >> np.uint32(16)).astype(np.uint16) | _QUIET
    return out


def bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    """uint16 bf16 bit patterns -> float32 values (same shape), exact."""
    b = np.asarray(b)
    if b.dtype != np.uint16:
        raise TypeError(f"bf16 bit patterns must be uint16, got {b.dtype}")
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)
