"""Benchmark: power of check_uniform / check_truncnormal (and check_normal on truncated data).

    python benchmarks/power_laws.py [--sizes 4096,65536,1048576] [--reps 200,100,20]
                                    [--fpr 1e-9] [--markdown]

For each scenario (data drawn from one law, checked against another) and each n, draws --reps
float32 tensors with fixed seeds (numpy PCG64, seed = rep) and prints the rejection rate at
--fpr and the sub-tests that did the rejecting (those failing in at least half the rejected
runs). Rows marked "null" draw from the law they are checked against: their rate is the
measured false-positive rate (<= fpr by construction; any rejection there is a bug).
Also prints the mean time of one check at each n. Not a test: the rates are Monte Carlo
figures with --reps runs each (a rate of 0 or 1 over 20 runs is a rate, not a proof).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt2_verify.verify.progress import Progress  # noqa: E402
from gpt2_verify.verify.stats import (  # noqa: E402
    check_normal,
    check_truncnormal,
    check_uniform,
    truncnormal_variance,
)

S = 0.02  # std of the (untruncated) normal
A = S * math.sqrt(3.0)  # uniform bound with std S
K = 3.0  # OLMo's cut
S_TN = math.sqrt(truncnormal_variance(S, K))  # the std of TN(S, 3): 0.019732


def uniform(a: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: rng.uniform(-a, a, n)


def normal(s: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: rng.normal(0.0, s, n)


def truncnormal(s: float, k: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        out = np.empty(0)
        while out.size < n:
            z = rng.standard_normal(n + n // 8 + 64)
            out = np.concatenate([out, z[np.abs(z) <= k]])
        return out[:n] * s
    return draw


def zero_fraction(draw, frac: float):
    def f(rng: np.random.Generator, n: int) -> np.ndarray:
        x = draw(rng, n)
        x[: int(round(frac * n))] = 0.0  # e.g. rows an implementation forgot to fill
        return x
    return f


def to_bf16(x: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    u = (u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return u.view(np.float32)


def bf16(draw):
    return lambda rng, n: to_bf16(draw(rng, n))


def as_uniform(x, fpr):
    return check_uniform(x, A, fpr=fpr)


def as_tn(x, fpr):
    return check_truncnormal(x, S, K, fpr=fpr)


# (section, label, draw, check)
SCENARIOS = [
    ("check_uniform(bound=a), a = 0.02 sqrt 3", "null: U(a)", uniform(A), as_uniform),
    (None, "null: bf16(U(a))", bf16(uniform(A)), as_uniform),
    (None, "U(1.01 a)", uniform(1.01 * A), as_uniform),
    (None, "U(1.05 a)", uniform(1.05 * A), as_uniform),
    (None, "U(0.99 a)", uniform(0.99 * A), as_uniform),
    (None, "U(0.95 a)", uniform(0.95 * A), as_uniform),
    (None, "N(0, a / sqrt 3): normal, same std", normal(A / math.sqrt(3.0)), as_uniform),
    (None, "U(a) with 1% of values 0", zero_fraction(uniform(A), 0.01), as_uniform),
    ("check_truncnormal(std=s, k=3), s = 0.02", "null: TN(s, 3)", truncnormal(S, K), as_tn),
    (None, "null: bf16(TN(s, 3))", bf16(truncnormal(S, K)), as_tn),
    (None, "N(0, s): nothing cut (trunc_normal_(std=s), default a=-2, b=2)", normal(S), as_tn),
    (None, "TN(1.05 s, 3): cut at +-3.15 s", truncnormal(1.05 * S, K), as_tn),
    (None, "TN(1.05 s) cut at +-3 s (k = 2.857)", truncnormal(1.05 * S, K / 1.05), as_tn),
    (None, "TN(0.95 s, 3)", truncnormal(0.95 * S, K), as_tn),
    (None, "TN(s, 2.5): cut too tight", truncnormal(S, 2.5), as_tn),
    (None, "TN(s, 2)", truncnormal(S, 2.0), as_tn),
    (None, "U with TN(s, 3)'s std", uniform(S_TN * math.sqrt(3.0)), as_tn),
    ("check_normal on truncated data", "TN(s, 3) as N(0, s)", truncnormal(S, K),
     lambda x, fpr: check_normal(x, S, fpr=fpr)),
    (None, "TN(s, 3) as N(0, 0.98667 s): matched std", truncnormal(S, K),
     lambda x, fpr: check_normal(x, S_TN, fpr=fpr)),
]


def run(sizes: list[int], reps: list[int], fpr: float) -> tuple[list[list[str]], dict[int, float]]:
    total = sum(n * r for n, r in zip(sizes, reps)) * len(SCENARIOS)
    rows: list[list[str]] = []
    seconds = {n: 0.0 for n in sizes}
    with Progress(total, "power") as bar:
        for section, label, draw, check in SCENARIOS:
            if section:
                rows.append([f"**{section}**"] + [""] * len(sizes))
            row = [label]
            for n, r in zip(sizes, reps):
                rejected, by_test = 0, {}
                for seed in range(r):
                    x = draw(np.random.default_rng(seed), n).astype(np.float32)
                    t0 = time.perf_counter()
                    res = check(x, fpr)
                    seconds[n] += time.perf_counter() - t0
                    if not res.passed:
                        rejected += 1
                        for t in res.tests:
                            by_test[t.name] = by_test.get(t.name, 0) + (not t.passed)
                    bar.update(n)
                who = [k for k, v in by_test.items() if v >= rejected / 2] if rejected else []
                row.append(f"{rejected / r:.2f}" + (f" ({', '.join(who)})" if who else ""))
            rows.append(row)
    per_check = {n: seconds[n] / (r * len(SCENARIOS)) for n, r in zip(sizes, reps)}
    return rows, per_check


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="4096,65536,1048576")
    ap.add_argument("--reps", default="200,100,20", help="runs per scenario, one per size")
    ap.add_argument("--fpr", type=float, default=1e-9)
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    reps = [int(v) for v in args.reps.split(",")]
    if len(reps) != len(sizes) or min(sizes) < 3 or min(reps) < 1:
        ap.error("--sizes and --reps need the same number of entries (sizes >= 3, reps >= 1)")
    rows, per_check = run(sizes, reps, args.fpr)
    head = ["data (float32)"] + [f"n={n} ({r} runs)" for n, r in zip(sizes, reps)]
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        width = max(len(r[0]) for r in rows) + 2
        print("".join([head[0].ljust(width)] + [h.ljust(26) for h in head[1:]]))
        for row in rows:
            print("".join([row[0].ljust(width)] + [c.ljust(26) for c in row[1:]]))
    print(f"\nrejection rate at fpr {args.fpr:g}; mean time per check: "
          + ", ".join(f"n={n}: {1e3 * t:.1f} ms" for n, t in per_check.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
