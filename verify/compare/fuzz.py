"""Fuzz an initializer: Hypothesis draws configs and seeds, the candidate initializes each, the
comparator grades it; a failure is shrunk to the smallest failing config.

The configs come from verify.strategies.gpt2_configs, which reaches the corners that break
implementations (tensors under 16 values, odd sizes, C = 1, NH = C, L = 1, maxT = 1, V a multiple
of 128), and the seeds from verify.strategies.seeds (shrinking towards 0).

JSON (schema "gpt2-verify/fuzz/1"):

    schema, tool, version
    verdict        "pass" | "fail"
    candidate      how the candidate was given (command template, adapter or callable)
    require        the level every example must reach; null: each example's file decides
                   (verify.compare.report.default_require: close for an llm.c checkpoint,
                   distribution for anything else), "resolved" says what it decided
    resolved       the level the examples were graded at (the first example's, when not given)
    min_values     the fewest values a law check runs on: in distribution mode no example (so
                   no shrunk failure) has a random tensor with fewer (it would be untestable)
    profile, max_params
    scheme         the init scheme every example is graded against, with its overrides (its label,
                   e.g. "xavier-uniform" or "gpt2[wpe.std=0.01]")
    hypothesis_seed  the --hypothesis-seed that repeats this run, or null (fresh examples)
    examples_run   how many times the candidate ran in all (drawn examples + shrinking)
    shrink_runs    of those, how many were spent shrinking a failure (0 on pass)
    failure        null, or the minimal failing example:
                   {"config": {"layers", "channels", "heads", "vocab", "padded_vocab",
                               "max_seq_len", "descriptor"},
                    "seed", "command" (runs the candidate for that config),
                    "error" (null, or why the candidate itself failed: crash, timeout, no output),
                    "output_tail", "report" (the compare report, gpt2-verify/compare/1, or null)}
    note           null, or why the failure is doubtful (it did not reproduce every time)
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable

import hypothesis
from gpt2_verify.reference.config import GPTConfig, parameter_table
from gpt2_verify.reference.schemes import DEFAULT_SCHEME, SchemeInit, resolve
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis.errors import Flaky
from hypothesis.strategies import SearchStrategy

from ..records import FuzzRecord
from ..strategies import gpt2_configs, seeds
from .candidate import Candidate, as_candidate, run_candidate
from .compare import compare
from .grade import MIN_VALUES
from .regions import law_group_sizes
from .report import check_require

SCHEMA = FuzzRecord.SCHEMA
_PROBE = GPTConfig(2, 16, 2, vocab=64, max_seq_len=8)  # resolves a scheme once, before any example


class SchemeError(ValueError):
    """A bad scheme name or override, found before the candidate runs."""


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
    shrink_runs: int = 0
    hypothesis_seed: int | None = None
    scheme: str = DEFAULT_SCHEME  # the scheme's label (with overrides)
    resolved: str | None = None  # the level examples were graded at
    min_values: int = MIN_VALUES
    untested: int = 0  # runs whose config turned out too small to test (distribution mode), not graded

    @property
    def verdict(self) -> str:
        return "fail" if self.failure else "pass"

    def to_record(self) -> FuzzRecord:
        """The typed JSON record (verify.records.FuzzRecord), validated."""
        return FuzzRecord.make(verdict=self.verdict, candidate=self.candidate, require=self.require,
                               profile=self.profile, examples_run=self.examples_run,
                               shrink_runs=self.shrink_runs, max_params=self.max_params,
                               hypothesis_seed=self.hypothesis_seed, scheme=self.scheme,
                               failure=self.failure.to_dict() if self.failure else None, note=self.note,
                               resolved=self.resolved, min_values=self.min_values, untested=self.untested)

    def to_dict(self) -> dict:
        return self.to_record().to_dict()

    def render(self) -> str:
        if not self.failure:
            level = self.resolved or self.require or "its file's default level"
            skipped = (f" ({self.untested} more run too small to test the laws, not graded)"
                       if self.untested else "")
            return (f"fuzz: pass: {self.examples_run - self.untested} examples, every one at least {level} "
                    f"({self.candidate}, profile {self.profile or 'llmc'}, scheme {self.scheme}){skipped}")
        f = self.failure
        found = self.examples_run - self.shrink_runs
        lines = [f"fuzz: FAIL at example {found}, shrunk in {self.shrink_runs} more runs ({self.candidate}, "
                 f"scheme {self.scheme})",
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


def fuzz(candidate: Candidate | Callable | str, *, examples: int = 50, max_params: int = 200_000,
         require: str | None = None, profile: str | None = None, timeout: float | None = None,
         seed_strategy: SearchStrategy[int] | None = None, config_kwargs: dict | None = None,
         derandomize: bool = False, hypothesis_seed: int | None = None,
         progress: bool | None = None, scheme: str = DEFAULT_SCHEME, overrides=(),
         min_values: int = MIN_VALUES) -> FuzzResult:
    """Run the property "candidate(config, seed) grades at least `require`" over Hypothesis-drawn
    configs and seeds; return the minimal failing example, if any.

    candidate: a Candidate, a callable fn(config, seed) -> {name: array} (run in this process,
    no timeout), a command template with {out} or "module:function" (both run in a child process,
    killed after `timeout` seconds, 60 by default). max_params bounds the drawn models;
    config_kwargs go to verify.strategies.gpt2_configs; seed_strategy replaces
    verify.strategies.seeds(); derandomize=True or hypothesis_seed=N makes the run repeatable
    (the same examples every time; N picks which). progress: a line per
    example on stderr (default: when stderr is a terminal). scheme, overrides: the init scheme
    the candidate implements (reference.schemes.SCHEMES, e.g. "xavier-uniform") and `--set`
    overrides; each example is graded with compare(..., scheme=, overrides=). A bad scheme or
    override raises SchemeError before the candidate runs.

    require None: each example's file picks its level (close for an llm.c checkpoint or with
    `profile` given, else distribution). In distribution mode, configs with a random tensor of
    fewer than `min_values` values are not run (Hypothesis rejects them), so a failure never
    shrinks into a config whose law cannot be tested; the first example decides the mode when
    `require` is None.
    """
    if require is not None:
        check_require(require)
    if not isinstance(min_values, int) or min_values < 3:
        raise ValueError(f"min_values={min_values!r}: give an integer >= 3")
    overrides = tuple(overrides)
    try:
        label = resolve(scheme, _PROBE, profile=profile or "llmc", overrides=overrides).label
    except ValueError as e:
        raise SchemeError(str(e)) from None
    config_kwargs = dict(config_kwargs or {})
    if require == "distribution":  # draw mostly testable configs: every normal_ call that large
        config_kwargs.setdefault("min_draw", min_values)
    candidate = as_candidate(candidate, timeout=timeout)
    show = sys.stderr.isatty() if progress is None else progress
    state = {"runs": 0, "found_at": 0, "last": None, "mode": require, "untested": 0}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
              print_blob=False, report_multiple_bugs=False,
              phases=(Phase.explicit, Phase.generate, Phase.shrink),
              suppress_health_check=list(HealthCheck))
    @given(cfg=gpt2_configs(max_params=max_params, **config_kwargs),
           seed=seeds() if seed_strategy is None else seed_strategy)
    def prop(cfg: GPTConfig, seed: int) -> None:
        testable = _testable(resolve(scheme, cfg, profile=profile or "llmc", overrides=overrides), min_values)
        if state["mode"] == "distribution":
            assume(testable)
        state["runs"] += 1
        res = run_candidate(candidate, cfg, seed)
        if res.error:
            failure = Failure(cfg, seed, res.command, res.error, res.output_tail, None)
        else:
            report = compare(res.model, against=cfg, seed=seed, profile=profile, require=require,
                             scheme=scheme, overrides=overrides, min_values=min_values,
                             progress=False)  # one progress line per example instead
            state["mode"] = state["mode"] or report.require
            if report.require == "distribution" and not testable:
                state["untested"] += 1
                assume(False)
            if report.passed():
                _say(show, state["runs"], cfg, seed, report.verdict)
                return
            failure = Failure(cfg, seed, res.command, None, res.output_tail, report)
        # Hypothesis re-raises the minimal failure last, so the last failure recorded is the minimal one
        state["last"] = failure
        state["found_at"] = state["found_at"] or state["runs"]
        _say(show, state["runs"], cfg, seed, "FAIL")
        raise AssertionError(failure.error or failure.report.summary())

    if hypothesis_seed is not None:
        prop = hypothesis.seed(hypothesis_seed)(prop)
    note, failed = None, False
    try:
        prop()  # raises the minimal failing example's AssertionError after shrinking
    except AssertionError:
        failed = True
    except Flaky as e:
        failed = True
        note = f"the failure did not reproduce every time (flaky candidate): {str(e).splitlines()[0]}"
    finally:
        if show and state["runs"]:
            print(file=sys.stderr, flush=True)  # end the progress line
    shrink_runs = state["runs"] - state["found_at"] if failed else 0
    return FuzzResult(candidate.describe(), require, profile, max_params, state["runs"],
                      state["last"] if failed else None, note, shrink_runs, hypothesis_seed, label,
                      state["mode"], min_values, state["untested"])


def _testable(init: SchemeInit, min_values: int) -> bool:
    """Does every random law of every tensor get at least min_values values under this config?"""
    return all(n >= min_values for spec in parameter_table(init.cfg)
               for n in law_group_sizes(init, spec).values())


def _say(show: bool, n: int, cfg: GPTConfig, seed: int, verdict: str) -> None:
    if show:
        print(f"\rfuzz #{n}: {cfg.describe()} seed {seed}: {verdict}".ljust(100), end="", file=sys.stderr,
              flush=True)
