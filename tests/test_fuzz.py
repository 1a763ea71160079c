"""gpt2-verify fuzz: candidates with bugs that only show in some configs are found and shrunk to
the smallest failing config; correct candidates pass. Hypothesis runs derandomized here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gpt2_verify.verify.cli import main
from gpt2_verify.verify.compare.candidate import Candidate, check_template, run_candidate
from gpt2_verify.verify.compare.fuzz import fuzz
from gpt2_verify.verify.errors import InputError

from tests import candidates

# the candidates draw llm.c's stream: graded close (a dict output alone would default to distribution)
FAST = dict(max_params=5_000, derandomize=True, require="close")


def test_correct_python_candidate_passes():
    result = fuzz(Candidate(function=candidates.correct), examples=15, **{**FAST, "require": "exact"})
    assert result.verdict == "pass" and result.examples_run == 15 and result.failure is None


def test_residual_scale_bug_from_l3_is_shrunk_to_l3():
    result = fuzz(Candidate(function=candidates.residual_scale_from_l3), examples=60, **FAST)
    assert result.verdict == "fail", result.render()
    cfg = result.failure.config
    assert cfg.layers == 3, cfg  # the bug needs L >= 3; everything else shrinks away
    assert (cfg.channels, cfg.vocab, cfg.max_seq_len) == (1, 1, 1), cfg
    bad = {t.name for t in result.failure.report.tensors if t.verdict not in ("exact", "close")}
    assert bad and bad <= {"attprojw", "fcprojw"}


def test_spare_normal_bug_is_found_on_small_odd_tensors():
    result = fuzz(Candidate(function=candidates.keeps_spare_normal), examples=60, **FAST)
    assert result.verdict == "fail", result.render()
    cfg = result.failure.config
    sizes = [cfg.vocab * cfg.channels, cfg.max_seq_len * cfg.channels]
    assert any(n < 16 and n % 2 for n in sizes)  # an odd tensor under 16 values leaves a spare
    causes = " ".join(c["cause"] for c in result.failure.report.causes)
    assert "PyTorch's (spare normal kept for the next call)" in causes, causes


def test_crash_is_a_failure_with_its_output():
    result = fuzz(Candidate(function=candidates.crashes_on_odd_channels), examples=30, **FAST)
    assert result.verdict == "fail"
    f = result.failure
    assert f.config.channels == 1 and "raised RuntimeError" in f.error and "odd channel" in f.error
    assert "Traceback" in f.output_tail


def test_hang_is_killed_at_the_timeout():
    # a process group that sleeps (a shell and its child): killed whole, reported, promptly
    import time
    cand = Candidate(cmd="sh -c 'sleep 60; sleep 60' {out}", timeout=1)
    t0 = time.monotonic()
    res = run_candidate(cand, candidates_cfg(), 42)
    assert res.model is None and res.error == "timed out after 1 s (killed)"
    assert time.monotonic() - t0 < 30


def test_command_that_writes_nothing(tmp_path):
    res = run_candidate(Candidate(cmd=f"{shutil.which('true')} {{out}}"), candidates_cfg(), 42)
    assert res.model is None and res.error == "wrote nothing at {out}"


def candidates_cfg():
    from gpt2_verify.reference.config import GPTConfig
    return GPTConfig(1, 4, 2, vocab=10, max_seq_len=4)


@pytest.mark.parametrize("template,text", [
    ("./init -o out", "{out}"),
    ("./init {L} {oops} {out}", "{oops}"),
    ("'unterminated {out}", "cannot parse"),
])
def test_bad_templates(template, text):
    with pytest.raises(InputError, match=text.replace("{", r"\{").replace("}", r"\}")):
        check_template(template)


# ---- a candidate in C -------------------------------------------------------------------------

C_INIT = r"""
/* A GPT-2 initializer in C written for this test from the description of llm.c's init:
   mt19937 (init_genrand seeding), 24-bit uniforms, Box-Muller over blocks of 16 (t with t+8)
   with the last partial block redrawn, two 53-bit uniforms per pair under 16 values (spare
   discarded), draw order wte, wpe, then per layer qkvw, attprojw, fcw, fcprojw. -DBUG forgets
   the residual scaling when L >= 3. Writes an llm.c version-3 checkpoint. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif
static uint32_t mt[624]; static int mti;
static void seed_rng(uint32_t s) { mt[0] = s; for (int i = 1; i < 624; i++)
    mt[i] = 1812433253u * (mt[i - 1] ^ (mt[i - 1] >> 30)) + (uint32_t)i; mti = 624; }
static uint32_t next_u32(void) {
    if (mti >= 624) { for (int i = 0; i < 624; i++) {
        uint32_t y = (mt[i] & 0x80000000u) | (mt[(i + 1) % 624] & 0x7fffffffu);
        uint32_t v = mt[(i + 397) % 624] ^ (y >> 1); if (y & 1u) v ^= 0x9908b0dfu; mt[i] = v; }
      mti = 0; }
    uint32_t y = mt[mti++]; y ^= y >> 11; y ^= (y << 7) & 0x9d2c5680u; y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18); }
static float u24(void) { return (float)(next_u32() & 0xFFFFFFu) * (1.0f / 16777216.0f); }
static double u53(void) { uint64_t hi = next_u32(), lo = next_u32();
    return (double)(((hi << 32) | lo) & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0); }
static void block16(float *d, float std) { for (int t = 0; t < 8; t++) {
    float u1 = 1.0f - d[t], u2 = d[t + 8];
    float r = sqrtf(-2.0f * logf(u1 + 1e-12f)); float th = (float)(2.0 * M_PI * u2);
    d[t] = r * cosf(th) * std + 0.0f; d[t + 8] = r * sinf(th) * std + 0.0f; } }
static void normal(float *d, size_t n, float std) {
    if (n >= 16) {
        for (size_t i = 0; i < n; i++) d[i] = u24();
        for (size_t i = 0; i + 16 <= n; i += 16) block16(d + i, std);
        if (n % 16) { for (int i = 0; i < 16; i++) d[n - 16 + i] = u24(); block16(d + n - 16, std); }
        return; }
    for (size_t i = 0; i < n; i += 2) {
        float a = (float)u53(), b = (float)u53();
        float r = sqrtf(-2.0f * logf(1.0f - b + 1e-12f)); float th = (float)(2.0 * M_PI * a);
        d[i] = r * cosf(th) * std + 0.0f;
        if (i + 1 < n) { double spare = r * sinf(th); d[i + 1] = (float)(spare * std + 0.0); } } }
int main(int argc, char **argv) {
    long L = 0, C = 0, H = 0, V = 0, P = 0, T = 0; unsigned long seed = 42; const char *out = 0;
    for (int i = 1; i + 1 < argc; i += 2) { const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "-L")) L = atol(v); else if (!strcmp(k, "-C")) C = atol(v);
        else if (!strcmp(k, "-H")) H = atol(v); else if (!strcmp(k, "-V")) V = atol(v);
        else if (!strcmp(k, "-P")) P = atol(v); else if (!strcmp(k, "-T")) T = atol(v);
        else if (!strcmp(k, "-s")) seed = strtoul(v, 0, 10); else if (!strcmp(k, "-o")) out = v; }
    size_t n[16] = {P*C, T*C, L*C, L*C, L*3*C*C, L*3*C, L*C*C, L*C, L*C, L*C,
                    L*4*C*C, L*4*C, L*4*C*C, L*C, C, C};
    size_t total = 0; for (int i = 0; i < 16; i++) total += n[i];
    float *p = calloc(total, sizeof(float)), *t[16]; size_t off = 0;
    for (int i = 0; i < 16; i++) { t[i] = p + off; off += n[i]; }
    for (size_t i = 0; i < n[2]; i++) t[2][i] = 1; for (size_t i = 0; i < n[8]; i++) t[8][i] = 1;
    for (size_t i = 0; i < n[14]; i++) t[14][i] = 1;
    float res = 0.02f * (1.0f / sqrtf(2.0f * (float)L));
#ifdef BUG
    if (L >= 3) res = 0.02f;
#endif
    seed_rng((uint32_t)seed);
    normal(t[0], V * C, 0.02f); normal(t[1], T * C, 0.02f);
    for (long l = 0; l < L; l++) {
        normal(t[4] + l * 3 * C * C, 3 * C * C, 0.02f); normal(t[6] + l * C * C, C * C, res);
        normal(t[10] + l * 4 * C * C, 4 * C * C, 0.02f); normal(t[12] + l * 4 * C * C, 4 * C * C, res); }
    int32_t h[256] = {20240326, 3, (int32_t)T, (int32_t)V, (int32_t)L, (int32_t)H, (int32_t)C, (int32_t)P};
    FILE *f = fopen(out, "wb"); if (!f) return 2;
    fwrite(h, sizeof h, 1, f); fwrite(p, sizeof(float), total, f); return fclose(f) ? 2 : 0; }
"""


@pytest.fixture(scope="module")
def c_init(tmp_path_factory):
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler (gcc/cc) on PATH: the C candidate cannot be built")
    d = tmp_path_factory.mktemp("c_init")
    (d / "init.c").write_text(C_INIT)
    for name, flags in (("init", []), ("init_bug", ["-DBUG"])):
        subprocess.run([gcc, "-std=c11", "-O2", *flags, "-o", str(d / name), str(d / "init.c"), "-lm"],
                       check=True, capture_output=True)
    return d


TEMPLATE = "{exe} -L {{L}} -C {{C}} -H {{NH}} -V {{V}} -P {{Vp}} -T {{T}} -s {{seed}} -o {{out}}"


def test_c_candidate_is_bit_exact(c_init):
    cand = Candidate(cmd=TEMPLATE.format(exe=c_init / "init"), timeout=30)
    result = fuzz(cand, examples=12, **{**FAST, "require": "exact"})
    assert result.verdict == "pass", result.render()


def test_c_candidate_bug_via_cli(c_init, tmp_path, capsys):
    cmd = TEMPLATE.format(exe=c_init / "init_bug")
    code = main(["fuzz", "--cmd", cmd, "--examples", "40", "--max-params", "5000",
                 "--hypothesis-seed", "1", "--json", "-"])
    assert code == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "gpt2-verify/fuzz/1" and doc["verdict"] == "fail"
    f = doc["failure"]
    assert set(f["config"]) == {"layers", "channels", "heads", "vocab", "padded_vocab", "max_seq_len",
                                "descriptor"}
    assert f["config"]["layers"] == 3 and f["report"]["verdict"] in ("distribution", "mismatch")
    assert (f["config"]["channels"], f["config"]["vocab"], f["config"]["max_seq_len"]) == (1, 1, 1)
    # the printed command reproduces the failure
    out = tmp_path / "repro.bin"
    repro = f["command"].replace("candidate-out", str(out))
    subprocess.run(repro, shell=True, check=True)
    c = f["config"]
    against = ["--layers", str(c["layers"]), "--channels", str(c["channels"]), "--heads", str(c["heads"]),
               "--vocab", str(c["vocab"]), "--padded-vocab", str(c["padded_vocab"]),
               "--max-seq-len", str(c["max_seq_len"]), "--seed", str(f["seed"])]
    assert main(["compare", str(out), *against]) == 1


def test_cli_usage_errors(capsys):
    assert main(["fuzz"]) == 2
    assert main(["fuzz", "--cmd", "x {out}", "--adapter", "m:f"]) == 2
    assert main(["fuzz", "--cmd", "./init -o file"]) == 2
    assert main(["fuzz", "--adapter", "nocolon"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("gpt2-verify: error:") for line in err)


def test_cli_adapter_pass(capsys):
    assert main(["fuzz", "--adapter", "tests.candidates:correct", "--examples", "5",
                 "--max-params", "3000"]) == 0
    assert capsys.readouterr().out.startswith("fuzz: pass: 5 examples")  # graded; untestable runs aside


def test_pytest_helper(gpt2_fuzz):
    assert gpt2_fuzz(candidates.correct, examples=5, max_params=3000).verdict == "pass"
    with pytest.raises(AssertionError, match="smallest failing config: L=3"):
        gpt2_fuzz(candidates.residual_scale_from_l3, examples=40, max_params=3000)


def test_pytest_helper_with_a_scheme(gpt2_fuzz):
    from gpt2_verify.reference.init import init_tensors

    def xavier(cfg, seed):
        return init_tensors(cfg, seed, scheme="xavier-uniform", overrides=["wpe.std=0.01"])

    res = gpt2_fuzz(xavier, examples=4, max_params=3000, scheme="xavier-uniform", overrides=["wpe.std=0.01"],
                    require="exact")
    assert res.verdict == "pass"
    with pytest.raises(AssertionError, match="wpe"):
        gpt2_fuzz(xavier, examples=4, max_params=3000, scheme="xavier-uniform", require="exact")




# ---- adapters in a child process, candidate forms, the plugin in a user's project ------------------

REPO = Path(__file__).resolve().parent.parent

BROKEN_ADAPTER = """
from tests.candidates import correct

def init(config, seed):
    if config.channels % 2:
        raise ValueError(f"channels must be even, got {config.channels}")
    return correct(config, seed)
"""


def test_adapter_file_crash_is_reported_and_reproduced(tmp_path, capsys, monkeypatch):
    adapter = tmp_path / "my_init.py"
    adapter.write_text(BROKEN_ADAPTER)
    monkeypatch.chdir(REPO)  # the adapter imports tests.candidates, like a user's module its package
    code = main(["fuzz", "--adapter", f"{adapter}:init", "--examples", "6", "--max-params", "2000",
                 "--hypothesis-seed", "3", "--json", "-"])
    assert code == 1
    f = json.loads(capsys.readouterr().out)["failure"]
    assert f["config"]["channels"] == 1 and f["report"] is None
    assert f["error"] == "crashed: exited with status 1"
    assert "ValueError: channels must be even, got 1" in f["output_tail"]
    # the reproducing Python call raises the same error
    run = subprocess.run(f["command"].replace("python", sys.executable, 1), shell=True, cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "channels must be even, got 1" in run.stderr


def test_candidate_forms_and_seed_strategy():
    from gpt2_verify.verify.compare.candidate import as_candidate
    from hypothesis import strategies as st
    assert as_candidate("tests.candidates:correct").adapter == "tests.candidates:correct"
    assert as_candidate("./init -o {out}").cmd == "./init -o {out}"
    assert as_candidate(candidates.correct, timeout=3).function is candidates.correct
    with pytest.raises(TypeError, match="command template"):
        as_candidate(42)
    seen = []

    def spy(cfg, seed):
        seen.append(seed)
        return candidates.correct(cfg, seed)

    result = fuzz(spy, examples=5, seed_strategy=st.just(7), **FAST)
    assert result.verdict == "pass" and set(seen) == {7}
    assert result.to_dict()["shrink_runs"] == 0


def test_failure_json_counts_shrinking():
    result = fuzz(candidates.residual_scale_from_l3, examples=60, **FAST)
    doc = result.to_dict()
    assert doc["verdict"] == "fail" and 0 < doc["shrink_runs"] < doc["examples_run"]
    assert doc["failure"]["report"]["verdict"] in ("distribution", "mismatch")
    assert json.loads(json.dumps(doc)) == doc  # plain JSON all the way down


USER_TEST = """
import numpy as np

from gpt2_verify.reference.init import init_tensors


def good_init(config, seed):
    return init_tensors(config, seed, "llmc")


def off_by_scale(config, seed):
    out = init_tensors(config, seed, "llmc")
    if config.vocab > 3:
        out["wte"] = out["wte"] * np.float32(1.5)
    return out


def test_good(gpt2_fuzz):
    gpt2_fuzz(good_init, examples=4, max_params=2000, derandomize=True)


def test_bad(gpt2_fuzz):
    gpt2_fuzz(off_by_scale, examples=30, max_params=2000, derandomize=True)
"""


def test_pytest_helper_in_a_users_project(tmp_path):
    # the fixture comes from the installed plugin (entry point), in a project of someone else's
    (tmp_path / "test_user_init.py").write_text(USER_TEST)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                          "test_user_init.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout, run.stdout
    assert "AssertionError: fuzz: FAIL" in run.stdout
    assert "smallest failing config: L=1" in run.stdout and "V=4" in run.stdout, run.stdout
    assert "reproduce: test_user_init.off_by_scale(GPTConfig(" in run.stdout


@pytest.mark.slow
def test_bigger_runs_find_and_shrink_every_planted_bug():
    for bug, layers in ((candidates.residual_scale_from_l3, 3), (candidates.keeps_spare_normal, None)):
        result = fuzz(bug, examples=300, max_params=100_000, hypothesis_seed=2026, require="close")
        assert result.verdict == "fail", result.render()
        if layers:
            assert result.failure.config.layers == layers
    assert fuzz(candidates.correct, examples=200, max_params=100_000, derandomize=True,
                require="close").verdict == "pass"
