"""Init schemes (reference/schemes.py, laws.py, overrides.py): the draws against PyTorch's own
nn.init functions, the formulas as the config varies, the exact float rules for uniforms and
truncated normals, and overrides."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from gpt2_verify.reference.config import (
    PER_LAYER_TENSORS,
    TENSOR_NAMES,
    GPTConfig,
    draw_order,
    parameter_table,
)
from gpt2_verify.reference.init import _truncnormal, _uniform, init_params, init_tensors
from gpt2_verify.reference.laws import Law, truncnormal_variance
from gpt2_verify.reference.mt19937 import MT19937
from gpt2_verify.reference.normal import normal_array
from gpt2_verify.reference.overrides import parse_override
from gpt2_verify.reference.schemes import SCHEMES, resolve
from gpt2_verify.verify.strategies import gpt2_configs
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.known import LLMC_UNIFORM_SHA256, SEED, SMALL

# ---- the draws against torch.nn.init ----------------------------------------------------------

# PyTorch draws each tensor with its own nn.init function, in our documented draw order; the
# scalar kernel (ATEN_CPU_CAPABILITY=default) is what the `torch` profile reproduces for normal_.
TORCH_PEER = r"""
import json, math, sys
import numpy as np, torch
from torch.nn import init
a = json.loads(sys.argv[1])
L, C, V, Vp, T, seed, scheme = a["L"], a["C"], a["V"], a["Vp"], a["T"], a["seed"], a["scheme"]
torch.manual_seed(seed)
PROJ = ("attprojw", "fcprojw")

def weight(name, shape, layer):
    t = torch.zeros(shape)
    fan_in = shape[1]
    if scheme == "torch-default":
        if name in ("wte", "wpe"):
            t.normal_()  # nn.Embedding.reset_parameters
        else:
            init.kaiming_uniform_(t, a=math.sqrt(5))  # nn.Linear.reset_parameters
    elif scheme == "xavier-normal":
        init.xavier_normal_(t)
    elif scheme == "xavier-uniform":
        init.xavier_uniform_(t)
    elif scheme == "kaiming-normal":
        init.kaiming_normal_(t, mode="fan_in", nonlinearity="relu")
    elif scheme == "kaiming-uniform":
        init.kaiming_uniform_(t, mode="fan_in", nonlinearity="relu")
    elif scheme == "gpt2":
        t.normal_(0.0, 0.02 / math.sqrt(2 * L) if name in PROJ else 0.02)
    elif scheme == "small-init":
        t.normal_(0.0, 2 / L / math.sqrt(C) if name in PROJ else math.sqrt(2 / (5 * C)))
    elif scheme == "mup":  # base width 256
        if name in ("wte", "wpe"):
            t.normal_(0.0, 0.02)
        else:
            std = 0.02 * math.sqrt(256 / C) / (math.sqrt(2 * L) if name in PROJ else 1.0)
            (t[C:] if name == "qkvw" else t).normal_(0.0, std)
    return t

def bias(shape, fan_in):
    t = torch.zeros(shape)
    if scheme == "torch-default":
        bound = 1 / math.sqrt(fan_in)
        init.uniform_(t, -bound, bound)
    return t

wte = torch.zeros(Vp, C)
wte[:V] = weight("wte", (V, C), None)
wpe = weight("wpe", (T, C), None)
per = {n: [] for n in ("qkvw", "qkvb", "attprojw", "attprojb", "fcw", "fcb", "fcprojw", "fcprojb")}
for l in range(L):
    per["qkvw"].append(weight("qkvw", (3 * C, C), l)); per["qkvb"].append(bias((3 * C,), C))
    per["attprojw"].append(weight("attprojw", (C, C), l)); per["attprojb"].append(bias((C,), C))
    per["fcw"].append(weight("fcw", (4 * C, C), l)); per["fcb"].append(bias((4 * C,), C))
    per["fcprojw"].append(weight("fcprojw", (C, 4 * C), l)); per["fcprojb"].append(bias((C,), 4 * C))
ones, zeros = torch.ones, torch.zeros
parts = [wte, wpe, ones(L, C), zeros(L, C), per["qkvw"], per["qkvb"], per["attprojw"], per["attprojb"],
         ones(L, C), zeros(L, C), per["fcw"], per["fcb"], per["fcprojw"], per["fcprojb"], ones(C), zeros(C)]
flat = torch.cat([(torch.stack(p) if isinstance(p, list) else p).reshape(-1) for p in parts])
sys.stdout.buffer.write(flat.numpy().astype("<f4").tobytes())
"""


def _torch_peer(cfg: GPTConfig, seed: int, scheme: str) -> np.ndarray:
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", OMP_NUM_THREADS="1")
    arg = json.dumps({"L": cfg.layers, "C": cfg.channels, "V": cfg.vocab, "Vp": cfg.padded_vocab,
                      "T": cfg.max_seq_len, "seed": seed, "scheme": scheme})
    out = subprocess.run([sys.executable, "-c", TORCH_PEER, arg], env=env, check=True,
                         capture_output=True).stdout
    return np.frombuffer(out, dtype="<f4")


TORCH_SCHEMES = ["gpt2", "torch-default", "xavier-normal", "xavier-uniform", "kaiming-normal",
                 "kaiming-uniform", "small-init", "mup"]


@pytest.mark.parametrize("scheme", TORCH_SCHEMES)
def test_scheme_equals_torch_nn_init(scheme):
    pytest.importorskip("torch")
    cfg = GPTConfig(3, 48, 4, vocab=1000, max_seq_len=40)  # every tensor >= 16 values, fc tails
    want = _torch_peer(cfg, 1234, scheme)
    got = init_params(cfg, 1234, "torch", scheme=scheme)
    assert want.size == got.size
    diff = np.nonzero(want.view(np.uint32) != got.view(np.uint32))[0]
    assert diff.size == 0, f"{scheme}: {diff.size} values differ, first at flat index {diff[:5]}"


UNIFORM_PEER = r"""
import json, sys
import numpy as np, torch
out = []
for seed, n, a in json.loads(sys.argv[1]):
    torch.manual_seed(seed)
    out.append(torch.empty(n).uniform_(-a, a).numpy())
sys.stdout.buffer.write(np.concatenate(out).astype("<f4").tobytes())
"""
UNIFORM_CASES = [(42, 100_003, 0.125), (1, 777, 1 / math.sqrt(768)), (7, 5, 3.3), (5, 20_000, 0.0625 / 3)]


@pytest.mark.parametrize("capability,profile", [("default", "torch"), ("AVX2", "llmc"), ("AVX512", "llmc")])
def test_uniform_rule_is_torch_uniform_(capability, profile):
    # PyTorch's scalar uniform_ rounds twice in float; its AVX2 / AVX512 kernels once
    torch = pytest.importorskip("torch")
    if capability != "default":
        have = torch.backends.cpu.get_cpu_capability()
        if have not in ("AVX2", "AVX512") or (capability == "AVX512" and have != "AVX512"):
            pytest.skip(f"this CPU runs torch with {have}, not {capability}")
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability.lower(), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", UNIFORM_PEER, json.dumps(UNIFORM_CASES)], env=env,
                         check=True, capture_output=True).stdout
    want = np.frombuffer(out, dtype="<f4")
    got = np.concatenate([np.concatenate(list(_uniform(MT19937(seed), n, a, 4096, profile)))
                          for seed, n, a in UNIFORM_CASES])
    assert np.array_equal(want.view(np.uint32), got.view(np.uint32))
    other = np.concatenate([np.concatenate(list(_uniform(MT19937(seed), n, a, 4096,
                                                         "llmc" if profile == "torch" else "torch")))
                            for seed, n, a in UNIFORM_CASES])
    assert np.mean(want != other) > 0.05  # the two rules really differ (none when a is a power of 2)


def test_uniform_rules_are_llmcs_uniform_():
    # llmc/rand.h uniform_ built with FMA contraction (llm.c's Makefile: -march=native) is the
    # llmc rule; built without FMA it is the torch (scalar PyTorch) rule
    for (seed, n, a), sums in LLMC_UNIFORM_SHA256.items():
        for profile, build in (("llmc", "fma"), ("torch", "no-fma")):
            got = np.concatenate(list(_uniform(MT19937(seed), n, a, 4096, profile)))
            assert hashlib.sha256(got.astype("<f4").tobytes()).hexdigest() == sums[build], (seed, profile)


# ---- truncated normals ------------------------------------------------------------------------

def _truncnormal_one_block_at_a_time(seed: int, n: int, std: float, k: float):
    """The rule written the slow way: one 16-value normal_ call (llm.c's n >= 16 path at std 1)
    per block, keep |z| <= k, scale."""
    stream, out = MT19937(seed), []
    while len(out) < n:
        z = normal_array(stream, 16, np.float32(1.0))
        out.extend(float(x) for x in z if abs(float(x)) <= k)
    vals = np.array(out[:n], dtype=np.float32) * np.float32(std) + np.float32(0.0)
    return vals, stream.position


@pytest.mark.parametrize("n,k,chunk", [(1, 3.0, 1 << 16), (17, 3.0, 16), (5000, 3.0, 16),
                                       (5000, 1.0, 160), (40_000, 2.0, 1 << 16), (40_000, 0.5, 4096)])
def test_truncnormal_rule_and_chunking(n, k, chunk):
    want, position = _truncnormal_one_block_at_a_time(3, n, 0.05, k)
    stream = MT19937(3)
    got = np.concatenate(list(_truncnormal(stream, n, 0.05, k, chunk)))
    assert np.array_equal(want.view(np.uint32), got.view(np.uint32))
    assert stream.position == position  # ends after the block holding the n-th kept value
    assert np.all(np.abs(got) <= np.float32(k * 0.05) * (1 + 2 ** -23))


def test_truncnormal_variance_formula():
    scipy_stats = pytest.importorskip("scipy.stats")
    for k in (0.5, 1.0, 2.0, 3.0, 6.0):
        assert math.isclose(truncnormal_variance(k), scipy_stats.truncnorm(-k, k).var(), rel_tol=1e-12)
    law = Law("truncnormal", std=0.3, k=2.0)
    ref = scipy_stats.truncnorm(-2.0, 2.0, scale=0.3)
    x = np.linspace(-0.7, 0.7, 41)
    np.testing.assert_allclose(law.cdf(x), ref.cdf(x), atol=1e-14)
    np.testing.assert_allclose(law.pdf(x), ref.pdf(x), rtol=1e-12)
    np.testing.assert_allclose(law.ppf(np.array([0.01, 0.5, 0.9])), ref.ppf([0.01, 0.5, 0.9]), atol=1e-12)


def test_olmo_is_truncated_at_three_std_per_layer():
    cfg = GPTConfig(3, 32, 4, vocab=200, max_seq_len=32)
    t = init_tensors(cfg, SEED, scheme="olmo-mitchell")
    for layer in range(cfg.layers):
        std = 1 / math.sqrt(2 * 4 * cfg.channels * (layer + 1))  # fcprojw: fan_in 4C
        x = t["fcprojw"][layer].astype(np.float64)
        assert np.abs(x).max() <= 3 * std * (1 + 1e-6)
        assert abs(x.std() / (std * math.sqrt(truncnormal_variance(3.0))) - 1) < 0.05


# ---- structure: draw order, padded rows, laws as the config varies ---------------------------

def test_gpt2_draws_are_llmcs_draw_order():
    for cfg in (SMALL, GPTConfig(3, 9, 3, 97, 128, 7)):
        got = [(d.name, d.layer, d.start, d.count) for d in resolve("gpt2", cfg).draws()]
        per = {s.name: s.numel // cfg.layers for s in parameter_table(cfg)}
        want = [(s.name, layer, count) for s, layer, _start, count in draw_order(cfg)]
        assert [(n, l, c) for n, l, _s, c in got] == want
        assert all(count == (cfg.vocab * cfg.channels if n == "wte" else per.get(n) if l is not None
                             else cfg.max_seq_len * cfg.channels) for n, l, _s, count in got)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_every_scheme_keeps_padded_rows_layernorm_and_is_deterministic(scheme):
    cfg = GPTConfig(2, 16, 2, vocab=100, max_seq_len=16)  # Vp 128: 28 padded rows
    t = init_tensors(cfg, SEED, scheme=scheme)
    assert not t["wte"][cfg.vocab:].any()
    for name in ("ln1w", "ln2w", "lnfw"):
        assert np.all(t[name] == 1.0)
    for name in ("ln1b", "ln2b", "lnfb"):
        assert not t[name].any()
    again = init_params(cfg, SEED, scheme=scheme)
    assert np.array_equal(init_params(cfg, SEED, scheme=scheme).view(np.uint32), again.view(np.uint32))
    assert all(np.isfinite(a).all() for a in t.values())


def _law(cfg, scheme, name, layer=0, **kw):
    parts = resolve(scheme, cfg, **kw).parts(name, None if name in ("wte", "wpe") else layer)
    return parts[-1].law if name == "qkvw" and scheme == "mup" else parts[0].law


configs = st.builds(lambda L, C, V, T: GPTConfig(L, C, 1, vocab=V, max_seq_len=T),
                    st.integers(1, 48), st.integers(1, 4096), st.integers(1, 60000), st.integers(1, 4096))


@settings(max_examples=60, deadline=None)
@given(configs)
def test_formulas_follow_the_fans(cfg):
    L, C, V, T = cfg.layers, cfg.channels, cfg.vocab, cfg.max_seq_len
    fans = {"wte": (C, V), "wpe": (C, T), "qkvw": (C, 3 * C), "attprojw": (C, C), "fcw": (C, 4 * C),
            "fcprojw": (4 * C, C)}
    for name, (fi, fo) in fans.items():
        # xavier: variance 2 / (fan_in + fan_out); kaiming: 2 / fan_in (depends on nothing else)
        assert math.isclose(_law(cfg, "xavier-normal", name).std ** 2 * (fi + fo), 2.0, rel_tol=1e-12)
        assert math.isclose(_law(cfg, "xavier-uniform", name).sd ** 2 * (fi + fo), 2.0, rel_tol=1e-12)
        assert math.isclose(_law(cfg, "kaiming-normal", name).std ** 2 * fi, 2.0, rel_tol=1e-12)
        assert math.isclose(_law(cfg, "kaiming-uniform", name).sd ** 2 * fi, 2.0, rel_tol=1e-12)
        proj = name in ("attprojw", "fcprojw")
        # gpt2: 0.02, the projections 0.02 / sqrt(2L): the residual scale depends on L only
        assert math.isclose(_law(cfg, "gpt2", name).std * (math.sqrt(2 * L) if proj else 1), 0.02,
                            rel_tol=1e-6)  # llm.c's float32 arithmetic
        # small-init / wang
        want = 2 / (L * math.sqrt(C)) if proj else math.sqrt(2 / (5 * C))
        assert math.isclose(_law(cfg, "small-init", name).std, want, rel_tol=1e-12)
        # muP: hidden weights scale with sqrt(base / C), embeddings do not
        mup = _law(cfg, "mup", name).std
        if name in ("wte", "wpe"):
            assert mup == 0.02
        else:
            assert math.isclose(mup * math.sqrt(C / 256) * (math.sqrt(2 * L) if proj else 1), 0.02,
                                rel_tol=1e-12)
        # torch-default: nn.Embedding N(0, 1), nn.Linear U(+-1/sqrt(fan_in))
        td = _law(cfg, "torch-default", name)
        assert (td.kind, td.std) == ("normal", 1.0) if name in ("wte", "wpe") else \
            math.isclose(td.bound * math.sqrt(fi), 1.0, rel_tol=1e-12)
    for layer in {0, L - 1}:
        olmo = _law(cfg, "olmo-mitchell", "attprojw", layer)
        assert (olmo.kind, olmo.k) == ("truncnormal", 3.0)
        assert math.isclose(olmo.std ** 2 * 2 * C * (layer + 1), 1.0, rel_tol=1e-12)


def test_mup_zero_query_and_base_width():
    cfg = GPTConfig(2, 64, 4, vocab=100, max_seq_len=16)
    t = init_tensors(cfg, SEED, scheme="mup")
    assert not t["qkvw"][:, :cfg.channels].any()  # the query rows
    assert t["qkvw"][:, cfg.channels:].std() > 0
    wide = resolve("mup", cfg, overrides=["base_width=64"])
    assert math.isclose(wide.parts("qkvw", 0)[1].law.std, 0.02)  # at C = base width: gpt2's std
    with pytest.raises(ValueError, match="has no parameter 'base_width'"):
        resolve("gpt2", cfg, overrides=["base_width=64"])


# ---- overrides --------------------------------------------------------------------------------

def test_override_changes_only_its_tensor():
    base = init_tensors(SMALL, SEED)
    t = init_tensors(SMALL, SEED, overrides=["wpe.std=0.01"])
    for name in TENSOR_NAMES:
        same = np.array_equal(base[name].view(np.uint32), t[name].view(np.uint32))
        assert same == (name != "wpe"), name
    # the same stream words at half the std (0.01 vs 0.02 in float32: not exactly half)
    np.testing.assert_allclose(t["wpe"], base["wpe"] / 2, rtol=1e-6)


def test_scale_override_on_projections():
    t = init_tensors(SMALL, SEED, overrides=["attprojw,fcprojw.scale=10"])
    base = init_tensors(SMALL, SEED)
    for name in ("attprojw", "fcprojw"):
        np.testing.assert_allclose(t[name], base[name] * 10, rtol=1e-6)
    assert resolve("gpt2", SMALL, overrides=["attprojw,fcprojw.scale=10"]).label == \
        "gpt2[attprojw,fcprojw.scale=10]"


def test_override_that_adds_a_draw_shifts_the_later_tensors():
    base = init_tensors(SMALL, SEED)
    t = init_tensors(SMALL, SEED, overrides=["qkvb.std=0.02"])
    assert t["qkvb"].std() > 0.015
    assert np.array_equal(t["qkvw"][0], base["qkvw"][0])  # drawn before layer 0's qkvb
    assert not np.array_equal(t["attprojw"][0], base["attprojw"][0])


def test_law_switching_overrides():
    cfg = SMALL
    assert _law(cfg, "xavier-normal", "fcw", overrides=["fcw.bound=0.1"]) == Law("uniform", bound=0.1)
    llmc_std = float(np.float32(0.02))  # llm.c's float
    assert _law(cfg, "gpt2", "fcw", overrides=["fcw.k=2"]) == Law("truncnormal", std=llmc_std, k=2.0)
    assert _law(cfg, "gpt2", "fcb", overrides=["fcb.value=0.5"]) == Law("constant", value=0.5)
    with pytest.raises(ValueError, match="k truncates a normal law"):
        resolve("xavier-uniform", cfg, overrides=["fcw.k=2"])


@pytest.mark.parametrize("text,match", [
    ("wpe", "write TENSOR.FIELD=VALUE"), ("wpx.std=0.1", "unknown tensor 'wpx'"),
    ("wpe.sdt=0.1", "unknown field 'sdt'"), ("wpe.std=abc", "not a number"),
    ("wpe.std=-1", "must be positive"), ("wpe.std=nan", "must be finite"), ("wpe.std=0", "must be positive"),
])
def test_bad_overrides(text, match):
    with pytest.raises(ValueError, match=match):
        parse_override(text)


def test_unknown_scheme():
    with pytest.raises(ValueError, match="unknown init scheme 'xavier'; use one of gpt2"):
        resolve("xavier", SMALL)


# ---- the CLI ----------------------------------------------------------------------------------

CUSTOM = ["--layers", "2", "--channels", "16", "--heads", "2", "--vocab", "100", "--max-seq-len", "16"]


def test_cli_init_and_checksum_with_a_scheme(tmp_path, capsys):
    from gpt2_verify.verify.cli import main
    from gpt2_verify.verify.formats.checkpoint import open_checkpoint

    out = tmp_path / "x.bin"
    assert main(["init", *CUSTOM, "--scheme", "xavier-uniform", "--set", "wpe.std=0.5", "-o", str(out)]) == 0
    assert "scheme xavier-uniform[wpe.std=0.5]" in capsys.readouterr().out
    cfg = GPTConfig(2, 16, 2, vocab=100, max_seq_len=16)
    want = init_params(cfg, 42, scheme="xavier-uniform", overrides=["wpe.std=0.5"])
    with open_checkpoint(out) as ckpt:
        assert np.array_equal(np.asarray(ckpt.flat).view(np.uint32), want.view(np.uint32))
    assert main(["checksum", *CUSTOM, "--scheme", "xavier-uniform", "--set", "wpe.std=0.5",
                 "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["sha256_fp32"] == hashlib.sha256(want.tobytes()).hexdigest()


def test_cli_params_law_table(capsys):
    from gpt2_verify.verify.cli import main

    assert main(["params", *CUSTOM, "--scheme", "olmo-mitchell", "--json", "-"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["scheme"] == "olmo-mitchell" and table["citation"].startswith("OLMo")
    rows = [r for r in table["tensors"] if r["tensor"] == "attprojw"]
    assert [r["layers"] for r in rows] == ["0", "1"]  # the std varies with the layer
    assert math.isclose(rows[1]["parts"][0]["law"]["std"], 1 / math.sqrt(2 * 16 * 2))
    wte = next(r for r in table["tensors"] if r["tensor"] == "wte")
    assert [p["rows"] for p in wte["parts"]] == [[0, 100], [100, 128]]
    assert main(["params", *CUSTOM, "--scheme", "mup"]) == 0
    text = capsys.readouterr().out
    assert "qkvw      0-1     rows 0..15: = 0; rows 16..47: N(0, " in text
    assert "Tensor Programs V" in text


@pytest.mark.parametrize("argv,match", [
    (["--set", "wpe.sdt=1"], "unknown field 'sdt'"),
    (["--set", "base_width=3"], "scheme gpt2 has no parameter 'base_width'"),
    (["--scheme", "xavier"], "invalid choice: 'xavier'"),
])
def test_cli_scheme_errors_are_one_line(argv, match, capsys, tmp_path):
    from gpt2_verify.verify.cli import main

    assert main(["init", *CUSTOM, *argv, "-o", str(tmp_path / "x.bin")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "x.bin").exists()


# ---- every tensor passes its law (Hypothesis over configs, seeds and schemes) -----------------

def _check(values, law, fpr):
    from gpt2_verify.verify import stats

    if law.kind == "normal":
        return stats.check_normal(values, law.std, fpr=fpr)
    if law.kind == "uniform":
        return stats.check_uniform(values, law.bound, fpr=fpr)
    return stats.check_truncnormal(values, law.std, law.k, fpr=fpr)


@settings(max_examples=25, deadline=None)
@given(cfg=gpt2_configs(max_params=60_000), seed=st.integers(0, 2 ** 32 - 1),
       scheme=st.sampled_from(list(SCHEMES)), profile=st.sampled_from(["llmc", "torch"]))
def test_every_part_follows_its_law(cfg, seed, scheme, profile):
    init = resolve(scheme, cfg, profile=profile)
    tensors = init_tensors(cfg, seed, profile, scheme=init)
    parts = [(name, layer, p) for name in TENSOR_NAMES
             for layer in (range(cfg.layers) if name in PER_LAYER_TENSORS else [None])
             for p in init.parts(name, layer)]
    random_parts = sum(p.law.random for _n, _l, p in parts)
    for name, layer, part in parts:
        t = tensors[name] if layer is None else tensors[name][layer]
        values = t.reshape(t.shape[0], -1)[part.lo:part.hi].reshape(-1) if t.ndim > 1 else t[part.lo:part.hi]
        if not part.law.random:
            assert np.all(values == np.float32(part.law.value)), (name, layer, part)
        elif values.size >= 3:
            # the family of random parts at 1e-9 together (Bonferroni): this cannot flake
            check = _check(values, part.law, 1e-9 / random_parts)
            assert check.passed, (scheme, name, layer, check.reason)


def test_reference_imports_have_no_cycle():
    """No module of reference/ imports, even lazily inside a function, one that imports it back
    (reference.init <-> reference.schemes was one), and none imports verify."""
    import ast
    from pathlib import Path

    import gpt2_verify.reference as ref

    root = Path(ref.__file__).parent
    graph = {}
    for path in root.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                assert "verify" not in mod.split("."), f"{path.name} imports {mod}"
                if node.level == 1:
                    deps |= {mod} if mod else {a.name for a in node.names}
                elif mod.startswith("gpt2_verify.reference."):
                    deps.add(mod.split(".")[2])
        graph[path.stem] = {d for d in deps if (root / f"{d}.py").exists()}

    def reach(start, node, seen):
        for d in graph.get(node, ()):
            assert d != start, f"import cycle through reference.{start} and reference.{node}"
            if d not in seen:
                seen.add(d)
                reach(start, d, seen)

    for name in graph:
        reach(name, name, set())
    assert "init" not in graph["schemes"] and "schemes" in graph["init"]

