"""llm.c's CUDA binaries: what they open, how they are run, what they print, and the judging of it.

Binaries (llm.c Makefile targets) and the files each opens in its working directory:

    test_gpt2cu      test_gpt2.cu, built with PRECISION=BF16 (default): gpt2_124M_bf16.bin;
                     PRECISION=FP32: gpt2_124M.bin; both gpt2_124M_debug_state.bin and, for its
                     resume check, dev/data/tinyshakespeare/tiny_shakespeare_val.bin
    test_gpt2fp32cu  test_gpt2_fp32.cu (the legacy all-fp32 file): gpt2_124M.bin, the debug state
    train_gpt2cu     train_gpt2.cu: the model given by -e, shards by -i/-j, gpt2_tokenizer.bin

A binary is recognised by its file name: a name ending in "fp32cu" is test_gpt2fp32cu, one
ending in "cu" is test_gpt2cu / train_gpt2cu, anything else the CPU program (harness.py).

What they print (read from llm.c f1e2ace's printf lines):

    test_gpt2cu      "checking tensor: %s" then "TENSOR OK, max diff: %.3e, with rel error: %.3e
                     (calculated=%10f, ref=%10f), %.2f%% of maximum error" (or TENSOR NOT OK) per
                     gradient (labels wte .. lnfb, "attrpojw" spelt so); "OK (LOGITS)" / "NOT OK
                     (LOGITS)" and "logit max diff: %f"; "step %d: loss %f (took %f ms)" for steps
                     1..10 (the first is the loss of the initial weights); "loss ok at step %d: %f
                     %f" / "LOSS MISMATCH AT STEP %d: %f %f" against pretrained GPT-2's losses;
                     then the resume check: "loss ok at step %d" (0-based) or "Nondeterminism!
                     ..."; "overall okay: %d"; exit status EXIT_FAILURE when not okay.
    test_gpt2fp32cu  "OK (LOGITS)" (no figure), "LOSS OK: %f %f" / "LOSS MISMATCH: %f %f", "grads"
                     then "TENSOR OK" (no figure, all gradients at once), "step %d: loss %f (took %f
                     ms)" for steps 0..9, the pretrained comparisons, "overall okay: %d"; exit 0.
    train_gpt2cu     a table with "| precision | BF16 |", "val loss %f", and per step "step %4d/%d |
                     loss %7.6f (%+.2fz)| norm %6.4f (%+.2fz)| lr %.2e | %.2f ms | ..." (1-based).
    any              "[CUDA ERROR] ...", "[cuBLAS ERROR]: ...", "Error: ..." (llmc/utils.h),
                     "Precision is configured as BF16 but model at %s is not." (a build for the
                     other precision), an assertion message.

Flags: test_gpt2cu runs as it is (its AdamW is fixed: lr 1e-4, betas 0.9/0.95, eps 1e-8, wd 0,
clip 1). train_gpt2cu gets TRAIN_FLAGS: the model file, B and T, a constant learning rate, a
weight decay, one batch overfitted (-a 1: the loader resets every step, as the CPU probe's
one-batch shard does), no sampling, one validation batch, TF32 off (-f 0: float32 matmuls, as
test_gpt2cu sets), master weights kept (its default).

Every figure is judged against the float64 reference with the precision's derived limits
(precision.py). A crash, a hang, a CUDA or cuBLAS error line, a build for the other precision,
or output with no figure fails with the output's tail.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from gpt2_verify.reference.config import TENSOR_NAMES, GPTConfig

from .precision import CudaTolerances
from .runs import Check, RunOutput, _ok, drift_check, runs_failure, step_checks

if TYPE_CHECKING:
    from .harness import Expected

MODEL_FILE = {"bf16": "gpt2_124M_bf16.bin", "fp32": "gpt2_124M.bin"}
PRECISION_NAME = {"bf16": "BF16", "fp32": "FP32"}
# llm.c test_gpt2.cu's label list (its typo kept) -> our names
_CU_LABELS = {"attrpojw": "attprojw", **{n: n for n in TENSOR_NAMES}}

# Kernel shape rules of llm.c's CUDA build that assert before or while running (llmc/*.cuh at
# f1e2ace), with x = x128::size = 16 bytes / sizeof(floatX): 8 values for bf16, 4 for fp32.
# (what, rule(B, T, C, x), source)
CUDA_SHAPE_RULES = (
    ("T % 4 == 0", lambda B, T, C, x: T % 4 == 0, "attention.cuh softmax_forward_kernel5"),
    ("C % x == 0", lambda B, T, C, x: C % x == 0, "matmul.cuh reduce_add_sum_kernel (x128 loads)"),
    ("B T C % (256 x) == 0", lambda B, T, C, x: (B * T * C) % (256 * x) == 0,
     "layernorm.cuh residual_forward (block 256)"),
    ("B T 4C % (512 x) == 0", lambda B, T, C, x: (B * T * 4 * C) % (512 * x) == 0,
     "gelu.cuh gelu_forward (block 512)"),
)
X128 = {"bf16": 8, "fp32": 4}


def kind_of(binary: str) -> str:
    """"cpu", "cuda" or "fp32cu" from the file name (module docstring)."""
    name = binary.replace("\\", "/").rsplit("/", 1)[-1]
    if name.endswith("fp32cu"):
        return "fp32cu"
    return "cuda" if name.endswith("cu") else "cpu"


def shape_problems(cfg: GPTConfig, *, B: int, T: int, precision: str, what: str) -> list[str]:
    """Why llm.c's CUDA kernels cannot run this shape (empty if they can)."""
    x = X128[precision]
    out = []
    if T > cfg.max_seq_len:
        out.append(f"{what} uses T={T} but the model's maxT is {cfg.max_seq_len}")
    for rule, ok, source in CUDA_SHAPE_RULES:
        if not ok(B, T, cfg.channels, x):
            out.append(f"{what} B={B} T={T} C={cfg.channels} breaks {rule} (x={x} for {precision}; "
                       f"llm.c {source} asserts it)")
    return out


def train_flags(*, precision: str, B: int, T: int, steps: int, lr: float, wd: float) -> list[str]:
    """train_gpt2cu's command line for the probe (module docstring)."""
    return ["-e", MODEL_FILE[precision], "-b", str(B), "-t", str(T), "-x", str(steps), "-k", "constant",
            "-l", repr(lr), "-c", repr(wd), "-a", "1", "-s", "0", "-m", "1", "-v", "1000000",
            "-f", "0", "-w", "1", "-h", "0", "-y", "0"]


# ---- parsing ------------------------------------------------------------------------------------

_CHECKING = re.compile(r"^checking tensor: (\S+)")
_TENSOR = re.compile(r"^TENSOR (NOT )?OK, max diff: (\S+), with rel error: (\S+) \(calculated=\s*(\S+), "
                     r"ref=\s*(\S+)\), (\S+)% of maximum error")
_TENSOR_BARE = re.compile(r"^TENSOR (NOT )?OK$")
_LOGITS = re.compile(r"^(NOT )?OK \(LOGITS\)$")
_LOGIT_DIFF = re.compile(r"^logit max diff: (\S+)")
_LOSS = re.compile(r"^LOSS (OK|MISMATCH): (\S+) (\S+)")
_STEP = re.compile(r"^step (\d+): loss (\S+) \(took (\S+) ms\)$")
_CMP = re.compile(r"^(loss ok at step|LOSS MISMATCH AT STEP) (\d+): (\S+) (\S+)")
_NONDET = re.compile(r"^Nondeterminism! (.*)")
_OVERALL = re.compile(r"^overall okay: (\d+)")
_TRAIN_STEP = re.compile(r"^step\s+(\d+)/(\d+) \| loss (\S+) \(\S+\)\| norm (\S+) \(")
_VAL = re.compile(r"^val loss (\S+)")
_PRECISION = re.compile(r"^\|\s*precision\s*\|\s*(\S+)\s*\|")
# the lines carrying judged figures (builds compared, determinism)
CUDA_FIGURE_LINE = re.compile(r"^(checking tensor: |TENSOR (NOT )?OK|(NOT )?OK \(LOGITS\)|logit max diff: |"
                              r"LOSS |step \d+: loss |step\s+\d+/\d+ \| loss |loss ok at step|"
                              r"LOSS MISMATCH AT STEP|Nondeterminism!|overall okay: |val loss )")
_ERROR = re.compile(r"^\[(CUDA|cuBLAS|cuDNN|CUDNN) ERROR\]|^Error: |Assertion .* failed|"
                    r"^Precision is configured as|^Bad (magic|version)|^build_from_checkpoint\(\) does not")


class TestOutput:
    """What a test_gpt2cu / test_gpt2fp32cu run printed."""

    def __init__(self) -> None:
        self.logits_ok: bool | None = None
        self.logit_diff: float | None = None
        self.loss: tuple[float, bool] | None = None  # fp32cu only: (printed loss, llm.c's OK)
        self.grads: dict[str, tuple[float | None, bool]] = {}  # name -> (max diff, OK); "grads" in fp32cu
        self.steps: list[float] = []
        self.pretrained: list[bool] = []  # llm.c's comparison with pretrained GPT-2's losses
        self.resume_ok = 0  # resume-check lines that matched
        self.nondeterminism: list[str] = []
        self.overall: bool | None = None
        self.errors: list[str] = []


def _f(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return math.nan


def parse_test(text: str) -> TestOutput:
    out, label = TestOutput(), None
    for line in text.splitlines():
        line = line.strip()
        if _ERROR.search(line):
            out.errors.append(line)
        elif m := _CHECKING.match(line):
            label = _CU_LABELS.get(m.group(1), m.group(1))
        elif line == "grads":  # test_gpt2_fp32.cu checks all gradients as one tensor
            label = "grads"
        elif (m := _TENSOR.match(line)) and label:
            out.grads[label] = (_f(m.group(2)), m.group(1) is None)
            label = None
        elif (m := _TENSOR_BARE.match(line)) and label:
            out.grads[label] = (None, m.group(1) is None)
            label = None
        elif m := _LOGITS.match(line):
            out.logits_ok = m.group(1) is None
        elif m := _LOGIT_DIFF.match(line):
            out.logit_diff = _f(m.group(1))
        elif m := _LOSS.match(line):
            out.loss = (_f(m.group(2)), m.group(1) == "OK")
        elif m := _STEP.match(line):
            out.steps.append(_f(m.group(2)))
        elif m := _CMP.match(line):
            if len(out.pretrained) < len(out.steps):  # the first block: one per step
                out.pretrained.append(m.group(1) == "loss ok at step")
            else:  # test_gpt2.cu's resume check prints the same words
                out.resume_ok += 1
        elif m := _NONDET.match(line):
            out.nondeterminism.append(line)
        elif m := _OVERALL.match(line):
            out.overall = m.group(1) == "1"
    return out


class TrainOutput:
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.norms: list[float] = []
        self.vals: list[float] = []
        self.precision: str | None = None
        self.errors: list[str] = []


def parse_train(text: str) -> TrainOutput:
    out = TrainOutput()
    for line in text.splitlines():
        line = line.strip()
        if _ERROR.search(line):
            out.errors.append(line)
        elif m := _TRAIN_STEP.match(line):
            out.losses.append(_f(m.group(3)))
            out.norms.append(_f(m.group(4)))
        elif m := _VAL.match(line):
            out.vals.append(_f(m.group(1)))
        elif m := _PRECISION.match(line):
            out.precision = m.group(1)
    return out


# ---- judging ------------------------------------------------------------------------------------

def _error_check(name: str, run: RunOutput, errors: list[str], precision: str) -> Check | None:
    if not errors:
        return None
    hint = ""
    if any(e.startswith("Precision is configured") for e in errors) or any(
            "Failed to open file" in e and ".bin'" in e and "gpt2_124M" in e for e in errors):
        other = "fp32" if precision == "bf16" else "bf16"
        hint = (f" (a build for another precision than {precision}? the run directory holds only "
                f"{MODEL_FILE[precision]}; rebuild with PRECISION={PRECISION_NAME[precision]} or judge "
                f"it with --precision {other})")
    return Check(name, "runs", None, None, False, None,
                 f"exit {run.returncode}, error line '{errors[0]}'{hint}; output tail:\n{run.tail()}")


def _within(name: str, check: str, value: float | None, tol: float, says: str | None, detail: str = "",
            missing: str = "not printed") -> Check:
    if value is None:
        return Check(name, check, None, tol, False, says, missing)
    return Check(name, check, value, tol, value <= tol, says, detail)  # NaN fails: NaN <= tol is False


def judge_test_cuda(name: str, run: RunOutput, exp: "Expected", tol: CudaTolerances) -> list[Check]:
    """test_gpt2cu (its printed figures against `tol`, its own resume check as determinism)."""
    if run.error:
        return [runs_failure(name, run, "")]
    p = parse_test(run.output)
    if err := _error_check(name, run, p.errors, tol.precision):
        return [err]
    if p.logits_ok is None and not p.grads and not p.steps:
        return [runs_failure(name, run, "no test_gpt2cu output recognised")]
    says = None if p.logits_ok is None else _ok(p.logits_ok)
    checks = [_within(name, "logits", p.logit_diff, tol.logits, says, f"max |logit| {exp.logits_max:.3g}",
                      "no 'logit max diff' line")]
    first = p.steps[0] if p.steps else None
    checks.append(_within(name, "loss", None if first is None else abs(first - exp.cuda_test_losses[0]),
                          tol.loss, None, "" if first is None else
                          f"step 1 (initial weights) printed {first:.6f}, reference {exp.loss:.8f}"))
    for n in TENSOR_NAMES:
        v, ok = p.grads.get(n, (None, False))
        checks.append(_within(name, f"d{n}", v, tol.grads[n], _ok(ok) if n in p.grads else None,
                              f"max |grad| {exp.grad_max[n]:.3g}", "no line for this tensor"))
    checks += _steps(name, p.steps, exp.cuda_test_losses, tol, p.pretrained)
    if p.nondeterminism or p.resume_ok:
        checks.append(Check(name, "resume determinism", None, None, not p.nondeterminism, None,
                            p.nondeterminism[0] if p.nondeterminism else
                            f"test_gpt2cu's resume from its checkpoint matched {p.resume_ok} steps"))
    return checks


def judge_test_fp32cu(name: str, run: RunOutput, exp: "Expected", tol: CudaTolerances) -> list[Check]:
    """test_gpt2fp32cu: it prints no logits or gradient figure, only llm.c's 1e-2 verdicts; the
    loss and the 10 step losses (test_gpt2.c's AdamW) carry the judgement."""
    if run.error:
        return [runs_failure(name, run, "")]
    p = parse_test(run.output)
    if err := _error_check(name, run, p.errors, "fp32"):
        return [err]
    if p.logits_ok is None and p.loss is None and not p.steps:
        return [runs_failure(name, run, "no test_gpt2fp32cu output recognised")]
    no_fig = "test_gpt2fp32cu prints no figure: llm.c's own 1e-2 verdict only"
    says = None if p.logits_ok is None else _ok(p.logits_ok)
    checks = [Check(name, "logits", None, None, bool(p.logits_ok), says,
                    no_fig if p.logits_ok is not None else "no logits line")]
    d = None if p.loss is None else abs(p.loss[0] - exp.loss)
    checks.append(_within(name, "loss", d, tol.loss, None if p.loss is None else _ok(p.loss[1]),
                          "" if p.loss is None else f"printed {p.loss[0]:.6f}, reference {exp.loss:.8f}"))
    ok = p.grads.get("grads", (None, False))[1]
    checks.append(Check(name, "grads", None, None, ok, _ok(ok) if "grads" in p.grads else None,
                        no_fig if "grads" in p.grads else "no grads line"))
    return checks + _steps(name, p.steps, exp.test_losses, tol, p.pretrained)


def _steps(name: str, printed: list[float], reference: list[float], tol: CudaTolerances,
           pretrained: list[bool]) -> list[Check]:
    checks = step_checks(name, "step {} loss", printed, reference, lambda i, ref: tol.step_loss,
                         [_ok(x) for x in pretrained],
                         " (llm.c compares with pretrained GPT-2's losses, ignored here)")
    if c := drift_check(name, "step loss drift", printed, reference, tol.drift):
        checks.append(c)
    return checks


def judge_train_cuda(name: str, run: RunOutput, exp: "Expected", tol: CudaTolerances) -> list[Check]:
    if run.error:
        return [runs_failure(name, run, "")]
    p = parse_train(run.output)
    if err := _error_check(name, run, p.errors, tol.precision):
        return [err]
    want = PRECISION_NAME[tol.precision]
    if p.precision is not None and p.precision != want:
        return [Check(name, "runs", None, None, False, None,
                      f"built with PRECISION={p.precision}, judged as {want}: rerun with --precision "
                      f"{p.precision.lower()}; output tail:\n{run.tail()}")]
    if not p.losses:
        return [runs_failure(name, run, "no train_gpt2cu step lines recognised")]
    checks = step_checks(name, "train step {} loss", p.losses, exp.cuda_train_losses,
                         lambda i, ref: tol.step_loss)
    if c := drift_check(name, "train loss drift", p.losses, exp.cuda_train_losses, tol.drift):
        checks.append(c)
    return checks
