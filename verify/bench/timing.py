"""Timing training steps: the reference model (torch) and llm.c's train_gpt2 (a child process).

What is timed. One training step of TorchModel on one fixed batch of random tokens
(`random_tokens`, numpy PCG64 from the seed), split into three intervals, each closed by
torch.cuda.synchronize() on CUDA: forward (`model.loss(x, y)`), backward (`loss.backward()`)
and the optimizer (`model.step(opt)`: llm.c's AdamW, train_gpt2.c's settings on the CPU,
test_gpt2.cu's on CUDA). step_s is the whole step measured as one interval (so its median is
not the sum of the three medians). `warmup` steps run first and are discarded, then `repeats`
steps are timed; each interval reports median, min, max and the quartiles q1, q3 (numpy
percentile, linear interpolation). CPU: float32 on `threads` torch threads. CUDA (only when
torch.cuda.is_available()): float32 master weights with the forward under
torch.autocast(bfloat16), as llm.c's CUDA build trains in bf16; optionally torch.compile of the
loss function (the compile happens in the warm-up steps, which must be >= 1 then).

llm.c rows (`bench_llmc`): train_gpt2.c (CPU) has no flags: B = 4, T = 64, 41 steps, each line
"step N: train loss X (took Y ms)" timing data loading, forward, zero_grad, backward and the
update. verify.llmc.harness.prepare writes the model (the reference init), token shards and a
tokenizer into a temporary directory; the binary runs there on OMP_NUM_THREADS = threads, line
buffered (stdbuf -oL) so that at the time limit the steps printed so far still count. The first
`warmup` step times are dropped and the rest summarised; fwd_s, bwd_s and opt_s are null (llm.c
prints only whole steps). train_gpt2cu (CUDA) takes flags and prints another step line: not
supported yet.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Callable, Sequence

import numpy as np
from gpt2_verify.reference.config import GPTConfig

from ..errors import InputError
from ..progress import Progress
from .device import device_facts, maxrss_bytes, reset_peak_rss, rss_bytes, vm_hwm
from .flops import PeakLookup, lookup_peak
from .record import make_row

LLMC_B, LLMC_T = 4, 64  # train_gpt2.c main(): int B = 4; int T = 64


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """median, min, max and quartiles (numpy linear interpolation) of the timed intervals."""
    a = np.asarray(seconds, dtype=np.float64)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"need at least one finite timing, got {list(seconds)}")
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "min": float(a.min()), "max": float(a.max()), "q1": float(q1),
            "q3": float(q3)}


class StepProgress(Progress):
    """verify.progress.Progress showing 'label i/n' (it formats value counts in millions)."""

    def update(self, n: int = 1, *, label: str | None = None) -> None:
        self.done += int(n)
        if label:
            self.label = label
        if self.enabled:
            self.stream.write(f"\r\x1b[K{self.label} {min(self.done, self.total)}/{self.total}")
            self.stream.flush()


# ---- the reference model ------------------------------------------------------------------------

_TORCH_CPU_WARM = False


def _warm_torch_cpu() -> None:
    """One tiny training step, once per process, so that torch's one-time CPU allocations
    (thread pools, kernel caches) land before the first row's memory baseline."""
    global _TORCH_CPU_WARM
    if _TORCH_CPU_WARM:
        return
    from gpt2_verify.reference.init import init_tensors

    from ..numerics.adamw import ADAMW
    from ..numerics.model import TorchModel, random_tokens

    cfg = GPTConfig(1, 8, 2, vocab=64, max_seq_len=8)
    model = TorchModel(cfg, init_tensors(cfg, 0, "llmc"), dtype="float32")
    x, y = random_tokens(cfg, batch=1, seq=8, seed=0)
    model.loss(x, y).backward()
    model.step(ADAMW["train_gpt2.c"])
    _TORCH_CPU_WARM = True


def bench_reference(cfg: GPTConfig, *, batch: int, seq: int, device: str = "cpu", compile: bool = False,
                    warmup: int = 2, repeats: int = 5, seed: int = 42, profile: str = "llmc",
                    threads: int | None = None, peak: PeakLookup | None = None,
                    progress: StepProgress | None = None, params: dict | None = None) -> dict:
    """Time `warmup` + `repeats` training steps of TorchModel on `device` ("cpu": float32;
    "cuda": bf16 autocast) and return one row. params: the 16 tensors (default: the reference
    init, init_tensors(cfg, seed, profile)). peak: overrides the table lookup."""
    import torch
    from gpt2_verify.reference.init import init_tensors

    from ..numerics.adamw import ADAMW
    from ..numerics.model import TorchModel, random_tokens

    if batch < 1 or seq < 1:
        raise ValueError(f"batch and seq must be >= 1, got batch={batch} seq={seq}")
    if seq > cfg.max_seq_len:
        raise ValueError(f"seq={seq} > max_seq_len={cfg.max_seq_len} of {cfg.describe()}; use a smaller seq")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats} warmup={warmup}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch.cuda.is_available() is False")
    if compile and warmup < 1:
        raise ValueError("compile=True needs warmup >= 1 (torch.compile compiles in the first step)")
    cuda = device == "cuda"
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        if not cuda:
            _warm_torch_cpu()  # also loads the init's Box-Muller tables, which stay resident
        reset = False if cuda else reset_peak_rss()
        rss0, maxrss0 = (None, None) if cuda else (rss_bytes(), maxrss_bytes())
        init = params if params is not None else init_tensors(cfg, seed, profile)
        model = TorchModel(cfg, init, dtype="float32", device=device)
        del init
        x, y = random_tokens(cfg, batch=batch, seq=seq, seed=seed)
        xt = torch.from_numpy(x).long().to(device)
        yt = torch.from_numpy(y).long().to(device)
        autocast = "bfloat16" if cuda else None
        opt = ADAMW["test_gpt2.cu" if cuda else "train_gpt2.c"]

        def loss_fn(a, b):
            return model.loss(a, b, autocast=autocast)

        fn: Callable = torch.compile(loss_fn) if compile else loss_fn
        times: dict[str, list[float]] = {"fwd": [], "bwd": [], "opt": [], "step": []}
        for i in range(warmup + repeats):
            sync()
            t0 = time.perf_counter()
            loss = fn(xt, yt)
            sync()
            t1 = time.perf_counter()
            loss.backward()
            sync()
            t2 = time.perf_counter()
            model.step(opt)
            sync()
            t3 = time.perf_counter()
            if not math.isfinite(float(loss.detach())):
                raise RuntimeError(f"non-finite loss at step {i} of {cfg.describe()}: the benchmark "
                                   f"would time NaN arithmetic")
            if i >= warmup:
                for k, v in (("fwd", t1 - t0), ("bwd", t2 - t1), ("opt", t3 - t2), ("step", t3 - t0)):
                    times[k].append(v)
            if progress is not None:
                progress.update(1)
        if cuda:
            peak_mem, mem_kind = int(torch.cuda.max_memory_allocated()), "cuda max_memory_allocated"
        else:
            maxrss1 = maxrss_bytes()
            if rss0 is None:
                peak_mem = None
            elif reset:
                peak_mem = max(0, maxrss1 - rss0)
            else:  # the process-wide peak counts only if this run raised it
                peak_mem = maxrss1 - rss0 if maxrss1 > maxrss0 else None
            mem_kind = "cpu peak RSS growth (getrusage ru_maxrss - RSS before the model)"
        threads_used = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    facts = device_facts(device, threads=threads_used)
    if peak is None:
        peak = lookup_peak(facts["name"], dtype="bf16", kind=device)
    return make_row(device=facts, impl="reference", cfg=cfg, batch=batch, seq=seq,
                dtype="bf16-autocast" if cuda else "float32", compile=compile,
                fwd=summarize(times["fwd"]), bwd=summarize(times["bwd"]), opt=summarize(times["opt"]),
                step=summarize(times["step"]), peak=peak, peak_memory=peak_mem,
                extra={"optimizer": opt.name, "warmup": warmup, "repeats": repeats, "seed": seed,
                       "memory_measure": mem_kind})


# ---- llm.c's train_gpt2 -------------------------------------------------------------------------

@dataclasses.dataclass
class ChildRun:
    returncode: int | None  # None: stopped at the time limit
    output: str
    maxrss_bytes: int | None  # the child's peak RSS (VmHWM polled every 20 ms), None off Linux


def run_child(argv: list[str], *, cwd: str, timeout: float, env: dict) -> ChildRun:
    """Run argv in its own process group; at `timeout` kill the group and keep what it printed.
    Polls the child's peak RSS (VmHWM) while it runs."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    timed_out = threading.Event()

    def _kill():
        timed_out.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    hwm = [None]
    done = threading.Event()

    def _poll():  # the child's own peak RSS: VmHWM of its (exec'd) address space
        while not done.is_set():
            v = vm_hwm(proc.pid)
            if v is not None:
                hwm[0] = max(hwm[0] or 0, v)
            done.wait(0.02)

    timer = threading.Timer(timeout, _kill)
    poller = threading.Thread(target=_poll, daemon=True)
    timer.start()
    poller.start()
    try:
        out = proc.stdout.read()  # until EOF: the child exited or was killed
        proc.wait()
    finally:
        done.set()
        timer.cancel()
        proc.stdout.close()
    poller.join()
    code = None if timed_out.is_set() else proc.returncode
    return ChildRun(code, out.decode(errors="replace"), hwm[0])


def check_llmc(binary: str, cfg: GPTConfig) -> None:
    """InputError unless `binary` is executable and train_gpt2 can run `cfg`."""
    if cfg.max_seq_len < LLMC_T:
        raise InputError(binary, f"train_gpt2 uses T={LLMC_T}: {cfg.describe()} needs maxT >= {LLMC_T}")
    if cfg.vocab > 65536:
        raise InputError(binary, f"llm.c token shards are uint16: vocab {cfg.vocab} > 65536")
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise InputError(binary, "not an executable file")


def bench_llmc(binary: str, cfg: GPTConfig, *, seed: int = 42, threads: int | None = None,
               warmup: int = 1, timeout: float = 900.0, peak: PeakLookup | None = None) -> dict:
    """Run llm.c's CPU train_gpt2 (`binary`) on `cfg` at its fixed B = 4, T = 64 and return one
    row from the step times it prints (the first `warmup` dropped). Raises InputError (naming the
    binary) when it cannot run or prints too few step lines."""
    from ..llmc.harness import parse_train_gpt2, prepare

    check_llmc(binary, cfg)
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    argv = [os.path.abspath(binary)]
    stdbuf = shutil.which("stdbuf")
    if stdbuf:
        argv = [stdbuf, "-oL", *argv]  # line-buffered: steps printed before the time limit survive
    with tempfile.TemporaryDirectory(prefix="gpt2v-bench-") as d:
        prepare(d, cfg, seed=seed, plain=True, need_test=False, need_train=False)
        try:
            run = run_child(argv, cwd=d, timeout=timeout, env=env)
        except OSError as e:
            raise InputError(binary, f"cannot start: {e.strerror or e}") from None
    _losses, ms, _vals = parse_train_gpt2(run.output)
    last = (run.output.strip().splitlines() or ["(no output)"])[-1][:200]
    if run.returncode not in (None, 0):
        raise InputError(binary, f"exited with {run.returncode} after {len(ms)} step lines; "
                                 f"last line: {last}")
    if len(ms) <= warmup:
        why = f"stopped at the {timeout:g} s limit" if run.returncode is None else "exited"
        raise InputError(binary, f"{why} after {len(ms)} 'step N: train loss X (took Y ms)' lines, need "
                                 f"more than the {warmup} warm-up steps; last line: {last}")
    timed = [t / 1e3 for t in ms[warmup:]]
    facts = device_facts("cpu", threads=threads)
    if peak is None:
        peak = lookup_peak(facts["name"], kind="cpu")
    return make_row(device=facts, impl="llmc", cfg=cfg, batch=LLMC_B, seq=LLMC_T, dtype="float32",
                compile=False, fwd=None, bwd=None, opt=None, step=summarize(timed), peak=peak,
                peak_memory=run.maxrss_bytes,
                extra={"binary": os.path.abspath(binary), "warmup": warmup, "repeats": len(timed),
                       "seed": seed, "stopped_at_limit": run.returncode is None,
                       "memory_measure": "child peak RSS (/proc VmHWM, polled)"})
