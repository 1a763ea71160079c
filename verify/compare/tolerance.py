"""How far "same random stream, different floating-point math" can move an init value.

llm.c's normal_ (llmc/rand.h) and every port of it compute, for each pair of 24-bit uniforms
u1 = 1 - k1 / 2^24 and u2 = k2 / 2^24 (Box-Muller, blocks of 16):

    R = sqrtf(-2 logf(u1 [+ 1e-12f]))      0 <= R <= sqrt(2 ln 2^24) = 5.77
    theta = (float)(2 pi u2)                 0 <= theta < 2 pi
    value = R * cosf(theta) * std + mean     (and R * sinf(theta) * std + mean)

A producer that draws the same stream but uses other math (another libm, libmvec or SLEEF SIMD
code, float instead of double for 2 pi u2, the 1e-12f term left out, std computed in double) can
change each step by a few ulps:

    logf within 4 ulps                      -> R relative 2^-22 (sqrt halves it)
    the 1e-12f term                         -> R absolute <= 1e-12 / sqrt(2 * 2^-24) = 3e-9
    theta rounded once vs computed in float -> |d theta| <= 2 ulp(2 pi) = 2^-20
    cosf/sinf within 4 ulps                 -> absolute <= 4 * 2^-24
    std in float vs double (1-2 ulps), the products' roundings -> relative <= 8 * 2^-24

so |value - reference| <= std * (R_max * (2^-20 + 2^-22) + 3e-9) + 2^-21 * |reference|
                       <= std * 7.3e-6 + 4.8e-7 * |reference|.
We allow CLOSE_ATOL_STD = 1e-5 (x std) and CLOSE_RTOL = 1e-6. At std 0.02 that is about 2e-7:
every producer measured stays below it (llm.c -Ofast with libmvec 2.2e-8, PyTorch 2.13 AVX512
5.4e-8, numpy float32 1.5e-8), while a value from another stream position differs by O(std)
= 1e-2, five orders of magnitude more. Rounding the result to a narrower storage type adds one
unit of that type: bf16 2^-8 relative (round to nearest), fp16 2^-11 relative and 2^-25 absolute.
"""

from __future__ import annotations

import numpy as np

from ..tolerance import Tolerance

# normwise in the tensor's std, plus relative; the derivation above
SAME_STREAM = Tolerance(
    norm=1e-5, rel=1e-6, scale_of="std",
    source="derived (module docstring): same stream, other float math moves a value by <= std * 7.3e-6 "
           "+ 4.8e-7 * |reference|; measured worst at std 0.02: llm.c -Ofast libmvec 2.2e-8, PyTorch "
           "2.13 AVX512 5.4e-8, numpy float32 1.5e-8")
CLOSE_ATOL_STD = SAME_STREAM.norm  # times the tensor's std
CLOSE_RTOL = SAME_STREAM.rel  # times |reference value|
# relative (and absolute) half-ulp of the storage types a file may hold
STORAGE_ROUNDING = {"fp32": (2.0 ** -24, 0.0), "fp64": (0.0, 0.0), "bf16": (2.0 ** -8, 0.0),
                    "fp16": (2.0 ** -11, 2.0 ** -25)}


def same_stream(dtype: str = "fp32") -> Tolerance:
    """SAME_STREAM widened by one unit of the storage type (two half-ulps relative, plus fp16's
    absolute unit below its normal range)."""
    rel, absolute = STORAGE_ROUNDING.get(dtype, (0.0, 0.0))
    return SAME_STREAM.widened(rel=2 * rel, abs=absolute, why=f"+ one unit of {dtype} storage")


_BY_DTYPE = {d: same_stream(d) for d in STORAGE_ROUNDING}


def close_bound(reference: np.ndarray, std: float, dtype: str = "fp32") -> np.ndarray:
    """Largest |candidate - reference| a same-stream producer can show, element-wise (float64)."""
    tol = _BY_DTYPE.get(dtype) or same_stream(dtype)
    return tol.allowed(reference, scale=std)


def describe() -> str:
    return (f"|candidate - reference| <= {CLOSE_ATOL_STD:g} * std + {CLOSE_RTOL:g} * |reference| "
            f"(+ one unit of the storage type for bf16/fp16)")
