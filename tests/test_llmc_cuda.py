"""llm.c's CUDA binaries without a GPU: their output formats, the derived bf16/fp32 limits, and
stand-in binaries that print those formats.

Every output line here is produced from the printf format strings of llm.c f1e2ace
(test_gpt2.cu, test_gpt2_fp32.cu, train_gpt2.cu, llmc/utils.h, llmc/cuda_common.h), copied
verbatim into FORMATS and filled with Python's % operator (the same conversions as C's printf),
with good and bad figures. The stand-ins compute their figures from the files in their working
directory, as the real binaries do.
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
import textwrap

import numpy as np
import pytest
from gpt2_verify.reference.bf16 import bf16_bits_to_f32
from gpt2_verify.reference.config import TENSOR_NAMES, GPTConfig
from gpt2_verify.verify.cli import main
from gpt2_verify.verify.llmc import cuda as CU
from gpt2_verify.verify.llmc import harness as H
from gpt2_verify.verify.llmc.precision import RoundingPath, cuda_tolerances, z_score
from gpt2_verify.verify.llmc.runs import RunOutput

torch = pytest.importorskip("torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the smallest config llm.c's bf16 kernels accept at B2 T16 and B4 T64 (cuda.CUDA_SHAPE_RULES)
CFG = GPTConfig(1, 64, 4, vocab=100, max_seq_len=64)

# llm.c f1e2ace's printf formats, verbatim
FORMATS = {
    "checking": "checking tensor: %s\n",
    "tensor_ok": "TENSOR OK, max diff: %.3e, with rel error: %.3e (calculated=%10f, ref=%10f), "
                 "%.2f%% of maximum error\n",
    "tensor_not_ok": "TENSOR NOT OK, max diff: %.3e, with rel error: %.3e (calculated=%10f, ref=%10f), "
                     "%.2f%% of maximum error\n",
    "logit_diff": "logit max diff: %f\n",
    "step": "step %d: loss %f (took %f ms)\n",
    "loss_ok": "loss ok at step %d: %f %f\n",
    "loss_mismatch": "LOSS MISMATCH AT STEP %d: %f %f\n",
    "nondet": "Nondeterminism! Loss mismatch at step %d: %.15f vs %.15f\n",
    "overall": "overall okay: %d\n",
    "fp32_loss_ok": "LOSS OK: %f %f\n",
    "train_step": "step %4d/%d | loss %7.6f (%+.2fz)| norm %6.4f (%+.2fz)| lr %.2e | %.2f ms | "
                  "%.1f%% bf16 MFU | %.0f tok/s\n",
    "precision": "| precision             | %-50s |\n",
    "val": "val loss %f\n",
    "cuda_error": "[CUDA ERROR] at file %s:%d:\n%s\n",
    "open_error": "Error: Failed to open file '%s' at %s:%d\n",
    "precision_error": "Precision is configured as BF16 but model at %s is not.\n",
}
CU_LABELS = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attrpojw", "attprojb", "ln2w", "ln2b", "fcw",
             "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"]  # test_gpt2.cu's names[], typo included
PRETRAINED = [5.270009, 4.060681, 3.320085, 2.717550, 2.181066, 1.653923, 1.168050, 0.736873, 0.401021,
              0.187493]  # test_gpt2.cu expected_losses


def _test_cu_text(*, logit_diff, grad_diff, losses, nondet=False) -> str:
    f = FORMATS
    out = ["[System]\n", "Device 0: NVIDIA H200\n", "[State]\n", "batch_size: 2\n", "seq_len: 16\n",
           "OK (LOGITS)\n", f["logit_diff"] % logit_diff]
    for i, name in enumerate(CU_LABELS):
        out += ["---\n", f["checking"] % name, "OK 0.000100 0.000100\n",
                f["tensor_ok"] % (grad_diff[i], 0.01, 0.5, 0.49, 12.5)]
    out += [f["step"] % (s + 1, v, 3.2) for s, v in enumerate(losses)]
    out += [f["loss_mismatch"] % (i + 1, v, PRETRAINED[i]) for i, v in enumerate(losses)]
    out += [f["loss_ok"] % (s, 4.0, 4.0) for s in range(3)]
    if nondet:
        out.append(f["nondet"] % (3, 4.0, 4.0000001))
    out.append(f["overall"] % 0)
    return "".join(out)


def _expected(cfg=CFG, loss=4.6, grad_max=1e-2, logits_max=5.0):
    losses = [loss - 0.05 * i for i in range(10)]
    exp = H.Expected(cfg, 2, 16, logits_max, loss, {n: grad_max for n in TENSOR_NAMES}, losses, losses,
                     logits_rms=1.5, cuda_test_losses=losses, cuda_train_losses=losses)
    numel = {s.name: s.numel for s in cfg.tensors()}
    for prog, prec in (("test", "bf16"), ("fp32cu", "fp32"), ("train", "bf16")):
        exp.cuda_tolerances[prog] = cuda_tolerances(cfg, precision=prec, B=2, T=16, logits_max=logits_max,
                                                    logits_rms=1.5, loss=loss, grad_max=exp.grad_max,
                                                    grad_numel=numel)
    return exp


def _run(text, rc=1, error=None):
    return RunOutput("/b/test_gpt2cu", rc, text, error)


# ---- parsing and judging the formats ----------------------------------------------------------------

def test_parse_test_gpt2cu_formats():
    text = _test_cu_text(logit_diff=0.25, grad_diff=[1e-3 * (i + 1) for i in range(16)],
                         losses=[4.6 - 0.05 * i for i in range(10)])
    p = CU.parse_test(text)
    assert p.logits_ok is True and p.logit_diff == 0.25
    assert set(p.grads) == set(TENSOR_NAMES)  # "attrpojw" read as attprojw
    assert p.grads["attprojw"] == (7e-3, True) and p.grads["lnfb"] == (1.6e-2, True)
    assert p.steps == pytest.approx([4.6 - 0.05 * i for i in range(10)])
    assert p.pretrained == [False] * 10 and p.resume_ok == 3 and p.nondeterminism == [] and p.overall is False


def test_judge_test_gpt2cu_good_and_bad_figures():
    exp = _expected()
    tol = exp.cuda_tolerances["test"]
    good = _test_cu_text(logit_diff=0.2 * tol.logits, grad_diff=[0.3 * tol.grads[n] for n in TENSOR_NAMES],
                         losses=[v + 0.2 * tol.step_loss for v in exp.cuda_test_losses])
    checks = CU.judge_test_cuda("/b/test_gpt2cu", _run(good), exp, tol)
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]
    names = [c.check for c in checks]
    assert names[:3] == ["logits", "loss", "dwte"] and "step 9 loss" in names and "step loss drift" in names
    assert names[-1] == "resume determinism"
    by = {c.check: c for c in checks}
    assert by["step 0 loss"].llmc_says == "NOT OK"  # against pretrained GPT-2: ignored
    assert by["logits"].used == pytest.approx(20, abs=1)  # %f rounds the printed figure

    bad = _test_cu_text(logit_diff=1.5 * tol.logits,
                        grad_diff=[(3.0 if n == "fcw" else 0.3) * tol.grads[n] for n in TENSOR_NAMES],
                        losses=[v + 0.5 * tol.step_loss * i for i, v in enumerate(exp.cuda_test_losses)],
                        nondet=True)
    failed = {c.check for c in CU.judge_test_cuda("/b/test_gpt2cu", _run(bad), exp, tol) if not c.passed}
    assert {"logits", "dfcw", "step 9 loss", "step loss drift", "resume determinism"} <= failed
    assert not failed & {"dwte", "dqkvw", "step 0 loss", "loss"}, failed


def test_judge_train_gpt2cu_and_precision_mismatch():
    exp = _expected()
    tol = exp.cuda_tolerances["train"]
    f = FORMATS
    head = f["precision"] % "BF16" + f["val"] % 4.6
    lines = [f["train_step"] % (s + 1, 10, v + 0.1 * tol.step_loss, math.nan, 1.25, math.nan, 3e-4, 5.1, 0.1,
                                1e5) for s, v in enumerate(exp.cuda_train_losses)]
    checks = CU.judge_train_cuda("/b/train_gpt2cu", _run(head + "".join(lines), rc=0), exp, tol)
    assert len(checks) == 11 and all(c.passed for c in checks), checks
    [c] = CU.judge_train_cuda("/b/train_gpt2cu", _run(f["precision"] % "FP32" + "".join(lines)), exp, tol)
    assert c.check == "runs"
    assert "built with PRECISION=FP32, judged as BF16: rerun with --precision fp32" in c.detail
    worse = [f["train_step"] % (s + 1, 10, v + 2 * tol.step_loss, 0.0, 1.0, 0.0, 3e-4, 5.1, 0.1, 1e5)
             for s, v in enumerate(exp.cuda_train_losses)]
    judged = CU.judge_train_cuda("/b/train_gpt2cu", _run(head + "".join(worse)), exp, tol)
    assert not any(c.passed for c in judged if c.check.startswith("train step"))


@pytest.mark.parametrize("text,expect", [
    (FORMATS["cuda_error"] % ("llmc/matmul.cuh", 120, "an illegal memory access was encountered"),
     "error line '[CUDA ERROR] at file llmc/matmul.cuh:120:'"),
    (FORMATS["open_error"] % ("gpt2_124M.bin", "llmc/utils.h", 28),
     "a build for another precision than bf16? the run directory holds only gpt2_124M_bf16.bin"),
    (FORMATS["precision_error"] % "gpt2_124M.bin",
     "rebuild with PRECISION=BF16 or judge it with --precision fp32"),
    ("[State]\nbatch_size: 2\n", "no test_gpt2cu output recognised"),
])
def test_errors_fail_with_the_tail(text, expect):
    exp = _expected()
    good = _test_cu_text(logit_diff=0.0, grad_diff=[0.0] * 16, losses=exp.cuda_test_losses)
    out = (good.split("step 1:")[0] + text) if "State" not in text else text  # figures, then the error
    [c] = CU.judge_test_cuda("/b/test_gpt2cu", _run(out), exp, exp.cuda_tolerances["test"])
    assert c.check == "runs" and not c.passed and expect in c.detail and "tail:" in c.detail, c.detail


def test_fp32cu_has_no_figures_but_loss_and_steps():
    exp = _expected()
    tol = exp.cuda_tolerances["fp32cu"]
    f = FORMATS
    text = ("OK (LOGITS)\n" + f["fp32_loss_ok"] % (exp.loss, exp.loss) + "grads\nOK 0.1 0.1\nTENSOR OK\n"
            + "".join(f["step"] % (s, v, 1.0) for s, v in enumerate(exp.test_losses)) + f["overall"] % 0)
    checks = {c.check: c for c in CU.judge_test_fp32cu("/b/test_gpt2fp32cu", _run(text, rc=0), exp, tol)}
    assert all(c.passed for c in checks.values()), checks
    assert checks["logits"].value is None and "no figure" in checks["logits"].detail
    bad = text.replace("TENSOR OK", "TENSOR NOT OK").replace(f["step"] % (9, exp.test_losses[9], 1.0),
                                                             f["step"] % (9, exp.test_losses[9] + 1e-3, 1.0))
    judged = CU.judge_test_fp32cu("/b/test_gpt2fp32cu", _run(bad), exp, tol)
    failed = {c.check for c in judged if not c.passed}
    assert failed == {"grads", "step 9 loss", "step loss drift"}, failed


def test_kind_and_shape_rules():
    assert [CU.kind_of(p) for p in ("a/test_gpt2", "b/test_gpt2cu", "train_gpt2cu", "x/test_gpt2fp32cu")] == \
        ["cpu", "cuda", "cuda", "fp32cu"]
    assert CU.shape_problems(CFG, B=2, T=16, precision="bf16", what="test_gpt2cu") == []
    small = GPTConfig(1, 12, 2, vocab=50, max_seq_len=64)
    probs = CU.shape_problems(small, B=2, T=18, precision="bf16", what="test_gpt2cu")
    assert any("T % 4 == 0" in p for p in probs) and any("C % x == 0" in p for p in probs)
    fp32 = CU.shape_problems(small, B=2, T=16, precision="fp32", what="t")
    assert fp32[0].startswith("t B=2 T=16 C=12 breaks")


# ---- the derived limits ---------------------------------------------------------------------------------

def test_z_score_and_rounding_counts():
    assert z_score(1) == pytest.approx(math.sqrt(2 * math.log(1e9)))
    n = 32000
    assert n * math.exp(-z_score(n) ** 2 / 2) == pytest.approx(1e-9)
    p = RoundingPath.forward(GPTConfig(2, 64, 4, vocab=1000, max_seq_len=64), 16)
    assert p.store == 34 and p.fast_math == 5 and p.acc == 2 * (640 + 16 + 16) + 64
    assert p.sigma("bf16") == pytest.approx(2 ** -8 * math.sqrt(34 / 3), rel=1e-3)  # storage dominates


def _emulate(cfg, params, x, y, dt):
    """Forward and backward with every parameter and every op's result in `dt` (torch's bf16
    kernels round each op's output): more rounding than llm.c, which computes inside kernels in
    float32 and rounds only what it stores."""
    from gpt2_verify.verify.numerics import model as M

    P = {n: torch.tensor(params[n], dtype=torch.float32).to(dt).requires_grad_(True) for n in TENSOR_NAMES}
    logits = M._forward(torch, cfg, P, torch.from_numpy(x.astype(np.int64)), keep_activations=False)[0]
    logits = logits[..., :cfg.vocab].float()
    loss = -torch.log_softmax(logits, -1).gather(-1, torch.from_numpy(y.astype(np.int64))[..., None]).mean()
    loss.backward()
    return logits.detach().numpy(), float(loss.detach()), {n: P[n].grad.float().numpy() for n in TENSOR_NAMES}


@pytest.mark.parametrize("cfg,seed", [(GPTConfig(2, 64, 4, vocab=1000, max_seq_len=64), 0),
                                      (GPTConfig(4, 48, 4, vocab=500, max_seq_len=64), 1)])
def test_limits_cover_an_emulated_build_and_not_a_bug(cfg, seed):
    """All-bf16 and all-float32 emulations land inside the derived limits; the same emulation
    with the gradients 40% off (a factor-2 error in one backward term is larger) does not."""
    from gpt2_verify.verify.numerics.model import forward_backward, random_tokens

    params = H.probe_params(cfg, seed)
    x, y = random_tokens(cfg, batch=2, seq=16, seed=seed)
    ref = forward_backward(cfg, params, x, y, dtype="float64")
    gmax = {n: float(np.max(np.abs(ref.grads[n]))) for n in TENSOR_NAMES}
    for prec, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        tol = cuda_tolerances(cfg, precision=prec, B=2, T=16, logits_max=float(np.max(np.abs(ref.logits))),
                              logits_rms=float(np.sqrt(np.mean(ref.logits ** 2))), loss=ref.loss,
                              grad_max=gmax, grad_numel={s.name: s.numel for s in cfg.tensors()})
        logits, loss, grads = _emulate(cfg, params, x, y, dt)
        used = {"logits": np.max(np.abs(logits - ref.logits)) / tol.logits,
                "loss": abs(loss - ref.loss) / tol.loss}
        used.update({n: np.max(np.abs(grads[n] - ref.grads[n])) / tol.grads[n] for n in TENSOR_NAMES})
        assert max(used.values()) < 0.8, (prec, used)
        off = max(np.max(np.abs(1.4 * grads[n] - ref.grads[n])) / tol.grads[n] for n in TENSOR_NAMES)
        assert off > 1.5, (prec, off)


# ---- stand-in binaries ------------------------------------------------------------------------------------

PRELUDE = """
import os, sys, dataclasses
import numpy as np
sys.path.insert(0, {root!r})
from gpt2_verify.verify.formats.checkpoint import open_checkpoint
from gpt2_verify.verify.formats.debug_state import read_debug_state
from gpt2_verify.verify.formats.tokens import read_shard
from gpt2_verify.verify.numerics.model import ADAMW, forward_backward, train_steps
F = {formats!r}
def printf(fmt, *a):
    sys.stdout.write(F[fmt] % a)
def load(path, want_version):
    if not os.path.exists(path):
        sys.stdout.flush(); sys.stderr.write(F["open_error"] % (path, "llmc/utils.h", 28)); sys.exit(1)
    if int(np.fromfile(path, dtype="<i4", count=2)[1]) != want_version:
        sys.stderr.write(F["precision_error"] % path); sys.exit(1)
    with open_checkpoint(path) as ck:
        return ck.config, {{s.name: np.array(ck.tensor_f32(s.name)) for s in ck.config.tensors()}}
"""

# test_gpt2cu: FILE is the model file its precision opens; SCALE multiplies logits and gradients
FAKE_TEST_CU = """
cfg, params = load({file!r}, {version})
st = read_debug_state("gpt2_124M_debug_state.bin", cfg)
fb = forward_backward(cfg, params, st.x, st.y, dtype="float32")
print("[System]"); print("Device 0: stand-in")
print("OK (LOGITS)"); printf("logit_diff", float(np.max(np.abs(fb.logits * {scale} - st.logits))))
names = {labels!r}
for label, (name, g) in zip(names, st.grad_tensors(cfg).items()):
    d = np.abs(fb.grads[name] * {scale} - g); i = int(np.argmax(d))
    printf("checking", label)
    printf("tensor_ok", float(d.flat[i]), 0.0, float(fb.grads[name].flat[i]), float(g.flat[i]), 1.0)
losses = train_steps(cfg, params, st.x, st.y, steps=10, optimizer=ADAMW["test_gpt2.cu"], dtype="float32")
for s, v in enumerate(losses):
    printf("step", s + 1, v, 2.0)
for i, v in enumerate(losses):
    printf("loss_mismatch", i + 1, v, 1.0)
for s in range(10):
    printf("loss_ok", s, 3.0, 3.0)
printf("overall", 0)
sys.exit(1)
"""

# train_gpt2cu: reads its flags like train_gpt2.cu main, trains on the first B*T+1 tokens
FAKE_TRAIN_CU = """
a = dict(zip(sys.argv[1::2], sys.argv[2::2]))
cfg, params = load(a["-e"], 5)
B, T, steps, lr, wd = int(a["-b"]), int(a["-t"]), int(a["-x"]), float(a["-l"]), float(a["-c"])
assert a["-a"] == "1" and a["-k"] == "constant" and T <= cfg.max_seq_len
printf("precision", "BF16")
tok = read_shard("dev/data/tinyshakespeare/tiny_shakespeare_train.bin").astype(np.int32)
x, y = tok[:B * T].reshape(B, T), tok[1:B * T + 1].reshape(B, T)
opt = dataclasses.replace(ADAMW["train_gpt2.cu"], lr=lr, weight_decay=wd)
losses = train_steps(cfg, params, x, y, steps=steps, optimizer=opt, dtype="float32")
printf("val", losses[0])
for s, v in enumerate(losses):
    printf("train_step", s + 1, steps, v + {drift} * s, float("nan"), 1.0, float("nan"), lr, 3.0, 0.1, 1e4)
"""


def _script(tmp_path, name, body):
    path = tmp_path / name
    src = PRELUDE.format(root=ROOT, formats=FORMATS) + textwrap.dedent(body)
    path.write_text(f"#!{sys.executable}\n" + src)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_stand_ins_through_the_cli(tmp_path, capsys):
    """A bf16 test_gpt2cu and train_gpt2cu pass; a test_gpt2cu whose figures are 30% off, a
    train_gpt2cu whose loss drifts, and an FP32 build (it opens gpt2_124M.bin, absent from the
    bf16 directory) fail; all found by --bin-dir / --test-bin, judged in one call."""
    good = tmp_path / "good"
    good.mkdir()
    _script(good, "test_gpt2cu", FAKE_TEST_CU.format(file="gpt2_124M_bf16.bin", version=5, scale=1.0,
                                                     labels=CU_LABELS))
    _script(good, "train_gpt2cu", FAKE_TRAIN_CU.format(drift=0.0))
    bad = tmp_path / "bad"
    bad.mkdir()
    bad_test = _script(bad, "test_gpt2cu", FAKE_TEST_CU.format(file="gpt2_124M_bf16.bin", version=5,
                                                               scale=1.3, labels=CU_LABELS))
    bad_train = _script(bad, "train_gpt2cu", FAKE_TRAIN_CU.format(drift=0.1))
    fp32 = tmp_path / "fp32"
    fp32.mkdir()
    fp32_test = _script(fp32, "test_gpt2cu", FAKE_TEST_CU.format(file="gpt2_124M.bin", version=3, scale=1.0,
                                                                 labels=CU_LABELS))
    args = ["llmc", "--layers", "1", "--channels", "64", "--heads", "4", "--vocab", "100",
            "--max-seq-len", "64", "--seed", "1", "--no-determinism", "--steps", "4"]
    out = tmp_path / "r.json"
    rc = main(args + ["--bin-dir", str(good), "--test-bin", bad_test, "--train-bin", bad_train,
                      "--test-bin", fp32_test, "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 1, text
    rep = json.loads(out.read_text())
    by = {}
    for c in rep["checks"]:
        by.setdefault(c["binary"], {})[c["check"]] = c
    g_test, g_train = by[str(good / "test_gpt2cu")], by[str(good / "train_gpt2cu")]
    assert all(c["passed"] for c in g_test.values()) and all(c["passed"] for c in g_train.values()), text
    assert len(g_test) == 1 + 1 + 16 + 10 + 1 + 1 and len(g_train) == 4 + 1
    b_test = {k for k, c in by[bad_test].items() if not c["passed"]}
    assert {"logits", "dwte", "dfcw"} <= b_test and "step 0 loss" not in b_test, b_test
    assert not by[bad_train]["train loss drift"]["passed"]
    [f] = by[fp32_test].values()
    assert f["check"] == "runs" and "another precision than bf16" in f["detail"]
    assert set(rep["cuda_tolerances"]) == {"test", "fp32cu", "train"}
    assert rep["cuda_tolerances"]["test"]["precision"] == "bf16"
    assert "columns: value = the figure the binary printed" in text


def test_config_the_binaries_cannot_run_is_a_usage_error(tmp_path, capsys):
    b = _script(tmp_path, "train_gpt2", "print('never run')")
    t = _script(tmp_path, "test_gpt2cu", "print('never run')")
    base = ["llmc", "--layers", "1", "--channels", "8", "--heads", "2", "--vocab", "50"]
    assert main(base + ["--max-seq-len", "16", "--train-bin", b]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train_gpt2 always trains with T=64" in err[0] and "maxT is 16" in err[0], err
    assert main(base + ["--max-seq-len", "64", "--test-bin", t]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test_gpt2cu B=2 T=16 C=8 breaks" in err[0], err


def test_debug_state_writes_the_bf16_file(tmp_path, capsys):
    """gpt2_124M_bf16.bin: version 5, every value torch's round-to-nearest-even bf16 of the
    fp32 file's value (torch as the independent rounding)."""
    from gpt2_verify.verify.formats.checkpoint import read_header

    assert main(["debug-state", "--layers", "1", "--channels", "64", "--heads", "4", "--vocab", "100",
                 "--max-seq-len", "64", "-o", str(tmp_path)]) == 0
    assert "gpt2_124M_bf16.bin (bf16, version 5" in capsys.readouterr().out
    assert read_header(tmp_path / "gpt2_124M_bf16.bin").version == 5
    f32 = np.fromfile(tmp_path / "gpt2_124M.bin", dtype="<f4", offset=1024)
    b16 = np.fromfile(tmp_path / "gpt2_124M_bf16.bin", dtype="<u2", offset=1024)
    want = torch.from_numpy(f32).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert f32.size == b16.size == CFG.num_params_padded and np.array_equal(b16, want)
    assert np.max(np.abs(bf16_bits_to_f32(b16) - f32)) > 0  # the probe's values are not all bf16 already
