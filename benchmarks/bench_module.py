"""Time `gpt2-verify module` (check_module) against a plain torch forward+backward of the same
module, in the same run.

    python benchmarks/bench_module.py [--configs default,d12] [--repeats 3]

For each config: the module is llm.c's train_gpt2.py GPT (tests/module_peers.py, FLASH=0);
baseline = one forward (logits, loss = model(idx, targets)) + backward of it on the same tokens
in fp32 on the CPU (best of `repeats` after a warm-up); check = check_module with its defaults
(probe weights, forward+backward judged against the float64 reference, 3 AdamW steps judged
step by step; no variant search, since the module passes), after one untimed warm-up call
(torch.optim's first use imports torch._dynamo). Prints wall seconds, the ratio and the peak
RSS of the process so far. default: L2 C64 NH4 V1000, B2 T16; d12: B4 T64.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from gpt2_verify.reference.config import from_descriptor  # noqa: E402
from gpt2_verify.verify.torchmodule import DEFAULT_CONFIG, check_module  # noqa: E402

from tests import module_peers as P  # noqa: E402

RUNS = {"default": (DEFAULT_CONFIG, 2, 16), "d12": (from_descriptor("d12"), 4, 64)}


def plain(cfg, batch: int, seq: int, repeats: int) -> float:
    model = P.llmc_gpt(cfg.as_dict()).eval()
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, cfg.vocab, (batch, seq + 1), generator=g)
    x, y = idx[:, :-1].contiguous(), idx[:, 1:].contiguous()
    best = float("inf")
    for i in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        _, loss = model(x, y)
        loss.backward()
        dt = time.perf_counter() - t0
        if i:  # the first is the warm-up
            best = min(best, dt)
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="default,d12")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}")
    # warm-up: torch.optim's first use imports torch._dynamo (seconds), once per process
    check_module(P.llmc_gpt, DEFAULT_CONFIG, steps=1)
    print(f"{'config':<8} {'B':>2} {'T':>3} {'fwd+bwd s':>10} {'module s':>9} {'ratio':>7} "
          f"{'peak RSS MiB':>13}  verdict")
    for name in args.configs.split(","):
        cfg, B, T = RUNS[name]
        base = plain(cfg, B, T, args.repeats)
        t0 = time.perf_counter()
        report = check_module(P.llmc_gpt, cfg, batch=B, seq=T)
        wall = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{name:<8} {B:>2} {T:>3} {base:>10.3f} {wall:>9.2f} {wall / base:>7.1f} {rss:>13.0f}  "
              f"{'PASS' if report.passed else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
