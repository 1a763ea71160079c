"""Measure how a correct fp32 module's step-loss error against the float64 reference grows with
model size: the STEPS_BY_SIZE figures behind verify/torchmodule/tolerances.py's steps_limit.

    python benchmarks/measure_module_steps.py [--seeds 0,1] [--steps 4] [--d12]

Runs llm.c's train_gpt2.py GPT (tests/module_peers.py llmc_gpt) through `check_module` at each
size and prints, per run, the reference's step losses, each step's error (relative to the
step-0 loss) and how much of steps_limit's bound it uses. --d12 adds d12 at B4 T64 (minutes,
~11 GiB).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpt2_verify.reference.config import GPTConfig, from_descriptor  # noqa: E402
from gpt2_verify.verify.torchmodule import check_module  # noqa: E402

from tests import module_peers as P  # noqa: E402

SIZES = [  # (config, batch, seq)
    (GPTConfig(2, 64, 4, vocab=1000, max_seq_len=64), 2, 16),
    (GPTConfig(2, 64, 4, vocab=1000, max_seq_len=64), 4, 64),
    (GPTConfig(4, 128, 4, vocab=1000, max_seq_len=64), 4, 64),
    (GPTConfig(6, 256, 8, vocab=2000, max_seq_len=64), 4, 64),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--d12", action="store_true")
    args = ap.parse_args()
    runs = [(cfg, B, T, int(s)) for cfg, B, T in SIZES for s in args.seeds.split(",")]
    if args.d12:
        runs.append((from_descriptor("d12"), 4, 64, 42))
    for cfg, B, T, seed in runs:
        t0 = time.perf_counter()
        r = check_module(P.llmc_gpt, cfg, steps=args.steps, batch=B, seq=T, seed=seed,
                         explain_failures=False)
        errs = " ".join(f"{c.error:.2e}({100 * c.error / c.limit:.1f}%)" for c in r.step_checks)
        took = time.perf_counter() - t0
        print(f"{cfg.describe()} B{B} T{T} seed {seed} N={cfg.num_params:,} ({took:.0f} s)\n"
              f"  reference losses {' '.join(f'{x:.5f}' for x in r.reference_step_losses)}\n"
              f"  step errors (% of bound) {errs}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
