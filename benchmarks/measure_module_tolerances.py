"""Measure the worst normwise errors of correct PyTorch GPT-2 modules against the float64
reference: the figures behind verify/torchmodule/tolerances.py's measured tables.

    python benchmarks/measure_module_tolerances.py [--device cpu|cuda] [--dtypes fp32,bf16] [--seeds 0,1,2]

Peers (tests/module_peers.py): llm.c's train_gpt2.py GPT with FLASH 0 and 1, and, when
transformers is installed, GPT2LMHeadModel with eager and sdpa attention. Configs, token shapes
and seeds are MEASURED_ON's; each run is `check_module(..., steps=3)` with the default
optimizer. Prints, per precision, the worst figure per quantity, which run gave it, and how
much of the (device, precision) table's bound it uses (on CUDA: the derived tables' check).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpt2_verify.reference.config import GPTConfig  # noqa: E402
from gpt2_verify.verify.torchmodule import check_module  # noqa: E402
from gpt2_verify.verify.torchmodule.tolerances import tolerance_for  # noqa: E402

from tests import module_peers as P  # noqa: E402

RUNS = [  # (config, batch, seq)
    (GPTConfig(2, 64, 4, vocab=1000, max_seq_len=64), 2, 16),
    (GPTConfig(2, 64, 4, vocab=1000, max_seq_len=64), 4, 64),
    (GPTConfig(3, 48, 3, vocab=500, max_seq_len=32), 2, 16),
    (GPTConfig(1, 128, 8, vocab=2000, max_seq_len=32), 1, 32),
]
SEEDS = (0, 1, 2)


def peers():
    out = [("train_gpt2.py FLASH=0", P.llmc_gpt), ("train_gpt2.py FLASH=1", P.llmc_gpt_flash)]
    try:
        import transformers  # noqa: F401
        out += [("HF eager", P.hf_eager), ("HF sdpa", P.hf_sdpa)]
    except ImportError:
        print("transformers not installed: HF peers skipped", file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    for dtype in args.dtypes.split(","):
        table = tolerance_for(args.device, dtype)
        worst: dict[str, tuple[float, str]] = {}
        t0 = time.perf_counter()
        for cfg, B, T in RUNS:
            for seed in seeds:
                for label, factory in peers():
                    r = check_module(factory, cfg, device=args.device, dtype=dtype, steps=3, batch=B,
                                     seq=T, seed=seed, explain_failures=False)
                    where = f"{label} {cfg.describe()} B{B} T{T} seed {seed}"
                    for c in r.checks + r.step_checks:
                        q = ("grads" if c.quantity.startswith("d") else
                             "steps" if c.quantity.startswith("step") else c.quantity)
                        if q not in worst or not c.error <= worst[q][0]:
                            worst[q] = (c.error, where)
        print(f"{args.device} {dtype} ({time.perf_counter() - t0:.0f} s; table {table.key}, "
              f"{'derived' if table.derived else 'measured'}):")
        for q, (e, where) in worst.items():
            lim = table.limits[q]
            print(f"  {q:<7} {e:.3e}  uses {100 * e / lim:6.1f}% of {lim:.2g}  {where}")
        print("  dict: {" + ", ".join(f'"{q}": {e:.2e}' for q, (e, _) in worst.items()) + "}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
