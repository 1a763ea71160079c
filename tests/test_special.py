"""reference.special: the normal distribution, Student's t and bisection, against scipy.

scipy is the independent judge here (a test dependency only: reference.special uses numpy and
the standard library).
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from gpt2_verify.reference import special
from gpt2_verify.reference.special import normal_cdf, normal_isf, normal_quantile

sp = pytest.importorskip("scipy.special")
scipy_stats = pytest.importorskip("scipy.stats")


def test_normal_cdf_and_sf_match_scipy():
    z = np.concatenate([np.linspace(-37, 37, 7401), [-1e-300, 0.0, 1e-300]])  # Phi(-37) = 6e-300
    # relative error (1 + z^2) 4e-16: the rounding of z / sqrt 2, amplified by d log Phi / dz ~ |z|
    allowed = 4e-16 * (1.0 + z * z)
    assert np.all(np.abs(special.normal_cdf(z) - sp.ndtr(z)) <= allowed * sp.ndtr(z))
    assert np.all(np.abs(special.normal_sf(z) - sp.ndtr(-z)) <= allowed * sp.ndtr(-z))
    assert isinstance(special.normal_cdf(1.5), float)
    assert isinstance(special.normal_cdf(np.float64(1.5)), float)
    assert special.normal_cdf(1.5) == special.normal_cdf(np.array([1.5]))[0]
    assert special.normal_cdf(np.array(1.5)).shape == ()  # a 0-d array stays an array


def test_normal_isf_known_values():
    assert normal_isf(1e-9 / 2) == pytest.approx(6.109410204869, abs=1e-11)
    assert normal_isf(0.025) == pytest.approx(1.959963984540054, rel=1e-14)
    assert normal_isf(1e-12) == pytest.approx(7.034483825301131, rel=1e-13)
    assert normal_isf(0.5) == 0.0
    assert normal_quantile(0.975) == pytest.approx(1.959963984540054, rel=1e-14)
    assert normal_quantile(0.025) == pytest.approx(-1.959963984540054, rel=1e-14)
    for a in (1e-300, 1e-12, 1e-9, 0.01, 0.3, 0.5, 0.9):
        assert normal_cdf(-normal_isf(a)) == pytest.approx(a, rel=1e-13)


def test_normal_isf_matches_scipy():
    alphas = [10.0 ** -k for k in range(1, 301, 7)] + [0.1, 0.2, 0.3, 0.4999, 0.6, 0.99, 0.999999]
    for a in alphas:
        want = -sp.ndtri(a) if a < 0.5 else sp.ndtri(1.0 - a)
        assert normal_isf(a) == pytest.approx(want, rel=1e-13, abs=1e-15)


def test_normal_isf_rejects_bad_alpha():
    for bad in (0.0, 1.0, -0.1, 2, float("nan")):
        with pytest.raises(ValueError, match="alpha must be in"):
            normal_isf(bad)


def test_betainc_matches_scipy():
    for a in (0.5, 1.0, 2.5, 50.0):
        for b in (0.5, 3.0, 40.0):
            for x in (0.0, 1e-8, 0.01, 0.3, 0.5, 0.9, 0.999999, 1.0):
                assert special.betainc(a, b, x) == pytest.approx(sp.betainc(a, b, x), rel=1e-12, abs=1e-300)


def test_student_t_matches_scipy():
    for df in (1, 2, 3, 4, 7, 10, 29, 100):
        for t in (-40.0, -2.0, -0.1, 0.0, 0.7, 3.0, 500.0):
            assert special.student_t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), rel=1e-12)
        for p in (0.9, 0.975, 0.995):
            assert special.student_t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9)
    # tails beyond any fixed bracket: df 1 (Cauchy) at 1e-6 is -318309.9
    for p, df in ((1e-6, 1), (1 - 1e-6, 1), (1e-9, 3)):
        assert special.student_t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9)
    for p, df in ((0.0, 3), (1.0, 3), (0.5, 0)):
        with pytest.raises(ValueError, match="0 < p < 1 and df >= 1"):
            special.student_t_quantile(p, df)


def test_bisect_scalar_keeps_its_sides():
    lo, hi = special.bisect(lambda x: x * x < 2.0, 0.0, 2.0)
    assert lo * lo < 2.0 <= hi * hi and hi == np.nextafter(lo, 3.0)  # float64 exhausted
    lo, hi = special.bisect(lambda x: x < 0.3, 0.0, 1.0, xtol=1e-3)
    assert hi - lo < 1e-3 and lo < 0.3 <= hi
    lo, hi = special.bisect(lambda x: x < 0.3, 0.0, 1.0, iters=3)
    assert (lo, hi) == (0.25, 0.375)


def test_bisect_and_invert_cdf_elementwise():
    q = np.array([1e-12, 0.025, 0.5, 0.9, 1 - 1e-6])  # near 1 the cdf itself resolves only 1e-16
    x = special.invert_cdf(special.normal_cdf, q, -40.0, 40.0)
    np.testing.assert_allclose(x, sp.ndtri(q), rtol=1e-9, atol=1e-12)
    lo, hi = special.bisect(lambda x: x < np.array([0.1, 5.0]), np.zeros(2), np.full(2, 8.0))
    assert np.all(lo < [0.1, 5.0]) and np.all(hi >= [0.1, 5.0]) and np.all(hi == np.nextafter(lo, 9.0))


def test_special_needs_neither_scipy_nor_verify():
    """reference/ never imports verify, and runtime code never needs scipy."""
    tree = ast.parse(Path(special.__file__).read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules <= {"__future__", "math", "typing", "numpy"}, modules
    assert math.isclose(special.normal_cdf(0.0), 0.5)
