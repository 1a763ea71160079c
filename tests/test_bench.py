"""`gpt2-verify bench` (verify/bench/): the FLOP formula against torch's own FLOP counter, the
record's fields and their arithmetic end to end through the CLI, merging, bad input, the peak
table, and llm.c's train_gpt2 rows with a stand-in script (always) and a real build (when
LLMC_BIN_DIR names directories of llm.c builds, as in tests/test_llmc_harness.py).

Timings are never asserted (they depend on the machine and its load); what is asserted is what
the code derives from them and the counts, which do not."""

from __future__ import annotations

import copy
import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest
from gpt2_verify.reference.config import GPTConfig
from gpt2_verify.verify.bench import flops as F
from gpt2_verify.verify.bench import record as R
from gpt2_verify.verify.bench import timing
from gpt2_verify.verify.cli import main

torch = pytest.importorskip("torch")

TINY = ["--layers", "2", "--channels", "32", "--heads", "2", "--vocab", "200", "--max-seq-len", "64"]
TINY_CFG = GPTConfig(2, 32, 2, vocab=200, max_seq_len=64)  # Vp 256


# ---- FLOPs --------------------------------------------------------------------------------------

def _hand_count(L, C, Vp, Bsz, T):
    """Forward matmuls of the reference, written out one by one as (M, N, K) products of
    2 M N K FLOPs; backward computes two products of the same size per matmul (the gradient
    of each operand: every operand requires grad), so the total is 3x the forward."""
    M = Bsz * T
    fwd = 0
    for _ in range(L):
        fwd += 2 * M * (3 * C) * C  # qkv = ln1 @ qkvw^T
        fwd += 2 * Bsz * T * T * C  # q k^T over all heads: NH x (T x hs) @ (hs x T)
        fwd += 2 * Bsz * T * T * C  # att @ v: NH x (T x T) @ (T x hs)
        fwd += 2 * M * C * C  # attproj
        fwd += 2 * M * (4 * C) * C  # fc
        fwd += 2 * M * C * (4 * C)  # fcproj
    fwd += 2 * M * Vp * C  # lm_head over the padded vocab
    return 3 * fwd


@pytest.mark.parametrize("cfg,Bsz,T", [(TINY_CFG, 2, 16), (GPTConfig(1, 8, 1, vocab=50, max_seq_len=4), 3, 1),
                                       (GPTConfig(3, 24, 4, vocab=300, max_seq_len=32), 1, 32)])
def test_flops_equal_torch_flop_counter(cfg, Bsz, T):
    from gpt2_verify.reference.init import init_tensors
    from gpt2_verify.verify.numerics.model import TorchModel, random_tokens
    from torch.utils.flop_counter import FlopCounterMode

    model = TorchModel(cfg, init_tensors(cfg, 42, "llmc"), dtype="float32")
    x, y = random_tokens(cfg, batch=Bsz, seq=T, seed=1)
    counter = FlopCounterMode(display=False)
    with counter:
        model.loss(x, y).backward()
    counted = counter.get_total_flops()
    L, C, Vp = cfg.layers, cfg.channels, cfg.padded_vocab
    assert counted == _hand_count(L, C, Vp, Bsz, T)
    # the exact relation: 6 x matmul parameters x tokens + the attention term
    n_mm = 12 * L * C * C + Vp * C
    assert counted == (6 * n_mm + 12 * L * T * C) * Bsz * T
    assert F.flops_per_token(cfg, seq=T) * Bsz * T == counted
    assert F.matmul_params(cfg) == n_mm


def test_nanogpt_and_llmc_estimates_against_the_counted_flops():
    cfg, T = TINY_CFG, 16
    est = F.flop_estimates(cfg, seq=T)
    L, C = cfg.layers, cfg.channels
    # nanoGPT's N adds the biases and LayerNorm weights (13 C per layer + lnf's 2 C) to ours
    assert est["nanogpt_estimate_mfu"] - est["ours"] == 6 * (13 * L * C + 2 * C)
    rel = (est["nanogpt_estimate_mfu"] - est["ours"]) / est["ours"]
    assert 0 < rel < 0.03  # 2.57% for L2 C32 Vp256 T16 (stated in verify/bench/flops.py)
    d12 = F.flop_estimates(GPTConfig(12, 768, 12), seq=1024)
    assert 0 < (d12["nanogpt_estimate_mfu"] - d12["ours"]) / d12["ours"] < 0.001  # 0.085%
    # llm.c: every parameter (wpe included) and the causal-halved attention term
    assert est["llmc_gpt2_estimate_mfu"] == 6 * cfg.num_params_padded + 6 * L * C * T


# ---- peaks --------------------------------------------------------------------------------------

# device name as torch.cuda.get_device_name() gives it -> dense bf16 peak from the vendor
# documents (A100 datasheet 312; H100 whitepaper 989.4 SXM5 and 756 PCIe; H200 datasheet 1,979
# sparse; L4 datasheet 242 sparse; A10 datasheet 125; Ada whitepaper RTX 4090 165.2), or None
PEAK_CASES = {
    "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA A100-SXM4-40GB": 312.0, "NVIDIA A100-PCIE-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0, "NVIDIA H100 80GB HBM3": 989.4, "NVIDIA H100 PCIe": 756.0,
    "NVIDIA H200": 989.4, "NVIDIA L4": 121.0, "NVIDIA A10": 125.0, "NVIDIA GeForce RTX 4090": 165.2,
    "NVIDIA H100 NVL": None, "NVIDIA H200 NVL": None, "NVIDIA A10G": None, "NVIDIA L40S": None,
    "Tesla T4": None, "NVIDIA GeForce RTX 4090 D": None,
}


@pytest.mark.parametrize("name,want", sorted(PEAK_CASES.items()))
def test_peak_lookup(name, want):
    got = F.lookup_peak(name, dtype="bf16")
    assert got.tflops == want
    if want is None:
        assert got.source is None and "--peak-tflops" in got.reason
    else:
        assert "datasheet" in got.source or "whitepaper" in got.source


def test_peak_lookup_cpu_and_other_dtype_have_none_with_the_reason():
    cpu = F.lookup_peak("Intel(R) Xeon(R) Processor", kind="cpu")
    assert cpu.tflops is None and "SIMD" in cpu.reason and "--peak-tflops" in cpu.reason
    fp32 = F.lookup_peak("NVIDIA A100-SXM4-80GB", dtype="float32")
    assert fp32.tflops is None and "float32" in fp32.reason


def test_cpu_peak_estimate():
    est = F.cpu_peak_estimate(cores=2, ghz=2.0, flops_per_cycle=64)
    assert est.tflops == pytest.approx(2 * 2.0e9 * 64 / 1e12, rel=1e-15)
    assert "2 cores" in est.source
    with pytest.raises(ValueError, match="ghz"):
        F.cpu_peak_estimate(cores=2, ghz=0, flops_per_cycle=64)


# ---- the CLI end to end -------------------------------------------------------------------------

def _bench(tmp_path, *extra, name="a.json"):
    out = tmp_path / name
    rc = main(["bench", *TINY, "--batch", "2", "--seq", "8,16", "--warmup", "1", "--repeats", "3",
               "--threads", "1", "--device", "cpu", "--json", str(out), *extra])
    assert rc == 0
    return out, json.loads(out.read_text())


def test_bench_record_fields_and_arithmetic(tmp_path, capsys):
    path, rec = _bench(tmp_path, "--peak-tflops", "0.01")
    table = capsys.readouterr().out
    assert rec["schema"] == R.SCHEMA and isinstance(rec["tool_version"], str)
    assert R.validate_record(rec, str(path)) == rec["rows"]
    assert [(r["batch"], r["seq"]) for r in rec["rows"]] == [(2, 8), (2, 16)]
    for r in rec["rows"]:
        assert r["impl"] == "reference" and r["dtype"] == "float32" and r["compile"] is False
        assert GPTConfig.from_dict(r["config"]) == TINY_CFG and r["descriptor"] is None
        assert r["device"]["kind"] == "cpu" and r["device"]["threads"] == 1
        assert r["device"]["gpu_name"] is None and r["device"]["torch"] == torch.__version__
        for k in ("fwd_s", "bwd_s", "opt_s", "step_s"):
            s = r[k]
            assert 0 < s["min"] <= s["q1"] <= s["median"] <= s["q3"] <= s["max"]
        T = r["seq"]
        n_mm = 12 * 2 * 32 * 32 + 256 * 32
        assert r["flops_per_token"] == 6 * n_mm + 12 * 2 * T * 32
        assert r["tokens_per_s"] == pytest.approx(r["batch"] * T / r["step_s"]["median"], rel=1e-12)
        achieved = r["flops_per_token"] * r["tokens_per_s"] / 1e12
        assert r["achieved_tflops"] == pytest.approx(achieved, rel=1e-12)
        assert r["peak_tflops"] == 0.01 and r["peak_source"].startswith("--peak-tflops")
        assert r["mfu"] == pytest.approx(r["achieved_tflops"] / 0.01, rel=1e-12)
        assert isinstance(r["peak_memory_bytes"], int) and r["peak_memory_bytes"] >= 0
        assert r["repeats"] == 3 and r["warmup"] == 1 and r["optimizer"] == "train_gpt2.c"
    assert "config L=2 C=32 NH=2 V=200 Vp=256 maxT=64" in table and "2 x 16" in table


def test_bench_without_a_peak_has_null_mfu_and_says_why(tmp_path, capsys):
    _, rec = _bench(tmp_path)
    assert all(r["mfu"] is None and r["peak_tflops"] is None for r in rec["rows"])
    assert "SIMD" in capsys.readouterr().out


def test_bench_json_to_stdout_is_only_json(capsys):
    rc = main(["bench", *TINY, "--batch", "1", "--seq", "4", "--warmup", "0", "--repeats", "1",
               "--threads", "1", "--device", "cpu", "--json", "-"])
    assert rc == 0
    rec = json.loads(capsys.readouterr().out)
    assert len(rec["rows"]) == 1 and rec["rows"][0]["batch"] == 1


def test_progress_shows_config_and_step():
    import io

    stream = io.StringIO()
    p = timing.StepProgress(4, "bench", enabled=True, stream=stream)
    p.update(0, label="bench d12 B4 T64 cpu: step")
    p.update(3)
    assert stream.getvalue().endswith("bench d12 B4 T64 cpu: step 3/4")


# ---- merge --------------------------------------------------------------------------------------

def test_merge_two_machines_into_one_table(tmp_path, capsys):
    a, rec = _bench(tmp_path)
    other = copy.deepcopy(rec)
    for r in other["rows"]:  # the same bench, as if run on a GPU box
        r["device"].update(kind="cuda", name="NVIDIA H100 80GB HBM3", gpu_name="NVIDIA H100 80GB HBM3",
                           gpu_memory_bytes=85_520_809_984, cuda="12.4", driver="550.54.15", host="gpubox")
        r["dtype"], r["peak_tflops"], r["mfu"] = "bf16-autocast", 989.4, r["achieved_tflops"] / 989.4
    b = tmp_path / "b.json"
    b.write_text(json.dumps(other))
    capsys.readouterr()
    merged = tmp_path / "m.json"
    assert main(["bench", "--merge", str(a), str(b), "-o", str(merged)]) == 0
    table = capsys.readouterr().out
    m = json.loads(merged.read_text())
    assert len(m["rows"]) == 4 and R.validate_record(m, "m") == rec["rows"] + other["rows"]
    assert table.count("config L=2 C=32") == 1  # one group for the one config
    assert "NVIDIA H100 80GB HBM3 (gpubox)" in table and "x1 thr" in table
    assert "bf16-autocast" in table and "float32" in table


def test_merge_refuses_a_measurement_twice(tmp_path, capsys):
    a, rec = _bench(tmp_path)
    copied = tmp_path / "copy.json"
    copied.write_text(json.dumps(rec))
    for second, why in ((a, "the same file given twice"), (copied, "a row copied between files")):
        capsys.readouterr()
        assert main(["bench", "--merge", str(a), str(second), "-o", str(tmp_path / "m.json")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err and str(second) in err, err
        assert not (tmp_path / "m.json").exists()


def _bad_records(rec):
    def edit(f):
        r = copy.deepcopy(rec)
        f(r)
        return json.dumps(r)

    return {
        "garbage": "{not json",
        "empty": "",
        "list": "[]",
        "schema": edit(lambda r: r.update(schema="gpt2-verify/compare/1")),
        "no_rows": edit(lambda r: r.pop("rows")),
        "missing_field": edit(lambda r: r["rows"][0].pop("tokens_per_s")),
        "nan": edit(lambda r: r["rows"][0].update(tokens_per_s=float("nan"))),
        "bad_stats": edit(lambda r: r["rows"][0].update(step_s={"median": 1.0})),
        "bad_device": edit(lambda r: r["rows"][0]["device"].pop("host")),
        "bad_impl": edit(lambda r: r["rows"][0].update(impl="nanogpt")),
        "bad_config": edit(lambda r: r["rows"][0]["config"].update(channels=33)),
    }


def test_bad_merge_inputs_exit_2_with_one_line(tmp_path, capsys):
    a, rec = _bench(tmp_path)
    cases = {k: tmp_path / f"{k}.json" for k in _bad_records(rec)}
    for k, text in _bad_records(rec).items():
        cases[k].write_text(text)
    cases["missing"] = tmp_path / "nope.json"
    cases["directory"] = tmp_path
    for k, p in cases.items():
        capsys.readouterr()
        assert main(["bench", "--merge", str(a), str(p)]) == 2, k
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and str(p) in err and "Traceback" not in err, (k, err)


# ---- bad arguments ------------------------------------------------------------------------------

@pytest.mark.parametrize("args,needle", [
    (TINY + ["--seq", "65"], "--seq 65"),
    (TINY + ["--batch", "0"], "--batch"),
    (TINY + ["--batch", "two"], "--batch"),
    (["--seq", "8"], "descriptor"),
    (["--configs", "d7"], "--configs"),
    (TINY + ["--peak-tflops", "-1"], "--peak-tflops"),
    (TINY + ["--cpu-peak-estimate", "fast"], "--cpu-peak-estimate"),
    (TINY + ["--repeats", "0"], "--repeats"),
    (TINY + ["--llmc-train-bin", "/nonexistent/train_gpt2", "--repeats", "1", "--warmup", "0",
             "--batch", "1", "--seq", "4"], "/nonexistent/train_gpt2"),
    (["--layers", "1", "--channels", "8", "--heads", "2", "--max-seq-len", "32", "--vocab", "50",
      "--llmc-train-bin", sys.executable, "--repeats", "1", "--warmup", "0", "--batch", "1", "--seq", "4"],
     "maxT >= 64"),
    (["d12", "--merge", "x.json"], "--merge"),
])
def test_bad_arguments_exit_2(args, needle, capsys):
    assert main(["bench", "--device", "cpu", "--threads", "1", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_gpu_exits_2(capsys):
    assert main(["bench", *TINY, "--device", "cuda"]) == 2
    assert "cuda" in capsys.readouterr().err


# ---- llm.c rows ---------------------------------------------------------------------------------

def _script(path: Path, body: str) -> str:
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


FAKE_TRAIN = """\
import os, sys, time
# train_gpt2.c opens these in its working directory
for f in ("gpt2_124M.bin", "gpt2_tokenizer.bin", "dev/data/tinyshakespeare/tiny_shakespeare_train.bin"):
    if not os.path.exists(f):
        sys.exit(f"missing {f}")
if os.environ.get("OMP_NUM_THREADS") != "1":
    sys.exit("OMP_NUM_THREADS not passed")
print("train dataset num_batches: 1")
print("val loss 6.9")
for i, ms in enumerate([500.0, 10.0, 20.0, 30.0, 40.0, 50.0]):
    print(f"step {i}: train loss {6.9 - 0.01 * i:f} (took {ms:f} ms)", flush=True)
HANG
"""
LLMC_CFG = ["--layers", "1", "--channels", "16", "--heads", "2", "--vocab", "100", "--max-seq-len", "64"]


def _llmc(tmp_path, binary, *extra):
    out = tmp_path / "l.json"
    rc = main(["bench", *LLMC_CFG, "--batch", "1", "--seq", "4", "--warmup", "0", "--repeats", "1",
               "--threads", "1", "--device", "cpu", "--llmc-train-bin", binary, "--json", str(out), *extra])
    return rc, (json.loads(out.read_text()) if rc == 0 else None)


def test_llmc_rows_from_a_stand_in_train_gpt2(tmp_path):
    fake = _script(tmp_path / "train_gpt2", FAKE_TRAIN.replace("HANG", ""))
    rc, rec = _llmc(tmp_path, fake)
    assert rc == 0
    ref, llmc = rec["rows"]
    assert ref["impl"] == "reference" and llmc["impl"] == "llmc"
    assert (llmc["batch"], llmc["seq"], llmc["dtype"], llmc["compile"]) == (4, 64, "float32", False)
    assert llmc["fwd_s"] is None and llmc["bwd_s"] is None and llmc["opt_s"] is None
    # the first (500 ms) step is the warm-up; 10..50 ms remain
    assert llmc["step_s"] == pytest.approx({"median": 0.03, "min": 0.01, "max": 0.05, "q1": 0.02, "q3": 0.04})
    assert llmc["repeats"] == 5 and llmc["stopped_at_limit"] is False
    assert llmc["tokens_per_s"] == pytest.approx(4 * 64 / 0.03, rel=1e-12)
    assert llmc["flops_per_token"] == 6 * (12 * 16 * 16 + 128 * 16) + 12 * 64 * 16
    assert llmc["device"]["threads"] == 1
    assert R.validate_record(rec, "l") == rec["rows"]


def test_llmc_stopped_at_the_time_limit_keeps_its_steps(tmp_path):
    fake = _script(tmp_path / "train_gpt2", FAKE_TRAIN.replace("HANG", "time.sleep(60)"))
    rc, rec = _llmc(tmp_path, fake, "--llmc-timeout", "3")
    assert rc == 0
    llmc = rec["rows"][1]
    assert llmc["stopped_at_limit"] is True and llmc["repeats"] == 5
    assert llmc["step_s"]["median"] == pytest.approx(0.03)


@pytest.mark.parametrize("body,needle", [
    ("print('hello')", "0 'step N"),
    ("import sys; print('step 0: train loss 1.0 (took 5.0 ms)'); sys.exit(3)", "exited with 3"),
    ("print('step 0: train loss 1.0 (took 5.0 ms)')", "1 'step N"),  # only the warm-up step
])
def test_llmc_bad_output_exits_2_naming_the_binary(tmp_path, capsys, body, needle):
    fake = _script(tmp_path / "train_gpt2", body)
    rc, _ = _llmc(tmp_path, fake)
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and fake in err and needle in err, err


def _real_train_bin() -> str | None:
    for d in filter(None, os.environ.get("LLMC_BIN_DIR", "").split(":")):
        p = Path(d) / "train_gpt2"
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


@pytest.mark.skipif(_real_train_bin() is None,
                    reason="LLMC_BIN_DIR names no directory with an llm.c train_gpt2 build")
def test_llmc_real_train_gpt2(tmp_path):
    rc, rec = _llmc(tmp_path, _real_train_bin())
    assert rc == 0
    llmc = rec["rows"][1]
    assert llmc["impl"] == "llmc" and llmc["repeats"] == 40  # train_gpt2.c: steps 0..40, one warm-up
    assert llmc["tokens_per_s"] == pytest.approx(256 / llmc["step_s"]["median"], rel=1e-12)
    assert llmc["peak_memory_bytes"] is None or llmc["peak_memory_bytes"] > 0
