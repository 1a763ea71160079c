"""Benchmark: the reference init as a whole process, against torch, in one run.

    python benchmarks/bench_init.py [--model d12] [--skip-d48] [--out DIR]

Times (wall) and peak RSS of whole processes, each started fresh, on the same machine in
the same run, and prints ratios against the torch baselines:
  A  gpt2-verify init MODEL -o FILE            (llmc profile, fp32; Box-Muller tables cached)
  A' the same with an empty table cache        (first run on a machine: tables are built)
  B  torch: one Generator, normal_ over the same number of values, written to a file
  C  torch: a train_gpt2.py-style GPT module built (nn.Linear/Embedding init + normal_ re-init)
  D  gpt2-verify checksum d48                   (streamed, no file: peak RSS must stay < 1 GB)
  E  gpt2-verify compare FILE                   (A's checkpoint graded against the reference:
                                                 wall <= 1.5x A, peak RSS <= 1.0x the file)
  F  gpt2-verify compare d48 FILE               (--compare-d48: bounded memory on a 6 GB file)
Not a test: figures depend on the machine; compare only ratios from the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

TORCH_NORMAL = r"""
import sys, torch
n, path = int(sys.argv[1]), sys.argv[2]
g = torch.Generator(); g.manual_seed(42)
t = torch.empty(n)
t.normal_(0.0, 0.02, generator=g)
t.numpy().tofile(path)
"""

TORCH_MODEL = r"""
import math, sys, torch, torch.nn as nn
L, C, NH, V, T = (int(a) for a in sys.argv[1:6])
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C)
        self.attn = nn.Module(); self.attn.c_attn = nn.Linear(C, 3 * C); self.attn.c_proj = nn.Linear(C, C)
        self.attn.c_proj.RESIDUAL = 1
        self.ln_2 = nn.LayerNorm(C)
        self.mlp = nn.Module(); self.mlp.c_fc = nn.Linear(C, 4 * C); self.mlp.c_proj = nn.Linear(4 * C, C)
        self.mlp.c_proj.RESIDUAL = 1
class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(wte=nn.Embedding(V, C), wpe=nn.Embedding(T, C),
            h=nn.ModuleList([Block() for _ in range(L)]), ln_f=nn.LayerNorm(C)))
        self.lm_head = nn.Linear(C, V, bias=False); self.lm_head.SKIP = 1
        self.transformer.wte.weight = self.lm_head.weight
        self.rng = torch.Generator(); self.rng.manual_seed(42)
        self.apply(self._init)
    def _init(self, m):
        if isinstance(m, nn.Linear):
            std = 0.02 / math.sqrt(2 * L) if hasattr(m, "RESIDUAL") else 0.02
            if not hasattr(m, "SKIP"):
                nn.init.normal_(m.weight, 0.0, std, generator=self.rng)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=self.rng)
GPT()
"""


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one whole process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="d12")
    ap.add_argument("--repeat", type=int, default=3, help="runs per process (best is kept)")
    ap.add_argument("--skip-d48", action="store_true")
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--compare-d48", action="store_true",
                    help="also write a d48 checkpoint (6.2 GB) and time comparing it")
    args = ap.parse_args()

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from gpt2_verify.reference.config import from_descriptor

    cfg = from_descriptor(args.model)
    n = cfg.num_params_padded
    ckpt_mib = (1024 + 4 * n) / 2**20
    cli = [sys.executable, "-m", "gpt2_verify"]
    tmp = tempfile.mkdtemp(prefix="gpt2v-bench-")
    rows = []
    try:
        out = os.path.join(tmp, "m.bin")
        subprocess.run(cli + ["init", "d6", "-o", out], check=True, stdout=subprocess.DEVNULL)
        runs = {
            "A  gpt2-verify init (warm tables)": (cli + ["init", args.model, "-o", out], None),
            "B  torch normal_ + write": ([sys.executable, "-c", TORCH_NORMAL, str(n),
                                         os.path.join(tmp, "torch.raw")], None),
            "C  torch train_gpt2.py-style GPT()": (
                [sys.executable, "-c", TORCH_MODEL, str(cfg.layers), str(cfg.channels),
                 str(cfg.heads), str(cfg.vocab), str(cfg.max_seq_len)], None),
        }
        if not args.skip_cold:
            cold_env = dict(os.environ, GPT2_VERIFY_CACHE=os.path.join(tmp, "cache"))
            runs["A' gpt2-verify init (cold tables)"] = (
                cli + ["init", args.model, "-o", out], cold_env)
        for label, (cmd, env) in runs.items():
            reps = 1 if "cold" in label else args.repeat
            best = None
            for _ in range(reps):
                if env and "GPT2_VERIFY_CACHE" in env:
                    shutil.rmtree(env["GPT2_VERIFY_CACHE"], ignore_errors=True)
                res = measure(cmd, env)
                best = res if best is None or res[0] < best[0] else best
            rows.append((label, *best))
        best = None
        for _ in range(args.repeat):  # out holds A's checkpoint of args.model
            res = measure(cli + ["compare", out, "--require", "exact"])
            best = res if best is None or res[0] < best[0] else best
        rows.append(("E  gpt2-verify compare (exact file)", *best))
        if not args.skip_d48:
            rows.append(("D  gpt2-verify checksum d48", *measure(cli + ["checksum", "d48"])))
        if args.compare_d48:
            big = os.path.join(tmp, "d48.bin")
            subprocess.run(cli + ["init", "d48", "-o", big], check=True, stdout=subprocess.DEVNULL)
            rows.append(("F  gpt2-verify compare d48 (exact file)",
                         *measure(cli + ["compare", big, "--require", "exact"])))
            os.unlink(big)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base = dict((r[0][:2].strip(), r) for r in rows)
    print(f"model {args.model}: {n:,} params, checkpoint {ckpt_mib:,.0f} MiB; "
          f"best of {args.repeat} (cold: 1)")
    print(f"{'process':<40} {'wall s':>7} {'peak RSS MiB':>13} {'wall/A':>7} {'wall/B':>7} "
          f"{'wall/C':>7} {'RSS/ckpt':>9}")
    for label, wall, rss in rows:
        print(f"{label:<40} {wall:7.2f} {rss:13.0f} {wall / base['A'][1]:7.2f} {wall / base['B'][1]:7.2f} "
              f"{wall / base['C'][1]:7.2f} {rss / ckpt_mib:9.2f}")


if __name__ == "__main__":
    main()
