"""Exact float64 arithmetic on numpy arrays: error-free transformations and an emulated FMA.

glibc's float math functions, as built for x86-64 CPUs with FMA, evaluate their polynomials
with fused multiply-adds (one rounding for a*b + c). numpy has no fma ufunc, and the result
must not depend on which SIMD kernels numpy picks, so we emulate it from operations IEEE 754
defines exactly (+, -, * on float64, each correctly rounded, identical on every CPU):

- two_sum (Knuth): s + e == a + b exactly.
- two_prod (Dekker/Veltkamp split): p + e == a * b exactly (no overflow/underflow here).
- fma (Boldo & Melquiond, "Emulation of FMA and correctly-rounded sums: proved algorithms
  using rounding to odd", IEEE TC 2008): RN(a*b + c) = RN(th + RO(tl + pl)) where
  (ph, pl) = two_prod(a, b), (th, tl) = two_sum(c, ph) and RO rounds to odd.

Valid for finite arguments whose products and sums stay away from overflow and from the
subnormal range, which holds for every call made by reference.glibc_libm.
"""

from __future__ import annotations

import numpy as np

_SPLIT = 134217729.0  # 2**27 + 1, Veltkamp's splitter for 53-bit significands


def two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = a * _SPLIT
    hi = t - (t - a)
    return hi, a - hi


def two_prod(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = a * b
    ah, al = split(a)
    bh, bl = split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def round_to_odd_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RO(a + b): the exact sum if representable, else the neighbour with an odd last bit.

    RN gives s, one of the two floats around the exact sum s + e; when s is even and
    inexact, the other neighbour (one step towards e) is the odd one. On the int64 view of
    a float, +1 steps away from zero and -1 towards it, for either sign.
    """
    s, e = two_sum(a, b)
    bits = s.view(np.int64)
    fix = (e != 0) & ((bits & 1) == 0)
    away = (e > 0) == (s > 0)
    step = fix.astype(np.int64) * np.where(away, 1, -1)
    return (bits + step).view(np.float64)


def fma(a, b, c) -> np.ndarray:
    """Correctly rounded a*b + c in float64, elementwise (scalars broadcast)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    ph, pl = two_prod(a, b)
    th, tl = two_sum(c, ph)
    return th + round_to_odd_sum(tl, pl)


def mul_add_unfused(a, b, c) -> np.ndarray:
    """a*b + c with two roundings (what a compiler emits without FMA contraction)."""
    return np.asarray(a, dtype=np.float64) * b + c
