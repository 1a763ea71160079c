"""verify.numerics.adamw: llm.c's AdamW, its settings as data and its named bugs.

Independent judges: llm.c's sources (the settings each main passes to gpt2_update), closed
forms of the first two updates written from the definitions, torch.optim.AdamW and
torch.nn.utils.clip_grad_norm_ (train_gpt2.py's optimizer), and the numpy path against the
torch path of the same code.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from gpt2_verify.reference.config import TENSOR_NAMES
from gpt2_verify.verify.numerics.adamw import (
    ADAMW,
    BUGS,
    AdamW,
    adamw_step,
    adamw_update,
    bug_variants,
    clip_factor,
    clip_scale,
)


def test_adamw_settings_match_llmc_source():
    """As llm.c's mains call gpt2_update: test_gpt2.c (lr, b1, b2, eps, wd) = (1e-4, 0.9, 0.999,
    1e-8, 0.01); train_gpt2.c wd 0.0; test_gpt2.cu b2 0.95, wd 0, grad_scale from clip 1.0, and
    train_gpt2.cu decays only wte, wpe, qkvw, attprojw, fcw, fcprojw."""
    c = ADAMW["test_gpt2.c"]
    assert (c.lr, c.beta1, c.beta2, c.eps, c.weight_decay, c.grad_clip) == \
        (1e-4, 0.9, 0.999, 1e-8, 0.01, None)
    assert all(c.decays(n) for n in TENSOR_NAMES)
    t = ADAMW["train_gpt2.c"]
    assert (t.lr, t.beta1, t.beta2, t.eps, t.weight_decay, t.grad_clip) == (1e-4, 0.9, 0.999, 1e-8, 0.0, None)
    u = ADAMW["test_gpt2.cu"]
    assert (u.lr, u.beta1, u.beta2, u.eps, u.weight_decay, u.grad_clip) == (1e-4, 0.9, 0.95, 1e-8, 0.0, 1.0)
    assert [n for n in TENSOR_NAMES if u.decays(n)] == ["wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw"]
    with pytest.raises(ValueError, match="decay_scope"):
        AdamW(lr=1e-4, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decay_scope="some")


def _synthetic(seed):
    rng = np.random.default_rng(seed)
    p = {n: rng.standard_normal(3 + i) for i, n in enumerate(TENSOR_NAMES)}
    # magnitudes 1e-9..1: some comparable to eps 1e-8, so scaling the gradient shows in the update
    g = {n: rng.standard_normal(3 + i) * 10.0 ** rng.integers(-9, 1, size=3 + i)
         for i, n in enumerate(TENSOR_NAMES)}
    return p, g


def test_adamw_first_steps_closed_form():
    """Step 1: m_hat = g, v_hat = g^2, so p1 = p - lr (g / (|g| + eps) + wd p). Step 2 with
    gradient h: m = 0.1 (b1 g + h)... written out from the definitions."""
    opt = AdamW(lr=1e-3, beta1=0.8, beta2=0.9, eps=1e-8, weight_decay=0.05)
    p0, g = _synthetic(0)
    _, h = _synthetic(1)
    params = {k: v.copy() for k, v in p0.items()}
    m, v = {}, {}
    adamw_step(params, g, m, v, 1, opt)
    for n in TENSOR_NAMES:
        p1 = p0[n] - 1e-3 * (g[n] / (np.abs(g[n]) + 1e-8) + 0.05 * p0[n])
        np.testing.assert_allclose(params[n], p1, rtol=1e-14, atol=1e-16)
    p1 = {k: v.copy() for k, v in params.items()}
    adamw_step(params, h, m, v, 2, opt)
    for n in TENSOR_NAMES:
        m2 = 0.2 * (0.8 * g[n] + h[n])
        v2 = 0.1 * (0.9 * g[n] ** 2 + h[n] ** 2)
        p2 = p1[n] - 1e-3 * ((m2 / (1 - 0.64)) / (np.sqrt(v2 / (1 - 0.81)) + 1e-8) + 0.05 * p1[n])
        np.testing.assert_allclose(params[n], p2, rtol=1e-13, atol=1e-16)


def test_weight_decay_scope():
    p0, _ = _synthetic(2)
    zero = {n: np.zeros_like(a) for n, a in p0.items()}
    for scope, decayed in (("all", set(TENSOR_NAMES)),
                           ("matrices", {"wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw"})):
        params = {k: v.copy() for k, v in p0.items()}
        adamw_step(params, zero, {}, {}, 1, AdamW(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
                                                      weight_decay=0.1, decay_scope=scope))
        for n in TENSOR_NAMES:  # zero gradient: the update is the decay term lr * wd * p alone
            want = p0[n] * (1 - 1e-3) if n in decayed else p0[n]
            np.testing.assert_allclose(params[n], want, rtol=1e-15, atol=0)


def test_grad_clip():
    """llm.c (train_gpt2.cu main, test_gpt2.cu): norm = sqrt(sum of all g^2); every gradient is
    multiplied by clip / norm if norm > clip, else by 1."""
    _, g = _synthetic(3)
    norm = math.sqrt(sum(float(np.sum(a * a)) for a in g.values()))
    assert norm > 1.0
    assert clip_scale(g, 1.0) == pytest.approx(1.0 / norm, rel=1e-15)
    assert clip_scale(g, None) == 1.0
    assert clip_scale(g, 2 * norm) == 1.0
    assert clip_scale(g, norm) == 1.0  # strictly greater is required to clip
    # with b1, b2 < 1 and eps comparable to the scaled gradients the scale shows in the update
    opt = ADAMW["test_gpt2.cu"]
    p0, _ = _synthetic(4)
    clipped = {k: v.copy() for k, v in p0.items()}
    adamw_step(clipped, g, {}, {}, 1, opt)
    for n in TENSOR_NAMES:
        gs = g[n] / norm
        want = p0[n] - 1e-4 * gs / (np.abs(gs) + 1e-8)
        np.testing.assert_allclose(clipped[n], want, rtol=1e-14, atol=1e-18)
    unclipped = {k: v.copy() for k, v in p0.items()}
    adamw_step(unclipped, g, {}, {}, 1, AdamW(lr=1e-4, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.0))
    assert max(np.max(np.abs(clipped[n] - unclipped[n])) for n in TENSOR_NAMES) > 1e-6


def test_train_gpt2_cu_and_py_settings_match_source():
    """train_gpt2.cu main: learning_rate 3e-4f, weight_decay 0.0f, grad_clip 1.0f, betas (0.9,
    0.95), eps 1e-8f; train_gpt2.py: --learning_rate 1e-4, --weight_decay 0.0, --grad_clip 1.0,
    betas (0.9, 0.95), torch.optim.AdamW's eps 1e-8, decay on p.dim() >= 2."""
    cu, py = ADAMW["train_gpt2.cu"], ADAMW["train_gpt2.py"]
    assert (cu.lr, cu.beta1, cu.beta2, cu.eps, cu.weight_decay, cu.grad_clip, cu.clip_eps) == \
        (3e-4, 0.9, 0.95, 1e-8, 0.0, 1.0, 0.0)
    assert (py.lr, py.beta1, py.beta2, py.eps, py.weight_decay, py.grad_clip, py.clip_eps) == \
        (1e-4, 0.9, 0.95, 1e-8, 0.0, 1.0, 1e-6)
    assert cu.decay_scope == py.decay_scope == "matrices"
    # a torch module's own names: decided by ndim, as configure_optimizers does
    assert py.decays("transformer.h.0.attn.c_attn.weight", ndim=2)
    assert not py.decays("transformer.h.0.attn.c_attn.bias", ndim=1)
    with pytest.raises(ValueError, match="pass ndim="):
        py.decays("transformer.h.0.attn.c_attn.bias")


def test_bad_settings_say_how_to_fix():
    base = dict(lr=1e-4, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)
    with pytest.raises(ValueError, match=r"betas must lie in \[0, 1\)"):
        AdamW(**dict(base, beta2=1.0))
    with pytest.raises(ValueError, match="grad_clip must be positive"):
        AdamW(**base, grad_clip=0.0)
    with pytest.raises(ValueError, match="must be >= 0"):
        AdamW(**dict(base, lr=-1.0))
    with pytest.raises(TypeError):
        AdamW(1e-4, 0.9, 0.999, 1e-8, 0.0)  # keyword-only: positional settings are easy to swap
    with pytest.raises(ValueError, match="t counts updates from 1"):
        adamw_update(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2), t=0, opt=AdamW(**base), name="wte")


def test_clip_factor():
    assert clip_factor(4.0, 1.0) == 0.25
    assert clip_factor(0.5, 1.0) == 1.0
    assert clip_factor(0.0, 1.0) == 1.0
    assert clip_factor(math.nan, 1.0) == 1.0  # llm.c: `grad_norm > grad_clip` is false for NaN
    assert clip_factor(4.0, None) == 1.0
    assert clip_factor(4.0, 1.0, clip_eps=1e-6) == 1.0 / (4.0 + 1e-6)


def _torch_named(params, torch):
    return {n: torch.tensor(a, dtype=torch.float64) for n, a in params.items()}


@pytest.mark.parametrize("key", ["test_gpt2.c", "train_gpt2.py", "decay-matrices"])
def test_matches_torch_optim_adamw(key):
    """Four updates against torch.optim.AdamW with train_gpt2.py's two param groups (decay /
    no decay) and, with a clip, torch.nn.utils.clip_grad_norm_ before each step."""
    torch = pytest.importorskip("torch")
    if key == "decay-matrices":
        opt = AdamW(lr=1e-2, beta1=0.8, beta2=0.9, eps=1e-8, weight_decay=0.1, decay_scope="matrices")
    else:
        opt = dataclasses.replace(ADAMW[key], lr=1e-2, weight_decay=0.1)
    p0, _ = _synthetic(10)
    theirs = {n: t.requires_grad_(True) for n, t in _torch_named(p0, torch).items()}
    groups = [{"params": [t for n, t in theirs.items() if opt.decays(n)], "weight_decay": opt.weight_decay},
              {"params": [t for n, t in theirs.items() if not opt.decays(n)], "weight_decay": 0.0}]
    assert groups[0]["params"] and (groups[1]["params"] or opt.decay_scope == "all")
    ref = torch.optim.AdamW([g for g in groups if g["params"]], lr=opt.lr, betas=(opt.beta1, opt.beta2),
                            eps=opt.eps)
    ours = {n: a.copy() for n, a in p0.items()}
    m, v = {}, {}
    for t in range(1, 5):
        _, g = _synthetic(20 + t)
        g = {n: a * 100.0 for n, a in g.items()}  # global norm >> 1: the clip acts
        for n, tt in theirs.items():
            tt.grad = torch.tensor(g[n], dtype=torch.float64)
        if opt.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(list(theirs.values()), opt.grad_clip)
        ref.step()
        adamw_step(ours, g, m, v, t, opt)
    for n in TENSOR_NAMES:
        np.testing.assert_allclose(ours[n], theirs[n].detach().numpy(), rtol=1e-12, atol=1e-15, err_msg=n)


def test_numpy_and_torch_paths_agree():
    """The same adamw_step on numpy arrays and on torch tensors (TorchModel's path), float64."""
    torch = pytest.importorskip("torch")
    for opt in (ADAMW["test_gpt2.c"], ADAMW["test_gpt2.cu"], ADAMW["train_gpt2.py"]):
        p0, _ = _synthetic(30)
        pn, pt = {n: a.copy() for n, a in p0.items()}, _torch_named(p0, torch)
        mn, vn, mt, vt = {}, {}, {}, {}
        for t in range(1, 4):
            _, g = _synthetic(40 + t)
            norm_n = adamw_step(pn, g, mn, vn, t, opt)
            norm_t = adamw_step(pt, _torch_named(g, torch), mt, vt, t, opt)
            assert norm_t == pytest.approx(norm_n, rel=1e-14)
        for n in TENSOR_NAMES:
            np.testing.assert_allclose(pt[n].numpy(), pn[n], rtol=1e-14, atol=0, err_msg=n)
            np.testing.assert_allclose(vt[n].numpy(), vn[n], rtol=1e-14, atol=0, err_msg=n)


def test_update_without_apply_leaves_param():
    opt = ADAMW["test_gpt2.c"]
    p0, g = _synthetic(5)
    p = p0["wte"].copy()
    upd = adamw_update(p, g["wte"], np.zeros_like(p), np.zeros_like(p), t=1, opt=opt, name="wte", apply=False)
    assert np.array_equal(p, p0["wte"])
    np.testing.assert_allclose(upd, 1e-4 * (g["wte"] / (np.abs(g["wte"]) + 1e-8) + 0.01 * p),
                               rtol=1e-14, atol=1e-20)


def test_bug_variants():
    """Each named bug as data: which ones change a given setting's updates, and what each does
    to the first update (closed forms from the definitions)."""
    assert set(bug_variants(ADAMW["test_gpt2.c"])) == {b.name for b in BUGS}
    # train_gpt2.c trains with wd 0: dropping decay or changing its scope changes nothing
    assert set(bug_variants(ADAMW["train_gpt2.c"])) == {"no-bias-correction", "betas-swapped"}
    opt = AdamW(lr=1e-3, beta1=0.8, beta2=0.9, eps=1e-8, weight_decay=0.05, name="x")
    var = bug_variants(opt)
    assert var["betas-swapped"].beta1 == 0.9 and var["betas-swapped"].beta2 == 0.8
    assert var["decay-scope"].decay_scope == "matrices" and var["decay-missing"].weight_decay == 0.0
    assert var["no-bias-correction"].name == "x [no-bias-correction]"
    p0, g = _synthetic(7)
    gw, pw = g["ln1w"], p0["ln1w"]

    def first(o, name="ln1w"):
        p = pw.copy()
        return adamw_update(p, gw, np.zeros_like(p), np.zeros_like(p), t=1, opt=o, name=name, apply=False)

    # no bias correction at t = 1: m = 0.2 g, v = 0.1 g^2
    want = 1e-3 * (0.2 * gw / (np.sqrt(0.1 * gw * gw) + 1e-8) + 0.05 * pw)
    np.testing.assert_allclose(first(var["no-bias-correction"]), want, rtol=1e-13, atol=1e-20)
    # ln1w is not a matrix: the scope bug drops its decay term
    np.testing.assert_allclose(first(var["decay-scope"]), first(var["decay-missing"]), rtol=0, atol=0)
    assert np.max(np.abs(first(var["decay-scope"]) - first(opt))) > 1e-6
    assert np.array_equal(first(var["decay-scope"], "qkvw"), first(opt, "qkvw"))
