"""llm.c files (debug state, token shards, tokenizer) and the binary harness.

The runner and judge are tested with stand-in binaries (small scripts that print what llm.c's
test_gpt2 / train_gpt2 print, with figures computed from the reference, or crash, hang, print
nothing). Real llm.c builds are used when LLMC_BIN_DIR points at a directory holding test_gpt2
and train_gpt2 built from karpathy/llm.c (`make CC=gcc train_gpt2 test_gpt2`); extra broken
builds are checked when LLMC_BROKEN_DIRS lists directories (colon-separated) of such builds.
"""

from __future__ import annotations

import os
import stat
import sys
import textwrap

import numpy as np
import pytest

from reference.config import GPTConfig
from verify.cli import main
from verify.errors import InputError
from verify.formats.checkpoint import read_header
from verify.formats.debug_state import read_debug_state, write_debug_state
from verify.formats.tokens import read_shard, write_shard, write_tokenizer
from verify.llmc import harness

pytest.importorskip("torch")
CFG = GPTConfig(1, 8, 2, vocab=50, max_seq_len=64)


# ---- files ------------------------------------------------------------------------------------

def _grads(cfg, rng):
    return {s.name: rng.standard_normal(s.shape).astype(np.float32) for s in cfg.tensors()}


def test_debug_state_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, CFG.vocab, (2, 5))
    y = rng.integers(0, CFG.vocab, (2, 5))
    logits = rng.standard_normal((2, 5, CFG.vocab)).astype(np.float32)
    grads = _grads(CFG, rng)
    path = tmp_path / "s.bin"
    write_debug_state(path, CFG, x, y, logits, 3.25, grads)
    assert path.stat().st_size == 1024 + 8 * 10 + 4 * 10 * CFG.vocab + 4 + 4 * CFG.num_params_padded
    st = read_debug_state(path, CFG)
    assert (st.x == x).all() and (st.y == y).all() and st.loss == 3.25
    assert np.array_equal(st.logits, logits)
    for name, g in st.grad_tensors(CFG).items():
        assert np.array_equal(g, grads[name]), name


@pytest.mark.parametrize("damage,text", [
    (lambda b: b[:500], "too short"),
    (lambda b: b[:-4], "need exactly"),
    (lambda b: b"\x01\x02\x03\x04" + b[4:], "bad magic"),
    (lambda b: b[:4] + (3).to_bytes(4, "little") + b[8:], "version 3"),
    (lambda b: b[:8] + (0).to_bytes(4, "little") + b[12:], "must be positive"),
    (lambda b: b[:1024] + (10**6).to_bytes(4, "little") + b[1028:], "outside [0, 50)"),
])
def test_debug_state_damage(tmp_path, damage, text):
    rng = np.random.default_rng(1)
    path = tmp_path / "s.bin"
    write_debug_state(path, CFG, np.zeros((2, 5)), np.zeros((2, 5)),
                      np.zeros((2, 5, CFG.vocab)), 1.0, _grads(CFG, rng))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(InputError) as e:
        read_debug_state(path, CFG)
    assert text in str(e.value) and str(path) in str(e.value)


def test_shard_and_tokenizer(tmp_path):
    tokens = np.arange(300) % 65536
    write_shard(tmp_path / "t.bin", tokens)
    assert (read_shard(tmp_path / "t.bin") == tokens).all()
    (tmp_path / "bad.bin").write_bytes((tmp_path / "t.bin").read_bytes()[:-2])
    with pytest.raises(InputError, match="header says 300 tokens"):
        read_shard(tmp_path / "bad.bin")
    write_tokenizer(tmp_path / "tok.bin", [b"a", b"bc"], eot=1)
    raw = (tmp_path / "tok.bin").read_bytes()
    assert np.frombuffer(raw[:16], "<u4").tolist() == [20240328, 2, 2, 1]
    assert raw[1024:] == b"\x01a\x02bc"


def test_debug_state_command_writes_what_llmc_opens(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["debug-state", "--layers", "1", "--channels", "8", "--heads", "2", "--vocab", "50",
                 "--max-seq-len", "64", "--batch", "2", "--seq", "8", "-o", str(out)]) == 0
    for rel in ("gpt2_124M.bin", "gpt2_124M_debug_state.bin", "gpt2_tokenizer.bin",
                "dev/data/tinyshakespeare/tiny_shakespeare_train.bin",
                "dev/data/tinyshakespeare/tiny_shakespeare_val.bin"):
        assert (out / rel).exists(), rel
    cfg = read_header(out / "gpt2_124M.bin").config
    st = read_debug_state(out / "gpt2_124M_debug_state.bin", cfg)
    assert st.x.shape == (2, 8) and abs(st.loss - np.log(50)) < 1.0
    assert not st.grad_tensors(cfg)["wte"][cfg.vocab:].any()  # padded rows: zero gradient
    assert main(["debug-state", "d6", "--seq", "2000", "-o", str(out)]) == 2


# ---- stand-in binaries ------------------------------------------------------------------------

def _script(tmp_path, name, body: str):
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


FAKE_TEST = """
    import numpy as np, sys
    sys.path.insert(0, {root!r})
    from verify.formats.checkpoint import open_checkpoint
    from verify.formats.debug_state import read_debug_state
    from verify.numerics.model import ADAMW, forward_backward, train_steps
    with open_checkpoint("gpt2_124M.bin") as ck:
        cfg = ck.config
        params = {{s.name: np.array(ck.tensor(s.name)) for s in cfg.tensors()}}
    st = read_debug_state("gpt2_124M_debug_state.bin", cfg)
    fb = forward_backward(cfg, params, st.x, st.y, dtype="float32")
    scale = {scale}
    print("[State]")
    print("OK (LOGITS), max_diff = %e" % np.max(np.abs(fb.logits * scale - st.logits)))
    print("LOSS OK: %f %f" % (fb.loss, st.loss))
    for name, g in st.grad_tensors(cfg).items():
        print("d" + name)
        print("OK 0.0 0.0")
        print("TENSOR OK, maxdiff = %e" % np.max(np.abs(fb.grads[name] * scale - g)))
    for i, loss in enumerate(train_steps(cfg, params, st.x, st.y, steps=10, optimizer=ADAMW["test_gpt2.c"],
                                         dtype="float32")):
        print("step %d: loss %f (took 1.0 ms) OK = 0" % (i, loss))
    print("overall okay: 0")
"""


def _root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_good_stand_in_passes_and_a_wrong_one_fails(tmp_path):
    good = _script(tmp_path, "test_good", FAKE_TEST.format(root=_root(), scale="1.0"))
    bad = _script(tmp_path, "test_bad", FAKE_TEST.format(root=_root(), scale="1.001"))
    rep = harness.run_harness(CFG, test_bins=[good, bad], seed=3, batch=2, seq=16, timeout=120)
    by = {}
    for c in rep.checks:
        by.setdefault(os.path.basename(c.binary), {})[c.check] = c
    assert all(c.passed for c in by["test_good"].values()), rep.render()
    assert by["test_good"]["determinism"].passed
    assert not by["test_bad"]["logits"].passed and by["test_bad"]["logits"].llmc_says == "OK"
    assert rep.verdict == "fail"
    assert rep.render().splitlines()[-1].startswith("verdict: fail")


@pytest.mark.parametrize("body,text", [
    ("import sys; print('boom'); sys.exit(3)", "no test_gpt2 output recognised"),
    ("import os, signal; print('x'); os.kill(os.getpid(), signal.SIGSEGV)", "killed by signal 11"),
    ("import time; time.sleep(60)", "timed out after 2 s"),
    ("print('hello')", "no test_gpt2 output recognised"),
])
def test_broken_binaries_fail_with_their_output(tmp_path, body, text):
    b = _script(tmp_path, "test_gpt2", body)
    rep = harness.run_harness(CFG, test_bins=[b], seed=0, batch=1, seq=4, timeout=2)
    assert rep.verdict == "fail"
    c = rep.checks[0]
    assert c.check == "runs" and text in c.detail, c.detail


def test_parse_test_gpt2_lines():
    text = textwrap.dedent("""
        NOT OK (LOGITS), max_diff = 1.500000e-02
        LOSS MISMATCH: 5.270009 5.270007
        dwte
        OK 0.1 0.1
        TENSOR OK, maxdiff = 2.000000e-07
        dlnfb
        NOT OK 1 2
        TENSOR NOT OK, maxdiff = 3.000000e-02
        step 0: loss 5.270009 (took 12.5 ms) OK = 0
        overall okay: 0
    """)
    p = harness.parse_test_gpt2(text)
    assert p.logits == (1.5e-2, False) and p.loss == (5.270009, False)
    assert p.grads == {"wte": (2e-7, True), "lnfb": (3e-2, False)}
    assert p.steps == [(5.270009, 12.5, False)] and p.overall is False
    assert harness.parse_train_gpt2("val loss 4.5\nstep 0: train loss 4.25 (took 3.0 ms)\n") == (
        [4.25], [3.0], [4.5])


def test_cli_usage_errors(tmp_path, capsys):
    assert main(["llmc"]) == 2
    assert main(["llmc", "--bin-dir", str(tmp_path)]) == 2
    assert main(["llmc", "--test-bin", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3


# ---- real llm.c builds ------------------------------------------------------------------------

BIN_DIR = os.environ.get("LLMC_BIN_DIR")
needs_llmc = pytest.mark.skipif(not BIN_DIR, reason="set LLMC_BIN_DIR to a directory with llm.c's "
                                                    "test_gpt2 and train_gpt2 (make CC=gcc train_gpt2 "
                                                    "test_gpt2) to run the harness against real builds")


@needs_llmc
def test_real_llmc_build_passes():
    cfg = GPTConfig(2, 64, 4, vocab=1000, max_seq_len=64)
    rep = harness.run_harness(cfg, test_bins=[os.path.join(BIN_DIR, "test_gpt2")],
                              train_bins=[os.path.join(BIN_DIR, "train_gpt2")], seed=0, timeout=600)
    assert rep.verdict == "pass", rep.render()


@pytest.mark.skipif(not os.environ.get("LLMC_BROKEN_DIRS"),
                    reason="set LLMC_BROKEN_DIRS to colon-separated directories of llm.c builds with a "
                           "planted bug to check that each is caught")
@pytest.mark.parametrize("index", range(8))
def test_real_broken_builds_fail(index):
    dirs = os.environ["LLMC_BROKEN_DIRS"].split(":")
    if index >= len(dirs):
        pytest.skip(f"only {len(dirs)} broken builds given")
    cfg = GPTConfig(2, 64, 4, vocab=1000, max_seq_len=64)
    rep = harness.run_harness(cfg, test_bins=[os.path.join(dirs[index], "test_gpt2")], seed=0, timeout=600,
                              determinism=False)
    assert rep.verdict == "fail", rep.render()
