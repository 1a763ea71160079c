"""verify.stats check_uniform / check_truncnormal: moments and CDFs against scipy, bounds against
exact tails, no false positives over many seeds, power, bf16, streaming, validation."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from gpt2_verify.verify import stats
from gpt2_verify.verify.stats import (
    LawCheck,
    NormalCheck,
    check_normal,
    check_truncnormal,
    check_uniform,
    truncnormal_variance,
)

from tests.util import failing, round_bits, to_bf16

A = 0.02 * math.sqrt(3.0)  # a uniform with std 0.02
STD = 0.02
K = 3.0  # OLMo's cut


def uniform(seed: int, n: int, a: float = A, dtype=np.float64) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-a, a, n).astype(dtype)


def llmc_uniform(seed: int, n: int, a: float) -> np.ndarray:
    """llm.c's uniform_ (llmc/rand.h): randfloat32 (24-bit grid) * (to - from) + from, float32."""
    k = np.random.default_rng(seed).integers(0, 1 << 24, n)
    u = (k * 2.0 ** -24).astype(np.float32)
    a32 = np.float32(a)
    return u * (a32 - (-a32)) + (-a32)  # float32 ops, each rounded, as gcc computes them


def truncnormal(seed: int, n: int, std: float = STD, k: float = K, dtype=np.float64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(0)
    while out.size < n:
        z = rng.standard_normal(n + n // 8 + 64)
        out = np.concatenate([out, z[np.abs(z) <= k]])
    return (out[:n] * std).astype(dtype)


def check_uni(x, **kw):
    return check_uniform(x, A, **kw)


def check_tn(x, **kw):
    return check_truncnormal(x, STD, K, **kw)


# ---- moments, CDFs and bounds against independent sources ------------------------------------

@pytest.mark.parametrize("k", [0.01, 0.3, 1.0, 1.9999, 2.0, 3.0, 4.5, 8.0, 40.0])
def test_truncnormal_moments_match_scipy(k):
    st = pytest.importorskip("scipy.stats")
    tn = st.truncnorm(-k, k)
    z_mass, m2, m4 = stats._tn_moments(k)
    assert z_mass == pytest.approx(st.norm.cdf(k) - st.norm.cdf(-k), rel=1e-13)
    assert m2 == pytest.approx(tn.var(), rel=1e-10)
    assert m4 == pytest.approx(tn.moment(4), rel=1e-9)
    assert truncnormal_variance(0.02, k) == pytest.approx(0.02 ** 2 * tn.var(), rel=1e-10)
    assert truncnormal_variance(1.0, 3) == pytest.approx(0.9733369246625415, rel=1e-12)


def test_cdfs_match_scipy_within_their_error_bounds():
    st = pytest.importorskip("scipy.stats")
    u = np.linspace(-1.3, 1.3, 100_001)
    law = stats._uniform_law(A)
    assert np.max(np.abs(law.cdf(u) - st.uniform(-1, 2).cdf(u))) <= law.cdf_err
    grid = np.linspace(-1.0, 1.0, stats.KS_BINS + 1)
    assert np.max(np.abs(law.grid_cdf() - st.uniform(-1, 2).cdf(grid))) <= law.grid_err
    for k in (0.5, 2.0, 3.0, 6.0):
        law = stats._tn_law(STD, k)
        ref = st.truncnorm(-k, k)
        u = np.linspace(-k - 0.5, k + 0.5, 100_001)
        assert np.max(np.abs(law.cdf(u) - ref.cdf(u))) <= law.cdf_err
        grid = np.linspace(-k, k, stats.KS_BINS + 1)
        assert np.max(np.abs(law.grid_cdf() - ref.cdf(grid))) <= law.grid_err
        assert (law.lo, law.hi, law.support) == (-k, k, k)


def _irwin_hall_sf(n: int, x: Fraction) -> Fraction:
    """P(U_1 + ... + U_n >= x), U_i iid U(0, 1), exactly (rational arithmetic)."""
    y = n - x  # by symmetry P(S >= x) = P(S <= n - x)
    if y <= 0:
        return Fraction(0)
    if y >= n:
        return Fraction(1)
    total = sum((-1) ** j * math.comb(n, j) * (y - j) ** n for j in range(math.floor(y) + 1))
    return total / math.factorial(n)


@pytest.mark.parametrize("n", [3, 4, 5, 8, 20, 60])
def test_uniform_mean_threshold_is_valid_against_the_exact_irwin_hall_tail(n):
    """u = 2 U - 1: P(mean u >= t) = P(sum U >= n (1 + t) / 2), exact for every n."""
    for alpha in (0.3, 1e-3, 1e-9 / 3):
        t = stats._tail_threshold(n, alpha / 2, 1.0 / 3.0, 1.0, 2.0)
        exact = _irwin_hall_sf(n, Fraction(n) * (1 + Fraction(t)) / 2)
        assert exact <= Fraction(alpha / 2), (n, alpha, t)
        if n >= 20 and alpha == 0.3:  # not absurdly loose where the budget is large; at tiny
            assert exact >= Fraction(alpha / 2) / 20  # alpha and small n the true tail is far
            # below it (n = 60, alpha 1e-3: 0.7% of alpha / 2): the price of validity at every n


def test_tail_threshold_inverts_the_smaller_of_hoeffding_and_bennett():
    for n, var, b, width in [(3, 1 / 3, 1.0, 2.0), (10**6, 4 / 45, 2 / 3, 1.0),
                             (4096, 1.733, 8.03, 9.0), (50, 0.97, 3.0, 6.0)]:
        for alpha in (0.1, 1e-10):
            t = stats._tail_threshold(n, alpha, var, b, width)
            assert stats._tail_bound(n, t, var, b, width) <= alpha * (1 + 1e-12)
            assert stats._tail_bound(n, t * (1 - 1e-9), var, b, width) > alpha * (1 - 1e-6)
            assert t <= width * math.sqrt(math.log(1 / alpha) / (2 * n)) * (1 + 1e-15)
    # at large n Bennett is within a few % of the normal approximation sqrt(2 var ln(1/a) / n)
    t = stats._tail_threshold(10**6, 1e-10 / 6, 4 / 45, 2 / 3, 1.0)
    gauss = math.sqrt(2 * 4 / 45 * math.log(6e10) / 10**6)
    assert gauss < t < 1.05 * gauss


# ---- false positives ------------------------------------------------------------------------

@pytest.mark.parametrize("n,seeds", [(3, 200), (4, 200), (16, 200), (1000, 200), (65_536, 200)])
def test_true_law_samples_pass_many_seeds(n, seeds):
    for seed in range(seeds):
        x = uniform(seed, n)
        res = check_uni(x)
        assert res.passed, (seed, res.reason)
        y = truncnormal(seed, n)
        res = check_tn(y)
        assert res.passed, (seed, res.reason)
        if seed % 10 == 0:  # float32 input and llm.c's float32 uniform_ too
            assert check_uni(x.astype(np.float32)).passed
            assert check_tn(y.astype(np.float32)).passed
            res = check_uni(llmc_uniform(seed, n, A))
            assert res.passed and res.quantization == 2.0 ** -24, (seed, res.reason)


def test_measured_false_positive_rate_is_below_fpr():
    """At fpr = 0.3 (0.1 per sub-test), n = 20, 1500 seeds: every sub-test stays below 0.1."""
    seeds = 1500
    for law, draw in (("uniform", uniform), ("truncnormal", truncnormal)):
        fails, per_test = 0, {"range": 0, "mean": 0, "variance": 0, "ks": 0}
        for seed in range(seeds):
            x = draw(seed, 20)
            res = check_uni(x, fpr=0.3) if law == "uniform" else check_tn(x, fpr=0.3)
            fails += not res.passed
            for t in res.tests:
                per_test[t.name] += not t.passed
        assert fails / seeds <= 0.3, law
        assert per_test["range"] == 0, law
        for name in ("mean", "variance", "ks"):
            assert per_test[name] / seeds <= 0.1, (law, name, per_test)


def test_generator_grid_and_float32_bound_pass(monkeypatch):
    """llm.c's float32 uniform_ draws from a 2^24-point grid with a32 = float32(a) > a: its extreme
    value -a32 lies beyond -a, within the parameter-rounding allowance; on the grid KS path too."""
    a = 0.1
    a32 = float(np.float32(a))
    assert a32 > a
    x = llmc_uniform(61, 300_000, a)
    x[17] = -np.float32(a)  # k = 0: the most negative value llm.c can produce
    res = check_uniform(x, a, name="fcw")
    assert res.passed, res.reason
    assert res.n_outside == 1 and res.range_test.statistic == a32 / a
    monkeypatch.setattr(stats, "EXACT_KS_MAX", 50_000)
    grid = check_uniform(x, a)
    assert grid.passed and grid.ks_method == "grid"
    # 1e-6 beyond a is no rounding: the hard check fails at any n
    res = check_uniform(np.array([0.0, 0.05, -a * (1 + 1e-6)]), a)
    assert not res.passed and failing(res) == {"range"} and res.n_outside == 1
    assert res.range_test.p_value == 0.0 and res.range_test.fpr == 0.0


def test_torch_initializers_pass_and_its_default_cut_fails():
    """PyTorch's own generators (an independent implementation): uniform_ in float32 and bf16,
    trunc_normal_ with an explicit +-3 std cut. trunc_normal_(std=s) alone cuts at +-2
    (absolute), i.e. nothing at s = 0.02: the range check sees it."""
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    for seed, dtype in ((0, torch.float32), (1, torch.bfloat16)):
        g.manual_seed(seed)
        t = torch.empty(200_000, dtype=dtype).uniform_(-A, A, generator=g)
        res = check_uni(t.float().numpy(), name="fcw")
        assert res.passed, res.reason
        assert res.quantization == (2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -24)
    t = torch.empty(200_000)
    torch.nn.init.trunc_normal_(t, std=STD, a=-K * STD, b=K * STD, generator=g.manual_seed(2))
    assert check_tn(t.numpy()).passed
    torch.nn.init.trunc_normal_(t, std=STD, generator=g.manual_seed(3))
    res = check_tn(t.numpy())
    assert not res.passed and "range" in failing(res)


def test_big_input_streams_through_the_grid():
    x = uniform(62, 2_200_000, dtype=np.float32)
    res = check_uni(x)
    assert res.passed and res.ks_method == "grid" and res.ks_resolution == pytest.approx(2 ** -18)
    y = truncnormal(62, 2_100_000, dtype=np.float32)
    res = check_tn(y)
    assert res.passed and res.ks_method == "grid" and res.ks_resolution < 1e-5


# ---- power ----------------------------------------------------------------------------------

@pytest.mark.parametrize("what,draw,check,must_fail", [
    ("bound x1.01", lambda: uniform(71, 100_000, 1.01 * A), check_uni, {"range"}),
    ("bound x0.95", lambda: uniform(72, 200_000, 0.95 * A), check_uni, {"variance", "ks"}),
    ("normal, same std", lambda: np.random.default_rng(73).normal(0, STD, 100_000), check_uni,
     {"range"}),
    ("mean shift a/1000 is inside the bound", lambda: uniform(74, 100_000, A) - A / 1000,
     check_uni, {"range"}),
    ("plain normal", lambda: np.random.default_rng(75).normal(0, STD, 100_000), check_tn,
     {"range"}),
    ("std x1.05, k=3", lambda: truncnormal(76, 100_000, 1.05 * STD), check_tn, {"range"}),
    ("std x1.05, cut at 3 std", lambda: truncnormal(77, 300_000, 1.05 * STD, K / 1.05), check_tn,
     {"variance"}),
    ("k=2.5", lambda: truncnormal(78, 300_000, STD, 2.5), check_tn, {"variance"}),
    ("uniform, same std", lambda: uniform(79, 100_000, STD * math.sqrt(3 * 0.97334)), check_tn,
     {"ks"}),
])
def test_wrong_laws_fail(what, draw, check, must_fail):
    res = check(draw(), name="qkvw")
    assert not res.passed, what
    assert failing(res) >= must_fail, (what, res.reason)
    assert res.reason.startswith("qkvw: not ")


def test_failure_reasons_name_the_figures():
    res = check_uni(uniform(81, 100_000, 1.01 * A), name="fcw")
    assert res.reason.startswith("fcw: not U(-0.03464, 0.03464): ")
    assert f"{res.n_outside} values outside +-0.03464 (max |x| 0.0349" in res.reason
    assert 800 < res.n_outside < 1200  # 1 - 1 / 1.01 of 1e5
    res = check_tn(truncnormal(82, 300_000, 1.05 * STD, K / 1.05))
    assert res.reason.startswith("not N(0, 0.02) cut at +-3 std: std 0.0206")
    assert "vs expected 0.01973 (rms ratio 1.04" in res.reason
    res = check_tn(uniform(83, 100_000, STD * math.sqrt(3 * 0.97334)))
    assert "(shape is not truncated normal)" in res.reason
    assert res.variance_test.passed and res.range_test.passed  # right std, inside the cut


def test_what_the_checks_cannot_see():
    """All statistics are permutation-invariant: a sorted tensor passes; 1% too narrow a bound
    hides below n ~ 10^6."""
    assert check_uni(np.sort(uniform(91, 100_000))).passed
    assert check_uni(uniform(92, 65_536, 0.99 * A)).passed


# ---- rounding: bf16 and coarser -------------------------------------------------------------

@pytest.mark.parametrize("n", [3, 1000, 100_000])
def test_bf16_rounded_samples_pass(n):
    for seed in range(20):
        for x, check in ((uniform(100 + seed, n), check_uni), (truncnormal(100 + seed, n), check_tn)):
            y = to_bf16(x)
            res = check(y)
            assert res.quantization == 2.0 ** -8  # detected
            assert res.passed, (seed, res.reason)
            assert check(y, quantization=2.0 ** -8).passed


def test_bf16_rounding_beyond_the_bound_is_allowed():
    x = uniform(111, 100_000)
    x[:2] = [A, -A]
    y = to_bf16(x)
    assert float(np.max(np.abs(y))) > A  # bf16(A) rounds up
    res = check_uni(y)
    assert res.passed and res.n_outside >= 2, res.reason
    assert not check_uni(y, quantization=2.0 ** -24).passed  # without the allowance: outside
    z = truncnormal(112, 100_000)
    z[0] = K * STD
    assert to_bf16(z).max() > K * STD and check_tn(to_bf16(z)).passed


def test_bf16_does_not_hide_a_wrong_law():
    res = check_uni(to_bf16(uniform(121, 300_000, 0.97 * A)))
    assert res.quantization == 2.0 ** -8 and failing(res) >= {"variance", "ks"}
    res = check_tn(to_bf16(truncnormal(122, 300_000, 1.05 * STD, K / 1.05)))
    assert "variance" in failing(res)


def test_coarse_rounding_needs_and_gets_its_allowance():
    y = round_bits(uniform(131, 1_000_000), 5)
    assert not check_uni(y, quantization=0).passed
    res = check_uni(y, quantization=2.0 ** -5)
    assert res.passed, res.reason


@pytest.mark.parametrize("law", ["uniform", "truncnormal"])
def test_rounding_moves_statistics_less_than_the_allowance(law):
    x = uniform(141, 200_000) if law == "uniform" else truncnormal(141, 200_000)
    check = check_uni if law == "uniform" else check_tn
    y = round_bits(x, 5)
    a = check(x, quantization=0)
    b = check(y, quantization=2.0 ** -5)
    for ta, tb in zip(a.tests, b.tests):
        assert ta.name == tb.name
        assert abs(tb.statistic - ta.statistic) <= tb.allowance, tb.name
        assert tb.allowance > 0


# ---- streaming, layouts ---------------------------------------------------------------------

def _same(a, b):
    assert (a.passed, a.n, a.n_nonfinite, a.ks_method, a.n_outside) == (
        b.passed, b.n, b.n_nonfinite, b.ks_method, b.n_outside)
    assert len(a.tests) == len(b.tests) == 4
    for ta, tb in zip(a.tests, b.tests):
        assert tb.statistic == pytest.approx(ta.statistic, rel=1e-9, abs=1e-12)
        assert (tb.lower, tb.upper) == pytest.approx((ta.lower, ta.upper), rel=1e-9)
    assert a.ks_test.statistic == b.ks_test.statistic


@pytest.mark.parametrize("law", ["uniform", "truncnormal"])
def test_iterable_of_chunks_equals_array(law, monkeypatch):
    x = (uniform(151, 250_000) if law == "uniform" else truncnormal(151, 250_000)).astype(
        np.float32)
    check = check_uni if law == "uniform" else check_tn
    whole = check(x)
    cuts = [0, 7, 7, 100_003, 180_000, 250_000]
    _same(whole, check(x[a:b] for a, b in zip(cuts, cuts[1:])))
    _same(whole, check(iter([x[:50_000].reshape(500, 100), x[50_000:]])))
    _same(check(np.ascontiguousarray(x.reshape(500, 500)[:, ::2])), check(x.reshape(500, 500)[:, ::2]))
    monkeypatch.setattr(stats, "EXACT_KS_MAX", 40_000)
    grid = check(x)
    _same(grid, check(x[i:i + 70_000] for i in range(0, x.size, 70_000)))
    d, de = grid.ks_test.statistic, whole.ks_test.statistic
    assert grid.ks_method == "grid" and de - grid.ks_resolution - 1e-6 <= d <= de + 1e-6


# ---- non-finite values, validation, results -------------------------------------------------

def test_nan_and_inf_fail_without_raising():
    x = uniform(161, 10_000)
    x[[3, 500]] = np.nan
    x[9000] = -np.inf
    res = check_uni(x, name="fcb")
    assert not res.passed and res.n_nonfinite == 3 and res.n == 10_000
    assert res.reason == "fcb: 3 non-finite values (2 NaN, 1 inf) among n=10000"
    assert res.range_test.passed and res.mean_test.passed  # the finite ones look fine
    allnan = check_tn(np.full(5, np.nan, dtype=np.float32))
    assert not allnan.passed and allnan.tests == () and math.isnan(allnan.mean)
    assert check_tn(iter([x[:4000], x[4000:]])).n_nonfinite == 3


@pytest.mark.parametrize("fn,kwargs,match", [
    ("u", {"bound": 0.0}, r"bound must be a positive finite number \(the half-width a of "
                          r"U\(-a, a\)\); got 0.0"),
    ("u", {"bound": -1.0}, "bound must be a positive finite number"),
    ("u", {"bound": float("nan")}, "bound must be a positive finite number"),
    ("u", {"bound": float("inf")}, "bound must be a positive finite number"),
    ("t", {"k": 0}, r"k must be a positive finite number \(the cut in stds of the "
                    r"untruncated normal, e.g. 3\); got 0"),
    ("t", {"k": -3.0}, "k must be a positive finite number"),
    ("t", {"k": float("nan")}, "k must be a positive finite number"),
    ("t", {"std": 0.0}, "std must be a positive finite number"),
    ("t", {"std": float("inf")}, "std must be a positive finite number"),
    ("u", {"fpr": 0.5}, r"fpr must be in \(0, 0.5\)"),
    ("t", {"fpr": 0.0}, "fpr must be in"),
    ("u", {"quantization": 0.5}, r"quantization must be None or in \[0, 0.0625\]"),
    ("t", {"quantization": -1e-3}, "quantization must be"),
])
def test_validation_messages(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        if fn == "u":
            check_uniform(np.zeros(10), **{"bound": A, **kwargs})
        else:
            check_truncnormal(np.zeros(10), **{"std": STD, "k": K, **kwargs})


def test_type_errors_and_too_few_values():
    with pytest.raises(TypeError, match="bound must be a real number"):
        check_uniform(np.zeros(10), "0.1")
    with pytest.raises(TypeError, match="k must be a real number"):
        check_truncnormal(np.zeros(10), STD, True)
    with pytest.raises(TypeError, match="real numbers"):
        check_uniform(np.zeros(10, dtype=complex), A)
    with pytest.raises(TypeError):
        check_uniform(np.zeros(10), A, 1e-9)  # fpr is keyword-only
    with pytest.raises(TypeError):
        check_truncnormal(np.zeros(10), STD, K, 1e-9)
    with pytest.raises(ValueError, match="check_uniform needs at least 3 values; got 2"):
        check_uniform([0.01, -0.02], A)
    with pytest.raises(ValueError, match="check_truncnormal needs at least 3 values; got 0"):
        check_truncnormal(iter([]), STD, K)
    with pytest.raises(ValueError, match="k must be a positive finite number"):
        truncnormal_variance(STD, -1)


def test_results_are_frozen_and_carry_the_figures():
    x = uniform(171, 5000)
    res = check_uniform(x, A, name="wte")
    assert isinstance(res, LawCheck) and LawCheck is NormalCheck
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.passed = False  # type: ignore[misc]
    assert res.reason.startswith("wte: consistent with U(-0.03464, 0.03464) [n=5000, fpr 1e-09]: "
                                 "max |x| 0.034638 (limit 0.034641), mean z=")
    assert "\n" not in res.reason
    assert [t.name for t in res.tests] == ["range", "mean", "variance", "ks"]
    assert res.range_test.fpr == 0.0
    for t in res.tests[1:]:
        assert t.fpr == pytest.approx(1e-9 / 3) and t.passed and 0 < t.p_value <= 1
        assert t.lower <= t.statistic <= t.upper
    assert (res.law, res.law_params) == ("uniform", (("bound", A),))
    assert res.expected_mean == 0.0 and res.expected_std == pytest.approx(STD, rel=1e-15)
    assert res.std == pytest.approx(np.std(x), rel=1e-12)
    assert res.mean_test.statistic == pytest.approx(np.mean(x) / (STD / math.sqrt(5000)))
    assert res.variance_test.statistic == pytest.approx(math.sqrt(np.mean(x ** 2)) / STD)
    t = check_truncnormal(truncnormal(172, 5000), STD, K)
    assert (t.law, t.law_params) == ("truncnormal", (("std", STD), ("k", K)))
    assert t.expected_std == pytest.approx(math.sqrt(truncnormal_variance(STD, K)))
    assert t.passed and t.reason.startswith("consistent with N(0, 0.02) cut at +-3 std [n=5000")
    bad = check_uniform(x * 0.8, A)
    assert bad.variance_test.p_value < 1e-9 / 3 and not bad.variance_test.passed
    assert bad.range_test.passed and bad.range_test.p_value == 1.0
    normal = check_normal(np.random.default_rng(0).normal(0, STD, 100), STD)
    assert normal.law == "normal" and normal.range_test is None and len(normal.tests) == 3
