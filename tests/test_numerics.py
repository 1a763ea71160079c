"""verify.numerics.model: GPT-2 forward/backward as llm.c's train_gpt2.c, and its training loop.

Independent judges: a plain-numpy float64 forward written from the math
(verify.numerics.numpy_forward), central finite differences of that numpy forward for every
gradient, and hand-written training loops (AdamW itself: tests/test_adamw.py).

Weights are scaled up from llm.c's std 0.02 and LayerNorm parameters perturbed, because at
std 0.02 the network is nearly linear and a wrong GELU constant, attention scale or LayerNorm
term hides below any sensible tolerance.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

pytest.importorskip("torch")

from gpt2_verify.reference.config import RANDOM_TENSORS, TENSOR_NAMES, GPTConfig, parameter_table  # noqa: E402
from gpt2_verify.reference.init import init_tensors  # noqa: E402
from gpt2_verify.verify.numerics import numpy_forward  # noqa: E402
from gpt2_verify.verify.numerics.adamw import ADAMW, AdamW  # noqa: E402
from gpt2_verify.verify.numerics.model import (  # noqa: E402
    TorchModel,
    TrainState,
    forward_backward,
    random_tokens,
    train_steps,
)

SMALL = GPTConfig(2, 64, 4, vocab=1000, max_seq_len=64)  # as tests/known.py SMALL
# tiny configs covering the edge shapes: C=1/NH=1, NH=C, L=1, Vp >> V, uneven everything
TINY = {
    "C1-NH1": GPTConfig(1, 1, 1, vocab=5, max_seq_len=4),
    "NH=C": GPTConfig(2, 4, 4, vocab=11, padded_vocab=16, max_seq_len=5),
    "L1": GPTConfig(1, 8, 2, vocab=13, max_seq_len=6),
    "L2-hs3": GPTConfig(2, 6, 2, vocab=7, padded_vocab=9, max_seq_len=5),
}


def lively(cfg: GPTConfig, seed: int, *, std: float = 0.4) -> dict[str, np.ndarray]:
    """llm.c's init with random tensors scaled to `std`, LayerNorm weights 1 + N(0, 0.3^2),
    biases N(0, 0.2^2) and the padded wte rows filled with noise (they must not matter)."""
    p = {k: v.astype(np.float64) for k, v in init_tensors(cfg, seed).items()}
    rng = np.random.default_rng(seed + 1000)
    for spec in parameter_table(cfg):
        a = p[spec.name]
        if spec.name in RANDOM_TENSORS:
            a *= std / 0.02
        elif spec.init == "ones":
            a += 0.3 * rng.standard_normal(a.shape)
        else:
            a += 0.2 * rng.standard_normal(a.shape)
    p["wte"][cfg.vocab:] = 3.0 * rng.standard_normal((cfg.padded_vocab - cfg.vocab, cfg.channels))
    return p


# ---- forward: torch float64 vs plain numpy ------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_matches_numpy(name, seed):
    cfg = TINY[name]
    params = lively(cfg, seed)
    for batch, seq in ((2, cfg.max_seq_len), (3, 1)):  # T = maxT and T = 1
        x, y = random_tokens(cfg, batch=batch, seq=seq, seed=seed)
        fb = forward_backward(cfg, params, x, y, backward=False)
        logits, loss = numpy_forward.forward(cfg, params, x, y)
        assert fb.logits.shape == (batch, seq, cfg.vocab)
        assert fb.logits.dtype == np.float64
        # both are float64 sums of a few dozen O(1) terms: measured max 5e-15
        assert np.max(np.abs(fb.logits - logits)) <= 1e-12
        assert abs(fb.loss - loss) <= 1e-12
        assert fb.grads is None


def test_forward_small_matches_numpy():
    params = lively(SMALL, 3, std=0.2)
    x, y = random_tokens(SMALL, batch=2, seq=16, seed=3)
    fb = forward_backward(SMALL, params, x, y, backward=False)
    logits, loss = numpy_forward.forward(SMALL, params, x, y)
    assert np.max(np.abs(fb.logits - logits)) <= 1e-12 * max(1.0, np.max(np.abs(logits)))
    assert abs(fb.loss - loss) <= 1e-12 * loss


def test_numpy_judge_sees_planted_faults():
    """The judge has power: each fault below, planted in a copy of the math, moves the logits
    far beyond the 1e-12 tolerance at these weights."""
    cfg = TINY["L1"]
    params = lively(cfg, 0)
    x, y = random_tokens(cfg, batch=2, seq=6, seed=0)
    ref = forward_backward(cfg, params, x, y, backward=False).logits
    orig = numpy_forward._gelu_tanh
    try:
        numpy_forward._gelu_tanh = lambda z: 0.5 * z * (1 + np.tanh(0.95 * math.sqrt(2 / math.pi)
                                                                    * (z + 0.044715 * z ** 3)))
        bad, _ = numpy_forward.forward(cfg, params, x, y)
    finally:
        numpy_forward._gelu_tanh = orig
    assert np.max(np.abs(bad - ref)) > 1e-4
    # LayerNorm 1 with the unbiased variance (ddof=1) is the biased one scaled by sqrt((C-1)/C)
    unbiased = dict(params, ln1w=params["ln1w"] * math.sqrt(7 / 8))
    bad, _ = numpy_forward.forward(cfg, unbiased, x, y)
    assert np.max(np.abs(bad - ref)) > 1e-4


# ---- backward: analytic vs central finite differences of the numpy forward ---------------------

# 4-point central stencil (f(-2h) - 8f(-h) + 8f(h) - f(2h)) / 12h: truncation O(h^4 f^(5)),
# rounding ~ 1.5 eps |L| / h ~ 1e-12 at h = 1e-3. Measured worst |numeric - analytic| over all
# tensors: 4e-11 at h = 1e-3 (1e-9 at 3e-3, 1e-11 but noisier at 1e-4). So the check is
# |a - n| <= 1e-6 * max(|a|, |n|, 1e-3): relative 1e-6 for gradients above 1e-3, absolute 1e-9
# (25x the measured noise) below.
FD_STEP = 1e-3
FD_REL = 1e-6
FD_FLOOR = 1e-3


def _fd(cfg, params, x, y, name, index):
    vals = []
    for k in (-2, -1, 1, 2):
        a = params[name].copy()
        a[index] += k * FD_STEP
        vals.append(numpy_forward.forward(cfg, dict(params, **{name: a}), x, y)[1])
    return (vals[0] - 8 * vals[1] + 8 * vals[2] - vals[3]) / (12 * FD_STEP)


@pytest.mark.parametrize("name", ["NH=C", "L1", "L2-hs3"])
def test_gradients_match_finite_differences(name):
    cfg = TINY[name]
    params = lively(cfg, 7)
    x, y = random_tokens(cfg, batch=2, seq=cfg.max_seq_len, seed=7)
    fb = forward_backward(cfg, params, x, y)
    rng = np.random.default_rng(11)
    worst, sizable = 0.0, 0
    for tname in TENSOR_NAMES:
        g = fb.grads[tname]
        assert g.shape == params[tname].shape and g.dtype == np.float64
        picks = [np.unravel_index(int(rng.integers(g.size)), g.shape) for _ in range(4)]
        picks.append(np.unravel_index(int(np.argmax(np.abs(g))), g.shape))
        if tname == "wte":
            picks.append((cfg.vocab + int(rng.integers(cfg.padded_vocab - cfg.vocab)),
                          int(rng.integers(cfg.channels))))
        for idx in picks:
            a, n = float(g[idx]), _fd(cfg, params, x, y, tname, idx)
            err = abs(a - n) / max(abs(a), abs(n), FD_FLOOR)
            worst = max(worst, err)
            sizable += abs(a) > FD_FLOOR
            assert err <= FD_REL, f"{tname}{idx}: analytic {a!r} numeric {n!r}"
    assert worst <= FD_REL
    assert sizable >= 3 * len(TENSOR_NAMES)  # the check was not vacuous (most probes non-tiny)


def test_c1_gradients():
    """C = 1: x - mean(x) = 0, so every LayerNorm outputs its bias alone and passes exactly zero
    gradient back. The final LayerNorm cuts the residual stream off from the loss: only lnfb and
    wte (through the logits lnfb * wte) get gradient, every other tensor exactly 0."""
    cfg = TINY["C1-NH1"]
    params = lively(cfg, 1)
    x, y = random_tokens(cfg, batch=2, seq=4, seed=1)
    fb = forward_backward(cfg, params, x, y)
    for name in TENSOR_NAMES:
        if name not in ("lnfb", "wte"):
            assert not fb.grads[name].any(), name
    for name, idx in (("lnfb", (0,)), ("wte", (int(y[0, 0]), 0))):
        n = _fd(cfg, params, x, y, name, idx)
        a = float(fb.grads[name][idx])
        assert abs(a) > FD_FLOOR
        assert abs(a - n) <= FD_REL * max(abs(a), abs(n), FD_FLOOR)


# ---- padded vocabulary, shapes, init loss ------------------------------------------------------

def test_padded_vocab_is_ignored():
    cfg = GPTConfig(1, 16, 2, vocab=100, padded_vocab=256, max_seq_len=8)
    params = lively(cfg, 5, std=0.2)
    x, y = random_tokens(cfg, batch=3, seq=8, seed=5)
    fb = forward_backward(cfg, params, x, y)
    assert fb.logits.shape == (3, 8, 100)
    assert fb.grads["wte"].shape == (256, 16)
    assert not fb.grads["wte"][100:].any()  # exactly 0
    assert np.abs(fb.grads["wte"][:100]).max() > 0
    zeroed = dict(params, wte=params["wte"].copy())
    zeroed["wte"][100:] = 0.0
    other = forward_backward(cfg, zeroed, x, y)
    assert np.max(np.abs(other.logits - fb.logits)) <= 1e-12
    assert abs(other.loss - fb.loss) <= 1e-12


def test_init_loss_near_ln_vocab():
    """At llm.c's init (std 0.02) the logits are small, so loss - ln V ~ Var(logits)/2: with
    C = 64 the logits' std is ~0.02 * sqrt(C) ~ 0.16-0.2, i.e. loss - ln V ~ 0.01-0.03
    (measured 0.014..0.026 for seeds 1-3). 0.05 rejects a loss over Vp (ln 2048 - ln 1000 = 0.72),
    a sum over positions instead of the mean, or a missing log."""
    cfg = GPTConfig(2, 64, 4, vocab=1000, padded_vocab=2048, max_seq_len=64)
    for seed in (1, 2):
        params = init_tensors(cfg, seed)
        x, y = random_tokens(cfg, batch=4, seq=64, seed=seed)
        fb = forward_backward(cfg, params, x, y, backward=False)
        assert 0.0 < fb.loss - math.log(1000) < 0.05
        # second order in z: -log softmax(z)_y ~ ln V + mean(z) + var(z)/2 - z_y; the next terms
        # are O(|z|^3), ~1e-3 here
        z = fb.logits
        zy = np.take_along_axis(z, y[..., None].astype(np.int64), axis=-1)[..., 0]
        approx = math.log(1000) + float(np.mean(z.mean(-1) + z.var(-1) / 2 - zy))
        assert abs(fb.loss - approx) < 2e-3


def test_activations_and_no_targets():
    cfg = TINY["L2-hs3"]
    params = lively(cfg, 2)
    x, _ = random_tokens(cfg, batch=2, seq=5, seed=2)
    fb = forward_backward(cfg, params, x, None, keep_activations=True)
    assert fb.loss is None and fb.grads is None
    assert sorted(fb.activations) == ["block0", "block1"]
    assert all(a.shape == (2, 5, cfg.channels) for a in fb.activations.values())
    # final LayerNorm + tied wte on the last block's output reproduces the logits
    h = fb.activations["block1"]
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    h = h * params["lnfw"] + params["lnfb"]
    assert np.max(np.abs(h @ params["wte"][:cfg.vocab].T - fb.logits)) <= 1e-12
    assert forward_backward(cfg, params, x, None).activations is None


# ---- float32 fast path --------------------------------------------------------------------------

# float32 vs float64, L2 C64 V1000, B4 T64, seeds 1-3 (measured): logits max |d| / max|logits|
# 2.8e-7 (std 0.02) and 1.0e-6 (std 0.2); loss |d| / loss <= 7e-8; gradients max |d| / max|g| per
# tensor <= 1.7e-6. Tolerances ~10x those.
F32_LOGITS = 1e-5
F32_LOSS = 1e-6
F32_GRADS = 2e-5


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_float32_agrees_with_float64(scale):
    params = {k: v * scale if k in RANDOM_TENSORS else v for k, v in init_tensors(SMALL, 1).items()}
    x, y = random_tokens(SMALL, batch=4, seq=64, seed=1)
    ref = forward_backward(SMALL, params, x, y)
    f32 = forward_backward(SMALL, params, x, y, dtype="float32")
    assert f32.logits.dtype == np.float32 and f32.grads["qkvw"].dtype == np.float32
    assert np.max(np.abs(f32.logits - ref.logits)) <= F32_LOGITS * np.max(np.abs(ref.logits))
    assert abs(f32.loss - ref.loss) <= F32_LOSS * ref.loss
    for name in TENSOR_NAMES:
        g = ref.grads[name]
        assert np.max(np.abs(f32.grads[name] - g)) <= F32_GRADS * np.max(np.abs(g)), name
    assert not f32.grads["wte"][SMALL.vocab:].any()


# ---- random_tokens, validation --------------------------------------------------------------------

def test_random_tokens():
    x, y = random_tokens(SMALL, batch=3, seq=10, seed=9)
    draw = np.random.Generator(np.random.PCG64(9)).integers(0, 1000, size=(3, 11))
    assert x.dtype == np.int32 and y.dtype == np.int32 and x.shape == y.shape == (3, 10)
    np.testing.assert_array_equal(x, draw[:, :10])
    np.testing.assert_array_equal(y, draw[:, 1:])
    x2, _ = random_tokens(SMALL, batch=3, seq=10, seed=10)
    assert not np.array_equal(x, x2)
    with pytest.raises(ValueError, match="max_seq_len"):
        random_tokens(SMALL, batch=1, seq=65, seed=0)


def test_bad_inputs():
    cfg = TINY["L1"]
    params = lively(cfg, 0)
    x, y = random_tokens(cfg, batch=1, seq=6, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 13\)"):
        forward_backward(cfg, params, np.full((1, 6), 13), y)
    with pytest.raises(ValueError, match="max_seq_len"):
        forward_backward(cfg, params, np.zeros((1, 7), np.int32), None)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        forward_backward(cfg, params, x[0], None)
    with pytest.raises(ValueError, match="integers"):
        forward_backward(cfg, params, x.astype(np.float32), None)
    with pytest.raises(ValueError, match="differs"):
        forward_backward(cfg, params, x, y[:, :5])
    with pytest.raises(ValueError, match="qkvw"):
        forward_backward(cfg, dict(params, qkvw=params["qkvw"].T), x, y)
    with pytest.raises(ValueError, match="lacks"):
        forward_backward(cfg, {k: v for k, v in params.items() if k != "lnfb"}, x, y)
    with pytest.raises(ValueError, match="dtype"):
        forward_backward(cfg, params, x, y, dtype="float16")


# ---- training loop ---------------------------------------------------------------------------------

def _hand_loop(cfg, params, x, y, steps, opt, *, zero_grads=True):
    """llm.c's loop written out: forward+backward, AdamW from the formula; optionally the bug
    of llm.c issue #548's PyTorch reference (gradients accumulated, never zeroed)."""
    p = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    acc = {k: np.zeros_like(a) for k, a in p.items()}
    losses = []
    for t in range(1, steps + 1):
        fb = forward_backward(cfg, p, x, y)
        losses.append(fb.loss)
        for k in p:
            acc[k] = (acc[k] if not zero_grads else 0.0) + fb.grads[k]
            g = acc[k]
            m[k] = opt.beta1 * m[k] + (1 - opt.beta1) * g
            v[k] = opt.beta2 * v[k] + (1 - opt.beta2) * g * g
            mh, vh = m[k] / (1 - opt.beta1 ** t), v[k] / (1 - opt.beta2 ** t)
            p[k] = p[k] - opt.lr * (mh / (np.sqrt(vh) + opt.eps) + opt.weight_decay * p[k])
    return losses


def test_train_steps_matches_hand_loop_and_zeroes_grads():
    cfg = TINY["L2-hs3"]
    params = lively(cfg, 4, std=0.2)
    x, y = random_tokens(cfg, batch=2, seq=5, seed=4)
    opt = AdamW(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)
    before = {k: v.copy() for k, v in params.items()}
    got = train_steps(cfg, params, x, y, steps=4, optimizer=opt)
    assert all(np.array_equal(before[k], params[k]) for k in params)  # input untouched
    want = _hand_loop(cfg, params, x, y, 4, opt)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[3] < got[0]  # it trains
    bad = _hand_loop(cfg, params, x, y, 4, opt, zero_grads=False)
    assert bad[:2] == want[:2]  # the first update is the same either way
    assert max(abs(a - b) for a, b in zip(bad[2:], got[2:])) > 1e-4


def test_steps_chained_through_state_equal_one_run():
    """Three single steps continuing one TrainState equal one three-step run; restarting the
    optimizer at each step (fresh moments, t = 1) does not: the third loss sees the moments."""
    cfg = TINY["NH=C"]
    params = lively(cfg, 6, std=0.2)
    x, y = random_tokens(cfg, batch=2, seq=5, seed=6)
    opt = dataclasses.replace(ADAMW["test_gpt2.cu"], lr=1e-2)  # lr 1e-4 moves the loss by only ~5e-7
    three = train_steps(cfg, params, x, y, steps=3, optimizer=opt)
    state = TrainState.fresh(params)
    chained = [train_steps(cfg, None, x, y, steps=1, optimizer=opt, state=state)[0] for _ in range(3)]
    assert state.step == 3
    assert chained == three
    p, restarted = params, []
    for _ in range(3):
        s = TrainState.fresh(p)
        restarted += train_steps(cfg, None, x, y, steps=1, optimizer=opt, state=s)
        p = s.params
    assert restarted[:2] == three[:2]  # step 1 of a fresh optimizer is the same update
    assert abs(restarted[2] - three[2]) > 1e-6
    with pytest.raises(ValueError, match="not both"):
        train_steps(cfg, params, x, y, steps=1, optimizer=opt, state=state)
    with pytest.raises(ValueError, match="dtype"):
        train_steps(cfg, None, x, y, steps=1, optimizer=opt, state=state, dtype="float32")


def test_train_steps_float32():
    cfg = TINY["L1"]
    params = lively(cfg, 8, std=0.2)
    x, y = random_tokens(cfg, batch=2, seq=6, seed=8)
    opt = ADAMW["test_gpt2.c"]
    f64 = train_steps(cfg, params, x, y, steps=3, optimizer=opt)
    f32 = train_steps(cfg, params, x, y, steps=3, optimizer=opt, dtype="float32")
    np.testing.assert_allclose(f32, f64, rtol=1e-5)


@pytest.mark.skipif("not __import__('torch').cuda.is_available()")
def test_cuda_device_matches_cpu():
    params = lively(SMALL, 1, std=0.2)
    x, y = random_tokens(SMALL, batch=4, seq=64, seed=1)
    cpu = forward_backward(SMALL, params, x, y)
    gpu = forward_backward(SMALL, params, x, y, device="cuda")
    assert np.max(np.abs(gpu.logits - cpu.logits)) <= 1e-10
    for name in TENSOR_NAMES:
        scale = max(1.0, np.abs(cpu.grads[name]).max())
        assert np.max(np.abs(gpu.grads[name] - cpu.grads[name])) <= 1e-10 * scale, name


@pytest.mark.parametrize("opt", [ADAMW["test_gpt2.c"], ADAMW["test_gpt2.cu"],
                                 AdamW(lr=0.05, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1,
                                       grad_clip=0.01, decay_scope="matrices")],
                         ids=["test_gpt2.c", "test_gpt2.cu", "clipped"])
def test_torch_model_trains_as_train_steps(opt):
    # the device-resident loop (ablate, bench) against the numpy-moment loop, in float64
    cfg = GPTConfig(2, 32, 4, vocab=50, max_seq_len=16)
    params = init_tensors(cfg, seed=1)
    x, y = random_tokens(cfg, batch=2, seq=8, seed=0)
    want = train_steps(cfg, params, x, y, steps=4, optimizer=opt, dtype="float64")
    model = TorchModel(cfg, params, dtype="float64")
    got = []
    for _ in range(4):
        loss = model.loss(x, y)
        got.append(float(loss.detach()))
        loss.backward()
        model.step(opt)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert model.t == 4 and all(p.grad is None for p in model.params.values())
