"""verify.stats: power, false positives at every n, bf16, streaming, NaN, validation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from gpt2_verify.verify import stats
from gpt2_verify.verify.stats import (
    bonferroni,
    check_constant,
    check_normal,
    normal_cdf,
    normal_isf,
)

from tests.util import failing, round_bits, to_bf16

STD = 0.02


def normal(seed: int, n: int, std: float = STD, dtype=np.float64) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * std).astype(dtype)


def test_vectorized_cdf_error_is_within_its_allowance():
    u = np.linspace(-12, 12, 240_001)
    exact = np.array([normal_cdf(v) for v in u])
    err = np.max(np.abs(stats._cdf_approx(u) - exact))
    assert err < stats._APPROX_CDF_ERR / 2


def test_chi2_bounds_are_valid_against_scipy():
    sp = pytest.importorskip("scipy.special")
    for n in (3, 4, 5, 15, 100, 10_000, 10**7):
        for a in (0.3, 1e-3, 1e-9 / 3):
            r, big_r = stats._chi2_ratio_bounds(n, a)
            assert sp.chdtr(n, r * n) <= a / 2  # P(chi2_n <= r n)
            assert sp.chdtrc(n, big_r * n) <= a / 2
            # and not absurdly loose: the exact tails are within a few orders of magnitude
            assert sp.chdtrc(n, big_r * n) > a / 2 * 1e-3


def test_bonferroni():
    assert bonferroni(1e-6, 4) == pytest.approx(2.5e-7)
    assert bonferroni(0.9, 1) == 0.9
    with pytest.raises(ValueError, match="m must be a positive integer"):
        bonferroni(1e-6, 0)
    with pytest.raises(ValueError, match="fpr must be in"):
        bonferroni(1.5, 3)


# ---- false positives ------------------------------------------------------------------------

@pytest.mark.parametrize("n,seeds", [(3, 200), (4, 200), (5, 200), (15, 200), (16, 200),
                                     (1000, 200), (100_000, 200)])
def test_genuine_samples_pass_many_seeds(n, seeds):
    for seed in range(seeds):
        x = normal(seed, n)
        res = check_normal(x, STD)
        assert res.passed, (seed, res.reason)
        if seed % (4 if n < 10**5 else 20) == 0:  # float32 input too
            res = check_normal(x.astype(np.float32), STD)
            assert res.passed, (seed, res.reason)
            assert res.quantization == 2.0 ** -24


def test_measured_false_positive_rate_is_below_fpr():
    """At fpr = 0.3 (0.1 per sub-test): the mean test is exact, the others conservative."""
    seeds, fails, mean_fails = 1500, 0, 0
    for seed in range(seeds):
        res = check_normal(normal(seed, 20), STD, fpr=0.3)
        fails += not res.passed
        mean_fails += not res.mean_test.passed
    assert fails / seeds <= 0.3
    assert 0.07 <= mean_fails / seeds <= 0.13  # exact: 0.1


def test_other_mean_and_std():
    x = normal(1, 50_000, std=3.0) - 7.0
    assert check_normal(x, 3.0, -7.0).passed
    assert not check_normal(x, 3.0, -6.9).passed
    assert failing(check_normal(x, 3.3, -7.0)) >= {"variance"}


# ---- power ----------------------------------------------------------------------------------

def test_power_two_percent_std_error_on_768x3072():
    x = normal(7, 768 * 3072, std=0.0204, dtype=np.float32).reshape(768, 3072)
    res = check_normal(x, STD, name="fcw")
    assert not res.passed
    assert "variance" in failing(res)
    assert res.reason.startswith("fcw: not N(0, 0.02): std 0.0204") or res.reason.startswith(
        "fcw: not N(0, 0.02): std 0.02039")
    assert ", 1.00309]); KS distance" in res.reason
    assert check_normal(normal(7, 768 * 3072, dtype=np.float32), STD).passed


def test_power_uniform_with_right_std():
    h = STD * math.sqrt(3.0)
    x = np.random.default_rng(2).uniform(-h, h, 100_000)
    res = check_normal(x, STD)
    assert not res.passed and failing(res) == {"ks"}
    assert "KS distance" in res.reason


def test_power_student_t5_with_right_std():
    x = np.random.default_rng(3).standard_t(5, 100_000) * (STD / math.sqrt(5 / 3))
    res = check_normal(x, STD)
    assert not res.passed and "ks" in failing(res)


def test_power_mean_shift_of_a_tenth_std():
    x = normal(4, 100_000) + 0.1 * STD
    res = check_normal(x, STD, name="wpe")
    assert not res.passed and "mean" in failing(res)
    assert res.mean_test.statistic > 20
    assert res.reason.startswith("wpe: ") and "z=+" in res.reason


def test_power_unscaled_residual_projection():
    """transformers 5.14.1's bug: c_proj drawn with 0.02 instead of 0.02 / sqrt(2 L)."""
    x = normal(5, 768 * 768, dtype=np.float32)
    res = check_normal(x, 0.02 / math.sqrt(24), name="attprojw")
    assert not res.passed
    assert res.reason.startswith("attprojw: not N(0, 0.004082): std 0.02")


@pytest.mark.parametrize("n", [3, 4, 5, 15])
def test_small_n_genuine_pass_absurd_fail(n):
    assert check_normal(normal(11, n), STD).passed
    far = np.full(n, 10 * STD)
    res = check_normal(far, STD)
    assert not res.passed and "mean" in failing(res)
    assert not check_normal(np.zeros(n), STD).passed  # std 0: variance test
    assert not check_normal(normal(11, n) * 100, STD).passed  # 100x the std


def test_n_below_three_is_an_error():
    with pytest.raises(ValueError, match="at least 3 values; got 2"):
        check_normal([0.01, -0.02], STD)
    with pytest.raises(ValueError, match="at least 3"):
        check_normal(iter([np.zeros(1), np.zeros(0), np.zeros(1)]), STD)


# ---- rounding: bf16 and coarser -------------------------------------------------------------

@pytest.mark.parametrize("n", [3, 1000, 100_000, 3_000_000])
def test_bf16_rounded_samples_pass(n):
    for seed in range(3 if n > 10**6 else 20):
        y = to_bf16(normal(100 + seed, n))
        res = check_normal(y, STD)
        assert res.quantization == 2.0 ** -8  # detected
        assert res.passed, (seed, res.reason)
    assert check_normal(y, STD, quantization=2.0 ** -8).passed


def test_bf16_does_not_hide_a_wrong_std():
    y = to_bf16(normal(9, 768 * 3072, std=0.0204))
    res = check_normal(y, STD)
    assert res.quantization == 2.0 ** -8 and "variance" in failing(res)


def test_coarse_rounding_needs_and_gets_its_allowance():
    """Rounded to 5 significant bits the KS distance is inflated ~0.007: beyond the bare DKW
    bound at n = 1M, within it once quantization= is passed."""
    x = normal(21, 1_000_000)
    y = round_bits(x, 5)
    assert failing(check_normal(y, STD, quantization=0)) == {"ks"}
    res = check_normal(y, STD, quantization=2.0 ** -5)
    assert res.passed, res.reason


@pytest.mark.parametrize("mu", [0.0, 0.05, -0.01])
def test_rounding_moves_statistics_less_than_the_allowance(mu):
    x = normal(22, 200_000) + mu
    y = round_bits(x, 5)
    a = check_normal(x, STD, mu, quantization=0)
    b = check_normal(y, STD, mu, quantization=2.0 ** -5)
    for ta, tb in zip(a.tests, b.tests):
        assert abs(tb.statistic - ta.statistic) <= tb.allowance, tb.name


# ---- streaming, layouts, grid ---------------------------------------------------------------

def _same(a, b, exact_ks=True):
    assert (a.passed, a.n, a.n_nonfinite, a.ks_method) == (b.passed, b.n, b.n_nonfinite,
                                                            b.ks_method)
    for ta, tb in zip(a.tests, b.tests):
        assert tb.statistic == pytest.approx(ta.statistic, rel=1e-9, abs=1e-12)
        assert (tb.lower, tb.upper) == pytest.approx((ta.lower, ta.upper), rel=1e-9)
    if exact_ks:
        assert a.ks_test.statistic == b.ks_test.statistic


def test_iterable_of_chunks_equals_array():
    x = normal(31, 250_000, dtype=np.float32)
    whole = check_normal(x, STD)
    cuts = [0, 7, 7, 100_003, 180_000, 250_000]
    chunks = (x[a:b] for a, b in zip(cuts, cuts[1:]))
    _same(whole, check_normal(chunks, STD))
    _same(whole, check_normal(iter([x[:50_000].reshape(500, 100), x[50_000:]]), STD))


def test_grid_path_streams_and_bounds_the_exact_distance(monkeypatch):
    x = normal(32, 300_000)
    exact = check_normal(x, STD)
    monkeypatch.setattr(stats, "EXACT_KS_MAX", 50_000)
    grid = check_normal(x, STD)
    chunked = check_normal((x[i:i + 70_000] for i in range(0, x.size, 70_000)), STD)
    assert grid.ks_method == "grid" and exact.ks_method == "exact"
    _same(grid, chunked)  # counts are exact: same D whatever the chunking
    d, de = grid.ks_test.statistic, exact.ks_test.statistic
    assert de - grid.ks_resolution - 1e-6 <= d <= de + 1e-6
    assert grid.ks_resolution < 3e-5
    u = np.random.default_rng(2).uniform(-1, 1, 300_000) * STD * math.sqrt(3)
    assert failing(check_normal(u, STD)) == {"ks"}


def test_big_input_uses_the_grid_in_blocks():
    x = normal(33, 2_500_000, dtype=np.float32)
    res = check_normal(x, STD)
    assert res.passed and res.ks_method == "grid" and res.n == 2_500_000


def test_non_contiguous_and_transposed_inputs():
    x = normal(34, 600 * 500).reshape(600, 500)
    base = check_normal(np.ascontiguousarray(x[:, ::2]), STD)
    _same(base, check_normal(x[:, ::2], STD))
    _same(check_normal(x, STD), check_normal(x.T, STD))
    _same(check_normal(np.ascontiguousarray(x[::3]), STD), check_normal(x[::3], STD))
    big = normal(35, 2 * 2_400_000, dtype=np.float32).reshape(2, -1)[:, ::2]  # rows > 1M
    _same(check_normal(np.ascontiguousarray(big), STD), check_normal(big, STD))
    assert check_constant(big, 0.0).first_index == 0


def test_lists_and_ints_are_accepted():
    assert check_normal([0.01, -0.02, 0.005, 0.03], STD).n == 4
    assert not check_normal(np.arange(-50, 50), STD).passed


# ---- non-finite values ----------------------------------------------------------------------

def test_nan_and_inf_fail_without_raising():
    x = normal(41, 10_000)
    x[[3, 500]] = np.nan
    x[9000] = np.inf
    res = check_normal(x, STD, name="qkvw")
    assert not res.passed and res.n_nonfinite == 3 and res.n == 10_000
    assert res.reason == "qkvw: 3 non-finite values (2 NaN, 1 inf) among n=10000"
    assert res.mean_test is not None and res.mean_test.passed  # the finite ones look fine
    allnan = check_normal(np.full(5, np.nan, dtype=np.float32), STD)
    assert not allnan.passed and allnan.tests == () and math.isnan(allnan.mean)
    chunks = check_normal(iter([x[:4000], x[4000:]]), STD)
    assert chunks.n_nonfinite == 3 and not chunks.passed


# ---- check_constant -------------------------------------------------------------------------

def test_check_constant_pass_and_fail_reporting():
    ones = np.ones((12, 768), dtype=np.float32)
    res = check_constant(ones, 1.0, name="ln1w")
    assert res.passed and res.reason == "ln1w: all 9216 values == 1" and res.mismatches == 0
    ones[3, 5] = 1.5
    ones[7, 0] = 0.75
    res = check_constant(ones, 1.0, name="ln1w")
    assert not res.passed and res.mismatches == 2
    assert res.first_index == 3 * 768 + 5 and res.first_value == 1.5
    assert res.max_abs_deviation == 0.5
    assert res.reason == ("ln1w: 2 of 9216 values != 1 (first at index 2309: 1.5; "
                          "max |deviation| 0.5)")


def test_check_constant_zero_nan_streaming_and_order():
    z = np.zeros(1000)
    z[10] = -0.0
    assert check_constant(z, 0).passed
    z[500] = np.nan
    z[600] = 1e-30
    res = check_constant(iter([z[:300], z[300:]]), 0.0)
    assert not res.passed and res.mismatches == 2 and res.n_nonfinite == 1
    assert res.first_index == 500 and "1 non-finite" in res.reason
    assert res.max_abs_deviation == 1e-30
    m = np.zeros((4, 6))
    m[0, 3] = m[2, 1] = 7
    assert check_constant(m.T, 0).first_index == 1 * 4 + 2  # C order of the transposed view
    assert check_constant(np.float32(0.02) * np.ones(5, np.float32), np.float32(0.02)).passed


def test_check_constant_validation():
    with pytest.raises(ValueError, match="no values"):
        check_constant(np.zeros(0), 0.0)
    with pytest.raises(ValueError, match="value must be finite"):
        check_constant(np.zeros(3), float("nan"))


# ---- validation and results -----------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    ({"fpr": 2}, r"fpr must be in \(0, 0.5\).*got 2"),
    ({"fpr": 0.0}, "fpr must be in"),
    ({"fpr": 0.5}, "fpr must be in"),
    ({"std": 0.0}, "std must be a positive finite number; got 0.0"),
    ({"std": -1.0}, "std must be a positive finite number"),
    ({"std": float("inf")}, "std must be a positive finite number"),
    ({"mean": float("nan")}, "mean must be finite"),
    ({"quantization": 0.5}, r"quantization must be None or in \[0, 0.0625\]"),
    ({"quantization": -1e-3}, "quantization must be"),
])
def test_validation_messages(kwargs, match):
    args = {"std": STD, **kwargs}
    with pytest.raises(ValueError, match=match):
        check_normal(np.zeros(10), **args)


def test_type_errors():
    with pytest.raises(TypeError, match="std must be a real number"):
        check_normal(np.zeros(10), "0.02")
    with pytest.raises(TypeError, match="real numbers"):
        check_normal(np.zeros(10, dtype=complex), STD)
    with pytest.raises(TypeError, match="array or an iterable"):
        check_normal("0.1 0.2 0.3", STD)
    with pytest.raises(TypeError, match="iterator of arrays"):
        check_normal([np.zeros(3), np.zeros(4)], STD)  # ragged: numpy cannot stack it
    with pytest.raises(TypeError):
        check_normal(np.zeros(10), STD, 0.0, 1e-9)  # fpr is keyword-only


def test_results_are_frozen_and_carry_the_figures():
    res = check_normal(normal(51, 5000), STD, name="wte")
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.passed = False  # type: ignore[misc]
    assert res.reason.startswith("wte: consistent with N(0, 0.02) [n=5000")
    assert "\n" not in res.reason
    assert [t.name for t in res.tests] == ["mean", "variance", "ks"]
    for t in res.tests:
        assert t.fpr == pytest.approx(1e-9 / 3) and t.passed and 0 < t.p_value <= 1
        assert t.lower <= t.statistic <= t.upper
    assert res.mean_test.upper == pytest.approx(normal_isf(1e-9 / 6) + res.mean_test.allowance)
    assert res.std == pytest.approx(np.std(normal(51, 5000)), rel=1e-12)
    bad = check_normal(normal(51, 5000) * 3, STD)
    assert bad.variance_test.p_value < 1e-9 / 3 and not bad.variance_test.passed
