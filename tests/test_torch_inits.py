"""PyTorch users' inits graded by default: nanoGPT (tests/peers.py re-states its GPT.__init__),
Hugging Face GPT2LMHeadModel, a user's numpy init; planted bugs in each pattern.

Expected verdicts and causes come from what the code above does (its own seed, its stds), never
from running the comparator on the reference. The stream positions the diagnosis names are
checked against the draws PyTorch makes, located independently here: a torch generator run up
to the call, then the same normal_ compared value by value.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from gpt2_verify.reference.config import GPTConfig
from gpt2_verify.reference.schemes import resolve
from gpt2_verify.verify.cli import main
from gpt2_verify.verify.compare import compare
from gpt2_verify.verify.compare.causes import fitting
from gpt2_verify.verify.compare.fuzz import fuzz
from gpt2_verify.verify.compare.torchmodel import calls
from gpt2_verify.verify.formats.model import model_from_mapping

from tests import peers

torch = pytest.importorskip("torch")
CFG = GPTConfig(4, 64, 4, vocab=256, max_seq_len=32)  # every random tensor >= 128 values


def _save(tmp_path, sd, name="model.pt"):
    path = tmp_path / name
    torch.save(sd, path)
    return path


def _run(capsys, *argv):
    code = main(["compare", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _numpy_init(cfg, seed, proj=lambda L: 0.02 / math.sqrt(2 * L)):
    """A user's own init: numpy's PCG64, the right laws (proj: the residual projections' std)."""
    L, C, V, T = cfg.layers, cfg.channels, cfg.vocab, cfg.max_seq_len
    rng = np.random.default_rng(seed + 1000)
    f = np.float32
    p = proj(L)
    return {"wte": rng.normal(0, 0.02, (V, C)).astype(f), "wpe": rng.normal(0, 0.02, (T, C)).astype(f),
            "ln1w": np.ones((L, C), f), "ln1b": np.zeros((L, C), f),
            "qkvw": rng.normal(0, 0.02, (L, 3 * C, C)).astype(f), "qkvb": np.zeros((L, 3 * C), f),
            "attprojw": rng.normal(0, p, (L, C, C)).astype(f), "attprojb": np.zeros((L, C), f),
            "ln2w": np.ones((L, C), f), "ln2b": np.zeros((L, C), f),
            "fcw": rng.normal(0, 0.02, (L, 4 * C, C)).astype(f), "fcb": np.zeros((L, 4 * C), f),
            "fcprojw": rng.normal(0, p, (L, C, 4 * C)).astype(f), "fcprojb": np.zeros((L, C), f),
            "lnfw": np.ones(C, f), "lnfb": np.zeros(C, f)}


# ---- correct inits pass without flags -------------------------------------------------------------

def test_nanogpt_correct_init_passes_by_default_and_its_stream_is_found(tmp_path, capsys):
    path = _save(tmp_path, peers.nanogpt(CFG, seed=1337))
    code, out, _ = _run(capsys, path)
    assert code == 0, out
    assert "require:   distribution (a PyTorch state dict from its own RNG" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("verdict: distribution: right laws, another stream"), last
    assert "torch.manual_seed(1337) stream, nanoGPT's GPT()'s order" in last
    assert "[require distribution: PASS]" in last
    # the positions: nanoGPT's draws as PyTorch makes them (construction, apply, c_proj re-draw)
    order = calls("nanogpt", CFG, CFG.vocab)
    wte = next(c for c in order if c.key == ("wte", None) and c.final)
    assert wte.phase == "init" and wte.start > 2 * CFG.vocab * CFG.channels  # after lm_head's construction
    torch.manual_seed(1337)
    torch.empty(wte.start).uniform_()  # one word per value (measured: see verify.compare.torchmodel)
    got = torch.empty(CFG.vocab, CFG.channels).normal_(0, 0.02)
    assert torch.equal(got, torch.load(path)["transformer.wte.weight"])


def test_torch_draw_counts_the_model_relies_on():
    """uniform_ takes one word per value, normal_ n words (+16 when n % 16), nn.Linear o*i + o."""
    def words(op, seed=3):
        torch.manual_seed(seed)
        op()
        probe = (torch.empty(32).uniform_() * 2 ** 24).to(torch.int64).numpy()
        from gpt2_verify.reference.mt19937 import MT19937
        k = (MT19937(seed).u32(20_000) & 0xFFFFFF).astype(np.int64)
        return next(d for d in range(19_000) if np.array_equal(k[d:d + 32], probe))
    assert words(lambda: torch.empty(1001).uniform_(-0.3, 0.3)) == 1001
    assert words(lambda: torch.empty(1001).normal_(0, 0.02)) == 1001 + 16
    assert words(lambda: torch.nn.Linear(64, 48)) == 64 * 48 + 48
    assert words(lambda: torch.nn.Embedding(7, 3)) == 21 + 16


def test_hugging_face_model_passes_by_default(tmp_path, capsys):
    pytest.importorskip("transformers", reason="transformers is an optional test dependency")
    peers.hf_model(CFG, seed=1337).save_pretrained(tmp_path / "hf")
    code, out, _ = _run(capsys, tmp_path / "hf")
    assert code == 0, out
    assert "NH=4" in out  # from config.json
    assert "Hugging Face GPT2LMHeadModel" in out.strip().splitlines()[-1]


def test_users_numpy_init_passes_by_default(tmp_path, capsys):
    np.savez(tmp_path / "w.npz", **_numpy_init(CFG, 5))
    code, out, _ = _run(capsys, tmp_path / "w.npz")
    assert code == 0, out
    assert "values not found" in out  # its own generator: not an mt19937 stream
    assert "NH=? (unknown" in out


def test_llmc_checkpoint_keeps_close(tmp_path, capsys):
    path = tmp_path / "ref.bin"
    assert main(["init", "--layers", "1", "--channels", "16", "--heads", "2", "--vocab", "64",
                 "--max-seq-len", "8", "-o", str(path)]) == 0
    capsys.readouterr()
    code, out, _ = _run(capsys, path)
    assert code == 0 and "require:   close (an llm.c checkpoint" in out


# ---- planted bugs: each fails with its cause, in the file's terms ----------------------------------

def test_c_proj_scaled_by_sqrt_l_is_named(tmp_path, capsys):
    sd = peers.nanogpt(CFG, proj_std=lambda L: 0.02 / math.sqrt(L))
    code, out, _ = _run(capsys, _save(tmp_path, sd))
    assert code == 1
    head = "transformer.h.{i}.attn.c_proj.weight (attprojw) std"
    line = next(x for x in out.splitlines() if x.startswith(head))
    assert "x expected 0.007071" in line and "residual scaling 1/sqrt(L) instead of 1/sqrt(2L)" in line
    # the stream: at nanoGPT's c_proj re-draw, drawn with the wrong std
    assert "c_proj re-draw of transformer.h.{i}.attn.c_proj.weight (attprojw), drawn with std 0.01" in out


def test_c_proj_not_redrawn_is_named(tmp_path, capsys):
    code, out, _ = _run(capsys, _save(tmp_path, peers.nanogpt(CFG, redraw=False)))
    assert code == 1
    assert "residual scaling 1/sqrt(2L) missing" in out
    assert "_init_weights of transformer.h.{i}.attn.c_proj.weight (attprojw), drawn with std 0.02: a later " \
           "draw of nanoGPT's GPT() over this tensor (c_proj re-draw) did not happen" in out


def test_bias_false_and_untied_lm_head_are_stated(tmp_path, capsys):
    code, out, _ = _run(capsys, _save(tmp_path, peers.nanogpt(CFG, bias=False, tied=False)))
    assert code == 0, out
    assert "missing from the file" not in out
    assert "biases:    none in the file (bias=False)" in out
    assert "lm_head:   untied" in out
    assert "lm_head.weight (lm_head)" in out  # graded on its own, under its own key


def test_nn_embedding_default_left_in_place(tmp_path, capsys):
    sd = peers.nanogpt(CFG)
    torch.manual_seed(0)
    sd["transformer.wpe.weight"] = torch.nn.Embedding(CFG.max_seq_len, CFG.channels).weight.detach()
    code, out, _ = _run(capsys, _save(tmp_path, sd))
    assert code == 1 and "nn.Embedding's default N(0, 1), the GPT-2 init was not applied" in out


def test_text_and_json_name_the_same_layers(tmp_path, capsys):
    t = _numpy_init(CFG, 9)
    t["qkvw"][1] *= np.float32(1.3)  # one layer's std off
    np.savez(tmp_path / "w.npz", **t)
    code, out, _ = _run(capsys, tmp_path / "w.npz", "--json", tmp_path / "r.json")
    assert code == 1
    layers = next(x for x in json.loads((tmp_path / "r.json").read_text())["tensors"] if x["name"] == "qkvw")
    bad = [x["layer"] for x in layers["layers"] if x["verdict"] == "mismatch"]
    assert bad == [1]
    tail = out.split("std off in")[1].split("[require")[0]
    assert tail.strip().startswith("layer 1 (1.") and "layer 0" not in tail and "layer 2" not in tail


# ---- the file's own terms -------------------------------------------------------------------------

def test_against_config_mismatch_names_the_fields(tmp_path, capsys):
    cfg = GPTConfig(2, 128, 4, vocab=256, max_seq_len=32)
    code, out, err = _run(capsys, _save(tmp_path, peers.nanogpt(cfg)), "--against", "d12")
    assert code == 1, err
    assert "the file's config differs from d12: L=2 (d12: 12), C=128 (d12: 768)" in out


def test_pickled_module_is_refused_with_a_hint(tmp_path, capsys):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))  # torch.save(model), not its state_dict()
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    code, out, err = _run(capsys, path)
    assert code == 2 and "\x1b" not in err and len(err.strip().splitlines()) == 1
    assert "holds a pickled module" in err and "save model.state_dict()" in err


def test_repeated_set_is_refused(tmp_path, capsys):
    np.savez(tmp_path / "w.npz", **_numpy_init(CFG, 1))
    code, _, err = _run(capsys, tmp_path / "w.npz", "--set", "attprojw.scale=10",
                        "--set", "attprojw.scale=20")
    assert code == 2 and "attprojw.scale is already set by --set 'attprojw.scale=10'" in err


def test_stats_reads_a_state_dict(tmp_path, capsys):
    path = _save(tmp_path, peers.nanogpt(CFG))
    assert main(["stats", str(path), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "transformer.h.{i}.attn.c_proj.weight" in out
    rec = json.loads((tmp_path / "s.json").read_text())
    sd = torch.load(path)
    want = float(torch.stack([sd[f"transformer.h.{i}.attn.c_proj.weight"] for i in range(4)]).double().std())
    assert abs(rec["tensors"]["attprojw"]["std"] / want - 1) < 1e-3


# ---- untestable and fuzz ----------------------------------------------------------------------------

def test_too_small_tensors_are_untestable_not_failures():
    cfg = GPTConfig(1, 8, 1, vocab=64, max_seq_len=2)  # wpe: 16 values
    report = compare(model_from_mapping(_numpy_init(cfg, 3)), progress=False)
    g = {t.name: t for t in report.tensors}
    assert g["wpe"].verdict == "untestable" and "fewer than the 128" in g["wpe"].reason
    assert report.verdict == "distribution" and report.passed()
    tiny = GPTConfig(1, 2, 1, vocab=3, max_seq_len=1)
    report = compare(model_from_mapping(_numpy_init(tiny, 3)), progress=False)
    assert report.verdict == "untestable" and not report.passed()


def _adapter_good(cfg, seed):
    return _numpy_init(cfg, seed)


def _adapter_sqrt_l(cfg, seed):
    return _numpy_init(cfg, seed, proj=lambda L: 0.02 / math.sqrt(L))


def test_fuzz_passes_a_correct_init_from_its_own_rng():
    result = fuzz(_adapter_good, examples=12, max_params=60_000, hypothesis_seed=3)
    assert result.verdict == "pass", result.render()
    assert result.resolved == "distribution"


def test_fuzz_failure_stays_testable_and_names_its_cause():
    result = fuzz(_adapter_sqrt_l, examples=25, max_params=60_000, hypothesis_seed=3)
    assert result.verdict == "fail", result.render()
    cfg = result.failure.config
    init = resolve("gpt2", cfg)
    from gpt2_verify.reference.config import parameter_table
    from gpt2_verify.verify.compare.regions import law_group_sizes
    assert min(n for s in parameter_table(cfg) for n in law_group_sizes(init, s).values()) >= 128
    assert "untestable" not in result.failure.report.summary()
    assert "1/sqrt(L) instead of 1/sqrt(2L)" in result.failure.report.summary() or (
        cfg.layers == 1 and "1/sqrt(2L) missing" in result.failure.report.summary())


def test_std_causes_are_tested_not_nearest():
    init = resolve("gpt2", CFG)
    # 0.01 at L = 4 is 0.02/sqrt(L) (and mup's law at this width): both fit, both named
    assert any("1/sqrt(L) instead of 1/sqrt(2L)" in c for c in fitting(init, "attprojw", 0, 0.01, 100_000))
    # 0.0085 is 1.2x: no cause's std fits with 100,000 values, none is named
    assert fitting(init, "attprojw", 0, 0.0085, 100_000) == []
