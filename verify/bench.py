"""Compute benchmark of GPT-2 at random init: forward, backward and the AdamW step of the
reference float32 model (verify.numerics.model.TorchModel), and llm.c's own train_gpt2, as
JSON records that merge across machines into one table (`gpt2-verify bench`).

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

FLOPs. flops_per_token = 6 N_mm + 12 L T C with N_mm = 12 L C^2 + Vp C, the parameters that
take part in a matrix multiply: qkvw, attprojw, fcw, fcprojw per layer and the tied lm_head
(wte over the padded vocab Vp: the reference, like llm.c, computes all Vp logits). Biases,
LayerNorm weights and wpe do no matmul and are left out. 6 = 2 FLOPs per multiply-add x (forward
+ 2 x backward: the gradient of each matmul's input and of its weight). 12 L T C is attention's
two (T x T) matmuls per head (q k^T and att v), 4 T C FLOPs per token and layer forward, x3 with
backward, counted over the full T x T square: no halving for the causal mask, which is what
the reference computes (it masks after the matmul) and PaLM's convention (Chowdhery et al.
2022, appendix B: 6N + 12 L H Q T, H Q = C; Kaplan et al. 2020, section 2.1: 6N). It is exactly
what torch.utils.flop_counter.FlopCounterMode counts for TorchModel's forward + backward
(tests/test_bench.py). Other conventions, for comparison (`flop_estimates`):
  - nanoGPT model.py estimate_mfu: N = get_num_params() (every parameter but wpe, padded wte
    included: adds the 13 C per layer + 2 C biases and LayerNorm weights), 6N + 12 L H Q T.
    0.085% above ours for d12 at T = 1024; 2.6% for L2 C32 Vp256 at T = 16.
  - llm.c train_gpt2.cu gpt2_estimate_mfu: N = num_parameters (wpe, biases, LayerNorm
    included), 6N + 6 L C T: attention halved for the causal mask.
All rows of this tool use ours (model FLOPs), also llm.c's rows: llm.c's CPU attention loops
over t2 <= t only, so its hardware FLOPs are lower, but the work asked of it is the same.

Peaks and MFU. mfu = achieved_tflops / peak_tflops, with the peak from PEAKS: the vendor's
dense bf16 tensor-core figure for the GPU (datasheets quote bf16 "with sparsity", twice the
dense figure; MFU needs the dense one). nanoGPT's bench.py and estimate_mfu hard-code the A100's
312 TFLOPS, which on an H100 gave MFU above 100% (karpathy/nanoGPT pull request #464): here the
peak is looked up from torch.cuda.get_device_name(), and an unknown device gets no MFU (null,
with the reason) rather than a wrong one. `peak_tflops` (--peak-tflops) overrides the table.
CPUs have no entry: their peak depends on the SIMD width (AVX2 / AVX-512 FMA units per core),
the clock under load and the core count, none of which torch reports; give --peak-tflops, or
ask for an estimate (cores x GHz x FLOPs per cycle, `cpu_peak_estimate`).

Memory. CUDA: torch.cuda.max_memory_allocated() after the timed steps, the counter reset before
the model is built: parameters, gradients, AdamW moments, activations and the allocator's
rounding (not the caching allocator's reserve, nor the CUDA context). CPU reference rows: peak
resident set size growth of this process, resource.getrusage(RUSAGE_SELF).ru_maxrss after the
steps minus the RSS before the init is drawn; the peak is reset first by writing 5 to
/proc/self/clear_refs (Linux >= 4.0), and where that is refused only a new process-wide peak
counts (else null). It counts what the row allocates: the numpy init (freed once copied) or,
at the later and larger peak, torch's parameters, gradients, AdamW moments and activations,
plus allocator caching; not the interpreter, torch itself or the init's lookup tables (loaded
by a one-time warm-up step on a tiny model before the first row). llm.c
rows: the child process's whole peak RSS (VmHWM from /proc/PID/status, polled every 20 ms; not
ru_maxrss, which a child inherits from its parent's RSS at fork): its weights, gradients,
moments, activations (llm.c mallocs them once, at the first step) and data loaders.

llm.c rows (`bench_llmc`): train_gpt2.c (CPU) has no flags: B = 4, T = 64, 41 steps, each line
"step N: train loss X (took Y ms)" timing data loading, forward, zero_grad, backward and the
update. verify.llmc.harness.prepare writes the model (the reference init), token shards and a
tokenizer into a temporary directory; the binary runs there on OMP_NUM_THREADS = threads, line
buffered (stdbuf -oL) so that at the time limit the steps printed so far still count. The first
`warmup` step times are dropped and the rest summarised; fwd_s, bwd_s and opt_s are null (llm.c
prints only whole steps). train_gpt2cu (CUDA) takes flags and prints another step line: not
supported yet.

JSON (schema "gpt2-verify/bench/1"): {"schema", "tool_version", "rows": [row, ...]}, the row
fields typed in verify.records.BenchRow (extra keys allowed); `merge` validates records and
concatenates their rows; `render` prints one table grouped by config.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Callable, Sequence

import numpy as np
from gpt2_verify.reference.config import GPTConfig

from .errors import InputError
from .progress import Progress
from .records import BenchRecord, load_json, parse

SCHEMA = BenchRecord.SCHEMA
LLMC_B, LLMC_T = 4, 64  # train_gpt2.c main(): int B = 4; int T = 64


# ---- peak table --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Peak:
    """One GPU's dense peak for one dtype. pattern: a regular expression matched (re.search)
    against torch.cuda.get_device_name()."""

    pattern: str
    gpu: str
    dtype: str
    tflops: float
    source: str


_A100 = ("NVIDIA A100 Tensor Core GPU datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf): "
         "BF16 Tensor Core 312 TFLOPS (624 with sparsity), SXM and PCIe, 40 and 80 GB")
_H100 = ("NVIDIA H100 Tensor Core GPU Architecture whitepaper (gtc22-whitepaper-hopper), table 'NVIDIA H100 "
         "compared to A100': peak BF16 Tensor TFLOPS with FP32 accumulate {}; the H100 datasheet "
         "quotes the sparse figure")
PEAKS: tuple[Peak, ...] = (
    Peak(r"\bA100\b", "A100 (SXM4 / PCIe)", "bf16", 312.0, _A100),
    Peak(r"\bH100\b.*\bNVL\b", "H100 NVL", "bf16", math.nan, "not listed: no dense figure sourced"),
    Peak(r"\bH100\b.*\bPCIe\b", "H100 PCIe", "bf16", 756.0,
         _H100.format("756 / 1,513 sparse (H100 PCIe)")),
    Peak(r"\bH100\b.*(\bSXM|HBM3\b)", "H100 SXM5", "bf16", 989.4,
         _H100.format("989.4 / 1,978.9 sparse (H100 SXM5)")
         + "; torch names the SXM5 part 'NVIDIA H100 80GB HBM3'"),
    Peak(r"\bH200\b.*\bNVL\b", "H200 NVL", "bf16", math.nan, "not listed: no dense figure sourced"),
    Peak(r"\bH200\b", "H200 SXM", "bf16", 989.4,
         "NVIDIA H200 Tensor Core GPU datasheet: BF16 Tensor Core 1,979 TFLOPS with sparsity (H200 SXM); "
         "dense 989.4, the H100 SXM5 whitepaper's figure (1,979 is its 1,978.9 sparse rounded; same GH100 "
         "compute, only the memory differs)"),
    Peak(r"\bL4\b", "L4", "bf16", 121.0,
         "NVIDIA L4 Tensor Core GPU datasheet: BF16 Tensor Core 242 TFLOPS with sparsity; dense = half"),
    Peak(r"\bA10\b", "A10", "bf16", 125.0,
         "NVIDIA A10 Tensor Core GPU datasheet: BF16 Tensor Core 125 TFLOPS (250 with sparsity). "
         "Not the A10G (AWS), which has no NVIDIA datasheet"),
    Peak(r"RTX 4090$", "GeForce RTX 4090", "bf16", 165.2,
         "NVIDIA Ada GPU architecture whitepaper (nvidia-ada-gpu-architecture.pdf), RTX 4090: peak BF16 "
         "Tensor TFLOPS with FP32 accumulate 165.2 (330.4 with sparsity); llm.c llmc/mfu.h uses the same"),
)
CPU_PEAK_REASON = ("no peak table entry for CPUs: their peak depends on the SIMD width, the clock under "
                   "load and the core count; give --peak-tflops or --cpu-peak-estimate GHZ,FLOPS_PER_CYCLE")


@dataclasses.dataclass(frozen=True)
class PeakLookup:
    tflops: float | None
    source: str | None
    reason: str  # why there is (or is no) peak


def lookup_peak(device_name: str, *, dtype: str = "bf16", kind: str = "cuda") -> PeakLookup:
    """The dense peak for `device_name` (as torch.cuda.get_device_name() spells it) in `dtype`.
    Unknown devices, other dtypes and CPUs give tflops None with the reason."""
    if kind == "cpu":
        return PeakLookup(None, None, CPU_PEAK_REASON)
    for p in PEAKS:
        if re.search(p.pattern, device_name):
            if p.dtype != dtype:
                continue
            if math.isnan(p.tflops):
                return PeakLookup(None, None, f"{device_name!r} is {p.gpu}: {p.source}; give --peak-tflops")
            return PeakLookup(p.tflops, f"{p.gpu}: {p.source}", f"{device_name!r} matched {p.gpu}")
    known = ", ".join(p.gpu for p in PEAKS if not math.isnan(p.tflops))
    return PeakLookup(None, None, f"no {dtype} peak for {device_name!r} in the table ({known}); "
                                  f"give --peak-tflops")


def cpu_peak_estimate(*, cores: int, ghz: float, flops_per_cycle: float) -> PeakLookup:
    """cores x GHz x FLOPs per cycle per core (e.g. 2 AVX-512 FMA units x 16 float32 lanes x 2 =
    64), in TFLOPS. Only an estimate: turbo and AVX-512 clock offsets move it."""
    for name, v in (("cores", cores), ("ghz", ghz), ("flops_per_cycle", flops_per_cycle)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    tf = cores * ghz * flops_per_cycle / 1e3
    return PeakLookup(tf, f"estimate: {cores} cores x {ghz:g} GHz x {flops_per_cycle:g} FLOP/cycle "
                          f"(user-given)", "estimated on request")


# ---- FLOPs -------------------------------------------------------------------------------------

def matmul_params(cfg: GPTConfig) -> int:
    """Parameters that take part in a matmul: 12 L C^2 (qkvw 3C^2, attprojw C^2, fcw 4C^2,
    fcprojw 4C^2 per layer) + Vp C (the tied lm_head over the padded vocab)."""
    return 12 * cfg.layers * cfg.channels ** 2 + cfg.padded_vocab * cfg.channels


def flops_per_token(cfg: GPTConfig, *, seq: int) -> int:
    """Forward + backward matmul FLOPs per token at sequence length `seq`: 6 N_mm + 12 L T C
    (module docstring). Exactly FlopCounterMode's count for TorchModel divided by B T."""
    return 6 * matmul_params(cfg) + 12 * cfg.layers * seq * cfg.channels


def flop_estimates(cfg: GPTConfig, *, seq: int) -> dict[str, int]:
    """Ours and the two common estimates, per token (module docstring)."""
    L, C = cfg.layers, cfg.channels
    return {"ours": flops_per_token(cfg, seq=seq),
            "nanogpt_estimate_mfu": 6 * cfg.num_params_nanogpt + 12 * L * seq * C,
            "llmc_gpt2_estimate_mfu": 6 * cfg.num_params_padded + 6 * L * C * seq}


# ---- device facts and statistics ---------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may run on
    except AttributeError:
        return os.cpu_count() or 1


def _driver() -> str | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def device_facts(kind: str, *, threads: int) -> dict:
    """The facts that tell one machine's rows from another's (verify.records.BenchDevice). cores: logical
    CPUs this process may use; threads: torch's (or llm.c's OMP) threads for the row."""
    import torch

    cpu = _cpu_model()
    gpu_name = gpu_mem = driver = None
    if kind == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        gpu_name, gpu_mem, driver = props.name, int(props.total_memory), _driver()
    return {"kind": kind, "name": gpu_name if kind == "cuda" else cpu, "cpu_model": cpu,
            "cores": _cores(), "threads": int(threads), "gpu_name": gpu_name, "gpu_memory_bytes": gpu_mem,
            "torch": torch.__version__, "cuda": torch.version.cuda, "driver": driver,
            "host": socket.gethostname()}


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """median, min, max and quartiles (numpy linear interpolation) of the timed intervals."""
    a = np.asarray(seconds, dtype=np.float64)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"need at least one finite timing, got {list(seconds)}")
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "min": float(a.min()), "max": float(a.max()), "q1": float(q1),
            "q3": float(q3)}


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _maxrss_bytes(who=resource.RUSAGE_SELF) -> int:
    return int(resource.getrusage(who).ru_maxrss) * 1024  # KiB on Linux


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets the "hiwater" RSS getrusage reports (proc(5), Linux >= 4.0)
        return True
    except OSError:
        return False


# ---- the reference model ------------------------------------------------------------------------

class _StepProgress(Progress):
    """verify.progress.Progress showing 'label i/n' (it formats value counts in millions)."""

    def update(self, n: int = 1, *, label: str | None = None) -> None:
        self.done += int(n)
        if label:
            self.label = label
        if self.enabled:
            self.stream.write(f"\r\x1b[K{self.label} {min(self.done, self.total)}/{self.total}")
            self.stream.flush()


def _row(*, device: dict, impl: str, cfg: GPTConfig, batch: int, seq: int, dtype: str, compile: bool,
         fwd, bwd, opt, step: dict, peak: PeakLookup, peak_memory: int | None, extra: dict) -> dict:
    fpt = float(flops_per_token(cfg, seq=seq))
    tps = batch * seq / step["median"]
    achieved = fpt * tps / 1e12
    mfu = achieved / peak.tflops if peak.tflops else None
    row = {"device": device, "impl": impl, "config": cfg.as_dict(), "descriptor": cfg.name,
           "batch": batch, "seq": seq, "dtype": dtype, "compile": compile, "fwd_s": fwd, "bwd_s": bwd,
           "opt_s": opt, "step_s": step, "tokens_per_s": tps, "flops_per_token": fpt,
           "achieved_tflops": achieved, "peak_tflops": None if peak.tflops is None else float(peak.tflops),
           "peak_source": peak.source, "mfu": mfu, "peak_memory_bytes": peak_memory,
           "peak_reason": peak.reason,
           "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    row.update(extra)
    return row


_TORCH_CPU_WARM = False


def _warm_torch_cpu() -> None:
    """One tiny training step, once per process, so that torch's one-time CPU allocations
    (thread pools, kernel caches) land before the first row's memory baseline."""
    global _TORCH_CPU_WARM
    if _TORCH_CPU_WARM:
        return
    from gpt2_verify.reference.init import init_tensors

    from .numerics.adamw import ADAMW
    from .numerics.model import TorchModel, random_tokens

    cfg = GPTConfig(1, 8, 2, vocab=64, max_seq_len=8)
    model = TorchModel(cfg, init_tensors(cfg, 0, "llmc"), dtype="float32")
    x, y = random_tokens(cfg, batch=1, seq=8, seed=0)
    model.loss(x, y).backward()
    model.step(ADAMW["train_gpt2.c"])
    _TORCH_CPU_WARM = True


def bench_reference(cfg: GPTConfig, *, batch: int, seq: int, device: str = "cpu", compile: bool = False,
                    warmup: int = 2, repeats: int = 5, seed: int = 42, profile: str = "llmc",
                    threads: int | None = None, peak: PeakLookup | None = None,
                    progress: _StepProgress | None = None, params: dict | None = None) -> dict:
    """Time `warmup` + `repeats` training steps of TorchModel on `device` ("cpu": float32;
    "cuda": bf16 autocast) and return one row. params: the 16 tensors (default: the reference
    init, init_tensors(cfg, seed, profile)). peak: overrides the table lookup."""
    import torch
    from gpt2_verify.reference.init import init_tensors

    from .numerics.adamw import ADAMW
    from .numerics.model import TorchModel, random_tokens

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
        reset = False if cuda else _reset_peak_rss()
        rss0, maxrss0 = (None, None) if cuda else (_rss_bytes(), _maxrss_bytes())
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
            maxrss1 = _maxrss_bytes()
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
    return _row(device=facts, impl="reference", cfg=cfg, batch=batch, seq=seq,
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
            v = _vm_hwm(proc.pid)
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


def _vm_hwm(pid: int) -> int | None:
    """VmHWM (peak RSS) of a running process from /proc (Linux); None when unavailable. Not
    getrusage/wait4's ru_maxrss: a child's ru_maxrss starts from the parent's RSS at fork, as
    exec carries the old address space's high-water mark over (measured: /bin/true under a
    490 MiB Python reports 487 MiB)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


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
    from .llmc.harness import parse_train_gpt2, prepare

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
    return _row(device=facts, impl="llmc", cfg=cfg, batch=LLMC_B, seq=LLMC_T, dtype="float32",
                compile=False, fwd=None, bwd=None, opt=None, step=summarize(timed), peak=peak,
                peak_memory=run.maxrss_bytes,
                extra={"binary": os.path.abspath(binary), "warmup": warmup, "repeats": len(timed),
                       "seed": seed, "stopped_at_limit": run.returncode is None,
                       "memory_measure": "child peak RSS (/proc VmHWM, polled)"})


# ---- records: validate, merge, render -------------------------------------------------------

def record(rows: list[dict]) -> dict:
    """The JSON record of `rows` (verify.records.BenchRecord), validated."""
    return BenchRecord.make(rows=rows).to_dict()


def validate_record(obj, source: str) -> list[dict]:
    """The rows of a bench record (verify.records.BenchRecord), extra keys kept; InputError
    naming `source`, the row and the field otherwise."""
    if not isinstance(obj, dict):
        raise InputError(source, "not a bench record (a JSON object expected)")
    rec = parse(obj, source, expect=(BenchRecord,))
    return [row.to_dict() for row in rec.rows]


def load_record(path: str) -> list[dict]:
    return validate_record(load_json(path), path)


def merge(paths: Sequence[str]) -> dict:
    """One record holding the rows of every file, in order (each file validated). The same
    file twice, or a row that is in two files (the same measurement copied), is refused: the
    table would count it twice."""
    rows: list[dict] = []
    seen: dict[str, tuple[str, int]] = {}  # a row's canonical JSON -> (file, row index)
    for p in paths:
        for i, row in enumerate(load_record(p)):
            key = json.dumps(row, sort_keys=True)
            if key in seen:
                q, j = seen[key]
                same = "the same file given twice" if _same_file(p, q) else "a row copied between files"
                raise InputError(p, f"row {i} is row {j} of {q} ({same}); merge each measurement once")
            seen[key] = (p, i)
            rows.append(row)
    out = record(rows)
    out["merged_from"] = list(paths)
    return out


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _config_label(cfg: dict) -> str:
    c = GPTConfig.from_dict(cfg)
    return c.describe()


def _device_label(d: dict) -> str:
    if d["kind"] == "cuda":
        return f"{d['gpu_name']} ({d['host']})"
    return f"{d['cpu_model']} x{d['threads']} thr ({d['host']})"


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:,.0f} MiB"


def render(rows: Sequence[dict]) -> str:
    """One table, rows grouped by config (in first-seen order), then by B x T."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(_config_label(r["config"]), []).append(r)
    head = ("device", "impl", "dtype", "B x T", "tokens/s", "TFLOP/s", "MFU", "peak mem")
    lines = []
    for label, rs in groups.items():
        rs = sorted(rs, key=lambda r: (r["batch"] * r["seq"], r["batch"]))
        cells = [head]
        for r in rs:
            impl = r["impl"] + ("+compile" if r["compile"] else "")
            mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.3g}%"
            cells.append((_device_label(r["device"]), impl, r["dtype"], f"{r['batch']} x {r['seq']}",
                          f"{r['tokens_per_s']:,.0f}", f"{r['achieved_tflops']:.4g}", mfu,
                          _fmt_bytes(r["peak_memory_bytes"])))
        w = [max(len(c[i]) for c in cells) for i in range(len(head))]
        lines.append(f"config {label}")
        for c in cells:
            lines.append("  " + "  ".join(s.ljust(w[i]) if i < 3 else s.rjust(w[i]) for i, s in enumerate(c)))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
