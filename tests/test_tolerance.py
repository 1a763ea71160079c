"""verify.tolerance: one model of a tolerance (absolute, relative, normwise, with its source).

Independent judges: the bound formulas written out by hand in float64, and the three users'
own bounds (same-stream init values, llm.c's float32 checks, the llmc harness limits) rebuilt
from their documented definitions.
"""

from __future__ import annotations

import numpy as np
import pytest
from gpt2_verify.verify.compare import tolerance as same_stream
from gpt2_verify.verify.tolerance import Tolerance

SRC = "a test"


@pytest.mark.parametrize("kwargs, message", [
    (dict(source=SRC), "at least one of abs=, rel=, norm="),
    (dict(rel=1e-6), "comes from: source="),
    (dict(rel=1e-6, source="  "), "comes from: source="),
    (dict(rel=-1e-6, source=SRC), "finite number >= 0"),
    (dict(norm=float("nan"), source=SRC), "finite number >= 0"),
    (dict(norm=1e-6, scale_of="", source=SRC), "scale_of= naming"),
    (dict(rel=1e-6, measured=2e-6, source=SRC), "raise the bound or fix the measurement"),
    (dict(abs=1e-2, literal="double", source=SRC), "arith='float32' and abs= alone"),
    (dict(abs=1e-2, rel=0.1, arith="float32", literal="double", source=SRC), "abs= alone"),
    (dict(abs=1e-2, arith="float16", source=SRC), "arith must be one of"),
])
def test_half_specified_tolerances_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Tolerance(**kwargs)


def test_positional_terms_are_refused():
    with pytest.raises(TypeError):
        Tolerance(1e-6, source=SRC)  # which of abs, rel, norm? keyword-only


def test_kinds_and_bounds():
    ref = np.array([-3.0, 0.5, 0.0, 2.0])
    t = Tolerance(abs=1e-3, rel=1e-2, norm=1e-1, source=SRC)
    assert t.kind == "normwise" and t.leading == 1e-1
    np.testing.assert_array_equal(t.allowed(ref), (1e-1 * 3.0 + 1e-2 * np.abs(ref)) + 1e-3)
    np.testing.assert_array_equal(t.allowed(ref, scale=10.0), (1e-1 * 10.0 + 1e-2 * np.abs(ref)) + 1e-3)
    assert Tolerance(rel=1e-2, abs=0.0, source=SRC).kind == "relative"
    exact = Tolerance(abs=0.0, source=SRC)
    assert exact.kind == "absolute" and exact.bound(5.0) == 0.0
    assert Tolerance(rel=1e-2, source=SRC).bound(-4.0) == 4e-2
    assert Tolerance(norm=2.0, abs=1.0, source=SRC).bound(scale=3.0) == 7.0
    assert t.describe() == "|a-b| <= 0.001 + 0.01*|ref| + 0.1*max|ref|"
    d = t.to_dict()
    assert (d["kind"], d["text"], d["source"], d["norm"]) == ("normwise", t.describe(), SRC, 0.1)


def test_evaluate_float64_edges():
    t = Tolerance(rel=0.5, source=SRC)
    ref = np.array([2.0, 2.0, 2.0, 2.0])
    cand = np.array([3.0, np.nextafter(3.0, 4.0), np.nan, 1.0])
    _d, allowed, ok = t.evaluate(cand, ref)
    assert list(ok) == [True, False, False, True] and list(allowed) == [1.0] * 4
    _d, _a, ok = Tolerance(rel=0.5, strict=True, source=SRC).evaluate(cand, ref)
    assert list(ok) == [False, False, False, False]
    _d, _a, ok = Tolerance(rel=0.5, nan_passes=True, source=SRC).evaluate(cand, ref)
    assert list(ok) == [True, False, True, True]


def test_same_stream_bound_is_the_derived_formula():
    """compare.tolerance.close_bound: 1e-5 * std + (1e-6 + 2 u) * |ref| + a, u and a the storage
    type's half-ulp (relative) and absolute unit; bit for bit as written out."""
    rng = np.random.default_rng(0)
    ref = (rng.standard_normal(1000) * 0.02).astype(np.float32)
    r = np.abs(ref.astype(np.float64))
    for dtype, (u, a) in {"fp32": (2.0 ** -24, 0.0), "bf16": (2.0 ** -8, 0.0),
                          "fp16": (2.0 ** -11, 2.0 ** -25), "fp64": (0.0, 0.0), "other": (0.0, 0.0)}.items():
        want = 1e-5 * 0.02 + (1e-6 + 2 * u) * r + a
        np.testing.assert_array_equal(same_stream.close_bound(ref, 0.02, dtype), want, err_msg=dtype)
    assert same_stream.SAME_STREAM.kind == "normwise" and same_stream.SAME_STREAM.scale_of == "std"
    assert "bf16 storage" in same_stream.same_stream("bf16").source
    assert same_stream.same_stream("fp64") is same_stream.SAME_STREAM


def test_widened_keeps_source_and_terms():
    t = Tolerance(norm=1e-5, source="derived")
    w = t.widened(rel=1e-3, abs=1e-9, why="storage")
    assert (w.norm, w.rel, w.abs, w.source) == (1e-5, 1e-3, 1e-9, "derived; storage")
    assert t.widened(why="nothing") is t
