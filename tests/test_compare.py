"""gpt2-verify compare: real peers, planted bugs, the report and the CLI.

Expected verdicts come from what each peer is known to do (tests/peers.py rebuilds their init
in torch), never from running the comparator on the reference: train_gpt2.py draws llm.c's
stream with torch's normal_ (exact under the torch profile on torch's scalar kernel, close
under llmc), nanoGPT and Hugging Face draw other streams with the right law (distribution).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from gpt2_verify.reference.config import GPTConfig
from gpt2_verify.reference.init import init_params, init_tensors
from gpt2_verify.verify.cli import main
from gpt2_verify.verify.compare import compare
from gpt2_verify.verify.formats.checkpoint import write_checkpoint_array
from gpt2_verify.verify.formats.model import model_from_mapping, open_model

from tests import peers
from tests.known import SMALL

torch = pytest.importorskip("torch")
L6 = GPTConfig(6, 32, 4, vocab=300, max_seq_len=32)  # L=6: the two profiles' residual std differ by 1 ulp


def _ckpt(tmp_path, cfg, tensors: dict, name="model.bin", dtype="fp32"):
    flat = np.concatenate([np.asarray(tensors[s.name], np.float32).reshape(-1) for s in cfg.tensors()])
    path = tmp_path / name
    write_checkpoint_array(path, cfg, flat, dtype)
    return path


def _grade(path, **kw):
    with open_model(path) as model:
        return compare(model, **kw)


def _by_name(report):
    return {t.name: t for t in report.tensors}


# ---- the reference and its profiles ----------------------------------------------------------

def test_reference_checkpoint_is_exact(tmp_path, capsys):
    path = tmp_path / "ref.bin"
    assert main(["init", "--layers", "2", "--channels", "64", "--heads", "4", "--vocab", "1000",
                 "--max-seq-len", "64", "-o", str(path)]) == 0
    capsys.readouterr()
    assert main(["compare", str(path), "--require", "exact"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("verdict: exact")


def test_torch_profile_is_close_under_llmc_and_exact_under_torch(tmp_path):
    path = _ckpt(tmp_path, L6, init_tensors(L6, 42, "torch"))
    report = _grade(path)
    assert report.verdict == "close", report.render()
    g = _by_name(report)
    # the only differences: the residual std's last ulp (attprojw/fcprojw), < 1e-7
    assert {n for n, t in g.items() if t.verdict == "close"} <= {"attprojw", "fcprojw", "wte", "wpe",
                                                                   "qkvw", "fcw"}
    assert g["attprojw"].verdict == "close" and 0 < g["attprojw"].max_abs_diff < 1e-8
    assert "Mismatched elements:" in g["attprojw"].reason
    assert _grade(path, profile="torch").verdict == "exact"


def test_bf16_checkpoint_is_exact(tmp_path):
    path = tmp_path / "bf16.bin"
    assert main(["init", "--layers", "2", "--channels", "16", "--heads", "2", "--vocab", "100",
                 "--max-seq-len", "16", "--dtype", "bf16", "-o", str(path)]) == 0
    report = _grade(path)
    assert report.verdict == "exact", report.render()


# ---- real peers -------------------------------------------------------------------------------

PEER_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
from gpt2_verify.reference.config import GPTConfig
from tests import peers
cfg = GPTConfig(*{fields!r})
torch.save(peers.train_gpt2_py(cfg), {out!r})
"""


def _train_gpt2_py_file(tmp_path, cfg, scalar: bool):
    """train_gpt2.py's init saved as a state dict, made in a fresh process so that
    ATEN_CPU_CAPABILITY (read once when torch loads) takes effect."""
    out = tmp_path / ("scalar.pt" if scalar else "vector.pt")
    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if scalar:
        env["ATEN_CPU_CAPABILITY"] = "default"
    fields = (cfg.layers, cfg.channels, cfg.heads, cfg.vocab, cfg.padded_vocab, cfg.max_seq_len)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", PEER_SCRIPT.format(root=root, fields=fields, out=str(out))],
                   check=True, env=env, timeout=300)
    return out


@pytest.mark.parametrize("cfg", [SMALL, L6], ids=["L2-C64", "L6-C32"])
def test_train_gpt2_py_state_dict(tmp_path, cfg):
    scalar = _train_gpt2_py_file(tmp_path, cfg, scalar=True)
    report = _grade(scalar, profile="torch")
    assert report.verdict == "exact", report.render()
    assert report.file["layout"] == "nanogpt"
    assert _by_name(report)["qkvw"].source[0] == "transformer.h.0.attn.c_attn.weight"
    vector = _train_gpt2_py_file(tmp_path, cfg, scalar=False)
    report = _grade(vector)  # llmc profile, torch's default (SIMD) kernel
    assert report.verdict in ("exact", "close"), report.render()
    for t in report.tensors:
        assert t.max_abs_diff < 1e-7, (t.name, t.max_abs_diff)


def test_train_gpt2_py_llmc_checkpoint(tmp_path):
    sd = torch.load(_train_gpt2_py_file(tmp_path, SMALL, scalar=True), weights_only=True)
    path = tmp_path / "gpt2.bin"
    write_checkpoint_array(path, SMALL, peers.llmc_flat(SMALL, sd), "fp32")
    assert _grade(path, profile="torch").verdict == "exact"
    assert _grade(path).verdict in ("exact", "close")


def test_nanogpt_is_distribution_and_the_double_draws_are_traced(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in peers.nanogpt(SMALL, seed=42).items()},
                "iter_num": 0}, path)
    report = _grade(path)
    assert report.verdict == "distribution", report.render()
    g = _by_name(report)
    for name in ("wte", "attprojw", "fcprojw"):
        assert g[name].verdict == "distribution"
    for name in ("wpe", "qkvw", "fcw"):  # drawn at the reference's positions, shifted by nothing
        assert g[name].verdict in ("exact", "close", "distribution")
    # every slice sits where nanoGPT's GPT() leaves its final values in seed 42's stream: the
    # tied lm_head's draw for wte, the c_proj re-draws for the projections
    assert report.stream is not None and report.stream["seed"] == 42, report.render()
    assert report.stream["model"] == "nanoGPT's GPT()"


def test_hugging_face_random_init_is_distribution(tmp_path):
    pytest.importorskip("transformers", reason="transformers is an optional test dependency")
    model = peers.hf_model(SMALL)
    model.save_pretrained(tmp_path / "hf")
    report = _grade(tmp_path / "hf")
    assert report.file["layout"] == "hf"
    assert report.verdict == "distribution", report.render()


def test_hugging_face_unscaled_c_proj_is_mismatch(tmp_path):
    pytest.importorskip("transformers", reason="transformers is an optional test dependency")
    cfg = GPTConfig(6, 64, 4, vocab=500, max_seq_len=32)
    model = peers.hf_model(cfg, cproj_unscaled=True)
    model.save_pretrained(tmp_path / "hf")
    report = _grade(tmp_path / "hf")
    assert report.verdict == "mismatch"
    bad = {t.name: t for t in report.tensors if t.verdict == "mismatch"}
    assert set(bad) == {"attprojw", "fcprojw"}, report.render()
    for t in bad.values():
        assert "residual scaling 1/sqrt(2L) missing" in t.reason
        assert abs(t.std_ratio / np.sqrt(12) - 1) < 0.03  # 0.02 vs 0.02/sqrt(12)


# ---- planted bugs in a checkpoint -------------------------------------------------------------

def _edit(fn):
    def make(cfg):
        t = {k: v.copy() for k, v in init_tensors(cfg, 42).items()}
        fn(cfg, t)
        return t
    make.__name__ = fn.__name__
    return make


@_edit
def residual_scaling_missing(cfg, t):
    s = np.float32(np.sqrt(2 * cfg.layers))
    t["attprojw"] *= s
    t["fcprojw"] *= s


@_edit
def padded_rows_nonzero(cfg, t):
    t["wte"][cfg.vocab:] = np.float32(0.01)


@_edit
def layernorm_zero(cfg, t):
    t["ln2w"][...] = 0


@_edit
def bias_nonzero(cfg, t):
    t["fcb"][1, 7] = np.float32(0.5)


@_edit
def layers_swapped(cfg, t):
    t["fcw"][[0, 1]] = t["fcw"][[1, 0]]


@_edit
def weight_transposed(cfg, t):
    t["attprojw"][...] = np.swapaxes(t["attprojw"], 1, 2)


@_edit
def nan_value(cfg, t):
    t["qkvw"][1, 5, 3] = np.nan


@_edit
def half_std(cfg, t):
    t["wpe"] *= np.float32(0.5)


# (bug, verdict, tensors named, text in their reason or cause)
PLANTED = [
    (residual_scaling_missing, "mismatch", {"attprojw", "fcprojw"}, "residual scaling 1/sqrt(2L) missing"),
    (padded_rows_nonzero, "mismatch", {"wte"}, "padded rows not zero"),
    (layernorm_zero, "mismatch", {"ln2w"}, "LayerNorm weight must be 1"),
    (bias_nonzero, "mismatch", {"fcb"}, "fcb[1, 7] = 0.5"),
    (layers_swapped, "distribution", {"fcw"}, "holds the values the reference draws for fcw of layer"),
    (weight_transposed, "distribution", {"attprojw"}, "transposed"),
    (nan_value, "mismatch", {"qkvw"}, "first at qkvw[1, 5, 3]"),
    (half_std, "mismatch", {"wpe"}, "0.5x expected"),
]


@pytest.mark.parametrize("bug,verdict,names,text", PLANTED, ids=[p[0].__name__ for p in PLANTED])
def test_planted_bug_is_graded_and_named(tmp_path, bug, verdict, names, text):
    cfg = GPTConfig(3, 32, 4, vocab=200, max_seq_len=32)
    report = _grade(_ckpt(tmp_path, cfg, bug(cfg)))
    assert report.verdict == verdict, report.render()
    bad = {t.name for t in report.tensors if t.verdict not in ("exact", "close")}
    assert bad == names, report.render()
    for name in names:
        t = _by_name(report)[name]
        assert text in f"{t.reason} {t.cause}", (t.reason, t.cause)
    assert not report.passed("close")


def test_first_divergence_is_in_draw_order(tmp_path):
    cfg = GPTConfig(3, 32, 4, vocab=200, max_seq_len=32)
    report = _grade(_ckpt(tmp_path, cfg, layers_swapped(cfg)))
    d = report.first_divergence
    assert (d["tensor"], d["layer"], d["index"]) == ("fcw", 0, [0, 0, 0])
    assert "holds the values the reference draws for fcw of layer 1" in d["cause"]


def test_missing_and_extra_tensors(tmp_path):
    cfg = GPTConfig(2, 16, 2, vocab=100, max_seq_len=16)
    sd = {k: torch.from_numpy(v.copy()) for k, v in _hf_keys(cfg).items()}
    del sd["transformer.h.1.mlp.c_fc.weight"]
    sd["transformer.h.0.attn.extra_thing"] = torch.zeros(3)
    report = compare(model_from_mapping(sd, config=cfg))
    assert report.verdict == "mismatch"
    text = " ".join(report.problems) + " ".join(t.reason for t in report.tensors)
    assert "transformer.h.1.mlp.c_fc.weight" in text
    assert "extra_thing" in text


def _hf_keys(cfg):
    """The reference init under train_gpt2.py's (nanoGPT's) key names."""
    from gpt2_verify.verify.formats.layouts import state_dict_key
    t = init_tensors(cfg, 42)
    out = {}
    for spec in cfg.tensors():
        if spec.per_layer:
            for i in range(cfg.layers):
                out[state_dict_key(spec.name, i)] = t[spec.name][i]
        else:
            out[state_dict_key(spec.name)] = t[spec.name][:cfg.vocab] if spec.name == "wte" else t[spec.name]
    return out


# ---- against another file ---------------------------------------------------------------------

def test_against_another_file(tmp_path, capsys):
    a = _ckpt(tmp_path, L6, init_tensors(L6, 42, "llmc"), "a.bin")
    b = _ckpt(tmp_path, L6, init_tensors(L6, 42, "torch"), "b.bin")
    c = _ckpt(tmp_path, L6, init_tensors(L6, 7, "llmc"), "c.bin")
    assert main(["compare", str(a), "--against", str(a), "--require", "exact"]) == 0
    assert main(["compare", str(b), "--against", str(a), "--require", "close"]) == 0
    assert main(["compare", str(b), "--against", str(a), "--require", "exact"]) == 1
    assert main(["compare", str(c), "--against", str(a), "--json", "-"]) == 1
    out = capsys.readouterr().out
    doc = json.loads(out[out.index('{\n "schema"'):])
    assert doc["verdict"] == "distribution" and doc["against"]["kind"] == "file"


# ---- report and CLI ---------------------------------------------------------------------------

def test_json_schema_and_only_json_on_stdout(tmp_path, capsys):
    cfg = GPTConfig(3, 32, 4, vocab=200, max_seq_len=32)
    path = _ckpt(tmp_path, cfg, residual_scaling_missing(cfg))
    assert main(["compare", str(path), "--json", "-"]) == 1
    doc = json.loads(capsys.readouterr().out)  # nothing but JSON
    assert doc["schema"] == "gpt2-verify/compare/1"
    assert set(doc["config"]) == set(cfg.as_dict())
    assert doc["config"]["layers"] == 3 and doc["seed"] == 42 and doc["profile"] == "llmc"
    assert doc["verdict"] == "mismatch" and doc["passed"] is False
    assert [t["name"] for t in doc["tensors"]] == [s.name for s in cfg.tensors()]
    t = {t["name"]: t for t in doc["tensors"]}["attprojw"]
    for key in ("source", "verdict", "reason", "max_abs_diff", "max_ulps", "mismatched", "std_ratio",
                "first_divergence", "cause", "layers"):
        assert key in t
    assert t["first_divergence"]["index"] == [0, 0, 0]
    assert doc["first_divergence"]["tensor"] == "attprojw"
    out_file = tmp_path / "r.json"
    assert main(["compare", str(path), "--json", str(out_file)]) == 1
    assert json.loads(out_file.read_text())["verdict"] == "mismatch"
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("verdict: mismatch")


def test_require_levels(tmp_path):
    cfg = GPTConfig(3, 32, 4, vocab=200, max_seq_len=32)
    path = _ckpt(tmp_path, cfg, layers_swapped(cfg))
    assert main(["compare", str(path)]) == 1
    assert main(["compare", str(path), "--require", "distribution"]) == 0


@pytest.mark.parametrize("args,text", [
    (["compare", "/nonexistent/model.bin"], "/nonexistent/model.bin"),
    (["compare", "{tmp}/ref.bin", "--against", "d99"], "d99"),
    (["compare", "{tmp}/ref.bin", "--fpr", "2"], "--fpr"),
    (["compare", "{tmp}/ref.bin", "--seed", "-1"], "--seed"),
    (["compare", "{tmp}/junk.bin"], "junk.bin"),
])
def test_bad_input_one_line_exit_2(tmp_path, capsys, args, text):
    write_checkpoint_array(tmp_path / "ref.bin", SMALL, init_params(SMALL), "fp32")
    (tmp_path / "junk.bin").write_bytes(b"not a model at all" * 10)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and text.replace("{tmp}", str(tmp_path)) in err, err


def test_malicious_pickle_is_not_executed(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"transformer.wte.weight": Evil()}, path)
    assert main(["compare", str(path)]) == 2
    assert not marker.exists()
    err = capsys.readouterr().err
    assert "evil.pt" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_train_gpt2_py_d12_is_close(tmp_path):
    from gpt2_verify.reference.config import from_descriptor
    cfg = from_descriptor("d12")
    path = _train_gpt2_py_file(tmp_path, GPTConfig(cfg.layers, cfg.channels, cfg.heads, cfg.vocab,
                                                    cfg.padded_vocab, cfg.max_seq_len), scalar=False)
    report = _grade(path)
    assert report.verdict in ("exact", "close"), report.render()
    assert max(t.max_abs_diff for t in report.tensors) < 1e-7
