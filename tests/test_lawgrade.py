"""Grading against the scheme's laws alone from a pushed stream (verify.compare.LawGrader, what
`report` uses): the same verdicts and reasons as `compare` for files from another RNG, any
chunking; verify.stats' streamed checks equal the one-shot ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gpt2_verify.reference.config import GPTConfig
from gpt2_verify.reference.schemes import resolve
from gpt2_verify.verify.compare import compare, law_graders, model_verdict
from gpt2_verify.verify.formats.checkpoint import write_checkpoint_array
from gpt2_verify.verify.formats.model import open_model
from gpt2_verify.verify.stats import (
    check_normal,
    check_truncnormal,
    check_uniform,
    stream_normal,
    stream_truncnormal,
    stream_uniform,
)

CFG = GPTConfig(3, 32, 2, vocab=100, max_seq_len=16)  # L=3: 2x is not the 1/sqrt(2L) = 2.45x cause


def _numpy_init(cfg: GPTConfig, seed: int, scale: dict[str, float] | None = None) -> np.ndarray:
    """A correct gpt2 init from numpy's generator (another stream, the right laws), with the
    named tensors' values multiplied by `scale`."""
    rng = np.random.default_rng(seed)
    out = []
    for s in cfg.tensors():
        if s.name in ("ln1w", "ln2w", "lnfw"):
            t = np.ones(s.numel)
        elif s.name in ("wte", "wpe", "qkvw", "fcw", "attprojw", "fcprojw"):
            std = 0.02 / math.sqrt(2 * cfg.layers) if s.name in ("attprojw", "fcprojw") else 0.02
            t = rng.normal(0, std, s.numel)
            if s.name == "wte":
                t[cfg.vocab * cfg.channels:] = 0.0
        else:
            t = np.zeros(s.numel)
        out.append(t * (scale or {}).get(s.name, 1.0))
    return np.concatenate(out).astype(np.float32)


def _grade_streamed(path, chunk: int):
    with open_model(path) as m:
        init = resolve("gpt2", m.config)
        graders = law_graders(m, init)
        for name, g in graders.items():
            pos = 0
            for values in m.iter_chunks(name, chunk):
                g.feed(pos, values)
                pos += values.size
        grades = {n: g.grade() for n, g in graders.items()}
    return grades, model_verdict(grades, init)


@pytest.mark.parametrize("scale,bad", [({}, set()),
                                       ({"attprojw": 2.0, "fcprojw": 2.0}, {"attprojw", "fcprojw"}),
                                       ({"fcw": 1.15}, {"fcw"})])
def test_verdicts_and_reasons_equal_compares(tmp_path, scale, bad):
    path = tmp_path / "m.bin"
    write_checkpoint_array(path, CFG, _numpy_init(CFG, 5, scale), "fp32")
    with open_model(path) as m:
        rep = compare(m, progress=False)
    grades, (verdict, text) = _grade_streamed(path, chunk=777)
    assert {n for n, g in grades.items() if g.verdict == "mismatch"} == bad
    for t in rep.tensors:
        g = grades[t.name]
        if t.verdict == "mismatch":  # compare's reason for a tensor not from its stream is the laws'
            assert g.verdict == "mismatch" and g.reason == t.reason
        else:
            assert t.verdict in ("distribution", "exact") and g.verdict == "distribution"
    if bad:
        assert verdict == "mismatch" and text.startswith(f"mismatch: {len(bad)} of 16 tensors")
    else:
        assert verdict == "distribution" and text.startswith("correct init: every tensor follows")
    if "attprojw" in bad:
        with open_model(path) as m:
            ratio = float(m.tensor("attprojw").astype(np.float64).std()) / (0.02 / math.sqrt(6))
        assert f"= {ratio:.3g}x expected" in grades["attprojw"].reason and abs(ratio - 2) < 0.1


def test_any_chunking_gives_the_same_grades(tmp_path):
    path = tmp_path / "m.bin"
    write_checkpoint_array(path, CFG, _numpy_init(CFG, 6, {"fcw": 1.15}), "fp32")
    a, _ = _grade_streamed(path, chunk=1 << 20)
    b, _ = _grade_streamed(path, chunk=97)
    assert {n: (g.verdict, g.reason) for n, g in a.items()} == {
        n: (g.verdict, g.reason) for n, g in b.items()}
    assert a["fcw"].verdict == "mismatch"


def test_streamed_checks_equal_the_one_shot_checks():
    rng = np.random.default_rng(3)
    cases = [(check_normal, stream_normal, rng.normal(0, 0.02, 50_000), (0.02,)),
             (check_uniform, stream_uniform, rng.uniform(-0.1, 0.1, 50_000), (0.1,)),
             (check_truncnormal, stream_truncnormal,
              np.clip(rng.normal(0, 0.02, 60_000), -0.06, 0.06)[:50_000], (0.02, 3.0))]
    for one, stream, x, args in cases:
        x = x.astype(np.float32)
        want = one(x, *args, fpr=1e-9)
        s = stream(*args, fpr=1e-9)
        for lo in range(0, x.size, 3001):
            s.add(x[lo:lo + 3001])
        got = s.result()
        assert (got.passed, got.reason) == (want.passed, want.reason)
        # Chan's merge in other blocks: equal up to float64 rounding
        assert got.mean == pytest.approx(want.mean, rel=1e-12)
        assert got.std == pytest.approx(want.std, rel=1e-12)
    with pytest.raises(ValueError, match="at least 3 values"):
        stream_normal(0.02).result()
