"""Fuzz an initializer: Hypothesis draws configs and seeds, the candidate initializes each, the
comparator grades it; a failure is shrunk to the smallest failing config.

The configs come from verify.strategies.gpt2_configs, which reaches the corners that break
implementations (tensors under 16 values, odd sizes, C = 1, NH = C, L = 1, maxT = 1, V a multiple
of 128), and the seeds from verify.strategies.seeds (shrinking towards 0).

JSON (schema "gpt2-verify/fuzz/1"):

    schema, tool, version
    verdict        "pass" | "fail"
    candidate      how the candidate was given (command template, adapter or callable)
    require, profile, examples_run, max_params
    failure        null, or the minimal failing example:
                   {"config": {"layers", "channels", "heads", "vocab", "padded_vocab",
                               "max_seq_len", "descriptor"},
                    "seed", "command" (runs the candidate for that config),
                    "error" (null, or why the candidate itself failed: crash, timeout, no output),
                    "output_tail", "report" (the compare report, gpt2-verify/compare/1, or null)}
"""

from __future__ import annotations

import dataclasses
import sys

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Flaky

from reference.config import GPTConfig

from .. import __version__
from ..strategies import gpt2_configs, seeds
from .candidate import Candidate, run_candidate
from .compare import compare
from .report import check_require

SCHEMA = "gpt2-verify/fuzz/1"


@dataclasses.dataclass
class Failure:
    config: GPTConfig
    seed: int
    command: str
    error: str | None
    output_tail: str
    report: object | None  # verify.compare.Report

    def to_dict(self) -> dict:
        return {"config": self.config.as_dict(), "seed": self.seed, "command": self.command,
                "error": self.error, "output_tail": self.output_tail,
                "report": self.report.to_dict() if self.report is not None else None}


@dataclasses.dataclass
class FuzzResult:
    candidate: str
    require: str
    profile: str
    max_params: int
    examples_run: int
    failure: Failure | None
    note: str | None = None

    @property
    def verdict(self) -> str:
        return "fail" if self.failure else "pass"

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "tool": "gpt2-verify", "version": __version__, "verdict": self.verdict,
                "candidate": self.candidate, "require": self.require, "profile": self.profile,
                "examples_run": self.examples_run, "max_params": self.max_params,
                "failure": self.failure.to_dict() if self.failure else None, "note": self.note}

    def render(self) -> str:
        if not self.failure:
            return (f"fuzz: pass: {self.examples_run} examples, every one at least {self.require} "
                    f"({self.candidate}, profile {self.profile})")
        f = self.failure
        lines = [f"fuzz: FAIL after {self.examples_run} examples ({self.candidate})",
                 f"smallest failing config: {f.config.describe()}, seed {f.seed}",
                 f"reproduce: {f.command}"]
        if self.note:
            lines.append(f"note: {self.note}")
        if f.error:
            lines.append(f"candidate failed: {f.error}")
            if f.output_tail:
                lines += ["its output (last lines):"] + ["  " + x for x in f.output_tail.splitlines()]
        if f.report is not None:
            lines += ["", f.report.render()]
        lines.append("")
        lines.append("verdict: fail: " + (f.error or f.report.summary()))
        return "\n".join(lines)


def fuzz(candidate: Candidate, *, examples: int = 50, max_params: int = 200_000, require: str = "close",
         profile: str = "llmc", config_kwargs: dict | None = None, derandomize: bool = False,
         progress: bool | None = None) -> FuzzResult:
    """Run the property "candidate(config, seed) grades at least `require`" over Hypothesis-drawn
    configs and seeds; return the minimal failing example, if any."""
    check_require(require)
    show = sys.stderr.isatty() if progress is None else progress
    state = {"runs": 0, "last": None}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
              print_blob=False, report_multiple_bugs=False,
              phases=(Phase.explicit, Phase.generate, Phase.shrink),
              suppress_health_check=list(HealthCheck))
    @given(cfg=gpt2_configs(max_params=max_params, **(config_kwargs or {})), seed=seeds())
    def prop(cfg: GPTConfig, seed: int) -> None:
        state["runs"] += 1
        res = run_candidate(candidate, cfg, seed)
        if res.error:
            state["last"] = Failure(cfg, seed, res.command, res.error, res.output_tail, None)
        else:
            report = compare(res.model, against=cfg, seed=seed, profile=profile, require=require)
            if report.passed():
                _say(show, state["runs"], cfg, seed, report.verdict)
                return
            state["last"] = Failure(cfg, seed, res.command, None, res.output_tail, report)
        _say(show, state["runs"], cfg, seed, "FAIL")
        raise AssertionError(state["last"].error or state["last"].report.summary())

    note, failed = None, False
    try:
        prop()  # raises the minimal failing example's AssertionError after shrinking
    except AssertionError:
        failed = True
    except Flaky as e:
        failed = True
        note = f"the failure did not reproduce every time (flaky candidate): {str(e).splitlines()[0]}"
    return FuzzResult(candidate.describe(), require, profile, max_params, state["runs"],
                      state["last"] if failed else None, note)


def _say(show: bool, n: int, cfg: GPTConfig, seed: int, verdict: str) -> None:
    if show:
        print(f"\rfuzz #{n}: {cfg.describe()} seed {seed}: {verdict}".ljust(100), end="", file=sys.stderr,
              flush=True)
