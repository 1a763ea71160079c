"""The facts that tell one machine's rows from another's, and the memory measurements.

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
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import socket
import subprocess


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


def rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def maxrss_bytes(who=resource.RUSAGE_SELF) -> int:
    return int(resource.getrusage(who).ru_maxrss) * 1024  # KiB on Linux


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets the "hiwater" RSS getrusage reports (proc(5), Linux >= 4.0)
        return True
    except OSError:
        return False


def vm_hwm(pid: int) -> int | None:
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
