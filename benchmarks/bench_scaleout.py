"""checksum scaling with --workers, and ablate local vs --executor ray: whole processes, one run.

    python benchmarks/bench_scaleout.py --models d48 --workers 2,4 [--single-thread] [--json out.json]
    python benchmarks/bench_scaleout.py --ablation [--ablation-args "..."]

--ablation times the same `gpt2-verify ablate` settings with the local executor (one run after
another, torch's default threads) and with --executor ray (a local Ray started by the command,
one task per run, --cpus-per-run 1), and says whether the per-run losses are identical.

Each row is one `gpt2-verify checksum MODEL [--workers N]` process (wall, peak RSS of the process
itself, and its fp32 SHA-256: every row of a model must print the same). The baseline is the
sequential path (`--workers 1`: one stream, its Box-Muller gathers on up to 4 threads);
--single-thread adds that path with GPT2_VERIFY_THREADS=1 (one core), the base of the per-core
efficiency (speedup over one core / cores the row may use, N workers + the hashing parent).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def run(cmd: list[str], env: dict) -> tuple[float, float, dict]:
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    t0 = time.perf_counter()
    p = subprocess.Popen([*cmd, "--json", path], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}")
    with open(path) as fh:
        rec = json.load(fh)
    os.unlink(path)
    return wall, usage.ru_maxrss / 1024, rec


ABLATION = ("--layers 2 --channels 64 --heads 4 --vocab 64 --max-seq-len 64 --steps 100 --batch 8 --seq 64 "
            "--seeds 2 --schemes gpt2,xavier-normal")


def bench_ablation(extra: str, local_threads: int | None = None) -> None:
    import shutil

    cli = [sys.executable, "-m", "gpt2_verify", "ablate", *extra.split()]
    tmp = tempfile.mkdtemp(prefix="gpt2v-ablate-")
    walls = {}
    try:
        for label, more in (("local", []), ("ray", ["--executor", "ray"])):
            env = dict(os.environ)
            if label == "local" and local_threads:
                env["OMP_NUM_THREADS"] = str(local_threads)  # torch's intra-op threads
            t0 = time.perf_counter()
            subprocess.run([*cli, *more, "-o", os.path.join(tmp, label)], check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            walls[label] = time.perf_counter() - t0
        runs = sorted(os.listdir(os.path.join(tmp, "local", "runs")))
        same = all(json.load(open(os.path.join(tmp, "local", "runs", r)))["train_loss"]
                   == json.load(open(os.path.join(tmp, "ray", "runs", r)))["train_loss"] for r in runs)
        threads = f"OMP_NUM_THREADS={local_threads}" if local_threads else "torch's default threads"
        print(f"{os.cpu_count()} CPUs; ablate {extra}; local with {threads}")
        print(f"local executor: {walls['local']:.1f} s; --executor ray: {walls['ray']:.1f} s "
              f"(ray/local {walls['ray'] / walls['local']:.2f}); {len(runs)} runs, per-run losses "
              f"{'identical' if same else 'differ (thread counts differ: 1 per Ray task)'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="d48")
    ap.add_argument("--workers", default="2", help="worker counts, e.g. 2,4 (besides the sequential path)")
    ap.add_argument("--no-sequential", action="store_true", help="skip the sequential baseline (huge models)")
    ap.add_argument("--single-thread", action="store_true", help="also the sequential path on one thread")
    ap.add_argument("--json", help="write the rows as JSON")
    ap.add_argument("--ablation", action="store_true", help="time ablate local vs --executor ray instead")
    ap.add_argument("--ablation-args", default=ABLATION)
    ap.add_argument("--local-threads", type=int, help="--ablation: the local process's torch threads")
    args = ap.parse_args()
    if args.ablation:
        bench_ablation(args.ablation_args, args.local_threads)
        return
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from gpt2_verify.reference.config import from_descriptor

    cli = [sys.executable, "-m", "gpt2_verify", "checksum"]
    env = dict(os.environ)
    # warm the Box-Muller table cache once, so that no row (and no worker) builds it
    subprocess.run([*cli, "--layers", "1", "--channels", "16", "--heads", "1"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    rows = []
    print(f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'model':<6} {'params':>14} {'run':<26} {'wall s':>8} {'RSS MiB':>8} {'speedup':>8} "
          f"{'eff/core':>8}  sha256 fp32")
    for model in args.models.split(","):
        n = from_descriptor(model).num_params_padded
        plan = []
        if args.single_thread and not args.no_sequential:
            plan.append(("sequential, 1 thread", [], {"GPT2_VERIFY_THREADS": "1"}, 1))
        if not args.no_sequential:
            plan.append(("sequential (--workers 1)", [], {}, min(4, os.cpu_count() or 1)))
        for w in (int(x) for x in args.workers.split(",")):
            plan.append((f"--workers {w}", ["--workers", str(w)], {}, w + 1))
        base = one = None
        shas = set()
        for label, extra, more, cores in plan:
            wall, rss, rec = run([*cli, model, *extra], {**env, **more})
            shas.add(rec["sha256_fp32"])
            if label.startswith("sequential, 1"):
                one = wall
            if base is None and not label.startswith("sequential, 1"):
                base = wall
            speed = base / wall if base else None
            eff = (one / wall) / min(cores, os.cpu_count() or 1) if one else None
            rows.append({"model": model, "params": n, "run": label, "wall_s": wall, "peak_rss_mib": rss,
                         "speedup_vs_first": speed, "efficiency_per_core": eff,
                         "sha256_fp32": rec["sha256_fp32"], "values_per_s": n / wall})
            print(f"{model:<6} {n:>14,} {label:<26} {wall:>8.1f} {rss:>8.0f} "
                  f"{speed if speed else float('nan'):>8.2f} {eff if eff else float('nan'):>8.2f}  "
                  f"{rec['sha256_fp32'][:16]}", flush=True)
        if len(shas) != 1:
            raise SystemExit(f"{model}: the runs disagree on the checksum: {shas}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpus": os.cpu_count(), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
