"""Mutation tests: deliberately broken initializers must fail the property checks, and the
failure must name the broken tensor.

`run_properties` is the property runner (constants, per-tensor distribution, exact comparison
with the reference init). The broken initializers either edit the reference tensors directly
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

from reference.config import LAYER_WEIGHTS, GPTConfig, parameter_table
from reference.config import ONES_TENSORS as ONES
from reference.config import RANDOM_TENSORS as RANDOM
from reference.config import RESIDUAL_TENSORS as RESIDUAL
from reference.config import ZERO_TENSORS as ZEROS
from reference.init import init_std, init_tensors
from reference.mt19937 import MT19937
from reference.normal import normal_array
from tests.known import FAMILY_FPR, SEED, SMALL
from verify.stats import bonferroni, check_constant, check_normal

CFG = SMALL  # ~20 ms to init


# ---- the property runner ----------------------------------------------------------------------

def _expected_std(cfg: GPTConfig, name: str) -> float:
    return 0.02 / math.sqrt(2 * cfg.layers) if name in RESIDUAL else 0.02


def run_properties(cfg: GPTConfig, tensors: dict[str, np.ndarray], seed: int = SEED,
                   profile: str = "llmc", *, family_fpr: float = FAMILY_FPR) -> list[str]:
    """Every property failure of `tensors` (name -> array in llm.c's checkpoint shapes), one
    line each, prefixed "constant:", "distribution:" or "exact:", each naming its tensor.

    * constant: ln*w exactly 1, biases exactly 0, wte rows V..Vp-1 exactly 0;
    * distribution: each random tensor (wte over its V drawn rows) N(0, 0.02), attprojw and
      fcprojw N(0, 0.02/sqrt(2L)); family-wise fpr split over the tensors checked;
    * exact: bit-identical to the reference init for (cfg, seed, profile); names the first
      differing tensor in checkpoint order, where and by how much, and the others that differ.
    """
    failures: list[str] = []
    specs = parameter_table(cfg)
    shapes = {s.name: s.shape for s in specs}
    for name, spec_shape in shapes.items():
        got = np.shape(tensors.get(name))
        if got != spec_shape:
            failures.append(f"shape: {name} has shape {got}, expected {spec_shape}")
    if failures:
        return failures

    for name in ONES:
        r = check_constant(tensors[name], 1.0, name=name)
        if not r.passed:
            failures.append(f"constant: {r.reason}")
    for name in ZEROS:
        r = check_constant(tensors[name], 0.0, name=name)
        if not r.passed:
            failures.append(f"constant: {r.reason}")
    if cfg.padded_vocab > cfg.vocab:
        r = check_constant(tensors["wte"][cfg.vocab:], 0.0, name="wte (padded rows)")
        if not r.passed:
            failures.append(f"constant: {r.reason}")

    def drawn(name):
        return tensors[name][: cfg.vocab] if name == "wte" else tensors[name]

    checked = [n for n in RANDOM if drawn(n).size >= 3]
    if checked:
        fpr = bonferroni(family_fpr, len(checked))
        for name in checked:
            r = check_normal(drawn(name), _expected_std(cfg, name), fpr=fpr, name=name)
            if not r.passed:
                failures.append(f"distribution: {r.reason}")

    reference = init_tensors(cfg, seed, profile)
    differing = []
    for spec in specs:
        a = np.ascontiguousarray(tensors[spec.name], dtype=np.float32)
        b = reference[spec.name]
        bad = a.view(np.uint32) != b.view(np.uint32)
        if bad.any():
            differing.append((spec.name, bad, a, b))
    if differing:
        name, bad, a, b = differing[0]
        where = np.unravel_index(int(np.argmax(bad)), bad.shape)
        at = ", ".join(str(int(i)) for i in where)
        others = ", ".join(d[0] for d in differing[1:]) or "none"
        failures.append(
            f"exact: {name} differs from the reference init (seed {seed}, {profile}) in "
            f"{int(bad.sum())} of {bad.size} values, first at {name}[{at}]: "
            f"{float(a[where]):.6g} vs {float(b[where]):.6g}; other tensors differing: {others}")
    return failures


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
    (checkpoint_order, "exact", ("qkvw",), True),
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
def test_reference_passes_every_property(profile, seed):
    assert run_properties(CFG, init_tensors(CFG, seed, profile), seed, profile) == []


@pytest.mark.parametrize("profile", ["llmc", "torch"])
@pytest.mark.parametrize("mutation,kind,names,distribution_blind", MUTATIONS,
                         ids=[m[0].__name__ for m in MUTATIONS])
def test_mutation_is_caught(mutation, kind, names, distribution_blind, profile, references):
    broken = mutation(CFG, references(profile), SEED, profile)
    failures = run_properties(CFG, broken, SEED, profile)
    assert failures, f"{mutation.__name__} passed every property"
    of_kind = [f for f in failures if f.startswith(f"{kind}:")]
    assert of_kind, f"{mutation.__name__}: no {kind} failure in {failures}"
    if kind == "exact":  # the first differing tensor is the broken one
        assert of_kind[0].startswith(f"exact: {names[0]} differs"), of_kind
    for name in names:
        assert any(f"{kind}: {name}" in f for f in of_kind), (name, of_kind)
    if distribution_blind:
        # every tensor is still N(0, std): only the stream comparison can catch this bug
        assert not [f for f in failures if f.startswith("distribution:")], failures


def test_failure_messages_are_one_line():
    broken = transposed("attprojw")(CFG, init_tensors(CFG, SEED), SEED, "llmc")
    broken["lnfb"][3] = 1.0
    broken["fcprojw"] *= 2
    failures = run_properties(CFG, broken, SEED, "llmc")
    assert [f.split(":")[0] for f in failures] == ["constant", "distribution", "exact"]
    assert all("\n" not in f for f in failures)
    assert "lnfb" in failures[0] and "fcprojw" in failures[1]
    assert failures[2].startswith("exact: attprojw differs")
    assert failures[2].endswith("other tensors differing: fcprojw, lnfb")
