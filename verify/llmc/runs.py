"""Running one llm.c binary and the judged result of one figure: shared by the CPU (harness.py)
and CUDA (cuda.py) judges."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
from typing import Sequence

import numpy as np

TAIL_LINES = 20


@dataclasses.dataclass
class RunOutput:
    binary: str
    returncode: int | None  # None: killed at the timeout
    output: str
    error: str | None  # crash / timeout / cannot start

    def tail(self) -> str:
        return "\n".join(self.output.strip().splitlines()[-TAIL_LINES:])


def run_binary(binary: str | os.PathLike, run_dir: str | os.PathLike, *, timeout: float,
               args: Sequence[str] = ()) -> RunOutput:
    """Run `binary args` in run_dir (its own process group, killed whole at the timeout),
    stdout and stderr together."""
    binary = os.path.abspath(binary)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1)))
    try:
        proc = subprocess.Popen([binary, *args], cwd=run_dir, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
    except OSError as e:
        return RunOutput(binary, None, "", f"cannot start: {e.strerror or e}")
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        text = out.decode(errors="replace")
        return RunOutput(binary, None, text, f"timed out after {timeout:g} s (killed)")
    text = out.decode(errors="replace")
    if proc.returncode < 0:
        return RunOutput(binary, proc.returncode, text, f"killed by signal {-proc.returncode}")
    return RunOutput(binary, proc.returncode, text, None)


@dataclasses.dataclass
class Check:
    binary: str
    check: str  # "logits", "loss", "dqkvw", "step 3 loss", "runs", "determinism", ...
    value: float | None  # the printed figure (max diff or |diff|)
    tolerance: float | None
    passed: bool
    llmc_says: str | None  # what llm.c's own check printed (OK / NOT OK), if it has one
    detail: str = ""

    @property
    def used(self) -> float | None:
        if self.value is None or not self.tolerance:
            return None
        return 100.0 * self.value / self.tolerance

    def to_dict(self) -> dict:
        return {"binary": self.binary, "check": self.check, "value": _num(self.value),
                "tolerance": _num(self.tolerance), "used": _num(self.used), "passed": self.passed,
                "llmc_says": self.llmc_says, "detail": self.detail}


def _num(x):
    return None if x is None or not math.isfinite(x) else x


def _ok(flag: bool) -> str:
    return "OK" if flag else "NOT OK"




def drift(printed: list[float], reference: list[float]) -> float:
    """Least-squares slope of (printed - reference) over the steps, per step. Rounding makes
    the per-step errors scatter around a constant; an error in the update (weight decay,
    bias correction, a moment) adds to every step's parameters, so the gap grows linearly."""
    n = min(len(printed), len(reference))
    e = np.asarray(printed[:n], dtype=np.float64) - np.asarray(reference[:n], dtype=np.float64)
    i = np.arange(n) - (n - 1) / 2.0
    return float((i * (e - e.mean())).sum() / (i * i).sum())




def step_checks(name: str, label: str, printed: list[float], reference: list[float], tolerance,
                llmc_says: list[str | None] | None = None, note: str = "") -> list[Check]:
    """One check per reference step: |printed - reference| against tolerance(step, reference)."""
    checks = []
    for i, ref in enumerate(reference):
        if i >= len(printed):
            checks.append(Check(name, label.format(i), None, None, False, None, "step not printed"))
            continue
        d, tol = abs(printed[i] - ref), tolerance(i, ref)
        says = llmc_says[i] if llmc_says and i < len(llmc_says) else None
        checks.append(Check(name, label.format(i), d, tol, d <= tol, says,
                            f"printed {printed[i]:.6f}, reference {ref:.8f}{note}"))
    return checks


def drift_check(name: str, check: str, printed: list[float], reference: list[float],
                tolerance) -> Check | None:
    """The slope of printed - reference against tolerance(n); None under 3 steps (a slope needs
    3 points; missing steps fail on their own)."""
    n = min(len(printed), len(reference))
    if n < 3:
        return None
    s = drift(printed, reference)
    tol = tolerance(n)
    return Check(name, check, abs(s), tol, abs(s) <= tol, None,
                 f"printed - reference grows by {s:+.3g} per step over {n} steps")


def runs_failure(name: str, run: RunOutput, what: str) -> Check:
    """The one failed `runs` row of a binary that crashed, hung or printed nothing judged."""
    if run.error:
        return Check(name, "runs", None, None, False, None, f"{run.error}; output tail:\n{run.tail()}")
    return Check(name, "runs", None, None, False, None,
                 f"exit {run.returncode}, {what}; tail:\n{run.tail()}")


def name_the_cause(printed: list[float], reference: list[float], variants: dict[str, list[float]],
                   tolerance, what: dict[str, str] | None = None) -> str | None:
    """Which known optimizer mistake the printed step losses follow, if any: each variant's
    float64 trajectory (the same run with that mistake, numerics.adamw.bug_variants) against the
    printed losses, in units of the step tolerance. Named when it lies within the tolerance at
    every step and at most a third of the reference's worst miss; None when nothing is off."""
    n = min(len(printed), len(reference))
    if n == 0 or not variants:
        return None

    def miss(traj: list[float]) -> float:
        return max(abs(printed[i] - traj[i]) / tolerance(i, reference[i]) for i in range(min(n, len(traj))))

    ref_miss = miss(reference)
    fits = sorted((miss(t), k) for k, t in variants.items())
    best, name = fits[0]
    listing = ", ".join(f"{k} {m:.2g}x" for m, k in fits)
    if best <= 1.0 and best <= ref_miss / 3.0:
        label = f"{name} ({what[name]})" if what and name in what else name
        return (f"the step losses follow the optimizer variant {label}: within {best:.2g}x the step "
                f"tolerance where the reference misses by {ref_miss:.2g}x (variants: {listing})")
    return f"no known optimizer mistake fits better than the reference ({ref_miss:.2g}x; variants: {listing})"
