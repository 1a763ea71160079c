"""Mutation tests: deliberately broken initializers must fail the comparator (verify.compare),
and the report must name the broken tensor. The broken initializers either edit the reference tensors directly
(transpose, non-zero bias, ...) or re-draw from the mt19937 stream with a small llm.c-style
loop (`draw_init`) that has switches for the real bugs: missing residual scaling, wte drawn
over Vp rows, nanoGPT's c_proj redraw and tied lm_head redraw, wrong draw order.

Some bugs leave every tensor N(0, std) (transposed weights, shifted streams): those can only be
caught by comparing with the reference stream bit for bit, and the tests assert exactly that.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pytest
from gpt2_verify.reference.config import LAYER_WEIGHTS, GPTConfig, parameter_table
from gpt2_verify.reference.config import ONES_TENSORS as ONES
from gpt2_verify.reference.config import RESIDUAL_TENSORS as RESIDUAL
from gpt2_verify.reference.init import init_tensors
from gpt2_verify.reference.mt19937 import MT19937
from gpt2_verify.reference.normal import init_std, normal_array
from gpt2_verify.verify.compare import compare
from gpt2_verify.verify.formats.model import model_from_mapping

from tests.known import FAMILY_FPR, SEED, SMALL

CFG = SMALL  # ~20 ms to init


# ---- grading through the package (verify.compare) ---------------------------------------------

def grade(cfg: GPTConfig, tensors: dict[str, np.ndarray], seed: int = SEED, profile: str = "llmc"):
    """The comparator's report for `tensors` (name -> array in llm.c's checkpoint shapes)."""
    return compare(model_from_mapping(tensors, source="<mutation>", config=cfg), against=cfg, seed=seed,
                   profile=profile, fpr=FAMILY_FPR)


# ---- a small llm.c-style initializer with bug switches -----------------------------------------

def draw_init(cfg: GPTConfig, seed: int = SEED, profile: str = "llmc", *,
              std: Callable[[str], float] | None = None,
              order: list[tuple[str, int | None]] | None = None,
              wte_rows: int | None = None,
              redraw_cproj: bool = False,
              redraw_wte_last: bool = False) -> dict[str, np.ndarray]:
    """llm.c's gpt_build_from_descriptor re-done on MT19937 + normal_array (one call per
    tensor and layer), with switches:

    std(name): the std passed for a weight (default: the correct one for the profile);
    order: the (name, layer) draw sequence (default: wte, wpe, then per layer qkvw, attprojw,
    fcw, fcprojw); wte_rows: rows of wte drawn (default V); redraw_cproj: nanoGPT's second
    draw of every c_proj with the scaled std after the first pass (which then used std 0.02);
    redraw_wte_last: nanoGPT's tied lm_head, initialized again after everything else.
    """
    specs = {s.name: s for s in parameter_table(cfg)}
    L, C = cfg.layers, cfg.channels
    out = {s.name: np.zeros(s.shape, dtype=np.float32) for s in specs.values()}
    for name in ONES:
        out[name][...] = 1.0

    def std_for(name: str):
        if std is not None:
            return std(name)
        return init_std(cfg, specs[name], profile)

    if order is None:
        order = [("wte", None), ("wpe", None)]
        order += [(n, layer) for layer in range(L) for n in LAYER_WEIGHTS]
    stream = MT19937(seed)

    def draw(name: str, layer: int | None, s) -> None:
        if layer is None:
            rows = (wte_rows or cfg.vocab) if name == "wte" else cfg.max_seq_len
            out[name][:rows] = normal_array(stream, rows * C, s, profile=profile).reshape(rows, C)
        else:
            target = out[name][layer]
            target[...] = normal_array(stream, target.size, s, profile=profile).reshape(
                target.shape)

    unscaled = np.float32(0.02) if profile == "llmc" else 0.02
    for name, layer in order:
        draw(name, layer, unscaled if redraw_cproj and name in RESIDUAL else std_for(name))
    if redraw_cproj:
        for layer in range(L):
            for name in RESIDUAL:
                draw(name, layer, std_for(name))
    if redraw_wte_last:
        draw("wte", None, std_for("wte"))
    return out


# ---- the mutations ----------------------------------------------------------------------------

def _copy(t: dict) -> dict:
    return {k: np.array(v, copy=True) for k, v in t.items()}


def residual_scaling_missing(cfg, ref, seed, profile):
    return draw_init(cfg, seed, profile, std=lambda n: np.float32(0.02) if profile == "llmc"
                     else 0.02)


def std_001(cfg, ref, seed, profile):
    def std(name):
        s = 0.01 if name not in RESIDUAL else 0.02 / math.sqrt(2 * cfg.layers)
        return np.float32(s) if profile == "llmc" else s
    return draw_init(cfg, seed, profile, std=std)


def layernorm_weight_zero(cfg, ref, seed, profile):
    t = _copy(ref)
    for name in ONES:
        t[name][...] = 0.0
    return t


def bias_torch_default(cfg, ref, seed, profile):
    """nn.Linear's default bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in)) left in place."""
    t = _copy(ref)
    rng = np.random.default_rng(seed)
    for name, fan_in in (("qkvb", cfg.channels), ("fcb", cfg.channels)):
        bound = 1 / math.sqrt(fan_in)
        t[name][...] = rng.uniform(-bound, bound, size=t[name].shape).astype(np.float32)
    return t


def padded_rows_nonzero(cfg, ref, seed, profile):
    t = _copy(ref)
    t["wte"][cfg.vocab:] = np.float32(1e-3)
    return t


def wte_over_padded_rows(cfg, ref, seed, profile):
    return draw_init(cfg, seed, profile, wte_rows=cfg.padded_vocab)


def cproj_drawn_twice(cfg, ref, seed, profile):
    return draw_init(cfg, seed, profile, redraw_cproj=True)


def tied_lm_head_redraw(cfg, ref, seed, profile):
    return draw_init(cfg, seed, profile, redraw_wte_last=True)


def wpe_before_wte(cfg, ref, seed, profile):
    order = [("wpe", None), ("wte", None)]
    order += [(n, layer) for layer in range(cfg.layers) for n in LAYER_WEIGHTS]
    return draw_init(cfg, seed, profile, order=order)


def checkpoint_order(cfg, ref, seed, profile):
    """All layers of qkvw, then all of attprojw, ...: the file order, not llm.c's loop."""
    order = [("wte", None), ("wpe", None)]
    order += [(n, layer) for n in LAYER_WEIGHTS for layer in range(cfg.layers)]
    return draw_init(cfg, seed, profile, order=order)


def transposed(name):
    def mutate(cfg, ref, seed, profile):
        t = _copy(ref)
        L, rows, cols = t[name].shape
        t[name] = np.ascontiguousarray(np.swapaxes(ref[name], 1, 2)).reshape(L, rows, cols)
        return t
    mutate.__name__ = f"{name}_transposed"
    return mutate


# (mutation, property kind that must fail, tensors it must name, distribution must miss it)
MUTATIONS = [
    (residual_scaling_missing, "distribution", ("attprojw", "fcprojw"), False),
    (std_001, "distribution", ("wte", "wpe", "qkvw", "fcw"), False),
    (layernorm_weight_zero, "constant", ONES, False),
    (bias_torch_default, "constant", ("qkvb", "fcb"), False),
    (padded_rows_nonzero, "constant", ("wte",), False),
    (wte_over_padded_rows, "constant", ("wte",), False),
    (cproj_drawn_twice, "exact", ("attprojw",), True),
    (tied_lm_head_redraw, "exact", ("wte",), True),
    (wpe_before_wte, "exact", ("wte",), True),
    (checkpoint_order, "exact", ("attprojw", "qkvw"), True),
    (transposed("attprojw"), "exact", ("attprojw",), True),
    (transposed("qkvw"), "exact", ("qkvw",), True),
]


@pytest.fixture(scope="module")
def references():
    cache = {}

    def get(profile):
        if profile not in cache:
            cache[profile] = init_tensors(CFG, SEED, profile)
        return cache[profile]
    return get


@pytest.mark.parametrize("profile", ["llmc", "torch"])
def test_draw_init_without_bugs_is_the_reference(profile, references):
    mine = draw_init(CFG, SEED, profile)
    ref = references(profile)
    for name, a in mine.items():
        assert np.array_equal(a.view(np.uint32), ref[name].view(np.uint32)), name


@pytest.mark.parametrize("profile", ["llmc", "torch"])
@pytest.mark.parametrize("seed", [0, SEED, 1337, 2**32 - 1])
def test_reference_is_exact(profile, seed):
    assert grade(CFG, init_tensors(CFG, seed, profile), seed, profile).verdict == "exact"


# what each kind of failure looks like in the report
KIND_TEXT = {"constant": "must", "distribution": "expected"}


@pytest.mark.parametrize("profile", ["llmc", "torch"])
@pytest.mark.parametrize("mutation,kind,names,distribution_blind", MUTATIONS,
                         ids=[m[0].__name__ for m in MUTATIONS])
def test_mutation_is_caught(mutation, kind, names, distribution_blind, profile, references):
    broken = mutation(CFG, references(profile), SEED, profile)
    report = grade(CFG, broken, SEED, profile)
    assert not report.passed("close"), f"{mutation.__name__} graded {report.verdict}"
    graded = {t.name: t for t in report.tensors}
    for name in names:
        t = graded[name]
        assert t.verdict not in ("exact", "close"), (name, t.verdict)
        if kind in KIND_TEXT:
            assert t.verdict == "mismatch" and KIND_TEXT[kind] in t.reason, (name, t.reason)
    if kind == "exact":  # the first slice in draw order that differs is in the broken tensor
        assert report.first_divergence["tensor"] in names, report.first_divergence
    if distribution_blind:
        # every tensor is still N(0, std): only the stream comparison can catch this bug, and
        # the distribution check alone passes it
        assert {t.verdict for t in report.tensors} <= {"exact", "close", "distribution"}
        assert all(graded[n].verdict == "distribution" for n in names)
        assert report.causes, "the stream diagnosis names a cause"


def test_report_lines_are_one_line_each():
    broken = transposed("attprojw")(CFG, init_tensors(CFG, SEED), SEED, "llmc")
    broken["lnfb"][3] = 1.0
    broken["fcprojw"] *= 2
    report = grade(CFG, broken)
    bad = {t.name: t for t in report.tensors if t.verdict not in ("exact", "close")}
    assert set(bad) == {"attprojw", "fcprojw", "lnfb"}
    assert bad["lnfb"].verdict == "mismatch" and "lnfb[3] = 1" in bad["lnfb"].reason
    assert bad["fcprojw"].verdict == "mismatch" and "2x expected" in bad["fcprojw"].reason
    assert bad["attprojw"].verdict == "distribution" and "transposed" in bad["attprojw"].cause
    assert all("\n" not in t.reason for t in report.tensors)
