"""Time and peak memory of `gpt2-verify report` on a model file, against baselines in the same run.

    python benchmarks/bench_report.py [--descriptor d12] [--keep DIR]

Writes the reference init of the descriptor to a temporary llm.c checkpoint, then runs, each as
its own process (wall time and peak RSS from bench_init.measure: wait4's rusage of that child):
  A  gpt2-verify stats FILE           one streamed read with per-tensor statistics (baseline)
  B  gpt2-verify report FILE -o HTML  histograms, QQ, per-layer statistics, figures, HTML
and prints B's wall time as a ratio of A's and B's peak RSS as a ratio of the file size. The
report must stay in bounded memory: its peak RSS should not grow with the model (target: well
under 1.0x the file for d12 and above).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from bench_init import measure  # (wall s, peak RSS MiB) of one child process, from wait4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--descriptor", default="d12")
    ap.add_argument("--keep", help="write the files here instead of a temporary directory")
    args = ap.parse_args()
    exe = [sys.executable, "-m", "gpt2_verify"]
    d = args.keep or tempfile.mkdtemp(prefix="bench-report-")
    try:
        model = os.path.join(d, f"{args.descriptor}.bin")
        if not os.path.exists(model):
            measure(exe + ["init", args.descriptor, "-o", model])
        size = os.path.getsize(model) / (1 << 20)  # MiB
        a_wall, a_rss = measure(exe + ["stats", model])
        b_wall, b_rss = measure(exe + ["report", model, "-o", os.path.join(d, "report.html")])
        print(f"{args.descriptor}: file {size:,.0f} MiB")
        print(f"A stats  (baseline)  {a_wall:7.1f} s  1.00x   peak RSS {a_rss:6.0f} MiB "
              f"= {a_rss / size:.2f}x the file")
        print(f"B report             {b_wall:7.1f} s  {b_wall / a_wall:.2f}x   "
              f"peak RSS {b_rss:6.0f} MiB = {b_rss / size:.2f}x the file")
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
