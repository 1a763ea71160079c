"""The llm.c binary harness: parsing, judging, the runner and the CLI.

Parsing and judging use output text written here in llm.c's formats (lines copied from a real
test_gpt2 / train_gpt2 run, then altered). The runner is tested with stand-in binaries: small
Python scripts that compute test_gpt2's or train_gpt2's figures from the files in their working
directory in float32 and print them as llm.c does, or crash, hang, print garbage or change
between runs. Real llm.c builds are used when LLMC_BIN_DIR is set (colon-separated directories
of correct builds, e.g. `make CC=gcc train_gpt2 test_gpt2` of karpathy/llm.c); LLMC_BROKEN_DIRS
lists builds with a planted bug, each of which must fail (directories named *gelu*,
*attnscale*, *lnback*, *adamwd* must fail the check that bug moves).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from gpt2_verify.reference.config import TENSOR_NAMES, GPTConfig
from gpt2_verify.verify.cli import main
from gpt2_verify.verify.llmc import harness as H

pytest.importorskip("torch")
CFG = GPTConfig(1, 8, 2, vocab=50, max_seq_len=64)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- recorded-style output ----------------------------------------------------------------------

# test_gpt2 on L1 C8 V50, B2 T16 (llm.c f1e2ace, gcc -Ofast), trimmed to two tensors
TEST_OUT = """\
[GPT-2]
max_seq_len: 64
vocab_size: 50
num_parameters: 2424
[State]
batch_size: 2
seq_len: 16
-0.704867, -0.704867
OK (LOGITS), max_diff = 4.405156e-07
LOSS OK: 3.907920 3.907920
dwte
OK -0.000430 -0.000430
TENSOR OK, maxdiff = 3.725290e-08
dlnfb
OK 0.025520 0.025520
TENSOR OK, maxdiff = 9.313226e-09
step 0: loss 3.907920 (took 198.114772 ms) OK = 0
step 1: loss 3.904897 (took 195.905362 ms) OK = 0
overall okay: 0
"""
TRAIN_OUT = """\
train dataset num_batches: 1
val loss 4.046547
step 0: train loss 4.046547 (took 191.997061 ms)
step 1: train loss 4.045459 (took 195.959571 ms)
generating:
---
<44><49><49>
---
"""


def test_parse_test_gpt2_good_output():
    p = H.parse_test_gpt2(TEST_OUT)
    assert p.logits == (4.405156e-07, True) and p.loss == (3.907920, True)
    assert p.grads == {"wte": (3.725290e-08, True), "lnfb": (9.313226e-09, True)}
    assert p.steps == [(3.907920, 198.114772, False), (3.904897, 195.905362, False)]
    assert p.overall is False


def test_parse_test_gpt2_not_ok_lines():
    text = (TEST_OUT.replace("OK (LOGITS), max_diff = 4.405156e-07", "NOT OK (LOGITS), max_diff = 1.5e-02")
            .replace("LOSS OK: 3.907920 3.907920", "LOSS MISMATCH: 3.950000 3.907920")
            .replace("TENSOR OK, maxdiff = 9.313226e-09", "TENSOR NOT OK, maxdiff = 3.000000e-02"))
    p = H.parse_test_gpt2(text)
    assert p.logits == (1.5e-2, False) and p.loss == (3.95, False)
    assert p.grads["lnfb"] == (3e-2, False) and p.grads["wte"] == (3.725290e-08, True)


def test_parse_garbage_and_tensor_lines_without_a_label():
    p = H.parse_test_gpt2("TENSOR OK, maxdiff = 1e-3\nhello\nstep x: loss y\n")
    assert p.grads == {} and p.steps == [] and p.logits is None and p.overall is None
    assert H.parse_train_gpt2(TRAIN_OUT) == ([4.046547, 4.045459], [191.997061, 195.959571], [4.046547])


def _expected(losses=(3.90792, 3.9049), grad_max=1e-2, logits_max=1.0, loss=3.90792):
    return H.Expected(CFG, 2, 16, logits_max, loss, {n: grad_max for n in TENSOR_NAMES}, list(losses),
                      list(losses))


def _run(text, rc=0, error=None):
    return H.RunOutput("/b/test_gpt2", rc, text, error)


def test_judge_uses_our_tolerances_not_llmcs():
    # llm.c says OK to a logits difference of 1e-3 (its limit is 1e-2): 1e-3 / max|logit| 1 is 83x ours
    text = TEST_OUT.replace("max_diff = 4.405156e-07", "max_diff = 1.000000e-03")
    checks = {c.check: c for c in H.judge_test("/b/test_gpt2", _run(text), _expected())}
    c = checks["logits"]
    assert not c.passed and c.llmc_says == "OK" and c.value == 1e-3
    assert c.tolerance == pytest.approx(H.TOLERANCES["logits"].norm)
    assert c.used == pytest.approx(100 * 1e-3 / H.TOLERANCES["logits"].norm)
    assert checks["dwte"].passed and checks["dwte"].llmc_says == "OK"
    assert not checks["dqkvw"].passed and checks["dqkvw"].detail == "no line for this tensor"
    # |3.907920 - 3.90792| = 0 and |3.904897 - 3.9049| = 3e-6 < 2.9e-6 * 3.9079 + 5e-7
    assert checks["step 0 loss"].passed and checks["step 1 loss"].passed
    assert checks["step 0 loss"].llmc_says == "NOT OK"  # pretrained-GPT-2 losses, ignored


def test_judge_crash_timeout_garbage():
    for run, text in ((_run("partial\n", error="killed by signal 11"), "killed by signal 11"),
                      (_run("zzz\n", rc=1), "exit 1, no test_gpt2 output recognised"),
                      (_run("", error="timed out after 2 s (killed)"), "timed out")):
        [c] = H.judge_test("/b/test_gpt2", run, _expected())
        assert c.check == "runs" and not c.passed and text in c.detail
    [c] = H.judge_train("/b/train_gpt2", _run("Error opening state file\n", rc=1), _expected())
    assert "no train_gpt2 step lines" in c.detail and "Error opening state file" in c.detail


def test_drift():
    ref = [8.0 - 0.07 * i for i in range(10)]
    assert H.drift([r + 2e-6 * i + 1e-6 for i, r in enumerate(ref)], ref) == pytest.approx(2e-6, rel=1e-6)
    assert abs(H.drift([r + (-1) ** i * 4e-7 for i, r in enumerate(ref)], ref)) < 1e-7  # scatter, no trend


def test_drift_tolerance_widens_for_few_steps():
    """Independent errors: the least-squares slope's spread is sigma / sqrt(n (n^2 - 1) / 12)."""
    rng = np.random.default_rng(0)  # fixed seed: deterministic
    spread = {n: np.std([H.drift(list(rng.standard_normal(n)), [0.0] * n) for _ in range(4000)])
              for n in (3, 10)}
    ratio = spread[3] / spread[10]
    assert ratio == pytest.approx((82.5 / 2) ** 0.5, rel=0.05)  # 6.42
    assert H._drift_tol(2.0, 3) / H._drift_tol(2.0, 10) == pytest.approx((82.5 / 2) ** 0.5)
    limit = 2 * H.TOLERANCES["step_drift"].norm
    assert H._drift_tol(2.0, 40) == H._drift_tol(2.0, 10) == pytest.approx(limit)


def test_drift_catches_what_no_single_step_does():
    """An error of 0.28e-6 L per step, centred: every step inside its tolerance (2.9e-6 L), the
    slope outside (2.4e-7 L)."""
    L = 4.0
    ref = [L - 0.003 * i for i in range(10)]
    printed = [round(r + 0.28e-6 * L * (i - 4.5), 6) for i, r in enumerate(ref)]
    text = "\n".join(f"step {i}: loss {v:f} (took 1.0 ms) OK = 0" for i, v in enumerate(printed))
    head = TEST_OUT.split("step 0")[0]
    checks = H.judge_test("/b/test_gpt2", _run(head + text), _expected(ref, loss=3.90792))
    steps = [c for c in checks if c.check.startswith("step ") and c.check.endswith(" loss")]
    assert len(steps) == 10 and all(c.passed for c in steps)
    [d] = [c for c in checks if c.check == "step loss drift"]
    assert not d.passed and 100 < d.used < 150, d


def test_first_difference():
    a = ("OK (LOGITS), max_diff = 1e-7\nstep 0: loss 3.5 (took 1.0 ms) OK = 0\n"
         "step 1: loss 3.4 (took 2 ms) OK = 0")
    assert H.first_difference(a, a.replace("1.0 ms", "9.9 ms")) is None  # timings differ every run
    assert H.first_difference(a, a.replace("3.4", "3.41")).startswith("step 1:")
    assert H.first_difference(a, a.replace("1e-7", "2e-7")).startswith("'OK (LOGITS)")
    assert H.first_difference(a, a + "\nextra") == "the runs printed 3 and 4 lines"
    # two builds: test_gpt2's sample values differ in the 6th decimal first; the judged figures
    b = TEST_OUT.replace("-0.704867, -0.704867", "-0.704867, -0.704868").replace("9.313226e-09", "9.5e-09")
    assert H.first_difference(TEST_OUT, b) == "'-0.704867, -0.704867' vs '-0.704867, -0.704868'"
    assert H.first_difference(TEST_OUT, b, figures_only=True) == (
        "'dlnfb: TENSOR OK, maxdiff = 9.313226e-09' vs 'dlnfb: TENSOR OK, maxdiff = 9.5e-09'")


# ---- stand-in binaries --------------------------------------------------------------------------

def _script(tmp_path, name, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


# test_gpt2 stand-in: reads gpt2_124M.bin and the debug state from its working directory like
# test_gpt2.c, computes in float32 and prints its lines; SCALE multiplies logits and gradients,
# DRIFT adds DRIFT * step to step losses, FLIP changes step 3 on every second run
FAKE_TEST = """
import os, sys
import numpy as np
sys.path.insert(0, {root!r})
from gpt2_verify.verify.formats.checkpoint import open_checkpoint
from gpt2_verify.verify.formats.debug_state import read_debug_state
from gpt2_verify.verify.numerics.adamw import ADAMW
from gpt2_verify.verify.numerics.model import forward_backward, train_steps
SCALE, DRIFT, FLIP = {scale}, {drift}, {flip}
with open_checkpoint("gpt2_124M.bin") as ck:
    cfg = ck.config
    params = {{s.name: np.array(ck.tensor(s.name)) for s in cfg.tensors()}}
st = read_debug_state("gpt2_124M_debug_state.bin", cfg)
fb = forward_backward(cfg, params, st.x, st.y, dtype="float32")
print("[State]")
print("batch_size: %d" % st.x.shape[0])
print("OK (LOGITS), max_diff = %e" % np.max(np.abs(fb.logits * SCALE - st.logits)))
print("LOSS OK: %f %f" % (fb.loss, st.loss))
for name, g in st.grad_tensors(cfg).items():
    print("d" + name)
    print("OK %f %f" % (g.flat[0], g.flat[0]))
    print("TENSOR OK, maxdiff = %e" % np.max(np.abs(fb.grads[name] * SCALE - g)))
runs = 0
if FLIP:
    runs = int(open("runs").read()) if os.path.exists("runs") else 0
    open("runs", "w").write(str(runs + 1))
from gpt2_verify.verify.numerics.adamw import bug_variants
opt = {opt}
losses = train_steps(cfg, params, st.x, st.y, steps=10, optimizer=opt, dtype="float32")
for i, loss in enumerate(losses):
    loss += DRIFT * i + (1e-3 if FLIP and i == 3 and runs % 2 else 0.0)
    print("step %d: loss %f (took 1.0 ms) OK = 0" % (i, loss))
print("overall okay: 0")
"""

# train_gpt2 stand-in: the one-batch shard, B 4 T 64, train_gpt2.c's AdamW, float32
FAKE_TRAIN = """
import sys
import numpy as np
sys.path.insert(0, {root!r})
from gpt2_verify.verify.formats.checkpoint import open_checkpoint
from gpt2_verify.verify.formats.tokens import read_shard
from gpt2_verify.verify.numerics.adamw import ADAMW
from gpt2_verify.verify.numerics.model import train_steps
with open_checkpoint("gpt2_124M.bin") as ck:
    cfg = ck.config
    params = {{s.name: np.array(ck.tensor(s.name)) for s in cfg.tensors()}}
tok = read_shard("dev/data/tinyshakespeare/tiny_shakespeare_train.bin").astype(np.int32)
x, y = tok[:256].reshape(4, 64), tok[1:257].reshape(4, 64)
losses = train_steps(cfg, params, x, y, steps=12, optimizer=ADAMW["train_gpt2.c"], dtype="float32")
print("val loss %f" % losses[0])
for i, loss in enumerate(losses):
    print("step %d: train loss %f (took 2.0 ms)" % (i, loss))
"""


def _fake_test(tmp_path, name, scale=1.0, drift=0.0, flip=False, opt='ADAMW["test_gpt2.c"]'):
    return _script(tmp_path, name, FAKE_TEST.format(root=ROOT, scale=scale, drift=drift, flip=flip, opt=opt))


def _by_binary(rep):
    out = {}
    for c in rep.checks:
        out.setdefault(os.path.basename(c.binary), {})[c.check] = c
    return out


def test_stand_ins_good_passes_wrong_fails(tmp_path):
    good = _fake_test(tmp_path, "test_good")
    bad = _fake_test(tmp_path, "test_bad", scale=1.001)
    train = _script(tmp_path, "train_good", FAKE_TRAIN.format(root=ROOT))
    rep = H.run_harness(CFG, test_bins=[good, bad], train_bins=[train], seed=3, timeout=120, steps=4,
                        determinism=False)  # (determinism: the next test)
    by = _by_binary(rep)
    assert all(c.passed for c in by["test_good"].values()), rep.render()
    assert all(c.passed for c in by["train_good"].values()), rep.render()
    assert {"logits", "loss", "dwte", "dlnfb", "step 9 loss", "step loss drift"} <= set(by["test_good"])
    assert set(by["train_good"]) == {"train step 0 loss", "train step 1 loss", "train step 2 loss",
                                     "train step 3 loss", "train loss drift"}
    assert not by["test_bad"]["logits"].passed and by["test_bad"]["logits"].llmc_says == "OK"
    assert rep.verdict == "fail"
    text = rep.render()
    assert text.splitlines()[-1].startswith("verdict: fail: ") and "test_bad logits" in text.splitlines()[-1]
    assert rep.notes == [f"{os.path.basename(str(tmp_path))}/test_bad vs {os.path.basename(str(tmp_path))}"
                         f"/test_good: first difference " + rep.notes[0].split("first difference ")[1]]
    assert "'OK (LOGITS)" in rep.notes[0]  # the logits line is the first figure that differs


def test_stand_in_optimizer_drift_and_nondeterminism(tmp_path):
    """Step losses 4e-6 per step off (an update error), and step 3 different on the second run."""
    b = _fake_test(tmp_path, "test_gpt2", drift=4e-6, flip=True)
    checks = _by_binary(H.run_harness(CFG, test_bins=[b], seed=1, timeout=120))["test_gpt2"]
    failed = {k for k, c in checks.items() if not c.passed}
    assert {"step loss drift", "determinism"} <= failed
    assert not failed & {"logits", "loss", "dwte", "dqkvw", "step 0 loss", "step 1 loss"}, failed
    det = checks["determinism"]
    assert not det.passed and "step 3:" in det.detail, det.detail


@pytest.mark.slow  # three float64 trajectories of 10 steps on L2 C64 besides the stand-in's own
def test_stand_in_without_weight_decay_fails_and_is_named(tmp_path):
    """test_gpt2's AdamW without weight decay, in float32, on the default probe: the step
    checks fail and the drift row names the decay-missing variant; the correct stand-in passes."""
    bad = _fake_test(tmp_path, "nodecay", opt='bug_variants(ADAMW["test_gpt2.c"])["decay-missing"]')
    good = _fake_test(tmp_path, "good")
    rep = H.run_harness(SMALL, test_bins=[bad, good], seed=42, timeout=300, determinism=False)
    by = _by_binary(rep)
    assert all(c.passed for c in by["good"].values()), rep.render()
    failed = {k for k, c in by["nodecay"].items() if not c.passed}
    assert "step loss drift" in failed and not failed & {"logits", "loss", "dwte", "step 0 loss"}, failed
    assert by["nodecay"]["step loss drift"].used > 200
    assert "follow the optimizer variant decay-missing" in by["nodecay"]["step loss drift"].detail


def test_name_the_cause():
    from gpt2_verify.verify.llmc.runs import name_the_cause

    ref = [8.0 - 0.1 * i for i in range(10)]
    variants = {"a": [r + 1e-5 * i for i, r in enumerate(ref)],
                "b": [r - 1e-5 * i for i, r in enumerate(ref)]}
    tol = lambda i, r: 2e-5  # noqa: E731
    named = name_the_cause([v + 1e-6 for v in variants["b"]], ref, variants, tol, {"b": "the b mistake"})
    assert named.startswith("the step losses follow the optimizer variant b (the b mistake)"), named
    other = name_the_cause([r + 3e-5 * i for i, r in enumerate(ref)], ref, variants, tol)
    assert other.startswith("no known optimizer mistake fits better than the reference"), other
    assert name_the_cause(ref, ref, {}, tol) is None


@pytest.mark.parametrize("body,text", [
    ("import sys; print('boom'); sys.exit(3)", "exit 3, no test_gpt2 output recognised; tail:\nboom"),
    ("import os, signal; print('x', flush=True); os.kill(os.getpid(), signal.SIGSEGV)",
     "killed by signal 11"),
    ("print('hello')", "no test_gpt2 output recognised"),
])
def test_broken_binaries_fail_with_their_output(tmp_path, body, text):
    b = _script(tmp_path, "test_gpt2", body)
    rep = H.run_harness(CFG, test_bins=[b], seed=0, batch=1, seq=4, timeout=60)
    assert rep.verdict == "fail" and len(rep.checks) == 1
    c = rep.checks[0]
    assert c.check == "runs" and text in c.detail, c.detail


def test_hanging_binary_is_killed_with_its_children(tmp_path):
    """A shell script (starts in milliseconds even under load) whose child sleeps: the whole
    process group is killed at the limit and what it printed is kept."""
    path = tmp_path / "test_gpt2"
    pidfile = tmp_path / "child.pid"
    path.write_text(f"#!/bin/sh\necho started\nsleep 60 &\necho $! > {pidfile}\nwait\n")
    path.chmod(0o755)
    t0 = time.monotonic()
    rep = H.run_harness(CFG, test_bins=[str(path)], seed=0, batch=1, seq=4, timeout=2)
    # killing only the shell would leave the child holding the output pipe for its 60 s
    assert time.monotonic() - t0 < 30
    [c] = rep.checks
    assert c.check == "runs" and "timed out after 2 s (killed); output tail:\nstarted" in c.detail, c.detail
    status = Path(f"/proc/{int(pidfile.read_text())}/status")
    for _ in range(50):  # SIGKILL is delivered at once; the parent (init) reaps shortly after
        if not status.exists() or "State:\tZ" in status.read_text():
            break
        time.sleep(0.1)
    assert not status.exists() or "State:\tZ" in status.read_text(), "the sleeping child survived"


def test_binary_that_cannot_start(tmp_path):
    path = tmp_path / "test_gpt2"
    path.write_bytes(b"\x7fELF garbage")
    path.chmod(0o755)
    run = H.run_binary(path, tmp_path, timeout=5)
    assert run.error and run.error.startswith("cannot start")


# ---- CLI ----------------------------------------------------------------------------------------

def test_cli_json_and_exit_codes(tmp_path, capsys):
    good = _fake_test(tmp_path, "test_gpt2")
    args = ["llmc", "--layers", "1", "--channels", "8", "--heads", "2", "--vocab", "50", "--max-seq-len",
            "64", "--seed", "2", "--no-determinism"]
    assert main(args + ["--test-bin", good, "--json", "-"]) == 0
    rep = json.loads(capsys.readouterr().out)  # JSON only on stdout
    assert rep["schema"] == "gpt2-verify/llmc/3" and rep["verdict"] == "pass" and rep["weights"] == "probe"
    assert rep["config"] == CFG.as_dict()
    assert set(rep["tolerances"]) == {"logits", "loss", "grads", "step_loss", "step_drift"}
    assert all({"measured", "source", "kind", "text"} <= set(t) and t["measured"] > 0 and t["source"]
               for t in rep["tolerances"].values())
    c = rep["checks"][0]
    assert set(c) == {"binary", "check", "value", "tolerance", "used", "passed", "llmc_says", "detail"}
    assert len(rep["checks"]) == 1 + 1 + 16 + 10 + 1
    bad = _script(tmp_path, "test_bad", "print('Error opening state file')")
    out = tmp_path / "r.json"
    assert main(args + ["--test-bin", bad, "--json", str(out)]) == 1
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].split()[:3] == ["binary", "check", "value"] and table[-1].startswith("verdict: fail")
    assert json.loads(out.read_text())["verdict"] == "fail"


def test_cli_usage_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    for argv in (["llmc"], ["llmc", "--bin-dir", str(tmp_path / "empty")], ["llmc", "--bin-dir", str(plain)],
                 ["llmc", "--test-bin", str(tmp_path / "nope")], ["llmc", "--test-bin", str(plain)],
                 ["llmc", "--model", "d12", "--plain-init", "--test-bin", str(plain)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, (argv, err)


# ---- real llm.c builds --------------------------------------------------------------------------

GOOD_DIRS = [d for d in os.environ.get("LLMC_BIN_DIR", "").split(":") if d]
BROKEN_DIRS = [d for d in os.environ.get("LLMC_BROKEN_DIRS", "").split(":") if d]
SMALL = GPTConfig(2, 64, 4, vocab=1000, max_seq_len=64)
# what each planted bug must fail (and what it must not), by directory name
PLANTED = {
    "gelu": ({"logits", "dfcw"}, set()),
    "attnscale": ({"logits", "dqkvw"}, set()),
    "lnback": ({"dln1w", "dqkvw"}, {"logits", "loss"}),  # the backward pass only
    "adamwd": ({"step loss drift"}, {"logits", "loss", "dwte"}),  # the update only
}


@pytest.mark.skipif(not GOOD_DIRS, reason="set LLMC_BIN_DIR to directories (':'-separated) holding "
                                          "llm.c's test_gpt2 and train_gpt2 (make CC=gcc train_gpt2 "
                                          "test_gpt2) to judge real builds")
@pytest.mark.parametrize("seed", [0, 1])
def test_real_llmc_builds_pass(seed):
    tests = [os.path.join(d, "test_gpt2") for d in GOOD_DIRS]
    trains = [os.path.join(d, "train_gpt2") for d in GOOD_DIRS]
    rep = H.run_harness(SMALL, test_bins=tests, train_bins=trains, seed=seed, timeout=600)
    print(rep.render())
    assert rep.verdict == "pass", rep.render()
    worst = max(c.used for c in rep.checks if c.used is not None)
    assert worst < 100


@pytest.mark.skipif(not BROKEN_DIRS, reason="set LLMC_BROKEN_DIRS to directories (':'-separated) of llm.c "
                                            "builds with a planted bug (named *gelu*, *attnscale*, "
                                            "*lnback*, *adamwd* for the specific checks)")
@pytest.mark.parametrize("index", range(8))
def test_real_broken_builds_fail(index):
    if index >= len(BROKEN_DIRS):
        pytest.skip(f"only {len(BROKEN_DIRS)} broken builds given")
    d = BROKEN_DIRS[index]
    rep = H.run_harness(SMALL, test_bins=[os.path.join(d, "test_gpt2")], seed=0, timeout=600,
                        determinism=False)
    print(rep.render())
    assert rep.verdict == "fail", rep.render()
    failed = {c.check for c in rep.checks if not c.passed}
    for key, (must_fail, must_pass) in PLANTED.items():
        if key in os.path.basename(d.rstrip("/")):
            assert must_fail <= failed, (must_fail - failed, rep.render())
            assert not must_pass & failed, (must_pass & failed, rep.render())
