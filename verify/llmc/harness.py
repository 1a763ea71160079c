"""Run a user's llm.c CPU binaries (test_gpt2, train_gpt2) against the float64 reference.

llm.c's test_gpt2 always exits 0 (it prints `overall okay: 0` and returns 0), needs the
pretrained GPT-2 files and compares with limits (logits 1e-2, gradients 2e-2, step losses
hard-coded for pretrained GPT-2) that real bugs stay inside at GPT-2's init, where the network
is nearly linear. So this harness:

1. writes, in a fresh directory, everything the binaries open: `gpt2_124M.bin` (the model),
   `gpt2_124M_debug_state.bin` (inputs, targets and the float64 reference's logits, loss and 16
   gradients), the token shards `dev/data/tinyshakespeare/tiny_shakespeare_{train,val}.bin` and
   `gpt2_tokenizer.bin` (train_gpt2.c's paths);
2. runs each binary there with a time limit and parses the figures it prints;
3. judges every figure against its own tolerance (TOLERANCES, data with sources), reporting the
   value, the tolerance, the share of it used and what llm.c itself said.

Probe weights. By default the model is the reference init with every random tensor scaled by
min(10, 10 sqrt(64 / C)) (std 0.2 up to C = 64, std * sqrt(C) = 1.6 above: 0.058 at C = 768),
LayerNorm weights 1 + 0.1 N(0, 1) and biases 0.05 N(0, 1) (numpy PCG64 from the seed). At std
0.02 a wrong GELU constant or attention scale moves the gradients by less than llm.c's float32
noise; with the probe scale every nonlinearity matters while the logits stay O(1) at any width,
so float32 rounding stays far below the tolerances (at std 0.2 and C = 768 the softmax saturates,
the loss is ~24, and a correct float32 build drifts by 1e-2). `--plain-init` uses the init as it is.

Small batch. test_gpt2 takes B and T from the debug state; the default here is B = 2, T = 16.
The optimizer only shows in the step losses, and an error in its update (e.g. weight decay
applied as wd * grad, or dropped) moves the loss by about lr * wd * (|g|^2 or p.g) per step,
while llm.c's own float32 rounding of the mean loss grows with B T. Fewer positions average
away less of the gradient: with the probe weights at L2 C64, |g|^2 is 8 at B4 T64 and 110 at
B1 T16 (measured). The planted weight-decay bug below moves L2 C64's step losses by 0.5-0.7x
their tolerance at B4 T64 and by 5.6-11x at B2 T16, while every forward and backward bug stays
far outside (attention still spans 16 positions; two sequences catch batch-indexing errors).

Planted bugs (llm.c f1e2ace train_gpt2.c, one per build; default B2 T16; L2 C64 V1000, L4 C48
V500 and L3 C96 V2000, seeds 0-2), in multiples of the tolerance (correct builds: at most 0.1x):
GELU_SCALING_FACTOR x1.05: logits 93-320x, gradients 560-980x; attention scale 1/sqrt(hs + 1):
logits 99-340x, gradients 1160-2300x; LayerNorm backward term 3 doubled: gradients
1.3e4-2.7e4x, logits untouched; AdamW weight decay applied as wd * grad: step losses 5.6-11x,
drift 7.6-15x, forward and gradients untouched. test_gpt2's own limits (L2 C64 seed 0): GELU
and attention scale: logits NOT OK (max_diff 0.0103 and 0.012 against its 1e-2), every
gradient OK; LayerNorm backward: 13 of 16 gradients NOT OK; weight decay: logits, loss and
every gradient OK (its step lines say NOT OK for correct builds too: they compare with
pretrained GPT-2's losses).

train_gpt2 has no flags: B = 4, T = 64, 41 steps, AdamW(1e-4, 0.9, 0.999, 1e-8, wd 0). Its train
and val shards here hold exactly one batch (B T + 1 tokens), so every step trains on the same
batch whatever its loader's shuffling, and val loss at step s equals train loss at step s.

Checks (one row each): per test binary `logits`, `loss`, `dwte`..`dlnfb`, `step 0 loss`..`step 9
loss`, `step loss drift` (least-squares slope of printed - reference over the steps: an update
error accumulates, rounding does not) and `determinism` (a second run, first differing line);
per train binary `train step i loss`, `train loss drift`, `determinism`; a binary that cannot
start, crashes, times out or prints nothing recognisable gives one failed `runs` row with the
tail of its output. Every tolerance is 10x the worst figure of correct llm.c builds (TOLERANCES,
with the measurements and their source).

CUDA binaries (test_gpt2cu, train_gpt2cu, test_gpt2fp32cu) are run and judged by cuda.py with
limits derived in precision.py; their files are written here too (gpt2_124M_bf16.bin).

JSON (`gpt2-verify llmc --json`), schema "gpt2-verify/llmc/3" (verify.records.LlmcRecord):
    {"schema", "verdict": "pass" | "fail", "config": GPTConfig.as_dict(), "seed",
     "weights": "probe" | "plain-init" | "file:PATH",
     "tolerances": {check kind: verify.tolerance.Tolerance.to_dict() ("norm" / "rel" / "abs",
                                 "scale_of", "measured", "source", "text", ...)},
     "cuda_tolerances": {"test" | "train" | "fp32cu": CudaTolerances.summary()},  (when run)
     "checks": [{"binary", "check", "value", "tolerance", "used" (% of the tolerance),
                 "passed", "llmc_says" ("OK" / "NOT OK" as llm.c printed it, or null), "detail"}],
     "builds_compared": [one line per extra build of the same program: its first difference
                         from the first build]}
value, tolerance and used are null where a check has no figure (runs, determinism).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np
from gpt2_verify.reference.config import ONES_TENSORS, RANDOM_TENSORS, TENSOR_NAMES, ZERO_TENSORS, GPTConfig
from gpt2_verify.reference.init import init_tensors

from ..formats.checkpoint import write_checkpoint_array
from ..formats.debug_state import write_debug_state
from ..formats.tokens import synthetic_pieces, write_shard, write_tokenizer
from ..tolerance import Tolerance
from .cuda import (
    CUDA_FIGURE_LINE,
    MODEL_FILE,
    judge_test_cuda,
    judge_test_fp32cu,
    judge_train_cuda,
    kind_of,
    shape_problems,
    train_flags,
)
from .precision import CudaTolerances, cuda_tolerances
from .runs import (
    TAIL_LINES,
    Check,
    RunOutput,
    drift,
    drift_check,
    name_the_cause,
    run_binary,
    runs_failure,
    step_checks,
)
from .runs import _ok as _ok

__all__ = ["TAIL_LINES", "Check", "RunOutput", "drift", "run_binary"]  # re-exported: one place each

TRAIN_B, TRAIN_T = 4, 64  # train_gpt2.c main()
TEST_STEPS = 10  # test_gpt2.c runs 10 steps
CUDA_TRAIN_LR = 3e-4  # train_gpt2cu -l: train_gpt2.cu's default learning rate
CUDA_TRAIN_WD = 0.1  # train_gpt2cu -c: GPT-2's weight decay, so the decay is exercised
PROBE_STD_SCALE = 10.0  # at C <= PROBE_WIDTH; above, 10 sqrt(PROBE_WIDTH / C)
PROBE_WIDTH = 64
PROBE_LNF_GAIN = 3.0  # the final LayerNorm's weight and bias scaled: logits x3

_MEASURED = ("measured: llm.c f1e2ace CPU builds `make CC=gcc train_gpt2 test_gpt2` (gcc 12.2 -Ofast "
             "-march=native -fopenmp) and the same with CFLAGS=-O3 NO_OMP=1 (sequential float32 sums), "
             "x86-64 AVX512, glibc 2.36, probe weights, seeds 0-2 of L2 C64 V1000 (B4 T64, B2 T32, "
             "B2 T16, B1 T16), L4 C48 V500 (B2 T32, B2 T16), L3 C96 V2000 (B2 T64, B2 T16), L1 C32 V300 "
             "(B3 T20): 54 runs of each build")
LOSS_PRINT = 5e-7  # half a unit of the 6th decimal: llm.c prints losses with %f
# Limits are normwise (relative to the largest reference value of the quantity) so one table
# serves every width; printed losses add LOSS_PRINT. Logits, loss and gradients are 10x the worst
# correct build, step losses and drift 4x (a build without weight decay lands 3-4x beyond them).
TOLERANCES: dict[str, Tolerance] = {
    "logits": Tolerance(norm=1.4e-5, measured=1.38e-6, scale_of="max|reference logit|",
                        source="10x the worst correct build (-O3, L3 C96 V2000 B2 T16 seed 1); " + _MEASURED),
    "loss": Tolerance(rel=7.2e-6, abs=LOSS_PRINT, measured=7.18e-7,
                      source="10x the worst correct build (-O3, L2 C64 V1000 B4 T64 seed 2: its sequential "
                             "float32 sum of the B*T losses), + half a unit of the printed 6th decimal; "
                             + _MEASURED),
    "grads": Tolerance(norm=3.5e-5, measured=3.44e-6, scale_of="max|reference grad| of the tensor",
                       source="10x the worst correct build over all 16 tensors (-O3, dqkvw, L2 C64 V1000 "
                              "B1 T16 seed 2); " + _MEASURED),
    "step_loss": Tolerance(norm=2.9e-6, abs=LOSS_PRINT, measured=7.18e-7,
                           scale_of="max(|reference step loss|, |reference step-0 loss|)",
                           source="4x the worst correct build over test_gpt2's 10 and train_gpt2's 10 steps "
                                  "(-O3, L2 C64 V1000 B4 T64 seed 2; 4x, not 10x: the probe's missing weight "
                                  "decay moves them 1.3x the 10x limit), + half a unit of the printed 6th "
                                  "decimal; " + _MEASURED),
    "step_drift": Tolerance(norm=2.4e-7, measured=5.94e-8,
                            scale_of="|reference step-0 loss| per step (widened below 10 steps)",
                            source="least-squares slope of (printed - reference) step losses; 4x the "
                                   "worst correct build, test_gpt2 and train_gpt2 (-O3, L3 C96 V2000 B2 T64 "
                                   "seed 1); an update error grows with every step while rounding scatters, "
                                   "so the slope sees it before any single step does; " + _MEASURED),
}
# test_gpt2.c's own limits (logits and loss 1e-2, gradients 2e-2, absolute) are
# numerics.gradflow.TOLERANCES["llmc-test_gpt2.c"]; its step losses are compared with pretrained
# GPT-2's, which is why it prints NOT OK for every step of a random model


def probe_params(cfg: GPTConfig, seed: int, *, plain: bool = False,
                 profile: str = "llmc") -> dict[str, np.ndarray]:
    params = {k: np.array(v, dtype=np.float32) for k, v in init_tensors(cfg, seed, profile).items()}
    if plain:
        return params
    rng = np.random.Generator(np.random.PCG64(seed))
    scale = np.float32(PROBE_STD_SCALE * min(1.0, math.sqrt(PROBE_WIDTH / cfg.channels)))
    for name in RANDOM_TENSORS:
        params[name] *= scale
    for name in ONES_TENSORS:
        params[name] += (0.1 * rng.standard_normal(params[name].shape)).astype(np.float32)
    for name in ZERO_TENSORS:
        params[name][...] = (0.05 * rng.standard_normal(params[name].shape)).astype(np.float32)
    params["wte"][cfg.vocab:] = 0.0  # padded rows stay zero
    params["lnfw"] *= np.float32(PROBE_LNF_GAIN)  # logits x3: weight decay shows (module docstring)
    params["lnfb"] *= np.float32(PROBE_LNF_GAIN)
    return params


@dataclasses.dataclass
class Expected:
    cfg: GPTConfig
    test_B: int
    test_T: int
    logits_max: float
    loss: float
    grad_max: dict[str, float]
    test_losses: list[float]  # the 10 steps test_gpt2 (and test_gpt2fp32cu) print
    train_losses: list[float]  # the first `steps` steps train_gpt2 prints
    logits_rms: float = 0.0
    cuda_test_losses: list[float] = dataclasses.field(default_factory=list)  # test_gpt2cu's 10 steps
    cuda_train_losses: list[float] = dataclasses.field(default_factory=list)  # train_gpt2cu's steps
    cuda_tolerances: dict[str, CudaTolerances] = dataclasses.field(default_factory=dict)  # by program
    # how to rerun each program's steps with one optimizer mistake (adamw.bug_variants): by
    # program ("test", "train"), (params, tokens, targets, steps, AdamW); run only when a step
    # check fails (variant_losses), so a passing build costs no extra reference runs
    variant_jobs: dict[str, tuple] = dataclasses.field(default_factory=dict, repr=False)
    _variant_cache: dict[str, dict[str, list[float]]] = dataclasses.field(default_factory=dict, repr=False)

    def variant_losses(self, prog: str) -> dict[str, list[float]]:
        """Variant name -> float64 step losses of `prog`'s run with that optimizer mistake."""
        if prog not in self._variant_cache:
            job = self.variant_jobs.get(prog)
            self._variant_cache[prog] = _variants(self.cfg, *job) if job else {}
        return self._variant_cache[prog]


def cuda_train_adamw():
    """train_gpt2cu's AdamW under cuda.train_flags: train_gpt2.cu's (betas 0.9/0.95, eps 1e-8,
    clip 1, decay on the matrices) with the probe's learning rate and weight decay."""
    from ..numerics.adamw import ADAMW

    return dataclasses.replace(ADAMW["train_gpt2.cu"], lr=CUDA_TRAIN_LR, weight_decay=CUDA_TRAIN_WD)


def config_problems(cfg: GPTConfig, *, kinds: set[str], batch: int, seq: int, precision: str) -> list[str]:
    """Why the binaries of these kinds ("test:cpu", "train:cuda", ...) cannot run this config:
    caught before anything runs (a CLI usage error), not as a failed run."""
    out = []
    if seq > cfg.max_seq_len:
        out.append(f"the debug state's T={seq} exceeds the model's maxT {cfg.max_seq_len}")
    if "train:cpu" in kinds and cfg.max_seq_len < TRAIN_T:
        out.append(f"train_gpt2 always trains with T={TRAIN_T} (train_gpt2.c main) but the model's maxT is "
                   f"{cfg.max_seq_len}: give a model with max_seq_len >= {TRAIN_T}, or only test binaries")
    if "train:cpu" in kinds and cfg.vocab > 65536:
        out.append(f"train_gpt2's token shards hold uint16 tokens: V={cfg.vocab} is more than 65536")
    for prog, B, T in (("test", batch, seq), ("train", TRAIN_B, TRAIN_T)):
        if f"{prog}:cuda" in kinds:
            out += shape_problems(cfg, B=B, T=min(T, cfg.max_seq_len) if prog == "test" else T,
                                  precision=precision, what=f"{prog}_gpt2cu")
    return out


def prepare(run_dir: str | os.PathLike, cfg: GPTConfig, *, seed: int = 42, batch: int = 2, seq: int = 16,
            plain: bool = False, train_steps: int = 10, need_test: bool = True,
            need_train: bool = True, params: dict[str, np.ndarray] | None = None,
            profile: str = "llmc", cuda: bool = False, precision: str = "bf16") -> Expected:
    """Write every file the binaries open into run_dir (gpt2_124M.bin and, for the CUDA build,
    gpt2_124M_bf16.bin: every value the round-to-nearest-even bf16 of gpt2_124M.bin's); return
    the reference's figures. params: the model's weights (llm.c names and shapes, e.g. from a
    user's checkpoint) instead of the probe weights; seed then only picks the tokens. cuda: also
    the figures and limits for test_gpt2cu/train_gpt2cu/test_gpt2fp32cu of `precision`."""
    from ..numerics.adamw import ADAMW
    from ..numerics.model import forward_backward, random_tokens
    from ..numerics.model import train_steps as ref_train_steps

    run = Path(run_dir)
    if params is None:
        params = probe_params(cfg, seed, plain=plain, profile=profile)
    flat = np.concatenate([params[s.name].reshape(-1) for s in cfg.tensors()])
    write_checkpoint_array(run / "gpt2_124M.bin", cfg, flat, "fp32")
    write_checkpoint_array(run / "gpt2_124M_bf16.bin", cfg, flat, "bf16")
    seq = min(seq, cfg.max_seq_len)
    x, y = random_tokens(cfg, batch=batch, seq=seq, seed=seed)
    exp = Expected(cfg, batch, seq, 0.0, 0.0, {}, [], [])
    if need_test:
        fb = forward_backward(cfg, params, x, y, dtype="float64")
        write_debug_state(run / "gpt2_124M_debug_state.bin", cfg, x, y, fb.logits, fb.loss,
                          {n: g.astype(np.float32) for n, g in fb.grads.items()})
        exp.logits_max = float(np.max(np.abs(fb.logits)))
        exp.logits_rms = float(np.sqrt(np.mean(fb.logits ** 2)))
        exp.loss = float(fb.loss)
        exp.grad_max = {n: float(np.max(np.abs(fb.grads[n]))) for n in TENSOR_NAMES}
        exp.test_losses = ref_train_steps(cfg, params, x, y, steps=TEST_STEPS, optimizer=ADAMW["test_gpt2.c"])
        exp.variant_jobs["test"] = (params, x, y, TEST_STEPS, ADAMW["test_gpt2.c"])
        if cuda:
            exp.cuda_test_losses = ref_train_steps(cfg, params, x, y, steps=TEST_STEPS,
                                                   optimizer=ADAMW["test_gpt2.cu"])
            numel = {s.name: s.numel for s in cfg.tensors()}
            for prog, prec in (("test", precision), ("fp32cu", "fp32")):
                exp.cuda_tolerances[prog] = cuda_tolerances(
                    cfg, precision=prec, B=batch, T=seq, logits_max=exp.logits_max, logits_rms=exp.logits_rms,
                    loss=exp.loss, grad_max=exp.grad_max, grad_numel=numel)
    # train_gpt2: one batch of B*T + 1 tokens in both shards (see the module docstring)
    tokens = _tokens(cfg, TRAIN_B * TRAIN_T + 1, seed + 1)
    data = run / "dev" / "data" / "tinyshakespeare"
    data.mkdir(parents=True, exist_ok=True)
    if cfg.vocab <= 65536:
        write_shard(data / "tiny_shakespeare_train.bin", tokens)
        # test_gpt2cu's resume check reads B*T + 1 tokens of the val shard: tile the batch if needed
        write_shard(data / "tiny_shakespeare_val.bin", np.resize(tokens, max(tokens.size, batch * seq + 1)))
    write_tokenizer(run / "gpt2_tokenizer.bin", synthetic_pieces(cfg.vocab), eot=cfg.vocab - 1)
    if need_train and cfg.max_seq_len >= TRAIN_T:
        bx = tokens[:-1].reshape(TRAIN_B, TRAIN_T).astype(np.int32)
        by = tokens[1:].reshape(TRAIN_B, TRAIN_T).astype(np.int32)
        exp.train_losses = ref_train_steps(cfg, params, bx, by, steps=train_steps,
                                           optimizer=ADAMW["train_gpt2.c"])
        exp.variant_jobs["train"] = (params, bx, by, train_steps, ADAMW["train_gpt2.c"])
        if cuda:
            exp.cuda_train_losses = ref_train_steps(cfg, params, bx, by, steps=train_steps,
                                                    optimizer=cuda_train_adamw())
            logits = forward_backward(cfg, params, bx, by, dtype="float64", backward=False).logits
            exp.cuda_tolerances["train"] = cuda_tolerances(
                cfg, precision=precision, B=TRAIN_B, T=TRAIN_T, logits_max=float(np.max(np.abs(logits))),
                logits_rms=float(np.sqrt(np.mean(logits ** 2))), loss=exp.cuda_train_losses[0],
                grad_max={}, grad_numel={},
                n_steps=train_steps)
    return exp


def cuda_dir(run_dir: str | os.PathLike, precision: str) -> Path:
    """A directory beside run_dir's files holding only the model file of `precision` (so a
    build for the other precision cannot open one and fails, instead of being judged with the
    wrong limits), with links to the debug state, tokenizer and shards."""
    run = Path(run_dir)
    d = run / f"cuda-{precision}"
    if d.exists():
        return d
    (d / "dev" / "data" / "tinyshakespeare").mkdir(parents=True)
    for rel in (MODEL_FILE[precision], "gpt2_124M_debug_state.bin", "gpt2_tokenizer.bin",
                "dev/data/tinyshakespeare/tiny_shakespeare_train.bin",
                "dev/data/tinyshakespeare/tiny_shakespeare_val.bin"):
        if (run / rel).exists():
            os.link(run / rel, d / rel)
    return d


def _variants(cfg: GPTConfig, params, x, y, steps: int, opt) -> dict[str, list[float]]:
    """The float64 step losses of each optimizer mistake that changes `opt` (name_the_cause)."""
    from ..numerics.adamw import bug_variants
    from ..numerics.model import train_steps as ref_train_steps

    return {k: ref_train_steps(cfg, params, x, y, steps=steps, optimizer=o)
            for k, o in bug_variants(opt).items()}


def _bug_texts() -> dict[str, str]:
    from ..numerics.adamw import BUGS

    return {b.name: b.what for b in BUGS}


def _diagnose(checks: list[Check], printed: list[float], reference: list[float], variants, tol) -> None:
    """When a step loss or the drift failed, say in the drift row (or the last step row) which
    optimizer mistake the printed losses follow (runs.name_the_cause). variants: a callable
    giving the variant trajectories, computed only then."""
    steps = [c for c in checks if c.check.endswith(" loss") or c.check.endswith(" drift")]
    if not steps or all(c.passed for c in steps):
        return
    if cause := name_the_cause(printed, reference, variants(), tol, _bug_texts()):
        target = steps[-1]
        target.detail = f"{target.detail}; {cause}" if target.detail else cause


def _tokens(cfg: GPTConfig, n: int, seed: int) -> np.ndarray:
    return np.random.Generator(np.random.PCG64(seed)).integers(0, cfg.vocab, size=n).astype(np.int64)


# ---- running and parsing ------------------------------------------------------------------------

_LOGITS = re.compile(r"^(NOT )?OK \(LOGITS\), max_diff = (\S+)")
_LOSS = re.compile(r"^LOSS (OK|MISMATCH): (\S+) (\S+)")
_LABEL = re.compile(r"^d(" + "|".join(TENSOR_NAMES) + r")$")
_TENSOR = re.compile(r"^TENSOR (NOT )?OK, maxdiff = (\S+)")
_TEST_STEP = re.compile(r"^step (\d+): loss (\S+) \(took (\S+) ms\) OK = (\d)")
_OVERALL = re.compile(r"^overall okay: (\d)")
_TRAIN_STEP = re.compile(r"^step (\d+): train loss (\S+) \(took (\S+) ms\)")
_VAL = re.compile(r"^val loss (\S+)")


@dataclasses.dataclass
class TestOutput:
    logits: tuple[float, bool] | None = None  # (max_diff, llm.c's OK)
    loss: tuple[float, bool] | None = None  # (calculated, llm.c's OK)
    grads: dict[str, tuple[float, bool]] = dataclasses.field(default_factory=dict)
    steps: list[tuple[float, float, bool]] = dataclasses.field(default_factory=list)  # loss, ms, OK
    overall: bool | None = None


def parse_test_gpt2(text: str) -> TestOutput:
    out, label = TestOutput(), None
    for line in text.splitlines():
        line = line.strip()
        if m := _LOGITS.match(line):
            out.logits = (float(m.group(2)), m.group(1) is None)
        elif m := _LOSS.match(line):
            out.loss = (float(m.group(2)), m.group(1) == "OK")
        elif m := _LABEL.match(line):
            label = m.group(1)
        elif (m := _TENSOR.match(line)) and label:
            out.grads[label] = (float(m.group(2)), m.group(1) is None)
            label = None
        elif m := _TEST_STEP.match(line):
            out.steps.append((float(m.group(2)), float(m.group(3)), m.group(4) == "1"))
        elif m := _OVERALL.match(line):
            out.overall = m.group(1) == "1"
    return out


def parse_train_gpt2(text: str) -> tuple[list[float], list[float], list[float]]:
    """(train losses by step, step times in ms, val losses)."""
    losses, times, vals = [], [], []
    for line in text.splitlines():
        line = line.strip()
        if m := _TRAIN_STEP.match(line):
            losses.append(float(m.group(2)))
            times.append(float(m.group(3)))
        elif m := _VAL.match(line):
            vals.append(float(m.group(1)))
    return losses, times, vals


# ---- judging ----------------------------------------------------------------------------------

def _loss_tol(ref: float) -> float:
    return TOLERANCES["loss"].bound(ref)


def _step_tol(ref: float, first: float) -> float:
    """Step losses: relative to the larger of this step's and the first step's loss. float32
    error in the trained parameters carries the scale the run started at: when a model
    memorises its one batch (d12: 12.3 -> 0.44 in 5 steps) the error does not shrink with it."""
    return TOLERANCES["step_loss"].bound(ref, scale=max(abs(ref), abs(first)))


def _drift_tol(first: float, n: int) -> float:
    """The step_drift tolerance was measured over 10 steps. A slope fitted to fewer points
    scatters more: for independent errors its spread goes as 1 / sqrt(sum (i - mean)^2) =
    1 / sqrt(n (n^2 - 1) / 12), so fewer steps widen the limit by that ratio (3 steps: 6.4x);
    more steps keep it (rounding need not stay independent over long runs)."""
    widen = max(1.0, math.sqrt((TEST_STEPS * (TEST_STEPS ** 2 - 1)) / (n * (n * n - 1))))
    return TOLERANCES["step_drift"].bound(scale=abs(first)) * widen


def judge_test(name: str, run: RunOutput, exp: Expected) -> list[Check]:
    if run.error:
        return [runs_failure(name, run, "")]
    p = parse_test_gpt2(run.output)
    checks = []
    if p.logits is None and p.loss is None and not p.grads:
        return [runs_failure(name, run, "no test_gpt2 output recognised")]
    tol = TOLERANCES["logits"].bound(scale=exp.logits_max)
    if p.logits is None:
        checks.append(Check(name, "logits", None, tol, False, None, "no logits line"))
    else:
        v, ok = p.logits
        checks.append(Check(name, "logits", v, tol, v <= tol, _ok(ok)))
    if p.loss is None:
        checks.append(Check(name, "loss", None, _loss_tol(exp.loss), False, None, "no loss line"))
    else:
        d = abs(p.loss[0] - exp.loss)
        checks.append(Check(name, "loss", d, _loss_tol(exp.loss), d <= _loss_tol(exp.loss), _ok(p.loss[1]),
                            f"printed {p.loss[0]:.6f}, reference {exp.loss:.8f}"))
    for n in TENSOR_NAMES:
        tol = TOLERANCES["grads"].bound(scale=exp.grad_max[n])
        if n not in p.grads:
            checks.append(Check(name, f"d{n}", None, tol, False, None, "no line for this tensor"))
            continue
        v, ok = p.grads[n]
        checks.append(Check(name, f"d{n}", v, tol, v <= tol, _ok(ok),
                            f"max |grad| {exp.grad_max[n]:.3g}"))
    checks += step_checks(name, "step {} loss", [s[0] for s in p.steps], exp.test_losses,
                          lambda i, ref: _step_tol(ref, exp.test_losses[0]), [_ok(s[2]) for s in p.steps],
                          " (llm.c compares with its hard-coded pretrained-GPT-2 losses, ignored here)")
    if c := drift_check(name, "step loss drift", [s[0] for s in p.steps], exp.test_losses,
                        lambda n: _drift_tol(exp.test_losses[0], n)):
        checks.append(c)
    _diagnose(checks, [s[0] for s in p.steps], exp.test_losses, lambda: exp.variant_losses("test"),
              lambda i, ref: _step_tol(ref, exp.test_losses[0]))
    return checks


def judge_train(name: str, run: RunOutput, exp: Expected) -> list[Check]:
    if run.error:
        return [runs_failure(name, run, "")]
    losses, _times, _vals = parse_train_gpt2(run.output)
    if not losses:
        return [runs_failure(name, run, "no train_gpt2 step lines recognised")]
    checks = step_checks(name, "train step {} loss", losses, exp.train_losses,
                         lambda i, ref: _step_tol(ref, exp.train_losses[0]))
    if c := drift_check(name, "train loss drift", losses, exp.train_losses,
                        lambda n: _drift_tol(exp.train_losses[0], n)):
        checks.append(c)
    _diagnose(checks, losses, exp.train_losses, lambda: exp.variant_losses("train"),
              lambda i, ref: _step_tol(ref, exp.train_losses[0]))
    return checks


_TIMING = re.compile(r"\(took [^)]*\)|\| [\d.]+ ms \|.*$")  # train_gpt2cu: "| 1.23 ms | MFU | tok/s"


def _figure_lines(text: str) -> list[str]:
    """The lines carrying figures the harness judges, a tensor's line prefixed with its label."""
    out, label = [], ""
    for line in text.splitlines():
        line = _TIMING.sub("", line).strip()
        if _LABEL.match(line):
            label = line
        elif _TENSOR.match(line):
            out.append(f"{label}: {line}")
        elif any(r.match(line) for r in (_LOGITS, _LOSS, _TEST_STEP, _OVERALL, _TRAIN_STEP, _VAL)):
            out.append(line)
        elif CUDA_FIGURE_LINE.match(line):
            out.append(line)
    return out


def first_difference(a: str, b: str, *, figures_only: bool = False) -> str | None:
    """The first printed line that differs between two runs (timings removed): its step when it
    is a step line, else the line itself. figures_only: compare only the judged figures (two
    builds print the sample values test_gpt2 shows before each check to 6 decimals as well)."""
    if figures_only:
        la, lb = _figure_lines(a), _figure_lines(b)
    else:
        la = [_TIMING.sub("", x).strip() for x in a.splitlines() if x.strip()]
        lb = [_TIMING.sub("", x).strip() for x in b.splitlines() if x.strip()]
    for x, y in zip(la, lb):
        if x != y:
            m = re.match(r"step (\d+):", x)
            return (f"step {m.group(1)}: '{x}' vs '{y}'" if m else f"'{x}' vs '{y}'")
    if len(la) != len(lb):
        return f"the runs printed {len(la)} and {len(lb)} lines"
    return None


@dataclasses.dataclass
class HarnessReport:
    config: dict
    seed: int
    weights: str  # "probe", "plain-init" or "file:PATH"
    checks: list[Check]
    notes: list[str] = dataclasses.field(default_factory=list)  # builds compared with each other
    cuda_tolerances: dict[str, dict] = dataclasses.field(default_factory=dict)  # CudaTolerances.summary()

    @property
    def verdict(self) -> str:
        return "pass" if self.checks and all(c.passed for c in self.checks) else "fail"

    def to_record(self):
        """The typed JSON record (verify.records.LlmcRecord), validated."""
        from ..records import LlmcRecord

        return LlmcRecord.make(verdict=self.verdict, config=self.config, seed=self.seed, weights=self.weights,
                               tolerances={k: t.to_dict() for k, t in TOLERANCES.items()},
                               cuda_tolerances=dict(self.cuda_tolerances),
                               checks=[c.to_dict() for c in self.checks], builds_compared=list(self.notes))

    def to_dict(self) -> dict:
        return self.to_record().to_dict()

    def render(self) -> str:
        w = max([24] + [len(_label(c.binary)) for c in self.checks])
        lines = [f"{'binary':<{w}} {'check':<18} {'value':>10} {'tolerance':>10} {'used':>8}  "
                 f"{'ours':<5} llm.c"]
        for c in self.checks:
            v = "-" if c.value is None else f"{c.value:.3g}"
            t = "-" if c.tolerance is None else f"{c.tolerance:.3g}"
            u = "-" if c.used is None else f"{c.used:.1f}%"
            lines.append(f"{_label(c.binary):<{w}} {c.check:<18} {v:>10} {t:>10} {u:>8}  "
                         f"{'ok' if c.passed else 'FAIL':<5} {c.llmc_says or ''}".rstrip())
        bad = [c for c in self.checks if not c.passed]
        for c in bad:
            if c.detail:
                lines.append(f"{_label(c.binary)}: {c.check}: {c.detail}")
        lines += [f"builds compared: {n}" for n in self.notes]
        lines.append(COLUMNS)
        head = (f"{len(bad)} of {len(self.checks)} checks failed, first: {_label(bad[0].binary)} "
                f"{bad[0].check}" if bad else f"all {len(self.checks)} checks passed")
        lines.append(f"verdict: {self.verdict}: {head}")
        return "\n".join(lines)


COLUMNS = ("columns: value = the figure the binary printed (max |diff| for logits and gradients, "
           "|printed - reference| for losses, |slope| for drift); tolerance = our limit for it against the "
           "float64 reference; used = value / tolerance; ours = our verdict; llm.c = what the binary's "
           "own check printed (its hand-set limits; its step check compares with pretrained GPT-2's "
           "losses, so it says NOT OK for any other model)")


def run_harness(cfg: GPTConfig, *, test_bins=(), train_bins=(), seed: int = 42, batch: int = 2,
                seq: int = 16, plain: bool = False, steps: int = 10, timeout: float = 600.0,
                determinism: bool = True, params: dict[str, np.ndarray] | None = None,
                weights: str | None = None, profile: str = "llmc", precision: str = "bf16",
                say=None) -> HarnessReport:
    """Run every binary in one prepared directory and judge it. determinism: run each binary
    a second time and name the first printed figure that differs. Several builds of the same
    program are also compared with each other (report notes: two correct builds may differ in
    the last printed digit, e.g. -O3 against -Ofast, so this is information, not a check).
    CUDA binaries (cuda.kind_of) run in cuda_dir(precision) and are judged with the derived
    limits of `precision` (test_gpt2fp32cu always fp32). say: a callable taking one progress line."""
    say = say or (lambda line: None)
    bins = [("test", str(b), kind_of(str(b))) for b in test_bins] + \
           [("train", str(b), kind_of(str(b))) for b in train_bins]
    kinds = {f"{prog}:{'cuda' if k == 'fp32cu' else k}" for prog, _b, k in bins}
    if problems := config_problems(cfg, kinds=kinds, batch=batch, seq=seq, precision=precision):
        raise ValueError("; ".join(problems))
    checks: list[Check] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gpt2v-llmc-") as d:
        say("computing the float64 reference (forward, backward and the AdamW steps of every program "
            "given; the first call in a fresh environment also loads torch from disk)")
        exp = prepare(d, cfg, seed=seed, batch=batch, seq=seq, plain=plain, train_steps=steps,
                      need_test=bool(test_bins), need_train=bool(train_bins), params=params,
                      profile=profile, cuda=any(k != "cpu" for _p, _b, k in bins), precision=precision)
        outputs: dict[tuple, list[RunOutput]] = {}
        for i, (prog, b, kind) in enumerate(bins):
            where, args, judge = _plan(d, prog, kind, exp, precision=precision, steps=steps)
            say(f"running {_label(b)} ({i + 1}/{len(bins)}{', twice' if determinism else ''})")
            first = run_binary(b, where, timeout=timeout, args=args)
            judged = judge(b, first)
            checks += judged
            outputs.setdefault((prog, kind), []).append(first)
            if determinism and judged[0].check != "runs":  # it ran and printed its figures
                again = run_binary(b, where, timeout=timeout, args=args)
                # CUDA binaries print memory use and timings outside "(took ...)": figures only
                diff = (again.error or
                        first_difference(first.output, again.output, figures_only=kind != "cpu"))
                checks.append(Check(b, "determinism", None, None, diff is None, None,
                                    f"a second run differs: {diff}" if diff
                                    else "a second run prints the same figures"))
        for runs in outputs.values():
            runs = [r for r in runs if not r.error]
            for r in runs[1:]:
                diff = first_difference(runs[0].output, r.output, figures_only=True)
                notes.append(f"{_label(r.binary)} vs {_label(runs[0].binary)}: "
                             + (f"first difference {diff}" if diff else "the same printed figures"))
    label = weights or ("plain-init" if plain else "probe")
    return HarnessReport(cfg.as_dict(), seed, label, checks, notes,
                         {k: t.summary() for k, t in exp.cuda_tolerances.items()})


def _plan(run_dir: str, prog: str, kind: str, exp: Expected, *, precision: str, steps: int):
    """(working directory, arguments, judge(name, run)) for one binary."""
    if kind == "cpu":
        return run_dir, (), lambda b, r: (judge_test if prog == "test" else judge_train)(b, r, exp)
    if kind == "fp32cu":  # test_gpt2_fp32.cu reads gpt2_124M.bin whatever the precision asked
        return run_dir, (), lambda b, r: judge_test_fp32cu(b, r, exp, exp.cuda_tolerances["fp32cu"])
    where = str(cuda_dir(run_dir, precision))
    if prog == "test":
        return where, (), lambda b, r: judge_test_cuda(b, r, exp, exp.cuda_tolerances["test"])
    args = train_flags(precision=precision, B=TRAIN_B, T=TRAIN_T, steps=steps, lr=CUDA_TRAIN_LR,
                       wd=CUDA_TRAIN_WD)
    return where, args, lambda b, r: judge_train_cuda(b, r, exp, exp.cuda_tolerances["train"])


def _label(binary: str) -> str:
    """parent/name: several builds of test_gpt2 stay apart."""
    p = Path(binary)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name
