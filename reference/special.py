"""Special functions, once: the normal distribution, Student's t, and bisection.

numpy and the standard library only (reference/ never needs scipy or verify; verify imports
these). scipy is a test dependency: tests/test_special.py checks every function here against
scipy.special / scipy.stats, and no runtime code needs it.

    normal_cdf(z), normal_sf(z)      Phi and 1 - Phi from math.erfc, relative error about
                                     (1 + z^2) 1e-16 (the rounding of z / sqrt 2, amplified in
                                     the tail), for a scalar (float back) or an array (float64)
    normal_isf(alpha)                z with P(Z > z) = alpha, relative error ~1e-15 on [1e-300, 1)
    normal_quantile(p)               Phi^-1(p)
    betainc(a, b, x)                 regularized incomplete beta I_x(a, b) (continued fraction)
    student_t_cdf(t, df)             P(T <= t), T ~ Student's t with df degrees of freedom
    student_t_quantile(p, df)        its inverse, to 1e-12 absolute (bisection)
    bisect(pred, lo, hi, ...)        halve [lo, hi] keeping pred(lo) true and pred(hi) false;
                                     scalar or elementwise on arrays
    invert_cdf(cdf, q, lo, hi)       x with cdf(x) = q, elementwise, by `bisect`
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


# ---- the standard normal ----------------------------------------------------------------------

def normal_cdf(z):
    """Phi(z) for Z ~ N(0, 1): 0.5 erfc(-z / sqrt 2). A float for a Python or numpy scalar, a
    float64 array for an array (0-d included)."""
    if not isinstance(z, np.ndarray) and np.ndim(z) == 0:
        return 0.5 * math.erfc(-float(z) / _SQRT2)
    return 0.5 * _erfc(-np.asarray(z, dtype=np.float64) / _SQRT2)


def normal_sf(z):
    """P(Z > z) = 0.5 erfc(z / sqrt 2), accurate far into the upper tail (types as normal_cdf)."""
    if not isinstance(z, np.ndarray) and np.ndim(z) == 0:
        return 0.5 * math.erfc(float(z) / _SQRT2)
    return 0.5 * _erfc(np.asarray(z, dtype=np.float64) / _SQRT2)


def normal_isf(alpha: float) -> float:
    """z with P(Z > z) = alpha, Z ~ N(0, 1); relative error ~1e-15 for alpha in [1e-300, 1)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) \
            or not 1e-300 <= alpha < 1:
        raise ValueError(f"alpha must be in [1e-300, 1); got {alpha!r}")
    if alpha > 0.5:
        return -normal_isf(1.0 - float(alpha))  # exact subtraction (Sterbenz)
    if alpha == 0.5:
        return 0.0
    # Abramowitz & Stegun 26.2.23 (|error| < 4.5e-4), then Newton on log Q(z) = log alpha.
    t = math.sqrt(-2.0 * math.log(alpha))
    z = t - (2.515517 + t * (0.802853 + t * 0.010328)) / (
        1.0 + t * (1.432788 + t * (0.189269 + t * 0.001308)))
    for _ in range(100):
        q = 0.5 * math.erfc(z / _SQRT2)
        pdf = math.exp(-0.5 * z * z) / _SQRT2PI
        step = (math.log(q) - math.log(alpha)) * q / pdf
        z += step
        if abs(step) <= 1e-15 * max(1.0, abs(z)):
            break
    return z


def normal_quantile(p: float) -> float:
    """Phi^-1(p) for p in [1e-300, 1)."""
    return -normal_isf(p)


# ---- bisection --------------------------------------------------------------------------------

def bisect(pred: Callable, lo, hi, *, iters: int = 200, xtol: float = 0.0):
    """Shrink [lo, hi] by halving, keeping pred(lo) true and pred(hi) false (the caller checks
    the ends), until `iters` halvings, the bracket is narrower than xtol, or float64 is exhausted
    (the midpoint equals an end). Returns the final (lo, hi): a caller keeps the side its
    guarantee needs (the last x known to satisfy pred, or the first known not to).

    lo, hi scalars: pred(x) -> bool. Arrays: pred(x) -> bool array, each element bisected on its
    own (same number of halvings; an exhausted element no longer moves)."""
    if np.ndim(lo) == 0 and np.ndim(hi) == 0:
        lo, hi = float(lo), float(hi)
        for _ in range(iters):
            if hi - lo < xtol:
                break
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            if pred(mid):
                lo = mid
            else:
                hi = mid
        return lo, hi
    lo, hi = np.broadcast_arrays(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64))
    lo, hi = lo.copy(), hi.copy()
    for _ in range(iters):
        if np.all(hi - lo < xtol):
            break
        mid = 0.5 * (lo + hi)
        if np.all((mid == lo) | (mid == hi)):
            break
        yes = np.asarray(pred(mid), dtype=bool)
        lo, hi = np.where(yes, mid, lo), np.where(yes, hi, mid)
    return lo, hi


def invert_cdf(cdf: Callable, q, lo: float, hi: float) -> np.ndarray:
    """x with cdf(x) = q for a non-decreasing cdf on [lo, hi], by 60 halvings (float64-exact for
    brackets up to ~2^8 wide), elementwise over q."""
    q = np.asarray(q, dtype=np.float64)
    a, b = bisect(lambda x: cdf(x) < q, np.full(q.shape, float(lo)), np.full(q.shape, float(hi)),
                  iters=60)
    return 0.5 * (a + b)


# ---- Student's t ------------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return f


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), a, b > 0."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(a * math.log(x) + b * math.log1p(-x)
                     - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom: 1 - I_x(df/2, 1/2) / 2 for t > 0,
    x = df / (df + t^2)."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t, to 1e-12 absolute (bisection on the CDF)."""
    if not 0 < p < 1 or not df >= 1:
        raise ValueError(f"student_t_quantile needs 0 < p < 1 and df >= 1, got p={p}, df={df}")
    lo, hi = -1.0, 1.0
    while student_t_cdf(lo, df) > p:  # widen until the bracket holds the quantile (df 1, p 1e-6: -3e5)
        lo *= 2.0
    while student_t_cdf(hi, df) < p:
        hi *= 2.0
    lo, hi = bisect(lambda x: student_t_cdf(x, df) < p, lo, hi, xtol=1e-12)
    return 0.5 * (lo + hi)
