"""Bit-exact numpy emulation of glibc's logf, sinf and cosf (glibc 2.28 .. 2.40).

llm.c's Box-Muller calls logf/cosf/sinf from the C library, so its init depends on libm's
last bits. These are glibc's float implementations (sysdeps/ieee754/flt-32/e_logf.c,
s_sinf.c, s_cosf.c, sincosf_poly.h; the ARM optimized-routines algorithms, LGPL-2.1, whose
constants are reproduced below), evaluated exactly as compiled:

- variant "fma": the x86-64 multiarch build used on CPUs with FMA (e_logf-fma.c,
  s_sinf-fma.c, ...): GCC contracts each `a*b + c` into one fused multiply-add. This is what
  llm.c gets on any x86-64 CPU of the last decade (aarch64 builds contract too; unverified).
- variant "nofma": the SSE2 build (x86-64 CPUs without FMA): every product rounded first.

Only + - * on float64 (each correctly rounded) and exact integer bit manipulation are used,
never numpy's log/sin/cos, whose bits change with numpy's SIMD dispatch; the fused
operations use reference.exact.fma. The results are therefore the same on every machine.
glibc 2.41+ replaced some float functions with correctly rounded CORE-MATH versions; a
llm.c built against those may differ in a few ulps of a few values.
"""

from __future__ import annotations

import numpy as np

from .exact import fma as _fma
from .exact import mul_add_unfused as _unfused
from .exact import two_prod

VARIANTS = ("fma", "nofma")


def _mul_add(variant: str):
    if variant == "fma":
        return _fma
    if variant == "nofma":
        return _unfused
    raise ValueError(f"unknown libm variant {variant!r}; use one of {VARIANTS}")


def _h(s: str) -> float:
    return float.fromhex(s)


# ---- logf (e_logf.c, e_logf_data.c: LOGF_TABLE_BITS = 4, LOGF_POLY_ORDER = 4) --------------
_LOGF_INVC = np.array([_h(s) for s in (
    "0x1.661ec79f8f3bep+0", "0x1.571ed4aaf883dp+0", "0x1.49539f0f010bp+0", "0x1.3c995b0b80385p+0",
    "0x1.30d190c8864a5p+0", "0x1.25e227b0b8eap+0", "0x1.1bb4a4a1a343fp+0", "0x1.12358f08ae5bap+0",
    "0x1.0953f419900a7p+0", "0x1p+0", "0x1.e608cfd9a47acp-1", "0x1.ca4b31f026aap-1",
    "0x1.b2036576afce6p-1", "0x1.9c2d163a1aa2dp-1", "0x1.886e6037841edp-1", "0x1.767dcf5534862p-1",
)])
_LOGF_LOGC = np.array([_h(s) for s in (
    "-0x1.57bf7808caadep-2", "-0x1.2bef0a7c06ddbp-2", "-0x1.01eae7f513a67p-2", "-0x1.b31d8a68224e9p-3",
    "-0x1.6574f0ac07758p-3", "-0x1.1aa2bc79c81p-3", "-0x1.a4e76ce8c0e5ep-4", "-0x1.1973c5a611cccp-4",
    "-0x1.252f438e10c1ep-5", "0x0p+0", "0x1.aa5aa5df25984p-5", "0x1.c5e53aa362eb4p-4",
    "0x1.526e57720db08p-3", "0x1.bc2860d22477p-3", "0x1.1058bc8a07ee1p-2", "0x1.4043057b6ee09p-2",
)])
_LN2 = _h("0x1.62e42fefa39efp-1")
_LOGF_A = (_h("-0x1.00ea348b88334p-2"), _h("0x1.5575b0be00b6ap-2"), _h("-0x1.ffffef20a4123p-2"))
_LOGF_OFF = 0x3F330000


# y0 = fma(k, Ln2, logc[i]) for every exponent k a float can have (subnormals included)
_K_BIAS = 160
_LOGF_Y0 = _fma(np.arange(-_K_BIAS, _K_BIAS, dtype=np.float64)[:, None], _LN2, _LOGF_LOGC[None, :])


def logf(x: np.ndarray, variant: str = "fma") -> np.ndarray:
    """glibc logf, elementwise on a float32 array."""
    mul_add = _mul_add(variant)
    x = np.ascontiguousarray(x, dtype=np.float32)
    ix = x.view(np.uint32).astype(np.uint32)
    out = np.empty(x.shape, dtype=np.float32)

    special = (ix - np.uint32(0x00800000)) >= np.uint32(0x7F800000 - 0x00800000)
    one = ix == np.uint32(0x3F800000)
    if np.any(special):
        sub = special & ((ix & np.uint32(0x7FFFFFFF)) != 0) & (ix < np.uint32(0x00800000))
        # x is subnormal: normalize it (x * 2^23 is exact), as glibc does
        ix[sub] = (x[sub] * np.float32(2.0**23)).view(np.uint32) - np.uint32(23 << 23)
        hard = special & ~sub
        with np.errstate(divide="ignore", invalid="ignore"):
            xs = x[hard]
            res = np.where(xs == 0, -np.inf, np.where(np.isinf(xs) & (xs > 0), xs, np.nan))
        out[hard] = res.astype(np.float32)
        normal = ~hard
    else:
        normal = np.ones(x.shape, dtype=bool)
    normal &= ~one
    out[one] = 0.0

    ixn = ix[normal]
    tmp = ixn - np.uint32(_LOGF_OFF)  # wraps like C's uint32_t
    i = ((tmp >> np.uint32(19)) % np.uint32(16)).astype(np.intp)
    k = (tmp.view(np.int32) >> 23).astype(np.float64)  # arithmetic shift
    iz = ixn - (tmp & np.uint32(0x1FF << 23))
    z = iz.view(np.float32).astype(np.float64)
    invc, logc = _LOGF_INVC[i], _LOGF_LOGC[i]

    # log(x) = log1p(z/c - 1) + log(c) + k*Ln2
    if variant == "fma":
        # fma(z, invc, -1) exactly, cheaply: z/c is within 1/16 of 1, so the rounded product
        # p is in [0.5, 2] and p - 1 is exact (Sterbenz); adding the product's exact error
        # then rounds once: RN(z*invc - 1).
        p, e = two_prod(z, invc)
        r = (p - 1.0) + e
        y0 = _LOGF_Y0[k.astype(np.intp) + _K_BIAS, i]  # fma(k, Ln2, logc), precomputed
    else:
        r = mul_add(z, invc, -1.0)
        y0 = mul_add(k, _LN2, logc)
    r2 = r * r
    y = mul_add(_LOGF_A[1], r, _LOGF_A[2])
    y = mul_add(_LOGF_A[0], r2, y)
    y = mul_add(y, r2, y0 + r)
    out[normal] = y.astype(np.float32)
    return out


# ---- sinf / cosf (s_sinf.c, s_cosf.c, s_sincosf.h, sincosf_poly.h, s_sincosf_data.c) ---------
_HPI_INV = _h("0x1.45F306DC9C883p+23")  # 2/pi * 2^24 (x86-64 has no TOINT_INTRINSICS)
_HPI = _h("0x1.921FB54442D18p0")
_C0, _C1, _C2, _C3, _C4 = (1.0, _h("-0x1.ffffffd0c621cp-2"), _h("0x1.55553e1068f19p-5"),
                           _h("-0x1.6c087e89a359dp-10"), _h("0x1.99343027bf8c3p-16"))
_S1, _S2, _S3 = _h("-0x1.555545995a603p-3"), _h("0x1.1107605230bc4p-7"), _h("-0x1.994eb3774cf24p-13")
_PI63 = _h("0x1.921FB54442D18p-62")  # 2*pi * 2^-64
_INV_PIO4 = np.array([
    0xa2, 0xa2f9, 0xa2f983, 0xa2f9836e, 0xf9836e4e, 0x836e4e44, 0x6e4e4415, 0x4e441529,
    0x441529fc, 0x1529fc27, 0x29fc2757, 0xfc2757d1, 0x2757d1f5, 0x57d1f534, 0xd1f534dd, 0xf534ddc0,
    0x34ddc0db, 0xddc0db62, 0xc0db6295, 0xdb629599, 0x6295993c, 0x95993c43, 0x993c4390, 0x3c439041,
], dtype=np.uint64)
_SIGN = np.array([1.0, -1.0, -1.0, 1.0])
# abstop12 thresholds: top 12 bits of the float (sign cleared) of pio4, 0x1p-12f, 120.0f
_TOP_PIO4 = (int(np.float32(_h("0x1.921FB54442D18p-1")).view(np.uint32)) >> 20) & 0x7FF
_TOP_TINY = (int(np.float32(2.0**-12).view(np.uint32)) >> 20) & 0x7FF
_TOP_120 = (int(np.float32(120.0).view(np.uint32)) >> 20) & 0x7FF
_TOP_INF = 0x7F8


def _poly_even(x, x2, mul_add):
    """sinf_poly for even n: the sine polynomial (same coefficients in both tables)."""
    x3 = x * x2
    s1 = mul_add(x2, _S3, _S2)
    x7 = x3 * x2
    s = mul_add(x3, _S1, x)
    return mul_add(x7, s1, s)


def _poly_odd(x2, negate, mul_add):
    """sinf_poly for odd n: the cosine polynomial; table[1] (n & 2) has it negated.

    Negating every coefficient negates every intermediate exactly (rounding is symmetric),
    so we evaluate with table[0] and flip the sign afterwards.
    """
    x4 = x2 * x2
    c2 = mul_add(x2, _C4, _C3)
    c1 = mul_add(x2, _C1, _C0)
    x6 = x4 * x2
    c = mul_add(x4, _C2, c1)
    res = mul_add(x6, c2, c)
    return np.where(negate, -res, res)


def _reduce_large(xi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """reduce_large: |y| >= 120, exact integer arithmetic with 4/pi to 192 bits."""
    idx = ((xi >> np.uint32(26)) & np.uint32(15)).astype(np.intp)
    shift = ((xi >> np.uint32(23)) & np.uint32(7)).astype(np.uint64)
    m = ((xi & np.uint32(0xFFFFFF)) | np.uint32(0x800000)).astype(np.uint64)
    m = (m << shift) & np.uint64(0xFFFFFFFF)  # xi is uint32_t in C
    res0 = (m * _INV_PIO4[idx]) & np.uint64(0xFFFFFFFF)  # 32-bit product
    res1 = m * _INV_PIO4[idx + 4]
    res2 = m * _INV_PIO4[idx + 8]
    res0 = (res2 >> np.uint64(32)) | (res0 << np.uint64(32))
    res0 = res0 + res1
    n = (res0 + np.uint64(1 << 61)) >> np.uint64(62)
    res0 = res0 - (n << np.uint64(62))
    x = res0.view(np.int64).astype(np.float64) * _PI63
    return x, n.astype(np.int64)


def sincosf(y: np.ndarray, variant: str = "fma") -> tuple[np.ndarray, np.ndarray]:
    """(glibc sinf(y), glibc cosf(y)) elementwise on a float32 array.

    Follows sinf's and cosf's own code paths (llm.c calls them separately); both share
    the range reduction and the two polynomials, so one pass yields both.
    """
    mul_add = _mul_add(variant)
    y = np.ascontiguousarray(y, dtype=np.float32)
    yi = y.view(np.uint32)
    top = (yi >> np.uint32(20)) & np.uint32(0x7FF)
    sin = np.empty(y.shape, dtype=np.float32)
    cos = np.empty(y.shape, dtype=np.float32)

    tiny = top < _TOP_TINY
    sin[tiny] = y[tiny]
    cos[tiny] = 1.0

    small = (top < _TOP_PIO4) & ~tiny
    if np.any(small):
        x = y[small].astype(np.float64)
        x2 = x * x
        sin[small] = _poly_even(x, x2, mul_add).astype(np.float32)
        cos[small] = _poly_odd(x2, False, mul_add).astype(np.float32)

    mid = (top >= _TOP_PIO4) & (top < _TOP_120)
    large = (top >= _TOP_120) & (top < _TOP_INF)
    for sel in (mid, large):
        if not np.any(sel):
            continue
        x = y[sel].astype(np.float64)
        if sel is mid:
            r = x * _HPI_INV
            # C: ((int32_t)r + 0x800000) >> 24, the cast truncates toward zero
            n = (np.trunc(r).astype(np.int64) + 0x800000) >> 24
            x = mul_add(-n.astype(np.float64), _HPI, x)  # x - n * hpi
            q = n
        else:
            x, n = _reduce_large(yi[sel])
            q = n + (yi[sel] >> np.uint32(31)).astype(np.int64)  # include the original sign
        s = _SIGN[q & 3]
        xs = x * s
        x2 = x * x
        negate = (q & 2) != 0
        even = _poly_even(xs, x2, mul_add)
        odd = _poly_odd(x2, negate, mul_add)
        # sinf uses sinf_poly(.., n): even n -> sine polynomial; cosf uses n ^ 1.
        n_odd = (n & 1) == 1
        sin[sel] = np.where(n_odd, odd, even).astype(np.float32)
        cos[sel] = np.where(n_odd, even, odd).astype(np.float32)

    bad = top >= _TOP_INF
    sin[bad] = np.nan
    cos[bad] = np.nan
    return sin, cos


def sinf(y: np.ndarray, variant: str = "fma") -> np.ndarray:
    return sincosf(y, variant)[0]


def cosf(y: np.ndarray, variant: str = "fma") -> np.ndarray:
    return sincosf(y, variant)[1]
