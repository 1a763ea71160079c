"""Candidates: anyone's GPT-2 initializer, run for one config and seed.

A candidate is either

* a command template for any language, with placeholders {L} {C} {NH} {V} {Vp} {T} {seed}
  {out}: "./my_init --layers {L} --channels {C} --heads {NH} --vocab {V} --max-seq-len {T}
  --seed {seed} -o {out}". It is split like a shell would (shlex) but run without a shell, in a
  fresh temporary directory, in its own process group (killed whole on timeout), and must write
  any supported weights file (llm.c checkpoint, .pt, .safetensors, .npz) at {out} (a suffix
  written after {out} in the template is kept, e.g. {out}.safetensors);
* a Python adapter "module:function" or "path/to/file.py:function", called as
  function(config, seed) -> mapping of names (llm.c's or state-dict keys) to numpy arrays or
  torch tensors; it runs in a child Python process too, so a crash or a hang is contained;
* a Python callable object (from the pytest helper): called in this process (no timeout).

A candidate that crashes, hangs past the timeout or writes nothing gives a CandidateResult with
`error` set and the tail of its output, never an exception.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import string
import subprocess
import sys
import tempfile
import traceback
from typing import Any, Callable

from gpt2_verify.reference.config import GPTConfig

from ..errors import InputError
from ..formats.model import ModelFile, model_from_mapping, open_model

PLACEHOLDERS = ("L", "C", "NH", "V", "Vp", "T", "seed", "out")
TAIL_LINES = 20

ADAPTER_RUNNER = r"""
import importlib, importlib.util, os, sys
import numpy as np
target, fn_name = sys.argv[1].rsplit(":", 1)
if target.endswith(".py") or os.sep in target:
    spec = importlib.util.spec_from_file_location("gpt2v_candidate", target)
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
else:
    module = importlib.import_module(target)
from gpt2_verify.reference.config import GPTConfig
L, C, NH, V, Vp, T, seed = (int(a) for a in sys.argv[2:9])
out = getattr(module, fn_name)(GPTConfig(L, C, NH, V, Vp, T), seed)
def arr(v):
    if hasattr(v, "detach"):
        import torch
        v = v.detach().cpu()
        return (v.float() if v.dtype == torch.bfloat16 else v).numpy()
    return np.asarray(v)
np.savez(sys.argv[9], **{k: arr(v) for k, v in dict(out).items()})
"""


@dataclasses.dataclass
class CandidateResult:
    model: ModelFile | None
    error: str | None  # one line: what went wrong
    command: str  # how to run this candidate for this config again
    output_tail: str = ""  # last lines of its stdout + stderr (merged, in the order written)

    @property
    def stderr_tail(self) -> str:
        """The candidate's last output lines (stderr and stdout are captured as one stream)."""
        return self.output_tail


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-TAIL_LINES:])


def _values(cfg: GPTConfig, seed: int, out: str) -> dict[str, Any]:
    return {"L": cfg.layers, "C": cfg.channels, "NH": cfg.heads, "V": cfg.vocab, "Vp": cfg.padded_vocab,
            "T": cfg.max_seq_len, "seed": seed, "out": out}


def check_template(template: str) -> None:
    """InputError unless the template is usable: known placeholders only, {out} present."""
    try:
        fields = [f for _lit, f, _spec, _conv in string.Formatter().parse(template) if f is not None]
        argv = shlex.split(template)
    except ValueError as e:
        raise InputError(None, f"--cmd: cannot parse the template: {e}") from None
    unknown = sorted(set(fields) - set(PLACEHOLDERS))
    if unknown:
        raise InputError(None, f"--cmd: unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
                               f"use {' '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    if "out" not in fields:
        raise InputError(None, "--cmd: the template must contain {out}, the path the candidate writes to")
    if not argv:
        raise InputError(None, "--cmd: empty command")


class Candidate:
    """One of: template (str with placeholders), adapter ("module:function"), or a callable."""

    def __init__(self, *, cmd: str | None = None, adapter: str | None = None,
                 function: Callable | None = None, timeout: float = 60.0):
        if sum(x is not None for x in (cmd, adapter, function)) != 1:
            raise ValueError("give exactly one of cmd=, adapter=, function=")
        if cmd is not None:
            check_template(cmd)
        if adapter is not None and ":" not in adapter:
            raise InputError(None, f"--adapter {adapter}: use module:function or path/to/file.py:function")
        self.cmd, self.adapter, self.function, self.timeout = cmd, adapter, function, timeout

    def describe(self) -> str:
        if self.cmd:
            return f"command {self.cmd!r}"
        if self.adapter:
            return f"adapter {self.adapter}"
        return f"callable {getattr(self.function, '__qualname__', self.function)!r}"

    def argv(self, cfg: GPTConfig, seed: int, out: str) -> list[str]:
        values = _values(cfg, seed, out)
        if self.cmd:
            return [arg.format(**values) for arg in shlex.split(self.cmd)]
        return [sys.executable, "-c", ADAPTER_RUNNER, self.adapter,
                *(str(values[k]) for k in ("L", "C", "NH", "V", "Vp", "T", "seed")), out + ".npz"]

    def reproduce(self, cfg: GPTConfig, seed: int, out: str = "candidate-out") -> str:
        """A command line (template candidates) or Python call that runs it for (cfg, seed)."""
        config = (f"GPTConfig({cfg.layers}, {cfg.channels}, {cfg.heads}, {cfg.vocab}, {cfg.padded_vocab}, "
                  f"{cfg.max_seq_len})")
        if self.function is not None:
            fn = self.function
            return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}({config}, {seed})"
        if self.adapter:
            module, fn = self.adapter.rsplit(":", 1)
            if module.endswith(".py") or os.sep in module:
                load = (f"import runpy; m = runpy.run_path({module!r}); "
                        f"print(m[{fn!r}]({config}, {seed}))")
            else:
                load = f"import {module} as m; print(m.{fn}({config}, {seed}))"
            return shlex.join(["python", "-c", f"from reference.config import GPTConfig; {load}"])
        return shlex.join(self.argv(cfg, seed, out))

    def run(self, cfg: GPTConfig, seed: int, workdir: str) -> CandidateResult:
        if self.function is not None:
            return self._call(cfg, seed)
        out = os.path.join(workdir, "out")
        argv = self.argv(cfg, seed, out)
        command = self.reproduce(cfg, seed)
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        # the adapter's module is imported from where gpt2-verify was started, like `python -m`
        paths = [os.getcwd(), root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        try:
            proc = subprocess.Popen(argv, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env if self.adapter else None)
        except OSError as e:
            return CandidateResult(None, f"cannot start {argv[0]}: {e.strerror or e}", command)
        try:
            text, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            text, _ = proc.communicate()
            return CandidateResult(None, f"timed out after {self.timeout:g} s (killed)", command,
                                   _tail(text.decode(errors="replace")))
        tail = _tail(text.decode(errors="replace"))
        if proc.returncode != 0:
            how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exited with status {proc.returncode}")
            return CandidateResult(None, f"crashed: {how}", command, tail)
        written = sorted(f for f in os.listdir(workdir) if f == "out" or f.startswith("out."))
        if not written:
            return CandidateResult(None, "wrote nothing at {out}", command, tail)
        try:
            model = open_model(os.path.join(workdir, written[0]), config=cfg)
            return CandidateResult(model, None, command, tail)
        except InputError as e:
            return CandidateResult(None, f"wrote an unreadable file: {e.problem}", command, tail)

    def _call(self, cfg: GPTConfig, seed: int) -> CandidateResult:
        command = self.reproduce(cfg, seed)
        try:
            out = self.function(cfg, seed)
        except Exception as e:  # noqa: BLE001 - the candidate's own failure, reported
            return CandidateResult(None, f"raised {type(e).__name__}: {e}", command,
                                   _tail(traceback.format_exc()))
        try:
            return CandidateResult(model_from_mapping(dict(out), source=command, config=cfg), None, command)
        except (InputError, TypeError, ValueError) as e:
            return CandidateResult(None, f"returned something unreadable: {e}", command)


def as_candidate(candidate, *, timeout: float | None = None) -> Candidate:
    """A Candidate from what a user gives: a Candidate, a callable fn(config, seed), a command
    template (a string with {out}) or an adapter string "module:function"."""
    if isinstance(candidate, Candidate):
        if timeout is not None and timeout != candidate.timeout:
            candidate = Candidate(cmd=candidate.cmd, adapter=candidate.adapter, function=candidate.function,
                                  timeout=timeout)
        return candidate
    t = 60.0 if timeout is None else timeout
    if callable(candidate):
        return Candidate(function=candidate, timeout=t)
    if isinstance(candidate, str):
        if "{" in candidate or any(c.isspace() for c in candidate.strip()):
            return Candidate(cmd=candidate, timeout=t)
        return Candidate(adapter=candidate, timeout=t)
    raise TypeError(f"a candidate is a callable fn(config, seed), a command template with {{out}} or "
                    f"'module:function', not {type(candidate).__name__}")


def run_candidate(candidate, cfg: GPTConfig, seed: int, *, timeout: float | None = None) -> CandidateResult:
    """Run the candidate (anything as_candidate accepts) for (cfg, seed); never raises for the
    candidate's own failures (crash, timeout, no output, unreadable output): see .error."""
    candidate = as_candidate(candidate, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="gpt2v-candidate-") as d:
        res = candidate.run(cfg, seed, d)
        if res.model is None or candidate.function is not None:
            return res
        # the temporary directory goes away: name the output as the reproducing command does
        label = (f"output of {candidate.adapter}" if candidate.adapter
                 else "candidate-out" + os.path.basename(res.model.path)[len("out"):])
        if res.model.format != "llmc":  # its arrays are in memory (npz, torch, safetensors loaded)
            return dataclasses.replace(res, model=dataclasses.replace(res.model, path=label))
        import numpy as np  # an llm.c checkpoint is read lazily: keep a copy

        with res.model as m:
            tensors = {s.name: np.array(m.tensor(s.name)) for s in cfg.tensors()}
            stored = {s.name: m.dtype for s in cfg.tensors()}
        model = model_from_mapping(tensors, source=label, config=cfg, fmt="llmc", stored=stored)
        return dataclasses.replace(res, model=model)
