"""`gpt2-verify ablate` (verify/experiments): the Markov source's entropy rate, the fixed batch
order, Student-t intervals, arms, a tiny ablation end to end, resume, divergence, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from gpt2_verify.reference.config import PER_LAYER_TENSORS, GPTConfig
from gpt2_verify.verify.cli import main
from gpt2_verify.verify.experiments import sources, study

pytest.importorskip("torch")

TINY = GPTConfig(1, 16, 2, vocab=16, max_seq_len=8)


def _binary_entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_entropy_rate_of_a_two_state_chain_closed_form():
    a, b = 0.1, 0.3  # P(0 -> 1), P(1 -> 0)
    P = np.array([[1 - a, a], [b, 1 - b]])
    pi0 = b / (a + b)
    want = pi0 * _binary_entropy(a) + (1 - pi0) * _binary_entropy(b)
    assert sources.entropy_rate(P) == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(sources.stationary(P), [pi0, 1 - pi0], rtol=1e-12)
    # a periodic chain (power iteration from a non-uniform start would oscillate): pi = (1/2, 1/2),
    # H = 0 (every step is certain)
    flip = np.array([[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(sources.stationary(flip), [0.5, 0.5], rtol=1e-15)
    assert sources.entropy_rate(flip) == 0.0
    with pytest.raises(ValueError, match="reducible"):
        sources.stationary(np.eye(2))


def test_entropy_rate_matches_the_empirical_conditional_entropy():
    P = sources.markov_chain(8, alpha=0.5, seed=3)
    x = sources.sample_chain(P, 400_000, seed=4)
    counts = np.zeros((8, 8))
    np.add.at(counts, (x[:-1], x[1:]), 1)
    joint = counts / counts.sum()
    cond = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        empirical = -np.nansum(joint * np.log(cond))
    # plug-in estimate over 400k transitions: standard error ~ 1e-3
    assert empirical == pytest.approx(sources.entropy_rate(P), abs=0.01)


def test_markov_tokens_are_reproducible_and_batches_fixed():
    a = sources.markov_tokens(vocab=16, alpha=0.2, seed=1, train_tokens=3000, val_tokens=500)
    b = sources.markov_tokens(vocab=16, alpha=0.2, seed=1, train_tokens=3000, val_tokens=500)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert a.train.dtype == np.int32 and a.train.max() < 16
    x, y = sources.batch(a.train, 5, batch_size=3, seq=8)
    assert x.shape == y.shape == (3, 8)
    span = a.train.size - 9
    for k in range(3):
        start = ((5 * 3 + k) * 8) % span
        assert np.array_equal(x[k], a.train[start:start + 8])
        assert np.array_equal(y[k], a.train[start + 1:start + 9])


def test_interval_against_scipy():  # the t quantile itself: tests/test_special.py
    scipy_stats = pytest.importorskip("scipy.stats")
    v = [2.0, 2.5, 3.5]
    iv = study.interval(v)
    lo, hi = scipy_stats.t.interval(0.95, 2, loc=np.mean(v), scale=scipy_stats.sem(v))
    assert (iv["lo"], iv["hi"], iv["n"]) == (pytest.approx(lo), pytest.approx(hi), 3)
    assert study.interval([1.0, float("nan")])["n"] == 1


def test_arms_keep_comma_lists_inside_overrides():
    arms = study.parse_arms("gpt2,torch-default,gpt2+attprojw,fcprojw.scale=10+wpe.std=0.01")
    assert [a.label for a in arms] == ["gpt2", "torch-default",
                                       "gpt2[attprojw,fcprojw.scale=10,wpe.std=0.01]"]
    with pytest.raises(ValueError, match="unknown scheme 'xavier'"):
        study.parse_arms("gpt2,xavier")
    with pytest.raises(ValueError, match="listed twice"):
        study.parse_arms("gpt2,gpt2")


ARGS = ["--layers", "1", "--channels", "16", "--heads", "2", "--vocab", "16", "--max-seq-len", "8",
        "--markov-vocab", "16", "--train-tokens", "4000", "--steps", "6", "--batch", "2", "--seq", "8",
        "--eval-every", "2", "--log-every", "2"]


def test_tiny_ablation_end_to_end(tmp_path, capsys):
    out = tmp_path / "abl"
    assert main(["ablate", *ARGS, "--seeds", "2", "--schemes", "gpt2,xavier-uniform", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "xavier-uniform" in text and "entropy rate" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == study.SCHEMA and summary["seeds"] == [0, 1] and summary["steps"] == 6
    assert summary["data"]["kind"] == "markov" and summary["data"]["entropy_rate"] > 0
    assert summary["config"] == TINY.as_dict()
    names = [e["name"] for e in summary["schemes"]]
    assert names == ["gpt2", "xavier-uniform"]
    for e in summary["schemes"]:
        f = e["final_loss"]
        assert f["n"] == 2 and f["lo"] <= f["mean"] <= f["hi"]
        assert len(e["curve"]["step"]) == 6 and e["val_curve"]["step"] == [0, 2, 4, 6]
        assert len(e["grad_norm_profile"]["mean"]) == 1
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["gpt2__seed0.json", "gpt2__seed1.json", "xavier-uniform__seed0.json",
                    "xavier-uniform__seed1.json"]
    rec = json.loads((out / "runs" / "xavier-uniform__seed1.json").read_text())
    assert rec["schema"] == study.RUN_SCHEMA and len(rec["train_loss"]) == 6 and not rec["diverged"]
    assert rec["init"]["scheme"] == "xavier-uniform"
    # the run's recorded first loss is the model's loss on batch 0 at its init: recompute it
    from gpt2_verify.reference.init import init_tensors
    from gpt2_verify.verify.numerics.model import forward_backward

    data = sources.markov_tokens(vocab=16, alpha=0.1, seed=0, train_tokens=4000, val_tokens=4096)
    x, y = sources.batch(data.train, 0, batch_size=2, seq=8)
    fb = forward_backward(TINY, init_tensors(TINY, 1, scheme="xavier-uniform"), x, y, dtype="float64",
                          backward=False)
    assert rec["train_loss"][0] == pytest.approx(fb.loss, rel=1e-5)
    # the gradient-norm profile is the mean over seeds of each layer's gradient norm at step 0,
    # from the per-layer tensors only (with L = 1, wte/wpe/lnf also have one entry: not counted);
    # recomputed from float64 gradients of each seed's init on batch 0
    want = []
    for seed in (0, 1):
        g = forward_backward(TINY, init_tensors(TINY, seed, scheme="xavier-uniform"), x, y,
                             dtype="float64").grads
        want.append(math.sqrt(sum(float(np.sum(g[n] ** 2)) for n in g
                                  if n in PER_LAYER_TENSORS)))
    prof = summary["schemes"][1]["grad_norm_profile"]
    assert prof["layer"] == [0] and prof["mean"][0] == pytest.approx(np.mean(want), rel=1e-4)


def _settings(**kw):
    data = sources.markov_tokens(vocab=16, alpha=0.1, seed=0, train_tokens=4000, val_tokens=1000)
    base = dict(config=TINY, arms=tuple(study.parse_arms("gpt2,kaiming-normal")), seeds=(0, 1), steps=5,
                batch=2, seq=8, lr=1e-3, eval_every=2, log_every=2, data=data.to_dict())
    base.update(kw)
    return study.Settings(**base), data


def test_resume_after_an_interruption_redoes_nothing_finished(tmp_path):
    s, data = _settings()
    whole = study.run_ablation(s, data, tmp_path / "whole", progress=False)
    done = []

    def stop_after_two(rec):
        done.append(rec["label"])
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        study.run_ablation(s, data, tmp_path / "cut", progress=False, on_run_done=stop_after_two)
    finished = sorted((tmp_path / "cut" / "runs").iterdir())
    assert len(finished) == 2 and not (tmp_path / "cut" / "summary.json").exists()
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in finished}
    redone = []
    resumed = study.run_ablation(s, data, tmp_path / "cut", progress=False,
                                 on_run_done=lambda rec: redone.append((rec["label"], rec["seed"])))
    assert len(redone) == 2 and all(f"{lab}__seed{seed}.json" not in before for lab, seed in redone)
    for name, (mtime, content) in before.items():
        p = tmp_path / "cut" / "runs" / name
        assert (p.stat().st_mtime_ns, p.read_bytes()) == (mtime, content)
    # the same numbers as the uninterrupted ablation (one process, fixed data order, CPU float32)
    for a, b in zip(whole["schemes"], resumed["schemes"]):
        assert a["final_loss"]["values"] == b["final_loss"]["values"]


def test_progress_names_the_run_step_and_loss(tmp_path, monkeypatch):
    import io

    from gpt2_verify.verify import progress

    s, data = _settings(seeds=(0,))
    stream = io.StringIO()
    real = progress.Progress

    class Captured(real):
        def __init__(self, *a, **kw):
            super().__init__(*a, **{**kw, "stream": stream, "enabled": True})

    monkeypatch.setattr(progress, "Progress", Captured)
    study.run_ablation(s, data, tmp_path, progress=True)
    text = stream.getvalue()  # the first and the last update are always drawn
    assert "run 1/2 gpt2 seed 0" in text and "run 2/2 kaiming-normal seed 0 step 5 loss " in text
    assert "eta" in text


def test_other_settings_on_the_same_dir_are_refused(tmp_path, capsys):
    out = str(tmp_path / "abl")
    assert main(["ablate", *ARGS, "--seeds", "1", "--schemes", "gpt2", "-o", out]) == 0
    capsys.readouterr()
    assert main(["ablate", *ARGS, "--seeds", "1", "--schemes", "gpt2", "--lr", "0.01", "-o", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0]
    assert main(["ablate", *ARGS, "--seeds", "1", "--schemes", "gpt2", "--lr", "0.01", "--force",
                 "-o", out]) == 0


def test_a_diverging_arm_is_named(tmp_path):
    s, data = _settings(arms=tuple(study.parse_arms("gpt2,gpt2+qkvw,fcw.scale=1e30")), seeds=(0,))
    summary = study.run_ablation(s, data, tmp_path, progress=False)
    bad = summary["schemes"][1]
    assert bad["diverged"] == [0] and bad["final_loss"]["n"] == 0
    assert summary["schemes"][0]["diverged"] == []
    assert "0 " in study.render(summary).splitlines()[-1]


@pytest.mark.parametrize("extra,match", [
    (["--tokens", "GARBAGE"], "GARBAGE"),
    (["--text", "MISSING"], "MISSING"),
    (["--seeds", "x"], "--seeds"),
    (["--seeds", "1,-2"], "out of range"),
    (["--schemes", "gpt2,nope"], "unknown scheme 'nope'"),
    (["--set", "wpe.sdt=1"], "unknown field 'sdt'"),
])
def test_bad_input_is_one_line_exit_2(extra, match, tmp_path, capsys):
    (tmp_path / "GARBAGE").write_bytes(b"\x00" * 100)
    argv = ["ablate", *ARGS, "-o", str(tmp_path / "abl"), *extra]
    argv = [a.replace("GARBAGE", str(tmp_path / "GARBAGE")).replace("MISSING", str(tmp_path / "MISSING"))
            for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


def test_text_source_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    out = tmp_path / "abl"
    argv = ["ablate", "--layers", "1", "--channels", "16", "--heads", "2", "--vocab", "256",
            "--max-seq-len", "8", "--text", str(text), "--steps", "4", "--batch", "2", "--seq", "8",
            "--seeds", "1", "--schemes", "gpt2", "--plot", "-o", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["kind"] == "text" and summary["data"]["vocab"] == 256
    for name in ("loss_curves.png", "final_loss.png", "grad_norm_profile.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_one_line(tmp_path):
    argv = ["ablate", *ARGS, "--seeds", "1", "--schemes", "gpt2", "--plot", "-o", str(tmp_path)]
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            f"from verify.cli import main\nsys.exit(main({argv!r}))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    err = run.stderr.strip().splitlines()
    assert len(err) == 1 and "matplotlib" in err[0], err


def test_llmc_token_shards(tmp_path):
    from gpt2_verify.verify.formats.tokens import write_shard

    data = sources.markov_tokens(vocab=16, alpha=0.1, seed=5, train_tokens=3000, val_tokens=600)
    write_shard(tmp_path / "train.bin", data.train)
    write_shard(tmp_path / "val.bin", data.val)
    got = sources.shard_tokens(tmp_path / "train.bin", vocab=16, val_path=tmp_path / "val.bin")
    assert np.array_equal(got.train, data.train) and np.array_equal(got.val, data.val)
    held = sources.shard_tokens(tmp_path / "train.bin", vocab=16)  # the last 10% held out
    assert held.train.size == 2700 and np.array_equal(held.val, data.train[2700:])
    out = tmp_path / "abl"
    argv = ["ablate", *ARGS, "--tokens", str(tmp_path / "train.bin"), "--val-tokens",
            str(tmp_path / "val.bin"), "--seeds", "1", "--schemes", "gpt2", "-o", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["kind"] == "tokens" and summary["data"]["train_tokens"] == 3000
