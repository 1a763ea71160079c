"""Random access into the init stream (reference.jump, reference.access) against the sequential
stream: mt19937 jumps against stepping the generator, slices of every scheme against the
sequential initializer, and shards of d6 assembled out of order against llm.c's own checksum."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from gpt2_verify.reference import jump
from gpt2_verify.reference.access import Access, NotPredictable, starts
from gpt2_verify.reference.config import GPTConfig, from_descriptor
from gpt2_verify.reference.init import init_params
from gpt2_verify.reference.mt19937 import MT19937, init_genrand
from gpt2_verify.reference.schemes import SCHEMES, resolve

from tests.known import LLMC_DESCRIPTOR_SHA256

# every tensor >= 16 values with tails; tensors under 16 values (llm.c's double path, torch's spare)
CONFIGS = {"L3-C48": GPTConfig(3, 48, 4, vocab=1000, max_seq_len=40),
           "odd-L3-C9": GPTConfig(3, 9, 3, 97, 128, 7),
           "tiny-L2-C4-T3": GPTConfig(2, 4, 4, 10, 16, 3)}


def test_characteristic_polynomial():
    # Matsumoto & Nishimura 1998 (ACM TOMACS 8(1)), section 4: degree 19937, 135 nonzero terms
    p = jump.char_poly()
    assert p.bit_length() - 1 == jump.DEGREE
    assert p.bit_count() == 135


@pytest.mark.parametrize("d", [0, 1, 623, 624, 625, 19936, 19937, 19938, 40_000, 1 << 20, 98_765_431])
def test_jump_key_equals_stepping(d):
    key = init_genrand(1234)
    stepped = jump._bit_generator(key)
    stepped.random_raw(d, output=False)
    jumped = jump._bit_generator(jump.jump_key(key, d))
    assert np.array_equal(jumped.random_raw(2000), stepped.random_raw(2000))


def test_jumps_compose_at_huge_distances():
    a, b = 3**40, 2**45 + 12345  # ~1e19 and ~3.5e13 draws: far beyond stepping
    key = init_genrand(7)
    once = jump.jump_key(key, a + b)
    twice = jump.jump_key(jump.jump_key(key, a), b)
    assert np.array_equal(jump._bit_generator(once).random_raw(1000),
                          jump._bit_generator(twice).random_raw(1000))


@pytest.mark.parametrize("before", [0, 1, 300, 623, 624, 5000])
def test_stream_jump_from_any_block_position(before):
    a, b = MT19937(99), MT19937(99)
    a.u32(before)
    b.u32(before)
    a.skip((1 << 24) + 17)
    b.jump((1 << 24) + 17)  # >= JUMP_MIN: the polynomial path
    assert a.position == b.position
    assert np.array_equal(a.u32(1500), b.u32(1500))


@pytest.fixture
def always_jump(monkeypatch):
    """Every jump of at least one draw by the polynomial path (bar the direct < 19937 case)."""
    monkeypatch.setattr(jump, "JUMP_MIN", 1)
    monkeypatch.setattr(jump, "JUMP_CACHED_MIN", 1)


@pytest.mark.parametrize("profile", ["llmc", "torch"])
@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("label", list(CONFIGS))
def test_slices_equal_the_sequential_stream(label, scheme, profile, always_jump):
    cfg = CONFIGS[label]
    ref = init_params(cfg, 1234, profile, scheme=scheme)
    acc = Access(cfg, 1234, profile, scheme=scheme)
    rng = np.random.default_rng(abs(hash((label, scheme, profile))) % 2**32)
    cuts = [(0, ref.size), (ref.size - 1, ref.size), (0, 1)]
    cuts += [tuple(sorted(int(x) for x in rng.integers(0, ref.size + 1, 2))) for _ in range(8)]
    for lo, hi in cuts:
        got = acc.array(lo, hi)
        assert np.array_equal(got.view(np.uint32), ref[lo:hi].view(np.uint32)), (lo, hi)


def test_tensor_and_layer_ranges(always_jump):
    cfg = CONFIGS["L3-C48"]
    ref = init_params(cfg, 5)
    acc = Access(cfg, 5)
    for spec in cfg.tensors():
        lo, hi = acc.tensor_range(spec.name)
        assert (lo, hi) == (spec.offset, spec.offset + spec.numel)
        if spec.per_layer:
            lo, hi = acc.tensor_range(spec.name, (1, 3))
            assert np.array_equal(acc.array(lo, hi), ref[lo:hi])
            assert hi - lo == 2 * spec.numel // cfg.layers
    with pytest.raises(ValueError, match="no layers"):
        acc.tensor_range("wte", (0, 1))
    with pytest.raises(ValueError, match="outside"):
        acc.tensor_range("qkvw", (2, 4))


def test_only_truncated_schemes_need_the_values():
    cfg = CONFIGS["L3-C48"]
    predictable = [s for s in SCHEMES if s != "olmo-mitchell"]
    for name in predictable:
        starts(resolve(name, cfg))  # closed form, no seed
    with pytest.raises(NotPredictable, match="rejection"):
        starts(resolve("olmo-mitchell", cfg))
    with pytest.raises(NotPredictable):
        starts(resolve("gpt2", cfg, overrides=["fcw.std=0.02", "fcw.k=2"]))


def test_d6_shards_out_of_order_give_llmc_checksum():
    """d6 (40M values: the jumps run the polynomial path) in 5 shards generated last to first,
    reassembled in file order: SHA-256 of llm.c's own buffer."""
    cfg = from_descriptor("d6")
    acc = Access(cfg, 42)
    bounds = np.linspace(0, cfg.num_params_padded, 6).astype(np.int64)
    shards = {}
    for k in reversed(range(5)):
        shards[k] = acc.array(int(bounds[k]), int(bounds[k + 1]))
    h = hashlib.sha256()
    for k in range(5):
        h.update(shards[k].astype("<f4").data)
    assert h.hexdigest() == LLMC_DESCRIPTOR_SHA256["d6"]
