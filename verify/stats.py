"""Statistical checks of initialized tensors: "is this N(mean, std)?", "is this U(-a, a)?",
"is this a truncated normal?" and "is this all ones?".

`check_normal` runs three sub-tests against the fully specified null N(mu, s), all with
finite-sample (non-asymptotic) bounds, so the false-positive rate is <= fpr at every n >= 3:

* mean:      z = (mean - mu) / (s / sqrt(n)) is exactly N(0, 1); reject |z| > Phi^-1(1 - a/2).
* variance:  T = sum((x - mu)^2) / s^2 is exactly chi^2_n. Chernoff bounds, valid for all n:
             P(T <= r n) and P(T >= R n) are <= exp(-n/2 * h(r)) with h(r) = r - 1 - ln r,
             so [r, R] with h = 2 ln(2/a) / n is a two-sided region of level a. (Laurent-Massart
             is a looser closed form of the same bound.) The statistic is sqrt(T / n).
* shape:     Kolmogorov-Smirnov distance D = sup |F_n - F| with the DKW inequality, Massart's
             constant: P(D > eps) <= 2 exp(-2 n eps^2), valid for all n. Up to 2M values D is
             exact (sorted copy); above, D is evaluated at 2^18 + 1 points evenly spaced over
             mu +- 8 s (one streaming pass, histogram counts). That is a lower bound on the
             true D, so the test stays valid; `ks_resolution` says how much D it may miss.
fpr is split by Bonferroni: each sub-test gets fpr / 3 (use `bonferroni` to split a budget
over m tensors: each check at fpr / m keeps the family-wise rate <= fpr).

Rounding: values stored with relative half-ulp q (bf16: 2^-8, float32: 2^-24; bf16 is detected
in float32 input whose low 16 bits are all zero, or pass quantization=) are y = x (1 + d),
|d| <= q, for some exact sample x. Each bound is widened by the most rounding can move its
statistic, so it stays valid (q' = q / (1 - q)): the mean by q' sum|y| / n; sqrt(T) by
q' ||y|| / s (triangle inequality; for bf16 about a (1 + 2^-8)^2 variance allowance); D by the
largest CDF shift a move of q'|t| can cause, q' max_u |u| pdf(u) = q' e^-1/2 / sqrt(2 pi) for
mu = 0 (plus terms in |mu| / s otherwise). Subnormal (absolute) rounding is ignored: it is below
1e-38 for float32 and bf16.

Uniform: `check_uniform(values, a)` against U(-a, a), four sub-tests, valid for every n >= 3:

* range:     no |value| > a, widened only by rounding (below). Under the null no value can lie
             beyond, so this hard check spends none of fpr; it catches any bound too large.
* mean:      u = x / a lies in [-1, 1] with Var u = 1/3. Hoeffding, P(mean_n >= t) <=
             exp(-n t^2 / 2), or Bennett, exp(-n/3 h(3 t)) with h(v) = (1 + v) ln(1 + v) - v,
             whichever is smaller at each t (both valid for all n); each side gets a / 2.
             The statistic is z = mean / (a / sqrt(3 n)).
* variance:  u^2 lies in [0, 1], mean 1/3, variance 1/5 - 1/9 = 4/45: Hoeffding / Bennett on
             each side (Bennett's one-sided reach: 2/3 above, 1/3 below). Statistic: the rms
             ratio sqrt(mean x^2) / (a / sqrt(3)).
* shape:     DKW-Massart against F(x) = (x + a) / (2 a), exact up to 2M values, then the grid
             (KS_BINS + 1 points over [-a, a]); a bound 5% too small shows here and in the
             variance, not in the range.

Truncated normal: `check_truncnormal(values, s, k)` against N(0, s) cut at +-k s (s the std of
the untruncated normal; OLMo's init uses k = 3). u = x / s lies in [-k, k] with E u^2 =
1 - 2 k phi(k) / Z, Z = 2 Phi(k) - 1 (the truncated variance over s^2; 0.97334 at k = 3) and
E u^4 = 3 - 2 phi(k) (k^3 + 3 k) / Z: the same four sub-tests, with Hoeffding / Bennett on u
in [-k, k] (mean) and on u^2 in [0, k^2] (variance), and DKW-Massart against the truncated
CDF (Phi(x / s) - Phi(-k)) / Z. Plain normal data fail the range (0.27% of values lie beyond
3 s); a std 5% too large with the cut still at +-3 s shows in the variance and KS.

For both, each of mean, variance and KS gets fpr / 3 and the range none: fpr per check in all.
The allowances extend the rounding model above. A generator may round the law's parameter to
float32 or to the storage precision before drawing (llm.c's uniform_ in llmc/rand.h takes float
from/to; reference.schemes draws with float32(a) and float32(std)), so values are
y = x (1 + d) with |d| <= q_e = (1 + q)(1 + max(q, 2^-24)) - 1. Uniform generators also draw
from a grid of 24-bit k: llm.c's uniform_ computes randfloat32() * (to - from) + from in
float32, reference.schemes a (k - 2^23) / 2^23; coupling each with an exact draw puts it within
2^-23 a, plus at most 2^-23 a for float32's rounding of u (b - a): UNIFORM_ABS = 2^-22 a. With
q' = q_e / (1 - q_e) and delta = 2^-22 a (0 for the truncated normal), |x - y| <= q' |y| + delta:
the mean moves by at most q' mean|y| + delta, the rms by q' rms(y) + delta (Minkowski), the CDF
by sup |u| f(u) q_e / (1 - q_e) (truncated normal: phi(min(k, 1)) min(k, 1) / Z) or
(q_e + (1 + q_e) 2^-22) / 2 (uniform, whose density is 1 / (2 a) on [-a, a]), and the range
limit is (a + delta)(1 + q_e). As in check_normal, a generator's own float arithmetic before
its final rounding (Box-Muller's logf/cosf: a few ulps; its 24-bit uniforms) is not modelled:
it moves each statistic by ~1e-7 of the law's scale or CDF, below every bound here for n < 1e12.

Data is read in blocks of at most 1M values converted to float64 one block at a time: a huge
float32 array is never copied whole. Any iterable of arrays works the same way.
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache
from typing import Any, Callable, Iterator

import numpy as np
from gpt2_verify.reference.laws import truncnormal_moments as _tn_moments
from gpt2_verify.reference.special import bisect, normal_cdf, normal_isf, normal_quantile, normal_sf

__all__ = [
    "NormalCheck", "LawCheck", "ConstantCheck", "SubTest", "check_normal", "check_uniform",
    "check_truncnormal", "check_constant", "truncnormal_variance", "bonferroni", "normal_isf",
    "normal_quantile", "normal_cdf",
]

CHUNK = 1 << 20  # values per block converted to float64
EXACT_KS_MAX = 2_000_000  # above this many values the KS distance uses the grid
KS_BINS = 1 << 18  # KS grid for large n: KS_BINS + 1 points evenly spaced over
KS_SPAN = 8.0  # [-KS_SPAN, KS_SPAN] standard deviations (resolution about 2.4e-5)
BF16_Q = 2.0 ** -8  # relative half-ulp of bfloat16 (8 significant bits)
MAX_Q = 1.0 / 16
PARAM_Q = 2.0 ** -24  # a law's parameter may have been rounded to float32 before drawing
UNIFORM_ABS = 2.0 ** -22  # uniform generators: |value - exact draw| <= 2^-22 bound (grid, affine)
N_SUBTESTS = 3
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
_APPROX_CDF_ERR = 2e-7  # bound on |_cdf_approx - Phi| (measured max 4.2e-8; see tests)
_GRID_CDF_ERR = 1e-12  # float64 binning and math.erfc at the grid points (times 1 + |mu|/s)


# ---- the standard normal ----------------------------------------------------------------------

def _cdf_approx(u: np.ndarray) -> np.ndarray:
    """Vectorized Phi(u), absolute error < _APPROX_CDF_ERR (Numerical Recipes' erfcc)."""
    z = np.abs(u) / _SQRT2
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    half_tail = 0.5 * t * np.exp(-z * z + poly)  # P(Z > |u|)
    return np.where(u >= 0, 1.0 - half_tail, half_tail)


# ---- validation -------------------------------------------------------------------------------

def _real(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a real number; got {x!r}")
    return float(x)


def _check_fpr(fpr: Any, hi: float = 0.5) -> float:
    f = _real(fpr, "fpr")
    if not 1e-300 <= f < hi:
        raise ValueError(f"fpr must be in (0, {hi:g}) (and >= 1e-300); got {fpr!r}")
    return f


def bonferroni(fpr: float, m: int) -> float:
    """Per-check false-positive rate so that m checks together stay <= fpr (union bound)."""
    f = _check_fpr(fpr, 1.0)
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m must be a positive integer (the number of checks); got {m!r}")
    return f / int(m)


# ---- reading values in blocks -----------------------------------------------------------------

def _blocks(a: np.ndarray) -> Iterator[np.ndarray]:
    """1-D pieces of at most CHUNK values, in C order, in a's dtype (views where possible)."""
    if a.size == 0:
        return
    if a.ndim == 0:
        yield a.reshape(1)
    elif a.flags.c_contiguous:
        flat = a.reshape(-1)
        for lo in range(0, flat.size, CHUNK):
            yield flat[lo:lo + CHUNK]
    else:
        row = a.size // a.shape[0]
        if row > CHUNK:
            for i in range(a.shape[0]):
                yield from _blocks(a[i])
        else:
            step = CHUNK // row
            for i in range(0, a.shape[0], step):
                yield np.ascontiguousarray(a[i:i + step]).reshape(-1)


def _as_array(x: Any) -> np.ndarray:
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise TypeError(f"cannot read values from {type(x).__name__} ({e}); pass a numeric "
                        f"array, or an iterator of arrays such as iter(list_of_arrays)") from None
    if a.dtype.kind not in "fiu":
        raise TypeError(f"values must be real numbers (float or int arrays); got dtype {a.dtype}"
                        + ("; convert bf16 tensors with .float() first" if a.dtype.kind == "V"
                           else ""))
    return a


def _pieces(values: Any) -> Iterator[np.ndarray]:
    """Blocks from an array-like, or from every array of an iterable of chunks."""
    if isinstance(values, (np.ndarray, list, tuple, int, float, np.generic)) or hasattr(
            values, "__array__"):
        yield from _blocks(_as_array(values))
    elif isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"values must be an array or an iterable of arrays; "
                        f"got {type(values).__name__}")
    else:
        for chunk in values:
            yield from _blocks(_as_array(chunk))


def _native_q(dtype: np.dtype) -> float:
    """Relative rounding of converting an exact value to dtype and then to float64."""
    if dtype.kind != "f":
        return 0.0
    return max(float(np.finfo(dtype).eps) / 2, 2.0 ** -53)


# ---- results ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SubTest:
    """One sub-test: passes iff lower <= statistic <= upper.

    mean: statistic z; variance: statistic sqrt(T / n), the rms about the expected mean over the
    expected std; ks: the KS distance. `allowance` is how much the bounds were widened for
    rounding and numerics; `p_value` is a valid (conservative) p-value; `fpr` its budget.
    """

    name: str
    statistic: float
    lower: float
    upper: float
    p_value: float
    fpr: float
    allowance: float
    passed: bool


@dataclasses.dataclass(frozen=True)
class NormalCheck:
    """The result of check_normal, check_uniform and check_truncnormal (alias LawCheck).

    expected_mean / expected_std are the law's own mean and std (uniform: bound / sqrt(3);
    truncnormal: the truncated std). `law` names the law and `law_params` its parameters as
    given; `range_test` (uniform and truncnormal only) is the hard support check.
    """

    name: str | None
    passed: bool
    reason: str  # one line
    n: int  # all values, non-finite ones included
    n_nonfinite: int
    expected_mean: float
    expected_std: float
    mean: float  # observed, over the finite values
    std: float  # observed rms deviation from the observed mean (ddof=0)
    min: float
    max: float
    fpr: float  # for the whole check; each sub-test gets fpr / 3
    quantization: float  # relative rounding allowed for (bf16: 2^-8)
    ks_method: str  # "exact" or "grid"
    ks_resolution: float  # how far the grid's D may sit below the true D (0 for exact)
    mean_test: SubTest | None  # None when fewer than 3 finite values
    variance_test: SubTest | None
    ks_test: SubTest | None
    law: str = "normal"  # "normal", "uniform" or "truncnormal"
    law_params: tuple[tuple[str, float], ...] = ()  # e.g. (("bound", 0.0346),)
    range_test: SubTest | None = None  # bounded laws: no value beyond the support
    n_outside: int = 0  # finite values beyond the support (before any rounding allowance)

    @property
    def tests(self) -> tuple[SubTest, ...]:
        return tuple(t for t in (self.range_test, self.mean_test, self.variance_test,
                                 self.ks_test) if t)


LawCheck = NormalCheck


@dataclasses.dataclass(frozen=True)
class ConstantCheck:
    name: str | None
    passed: bool
    reason: str
    n: int
    value: float
    mismatches: int  # values != value, non-finite ones included
    n_nonfinite: int
    first_index: int | None  # flat C-order index (across chunks) of the first mismatch
    first_value: float | None
    max_abs_deviation: float  # over the finite values


# ---- laws and the streaming accumulator ------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Law:
    """What the accumulator needs of a law, in standardized units u = (x - loc) / scale.

    cdf: vectorized F(u) for the exact KS path, within cdf_err of the true F; the KS grid has
    KS_BINS + 1 points evenly spaced over [lo, hi] and grid_cdf() gives F there within grid_err;
    values with |x - loc| > support * scale are counted as outside (inf: unbounded).
    """

    loc: float
    scale: float
    lo: float
    hi: float
    cdf: Callable[[np.ndarray], np.ndarray]
    cdf_err: float
    grid_cdf: Callable[[], np.ndarray]
    grid_err: float
    support: float = math.inf


@lru_cache(maxsize=1)
def _grid_cdf() -> np.ndarray:
    """Phi at the KS grid points u_k = -KS_SPAN + k h, k = 0..KS_BINS (exact to ~1e-16)."""
    h = 2.0 * KS_SPAN / KS_BINS
    return np.array([normal_cdf(-KS_SPAN + k * h) for k in range(KS_BINS + 1)])


def _normal_law(mu: float, s: float) -> _Law:
    return _Law(mu, s, -KS_SPAN, KS_SPAN, _cdf_approx, _APPROX_CDF_ERR, _grid_cdf,
                _GRID_CDF_ERR * (1.0 + abs(mu) / s))


class _Accumulator:
    """Streaming moments (Chan's merge), extremes and the empirical CDF."""

    def __init__(self, law: _Law):
        self.law = law
        self.mu, self.s = law.loc, law.scale
        self.n = self.n_finite = self.n_nan = self.n_outside = 0
        self.mean = self.m2 = self.abs_sum = 0.0
        self.lo, self.hi = math.inf, -math.inf
        self.q = 0.0
        self.saw_f32 = False
        self.all_bf16 = True
        self.buffer: list[np.ndarray] | None = []  # exact KS while n_finite <= EXACT_KS_MAX
        self.counts: np.ndarray | None = None

    def add(self, block: np.ndarray) -> None:
        self.n += block.size
        self.q = max(self.q, _native_q(block.dtype))
        if block.dtype == np.float32:
            self.saw_f32 = True
            if self.all_bf16 and (block.view(np.uint32) & 0xFFFF).any():
                self.all_bf16 = False
        x = block.astype(np.float64)
        finite = np.isfinite(x)
        if not finite.all():
            self.n_nan += int(np.isnan(x).sum())
            x = x[finite]
        if x.size == 0:
            return
        cn, cmean = x.size, float(x.mean())
        d = x - cmean
        cm2 = float(np.vdot(d, d))
        total = self.n_finite + cn
        delta = cmean - self.mean
        self.mean += delta * cn / total
        self.m2 += cm2 + delta * delta * self.n_finite * cn / total
        self.n_finite = total
        self.abs_sum += float(np.abs(x).sum())
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        if math.isfinite(self.law.support):
            self.n_outside += int(np.count_nonzero(np.abs(x - self.mu)
                                                   > self.law.support * self.s))
        if self.buffer is not None:
            self.buffer.append(x)
            if self.n_finite > EXACT_KS_MAX:
                pending, self.buffer = self.buffer, None
                self.counts = np.zeros(KS_BINS + 2, dtype=np.int64)
                for part in pending:
                    self._count(part)
        else:
            self._count(x)

    def _count(self, x: np.ndarray) -> None:
        # v is a monotone function of x, within ~1e-10 of (u - lo) / h, u = (x - mu) / s;
        # bin floor(v) + 1 (clipped to [0, KS_BINS + 1]) so that #{bin <= k} = #{v < k}.
        law = self.law
        h = (law.hi - law.lo) / KS_BINS
        v = (x - (self.mu + law.lo * self.s)) * (1.0 / (h * self.s))
        idx = np.floor(np.clip(v, -1.0, KS_BINS + 0.5)).astype(np.int64) + 1
        self.counts += np.bincount(idx, minlength=KS_BINS + 2)

    def ks(self) -> tuple[float, str, float, float]:
        """(D, method, resolution, numeric error bound)."""
        n, mu, s = self.n_finite, self.mu, self.s
        if self.buffer is not None:
            x = np.sort(np.concatenate(self.buffer))
            cdf = self.law.cdf((x - mu) / s)
            i = np.arange(1, n + 1, dtype=np.float64)
            d = max(float(np.max(i / n - cdf)), float(np.max(cdf - (i - 1) / n)))
            return d, "exact", 0.0, self.law.cdf_err
        cdf = self.law.grid_cdf()
        ecdf = np.cumsum(self.counts)[:KS_BINS + 1] / n  # F_n just below grid point k
        d = float(np.max(np.abs(ecdf - cdf)))
        res = max(float(cdf[0]), float(np.max(np.diff(cdf))), 1.0 - float(cdf[-1]))
        return d, "grid", res, self.law.grid_err


class StreamCheck:
    """One law check fed chunk by chunk: add(values) any number of times (arrays, in any
    chunking), then result() -> NormalCheck. check_normal, check_uniform and check_truncnormal
    are this, fed all their values at once; stream_normal/stream_uniform/stream_truncnormal make
    one with the same arguments (validated before any value is read)."""

    def __init__(self, law: _Law, who: str, quantization: float | None,
                 finish: Callable[[_Accumulator, float], NormalCheck]):
        self._acc = _Accumulator(law)
        self._who = who
        self._quantization = quantization
        self._finish = finish

    @property
    def n(self) -> int:
        """Values added so far."""
        return self._acc.n

    def add(self, values: Any) -> None:
        for block in _pieces(values):
            self._acc.add(block)

    def result(self) -> NormalCheck:
        acc = self._acc
        if acc.n < 3:
            raise ValueError(f"{self._who} needs at least 3 values; got {acc.n} "
                             f"(no test can tell a distribution from fewer)")
        if self._quantization is not None:
            q = float(self._quantization)
        else:  # the rounding allowance: bf16 detected in float32 input, else the dtype's own
            q = max(acc.q, BF16_Q if acc.saw_f32 and acc.all_bf16 else 0.0)
        return self._finish(acc, q)


def _run(check: StreamCheck, values: Any) -> NormalCheck:
    check.add(values)
    return check.result()


def _positive(x: Any, what: str, hint: str = "") -> float:
    v = _real(x, what)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{what} must be a positive finite number{hint}; got {x!r}")
    return v


def _check_quantization(quantization: Any) -> float | None:
    if quantization is None:
        return None
    qv = _real(quantization, "quantization")
    if not 0 <= qv <= MAX_Q:
        raise ValueError(f"quantization must be None or in [0, {MAX_Q}] (relative "
                         f"half-ulp, e.g. 2**-8 for bf16); got {quantization!r}")
    return qv


# ---- check_normal -----------------------------------------------------------------------------

def _chi2_ratio_bounds(n: int, alpha: float) -> tuple[float, float]:
    """[r, R] with P(chi2_n / n outside) <= alpha, from the two Chernoff bounds."""
    c = 2.0 * math.log(2.0 / alpha) / n

    def h(r: float) -> float:  # r - 1 - ln r, accurate near 1
        return (r - 1.0) - math.log1p(r - 1.0)

    # h(lo) >= c >= h(hi) below 1: keep lo (the conservative side); above 1 keep hi
    r, _ = bisect(lambda x: h(x) >= c, math.exp(-c - 1.0), 1.0)
    _, big = bisect(lambda x: h(x) < c, 1.0, 2.0 * c + 4.0)
    return r, big


def _chi2_p(n: int, t_lo: float, t_hi: float) -> float:
    """Two-sided Chernoff p-value for chi2_n observed somewhere in [t_lo, t_hi]."""
    if t_lo <= n <= t_hi:
        return 1.0
    r = (t_hi if t_hi < n else t_lo) / n
    if r <= 0.0:
        return 0.0
    return min(1.0, 2.0 * math.exp(-0.5 * n * ((r - 1.0) - math.log1p(r - 1.0))))


def _subtests(acc: _Accumulator, q: float, fpr: float) -> tuple[SubTest, SubTest, SubTest, str,
                                                                   float]:
    n, mu, s = acc.n_finite, acc.mu, acc.s
    a = fpr / N_SUBTESTS
    qq = q / (1.0 - q)
    sqrt_n = math.sqrt(n)

    # mean: |mean(y) - mean(x)| <= q' sum|y| / n
    z = (acc.mean - mu) / (s / sqrt_n)
    z_allow = qq * acc.abs_sum / (s * sqrt_n)
    zb = normal_isf(a / 2) + z_allow
    p = 2.0 * normal_sf(max(abs(z) - z_allow, 0.0))  # two-sided
    mean_t = SubTest("mean", z, -zb, zb, p, a, z_allow, abs(z) <= zb)

    # variance: | ||y - mu|| - ||x - mu|| | <= q' ||y||
    ratio = math.sqrt((acc.m2 + n * (acc.mean - mu) ** 2) / n) / s
    rho = qq * math.sqrt((acc.m2 + n * acc.mean ** 2) / n) / s
    r_lo, r_hi = _chi2_ratio_bounds(n, a)
    lo, hi = max(0.0, math.sqrt(r_lo) - rho), math.sqrt(r_hi) + rho
    p = _chi2_p(n, n * max(0.0, ratio - rho) ** 2, n * (ratio + rho) ** 2)
    var_t = SubTest("variance", ratio, lo, hi, p, a, rho, lo <= ratio <= hi)

    # KS: DKW-Massart, plus the CDF shift rounding can cause, plus numeric error
    d, method, res, err = acc.ks()
    m = abs(mu) / s
    w = qq / _SQRT2PI * ((math.exp(-0.5) + qq * m) / (1.0 - qq) + m) if qq else 0.0
    eps = math.sqrt(math.log(2.0 / a) / (2.0 * n))
    p = min(1.0, 2.0 * math.exp(-2.0 * n * max(d - w - err, 0.0) ** 2))
    ks_t = SubTest("ks", d, 0.0, eps + w + err, p, a, w + err, d <= eps + w + err)
    return mean_t, var_t, ks_t, method, res


def _fmt_fail(t: SubTest, acc: _Accumulator, std: float, expected_std: float, shape: str) -> str:
    if t.name == "range":
        lim = acc.law.support * acc.s
        return (f"{acc.n_outside} values outside +-{lim:.4g} (max |x| "
                f"{max(abs(acc.lo), abs(acc.hi)):.6g} > limit {t.upper * lim:.6g})")
    if t.name == "mean":
        return (f"mean {acc.mean:.4g} vs expected {acc.mu:.4g} "
                f"(z={t.statistic:+.1f}, bound {t.upper:.3g})")
    if t.name == "variance":
        return (f"std {std:.4g} vs expected {expected_std:.4g} (rms ratio {t.statistic:.6g}, "
                f"allowed [{t.lower:.6g}, {t.upper:.6g}])")
    return f"KS distance {t.statistic:.3g} > bound {t.upper:.3g} (shape is not {shape})"


def check_normal(values: Any, std: float, mean: float = 0.0, *, fpr: float = 1e-9,
                 quantization: float | None = None, name: str | None = None) -> NormalCheck:
    """Are `values` (an array, or an iterable of arrays) iid N(mean, std)?

    False-positive rate <= fpr at every n >= 3 (module docstring). quantization is the relative
    half-width of rounding the values went through (2**-8 for bf16); None detects bf16 in
    float32 input and otherwise allows for the input dtype's own rounding. Non-finite values
    make the check fail (it does not raise).
    """
    return _run(stream_normal(std, mean, fpr=fpr, quantization=quantization, name=name), values)


def stream_normal(std: float, mean: float = 0.0, *, fpr: float = 1e-9, quantization: float | None = None,
                  name: str | None = None) -> StreamCheck:
    """check_normal fed chunk by chunk (StreamCheck)."""
    s, mu = _real(std, "std"), _real(mean, "mean")
    _positive(std, "std")
    if not math.isfinite(mu):
        raise ValueError(f"mean must be finite; got {mean!r}")
    f = _check_fpr(fpr)
    qv = _check_quantization(quantization)

    def finish(acc: _Accumulator, q: float) -> NormalCheck:
        tests: tuple[SubTest | None, ...] = (None, None, None)
        method, res = ("exact" if acc.buffer is not None else "grid"), 0.0
        if acc.n_finite >= 3:
            *tests, method, res = _subtests(acc, q, f)
        return _result(acc, q, f, name, dist=f"N({mu:.4g}, {s:.4g})", shape="normal",
                       tests=tests, method=method, res=res, expected_std=s)

    return StreamCheck(_normal_law(mu, s), "check_normal", qv, finish)


def _result(acc: _Accumulator, q: float, f: float, name: str | None, *, dist: str, shape: str,
            tests: tuple[SubTest | None, ...], method: str, res: float, expected_std: float,
            range_test: SubTest | None = None, law: str = "normal",
            law_params: tuple[tuple[str, float], ...] = ()) -> NormalCheck:
    """The result and its one-line reason, for every law (mean, variance, ks [, range])."""
    nf = acc.n_finite
    std_obs = math.sqrt(acc.m2 / nf) if nf else math.nan
    prefix = f"{name}: " if name else ""
    bad = [t for t in (range_test, *tests) if t is not None and not t.passed]
    nonfinite = acc.n - nf
    if nonfinite:
        reason = (f"{prefix}{nonfinite} non-finite values ({acc.n_nan} NaN, "
                  f"{nonfinite - acc.n_nan} inf) among n={acc.n}")
    elif bad:
        reason = (f"{prefix}not {dist}: "
                  + "; ".join(_fmt_fail(t, acc, std_obs, expected_std, shape) for t in bad)
                  + f" [n={acc.n}, fpr {f:.2g}]")
    else:
        mt, vt, kt = tests
        rng = (f"max |x| {max(abs(acc.lo), abs(acc.hi)):.5g} (limit "
               f"{range_test.upper * acc.law.support * acc.s:.5g}), " if range_test else "")
        reason = (f"{prefix}consistent with {dist} [n={acc.n}, fpr {f:.2g}]: {rng}"
                  f"mean z={mt.statistic:+.2f} (bound {mt.upper:.3g}), "
                  f"std {std_obs:.5g} (rms ratio {vt.statistic:.5f} in "
                  f"[{vt.lower:.5f}, {vt.upper:.5f}]), KS {kt.statistic:.3g} "
                  f"(bound {kt.upper:.3g})")
    return NormalCheck(
        name=name, passed=not nonfinite and not bad, reason=reason, n=acc.n,
        n_nonfinite=nonfinite, expected_mean=acc.mu, expected_std=expected_std,
        mean=acc.mean if nf else math.nan, std=std_obs,
        min=acc.lo if nf else math.nan, max=acc.hi if nf else math.nan, fpr=f,
        quantization=q, ks_method=method, ks_resolution=res,
        mean_test=tests[0], variance_test=tests[1], ks_test=tests[2], law=law,
        law_params=law_params, range_test=range_test, n_outside=acc.n_outside)


# ---- bounded laws: uniform and truncated normal -----------------------------------------------

def _bennett_h(u: float) -> float:
    """h(u) = (1 + u) ln(1 + u) - u, accurate for small u (its series there)."""
    if u < 1e-4:
        return u * u * (0.5 - u / 6.0 + u * u / 12.0)
    return (1.0 + u) * math.log1p(u) - u


def _tail_bound(n: int, t: float, var: float, b: float, width: float) -> float:
    """Bound on P(mean_n - mu >= t) for iid X with X - mu <= b, Var X = var, X in an interval of
    length `width`: the smaller of Hoeffding's exp(-2 n t^2 / width^2) and Bennett's
    exp(-n var / b^2 h(b t / var)). Both hold for every n (Boucheron, Lugosi & Massart,
    "Concentration Inequalities" (2013), theorems 2.8 and 2.9)."""
    if t <= 0.0:
        return 1.0
    e = max(2.0 * n * t * t / (width * width), n * var / (b * b) * _bennett_h(b * t / var))
    return math.exp(-e)


def _tail_threshold(n: int, alpha: float, var: float, b: float, width: float) -> float:
    """The smallest t with _tail_bound(n, t, ...) <= alpha (bisection, kept on the safe side)."""
    target = math.log(1.0 / alpha)
    t_h = width * math.sqrt(target / (2.0 * n))  # Hoeffding's own threshold
    if n * var / (b * b) * _bennett_h(b * t_h / var) < target:
        return t_h  # Bennett needs more: Hoeffding's is the smaller
    _, hi = bisect(lambda t: n * var / (b * b) * _bennett_h(b * t / var) < target, 0.0, t_h)
    return hi  # the side where the bound holds


@lru_cache(maxsize=1)
def _uniform_grid_cdf() -> np.ndarray:
    return np.arange(KS_BINS + 1, dtype=np.float64) / KS_BINS  # F(-1 + 2k / KS_BINS), exact


def _uniform_cdf(u: np.ndarray) -> np.ndarray:
    return np.clip((u + 1.0) * 0.5, 0.0, 1.0)


def _uniform_law(a: float) -> _Law:
    return _Law(0.0, a, -1.0, 1.0, _uniform_cdf, _GRID_CDF_ERR, _uniform_grid_cdf, _GRID_CDF_ERR,
                support=1.0)


def truncnormal_variance(std: float, k: float) -> float:
    """Variance of N(0, std) truncated to [-k std, k std]: std^2 (1 - 2 k phi(k) / (2 Phi(k) - 1))."""
    s = _positive(std, "std")
    kk = _positive(k, "k", " (the cut in stds of the untruncated normal, e.g. 3)")
    return s * s * _tn_moments(kk)[1]


@lru_cache(maxsize=4)
def _tn_grid_cdf(k: float) -> np.ndarray:
    """F at the KS grid points -k + j 2k / KS_BINS, j = 0..KS_BINS (math.erfc: ~1e-16)."""
    z_mass, h, base = math.erf(k / _SQRT2), 2.0 * k / KS_BINS, normal_cdf(-k)
    return np.array([(normal_cdf(-k + j * h) - base) / z_mass for j in range(KS_BINS + 1)])


def _tn_law(s: float, k: float) -> _Law:
    z_mass, base = math.erf(k / _SQRT2), normal_cdf(-k)

    def cdf(u: np.ndarray) -> np.ndarray:
        return np.clip((_cdf_approx(u) - base) / z_mass, 0.0, 1.0)

    return _Law(0.0, s, -k, k, cdf, _APPROX_CDF_ERR / z_mass, lambda: _tn_grid_cdf(k),
                _GRID_CDF_ERR / z_mass, support=k)


def _bounded_subtests(acc: _Accumulator, q: float, fpr: float, *, m2: float, m4: float,
                      delta: float, ks_shift: Callable[[float], float]
                      ) -> tuple[SubTest, tuple[SubTest, SubTest, SubTest], str, float]:
    """range, (mean, variance, ks) for a law symmetric about 0 on [-B c, B c] (B = support,
    c = scale) whose standardized variable u = x / c has E u^2 = m2, E u^4 = m4. delta is the
    absolute displacement allowed besides rounding; ks_shift(q_e) the CDF shift a relative
    displacement q_e can cause."""
    n, c, big_b = acc.n_finite, acc.s, acc.law.support
    a = fpr / N_SUBTESTS
    qe = (1.0 + q) * (1.0 + max(q, PARAM_Q)) - 1.0  # value rounding and parameter rounding
    qq = qe / (1.0 - qe)
    sqrt_n = math.sqrt(n)
    sigma = c * math.sqrt(m2)

    # range: |y| <= (B c + delta)(1 + q_e) always under the null, so this costs no fpr
    stat = max(abs(acc.lo), abs(acc.hi)) / (big_b * c)
    limit = (1.0 + delta / (big_b * c)) * (1.0 + qe)
    ok = stat <= limit
    range_t = SubTest("range", stat, 0.0, limit, 1.0 if ok else 0.0, 0.0, limit - 1.0, ok)

    # mean: u in [-B, B], Var u = m2; |mean(y) - mean(x)| <= q' mean|y| + delta
    z = acc.mean * sqrt_n / sigma
    z_allow = (qq * acc.abs_sum / n + delta) * sqrt_n / sigma
    t = _tail_threshold(n, a / 2, m2, big_b, 2.0 * big_b)
    zb = t * sqrt_n / math.sqrt(m2) + z_allow
    dev = max(abs(z) - z_allow, 0.0) * math.sqrt(m2) / sqrt_n
    p = min(1.0, 2.0 * _tail_bound(n, dev, m2, big_b, 2.0 * big_b))
    mean_t = SubTest("mean", z, -zb, zb, p, a, z_allow, abs(z) <= zb)

    # variance: u^2 in [0, B^2], mean m2, Var m4 - m2^2; rms(x - y) <= q' rms(y) + delta
    rms = math.sqrt((acc.m2 + n * acc.mean ** 2) / n)
    ratio, rho = rms / sigma, (qq * rms + delta) / sigma
    var2, up_b, span = m4 - m2 * m2, big_b * big_b - m2, big_b * big_b
    t_hi = _tail_threshold(n, a / 2, var2, up_b, span)
    t_lo = _tail_threshold(n, a / 2, var2, m2, span)
    lo = max(0.0, math.sqrt(max(0.0, m2 - t_lo) / m2) - rho)
    hi = math.sqrt((m2 + t_hi) / m2) + rho
    s_lo, s_hi = max(0.0, ratio - rho) ** 2 * m2, (ratio + rho) ** 2 * m2
    if s_lo > m2:
        p = min(1.0, 2.0 * _tail_bound(n, s_lo - m2, var2, up_b, span))
    elif s_hi < m2:
        p = min(1.0, 2.0 * _tail_bound(n, m2 - s_hi, var2, m2, span))
    else:
        p = 1.0
    var_t = SubTest("variance", ratio, lo, hi, p, a, rho, lo <= ratio <= hi)

    # KS: DKW-Massart against the law's CDF, plus rounding's CDF shift, plus numeric error
    d, method, res, err = acc.ks()
    w = ks_shift(qe)
    eps = math.sqrt(math.log(2.0 / a) / (2.0 * n))
    p = min(1.0, 2.0 * math.exp(-2.0 * n * max(d - w - err, 0.0) ** 2))
    ks_t = SubTest("ks", d, 0.0, eps + w + err, p, a, w + err, d <= eps + w + err)
    return range_t, (mean_t, var_t, ks_t), method, res


def _bounded_result(acc: _Accumulator, q: float, f: float, name: str | None, *, dist: str,
                    shape: str, m2: float, m4: float, delta: float,
                    ks_shift: Callable[[float], float], law: str,
                    law_params: tuple[tuple[str, float], ...]) -> NormalCheck:
    tests: tuple[SubTest | None, ...] = (None, None, None)
    range_t, method, res = None, ("exact" if acc.buffer is not None else "grid"), 0.0
    if acc.n_finite >= 3:
        range_t, tests, method, res = _bounded_subtests(acc, q, f, m2=m2, m4=m4, delta=delta,
                                                        ks_shift=ks_shift)
    return _result(acc, q, f, name, dist=dist, shape=shape, tests=tests, method=method, res=res,
                   expected_std=acc.s * math.sqrt(m2), range_test=range_t, law=law,
                   law_params=law_params)


def check_uniform(values: Any, bound: float, *, fpr: float = 1e-9,
                  quantization: float | None = None, name: str | None = None) -> NormalCheck:
    """Are `values` (an array, or an iterable of arrays) iid U(-bound, bound)?

    Sub-tests (module docstring, "Uniform"): range (hard: no value beyond +-bound, widened only
    by rounding), mean and second moment (Hoeffding / Bennett), KS (DKW-Massart). The
    false-positive rate is <= fpr at every n >= 3 for exact draws rounded to the storage
    precision (quantization: as check_normal), from any generator on a grid of 2^24 or more
    points. Non-finite values make the check fail (it does not raise).

    Power: rejection rate at fpr 1e-9 of float32 data, n = 4096 / 65536 / 1M (200 / 100 / 20
    fixed-seed runs; `python benchmarks/power_laws.py`): bound x1.01 or x1.05: 1 / 1 / 1
    (range); x0.95: 0.49 / 1 / 1 (variance, KS); x0.99: 0 / 0.18 / 1; a normal with the same
    std: 1 / 1 / 1 (range); 1% of the values zero: 0 / 0 / 1. True U(a), bf16-rounded or not:
    0 / 0 / 0. Order is invisible: a sorted tensor passes.
    """
    return _run(stream_uniform(bound, fpr=fpr, quantization=quantization, name=name), values)


def stream_uniform(bound: float, *, fpr: float = 1e-9, quantization: float | None = None,
                   name: str | None = None) -> StreamCheck:
    """check_uniform fed chunk by chunk (StreamCheck)."""
    a = _positive(bound, "bound", " (the half-width a of U(-a, a))")
    f = _check_fpr(fpr)
    qv = _check_quantization(quantization)

    def finish(acc: _Accumulator, q: float) -> NormalCheck:
        return _bounded_result(
            acc, q, f, name, dist=f"U(-{a:.4g}, {a:.4g})", shape="uniform", m2=1.0 / 3.0,
            m4=1.0 / 5.0, delta=UNIFORM_ABS * a,
            ks_shift=lambda qe: 0.5 * (qe + (1.0 + qe) * UNIFORM_ABS),
            law="uniform", law_params=(("bound", a),))

    return StreamCheck(_uniform_law(a), "check_uniform", qv, finish)


def check_truncnormal(values: Any, std: float, k: float, *, fpr: float = 1e-9,
                      quantization: float | None = None, name: str | None = None) -> NormalCheck:
    """Are `values` iid N(0, std) truncated to [-k std, k std] (std of the untruncated normal)?

    Sub-tests (module docstring, "Truncated normal"): range (hard), mean (Hoeffding / Bennett),
    second moment against the truncated variance truncnormal_variance(std, k), KS (DKW-Massart)
    against the truncated CDF. False-positive rate <= fpr at every n >= 3 (quantization: as
    check_normal). Non-finite values make the check fail (it does not raise).

    Power: rejection rate at fpr 1e-9 of float32 data, s = 0.02, k = 3, n = 4096 / 65536 / 1M
    (200 / 100 / 20 runs; `python benchmarks/power_laws.py`): a plain normal (nothing cut, e.g.
    torch's trunc_normal_(std=s) with its absolute default cut +-2): 1 / 1 / 1 (range); std
    x1.05 with k = 3: 1 / 1 / 1 (range); std x1.05 cut at the same +-3 s: 0 / 1 / 1 (variance);
    std x0.95: 0.01 / 1 / 1; k = 2.5: 0 / 1 / 1; k = 2: 1 / 1 / 1; a uniform with the same std:
    0.98 / 1 / 1 (KS). True TN(s, 3), bf16-rounded or not: 0 / 0 / 0. (check_normal with the
    matched std tells TN(s, 3) from a normal in only 15% of runs at 1M.)
    """
    return _run(stream_truncnormal(std, k, fpr=fpr, quantization=quantization, name=name), values)


def stream_truncnormal(std: float, k: float, *, fpr: float = 1e-9, quantization: float | None = None,
                       name: str | None = None) -> StreamCheck:
    """check_truncnormal fed chunk by chunk (StreamCheck)."""
    s = _positive(std, "std", " (the std of the untruncated normal)")
    kk = _positive(k, "k", " (the cut in stds of the untruncated normal, e.g. 3)")
    f = _check_fpr(fpr)
    qv = _check_quantization(quantization)
    z_mass, m2, m4 = _tn_moments(kk)
    peak = min(kk, 1.0) * math.exp(-0.5 * min(kk, 1.0) ** 2) / _SQRT2PI  # max |u| phi(u), |u|<=k

    def finish(acc: _Accumulator, q: float) -> NormalCheck:
        return _bounded_result(
            acc, q, f, name, dist=f"N(0, {s:.4g}) cut at +-{kk:.4g} std", shape="truncated normal",
            m2=m2, m4=m4, delta=0.0, ks_shift=lambda qe: qe / (1.0 - qe) * peak / z_mass,
            law="truncnormal", law_params=(("std", s), ("k", kk)))

    return StreamCheck(_tn_law(s, kk), "check_truncnormal", qv, finish)


# ---- check_constant ---------------------------------------------------------------------------

def check_constant(values: Any, value: float, *, name: str | None = None) -> ConstantCheck:
    """Does every value equal `value` exactly (compared in float64; -0.0 == 0.0)?

    For a constant that float32 cannot represent, pass it as np.float32(c).
    """
    v = _real(value, "value")
    if not math.isfinite(v):
        raise ValueError(f"value must be finite; got {value!r}")
    n = mismatches = nonfinite = 0
    first_index = first_value = None
    max_dev = 0.0
    for block in _pieces(values):
        x = block.astype(np.float64)
        bad = x != v
        if bad.any():
            k = int(bad.sum())
            if first_index is None:
                i = int(np.argmax(bad))
                first_index, first_value = n + i, float(x[i])
            mismatches += k
            finite = np.isfinite(x)
            nonfinite += int(x.size - finite.sum())
            if finite.any():
                max_dev = max(max_dev, float(np.max(np.abs(x[finite] - v))))
        n += x.size
    if n == 0:
        raise ValueError("check_constant got no values; pass a non-empty array or iterable")
    prefix = f"{name}: " if name else ""
    if mismatches:
        reason = (f"{prefix}{mismatches} of {n} values != {v:g} (first at index {first_index}: "
                  f"{first_value:.6g}; max |deviation| {max_dev:.3g}"
                  + (f"; {nonfinite} non-finite" if nonfinite else "") + ")")
    else:
        reason = f"{prefix}all {n} values == {v:g}"
    return ConstantCheck(name=name, passed=mismatches == 0, reason=reason, n=n, value=v,
                         mismatches=mismatches, n_nonfinite=nonfinite, first_index=first_index,
                         first_value=first_value, max_abs_deviation=max_dev)
