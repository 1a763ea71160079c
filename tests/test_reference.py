"""The reference initializer against independent sources.

Expected values here come from outside this project: the C++ standard (mt19937), llm.c's
rand.h documentation (seed 137), llm.c's own code compiled with gcc -O3 on x86-64 glibc 2.36
(checksums below, produced by a harness around llmc/rand.h and gpt_build_from_descriptor's
loop, not by this project), exact rational arithmetic (fma), and torch (see test_torch_profile).
"""

from __future__ import annotations

import hashlib
import random
from fractions import Fraction

import numpy as np
import pytest
from gpt2_verify.reference import exact, glibc_libm
from gpt2_verify.reference.config import GPTConfig, from_descriptor
from gpt2_verify.reference.init import init_params, iter_params
from gpt2_verify.reference.mt19937 import MT19937, init_genrand
from gpt2_verify.reference.normal import init_std, normal_array

from tests.known import LLMC_DESCRIPTOR_SHA256, LLMC_LARGE_SHA256, LLMC_SHA256

# ---- mt19937 --------------------------------------------------------------------------------


def test_mt19937_matches_cpp_standard():
    # [rand.predef]: the 10000th output of a default-constructed std::mt19937 (seed 5489)
    s = MT19937(5489)
    assert int(s.u32(10000)[-1]) == 4123659995
    # std::mt19937(42)'s first outputs (also torch.manual_seed(42)'s generator)
    assert MT19937(42).u32(3).tolist() == [1608637542, 3421126067, 4083286876]


@pytest.mark.parametrize("seed", [0, 1, 42, 1337, 2**31, 2**32 - 1])
def test_mt19937_matches_numpy_legacy_seeding(seed):
    bg = np.random.MT19937()
    bg._legacy_seeding(seed)  # numpy's own init_genrand, an independent implementation
    assert np.array_equal(MT19937(seed).u32(2000), bg.random_raw(2000).astype(np.uint32))


def test_rand_h_documented_sequence_seed_137():
    """llmc/rand.h's header comment: manual_seed(137), 5 draws, normal_(8), 1 draw,
    normal_(16), 1 draw. The integers are exact; the normals were printed from torch,
    whose SIMD kernel uses another log/sin/cos, so they agree to a few float32 ulps."""
    s = MT19937(137)
    assert s.u32(5).tolist() == [4053805790, 2173880614, 380293709, 1237255315, 2986595568]
    t8 = normal_array(s, 8, np.float32(1.0))
    np.testing.assert_allclose(t8, [0.7947664260864258, 1.4369317293167114, -0.2292192131280899,
                                    0.47556325793266296, -0.6334410905838013, -0.5791953802108765,
                                    -0.0925704762339592, -0.8659197092056274], rtol=1e-6)
    assert int(s.u32(1)[0]) == 2186503452
    t16 = normal_array(s, 16, np.float32(1.0))
    np.testing.assert_allclose(t16, [
        -1.2813878059387207, -2.646395683288574, -0.06569503247737885, 0.2180829495191574,
        -0.46536165475845337, -0.33108410239219666, 2.5485482215881348, 0.10425379872322083,
        0.8460659980773926, 0.9462448358535767, -0.2913765013217926, 0.34313806891441345,
        -1.1186704635620117, -0.18305328488349915, -2.3153159618377686, 0.3961987793445587],
        rtol=0, atol=2e-6)  # printed by torch's vectorized kernel: other libm, few-ulp diffs
    assert int(s.u32(1)[0]) == 2756748748


def test_seed_validation():
    with pytest.raises(ValueError, match="uint32"):
        init_genrand(2**32)
    with pytest.raises(ValueError):
        init_genrand(-1)
    with pytest.raises(TypeError):
        init_genrand(1.5)


def test_snapshot_restore_replays_the_stream():
    s = MT19937(7)
    s.u32(1000)
    snap = s.snapshot()
    a = s.u32(5000)
    s.restore(snap)
    assert np.array_equal(a, s.u32(5000))
    t = MT19937(7)
    t.skip(1000)
    assert np.array_equal(a, t.u32(5000))


def test_randfloat64_high_word_first():
    s, r = MT19937(3), MT19937(3)
    hi, lo = (int(v) for v in r.u32(2))
    expected = (((hi << 32) | lo) & ((1 << 53) - 1)) * 2.0**-53
    assert s.randfloat64(1)[0] == expected


# ---- exact fma ------------------------------------------------------------------------------


def _fma_exact(a: float, b: float, c: float) -> float:
    """a*b + c with one rounding, via exact rationals (Python's float(Fraction) is RN-even)."""
    return float(Fraction(a) * Fraction(b) + Fraction(c))


def test_fma_emulation_is_correctly_rounded():
    rnd = random.Random(12345)
    a, b, c = [], [], []
    for _ in range(4000):
        x = rnd.uniform(-2, 2) * 2.0 ** rnd.randint(-30, 30)
        y = rnd.uniform(-2, 2) * 2.0 ** rnd.randint(-30, 30)
        # make c cancel the product to various depths (the hard cases for emulation)
        z = -x * y * (1 + rnd.choice([0.0, 2**-53, -(2**-52), 2**-30, rnd.uniform(-1, 1)]))
        a.append(x), b.append(y), c.append(z)
    # exact ties of the sum: product with a half-ulp remainder
    a += [1.0 + 2**-52, 1.0 + 2**-27]
    b += [1.0 + 2**-52, 1.0 + 2**-27]
    c += [-1.0, -1.0]
    got = exact.fma(np.array(a), np.array(b), np.array(c))
    want = np.array([_fma_exact(x, y, z) for x, y, z in zip(a, b, c)])
    assert np.array_equal(got.view(np.int64), want.view(np.int64))


# ---- glibc logf / sincosf emulation ---------------------------------------------------------


def test_libm_special_values():
    x = np.array([1.0, 0.0, -1.0, np.inf, np.nan, 1e-45, 2.0], dtype=np.float32)
    got = glibc_libm.logf(x)
    assert got[0] == 0.0 and not np.signbit(got[0])
    assert got[1] == -np.inf and np.isnan(got[2]) and got[3] == np.inf and np.isnan(got[4])
    assert abs(float(got[5]) - np.log(float(x[5]))) < 1e-5  # subnormal input path
    assert got[6] == np.float32(0.6931472)
    s, c = glibc_libm.sincosf(np.array([0.0, 1e-5, np.inf, 200.0], dtype=np.float32))
    assert s[0] == 0.0 and c[0] == 1.0 and s[1] == np.float32(1e-5) and c[1] == 1.0
    assert np.isnan(s[2]) and np.isnan(c[2])
    assert abs(float(s[3]) - np.sin(200.0)) < 1e-6 and abs(float(c[3]) - np.cos(200.0)) < 1e-6


def test_libm_accuracy_against_float64():
    """Within glibc's documented error (logf 0.82 ulp, sinf/cosf 0.56 ulp) of the truth."""
    rng = np.random.default_rng(5)
    x = rng.random(200_000).astype(np.float32) + np.float32(1e-7)
    truth = np.log(x.astype(np.float64))
    ulp = np.spacing(np.abs(truth).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(glibc_libm.logf(x) - truth) / ulp) < 0.82
    t = (rng.random(200_000) * 7).astype(np.float32)
    s, c = glibc_libm.sincosf(t)
    for got, truth in ((s, np.sin(t.astype(np.float64))), (c, np.cos(t.astype(np.float64)))):
        ulp = np.spacing(np.abs(truth).astype(np.float32)).astype(np.float64)
        assert np.max(np.abs(got - truth) / ulp) < 0.57


# ---- llm.c init checksums (independent: llm.c's C code, gcc -O3, x86-64 glibc 2.36) ---------

def _sha_of_stream(cfg, seed, profile="llmc"):
    h = hashlib.sha256()
    for _spec, part in iter_params(cfg, seed, profile):
        h.update(np.ascontiguousarray(part, dtype="<f4").data)
    return h.hexdigest()


@pytest.mark.parametrize("key", list(LLMC_SHA256), ids=lambda k: "-".join(map(str, k)))
def test_llmc_small_configs_bit_exact(key):
    *fields, seed = key
    cfg = GPTConfig(*fields)
    assert _sha_of_stream(cfg, seed) == LLMC_SHA256[key]
    # the in-memory path agrees with the streamed one
    if cfg.num_params_padded < 10**6:
        flat = init_params(cfg, seed)
        assert hashlib.sha256(flat.astype("<f4").tobytes()).hexdigest() == LLMC_SHA256[key]


@pytest.mark.parametrize("desc", list(LLMC_DESCRIPTOR_SHA256))
def test_llmc_descriptors_bit_exact(desc):
    assert _sha_of_stream(from_descriptor(desc), 42) == LLMC_DESCRIPTOR_SHA256[desc]


def test_chunking_does_not_change_bits():
    cfg = GPTConfig(2, 24, 3, 333, 384, 17)
    ref = init_params(cfg, 9)
    for chunk in (16, 48, 1000):
        parts = [p for _s, p in iter_params(cfg, 9, chunk=chunk)]
        assert np.array_equal(np.concatenate(parts).view(np.uint32), ref.view(np.uint32))


def test_residual_std_rounding_differs_between_profiles_for_some_L():
    """llm.c's 0.02f*(1.0f/sqrtf(2.0f*L)) (train_gpt2.cu) vs train_gpt2.py's float(0.02/sqrt(2L))
    differ for L=6, 24."""
    cfg6 = from_descriptor("d6")
    spec = {s.name: s for s in cfg6.tensors()}["fcprojw"]
    assert init_std(cfg6, spec, "llmc") != np.float32(init_std(cfg6, spec, "torch"))
    cfg12 = from_descriptor("d12")
    spec = {s.name: s for s in cfg12.tensors()}["fcprojw"]
    assert init_std(cfg12, spec, "llmc") == np.float32(init_std(cfg12, spec, "torch"))


@pytest.mark.parametrize("desc", list(LLMC_LARGE_SHA256))
def test_golden_records_of_large_models_agree_with_llmc(desc):
    from gpt2_verify.verify import golden

    assert golden.load(desc)["profiles"]["llmc"]["sha256_fp32"] == LLMC_LARGE_SHA256[desc]


@pytest.mark.slow
@pytest.mark.parametrize("desc", list(LLMC_LARGE_SHA256))
def test_llmc_large_descriptors_bit_exact(desc):
    assert _sha_of_stream(from_descriptor(desc), 42) == LLMC_LARGE_SHA256[desc]
