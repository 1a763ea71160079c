"""`gpt2-verify bench`: forward/backward/optimizer timings of the reference GPT-2 at random init
(and of llm.c's train_gpt2), tokens/s, TFLOP/s, MFU and peak memory, as JSON that merges across
machines (`--merge`). What is measured and how: verify/bench/ (timing, flops, device, record)."""

from __future__ import annotations

import math
import sys

from ..errors import EXIT_OK, InputError
from .common import add_config_args, check_seed, config_from_args, emit_json


def _int_list(text: str, flag: str) -> list[int]:
    out = []
    for part in str(text).split(","):
        try:
            v = int(part.strip())
        except ValueError:
            raise InputError(None, f"{flag} {text!r}: give positive integers separated by commas, "
                                   f"e.g. {flag} 4,8") from None
        if v < 1:
            raise InputError(None, f"{flag} {text!r}: every value must be at least 1")
        out.append(v)
    return out


def _configs(args) -> list:
    from gpt2_verify.reference.config import ConfigError, from_descriptor

    cfgs = []
    for name in (args.configs.split(",") if args.configs else []):
        name = name.strip()
        try:
            cfgs.append(from_descriptor(name))
        except ConfigError as e:
            raise InputError(None, f"--configs: {name!r}: {e}") from None
    if args.descriptor or args.layers is not None or args.channels is not None or args.heads is not None:
        cfgs.append(config_from_args(args))
    if not cfgs:
        raise InputError(None, "give a descriptor (e.g. d12), --configs d6,d12, or --layers/--channels/"
                               "--heads for a custom config")
    return cfgs


def _peak_override(args, threads: int):
    from ..bench.flops import PeakLookup, cpu_peak_estimate

    if args.peak_tflops is not None:
        if not (math.isfinite(args.peak_tflops) and args.peak_tflops > 0):
            raise InputError(None, f"--peak-tflops {args.peak_tflops}: give a positive number of TFLOPS")
        return PeakLookup(float(args.peak_tflops), "--peak-tflops (user-given)", "given on the command line")
    if args.cpu_peak_estimate:
        try:
            ghz, fpc = (float(v) for v in args.cpu_peak_estimate.split(","))
            return cpu_peak_estimate(cores=threads, ghz=ghz, flops_per_cycle=fpc)
        except ValueError:
            raise InputError(None, f"--cpu-peak-estimate {args.cpu_peak_estimate!r}: give GHZ,FLOPS_PER_CYCLE"
                                   f" as two positive numbers, e.g. 2.0,64 (AVX-512: 2 FMA x 16 lanes x 2)"
                             ) from None
    return None


def cmd_merge(args) -> int:
    from ..bench.record import merge, render

    if args.descriptor or args.configs or args.layers is not None or args.llmc_train_bin:
        raise InputError(None, "--merge combines JSON files: give no config or --llmc-train-bin with it")
    out = merge(args.merge)
    dest = args.json or args.output
    if dest:
        emit_json(dest, out)
    if dest != "-":
        sys.stdout.write(render(out["rows"]))
    return EXIT_OK


def cmd_bench(args) -> int:
    if args.merge:
        return cmd_merge(args)
    import torch

    from ..bench.flops import lookup_peak
    from ..bench.record import record, render
    from ..bench.timing import StepProgress, bench_llmc, bench_reference, check_llmc

    cfgs = _configs(args)
    check_seed(args.seed)
    batches, seqs = _int_list(args.batch, "--batch"), _int_list(args.seq, "--seq")
    if args.repeats < 1 or args.warmup < 0:
        raise InputError(None, f"--repeats {args.repeats} --warmup {args.warmup}: need repeats >= 1, "
                               f"warmup >= 0")
    if args.threads is not None and args.threads < 1:
        raise InputError(None, f"--threads {args.threads}: must be at least 1")
    for cfg in cfgs:
        for t in seqs:
            if t > cfg.max_seq_len:
                raise InputError(None, f"--seq {t} exceeds max_seq_len {cfg.max_seq_len} of {cfg.describe()}")
    cuda_ok = torch.cuda.is_available()
    if args.device == "cuda" and not cuda_ok:
        raise InputError(None, "--device cuda: torch.cuda.is_available() is False on this machine")
    devices = {"cpu": ["cpu"], "cuda": ["cuda"], "auto": ["cpu"] + (["cuda"] if cuda_ok else [])}[args.device]
    modes = [(d, False) for d in devices]
    if args.compile:
        if "cuda" in devices:
            if args.warmup < 1:
                raise InputError(None, "--compile needs --warmup >= 1 (the first step compiles)")
            modes.append(("cuda", True))
        else:
            print("gpt2-verify: note: --compile applies to CUDA rows; no CUDA device here, so none",
                  file=sys.stderr)
    threads = args.threads or torch.get_num_threads()
    override = _peak_override(args, threads)
    if args.llmc_warmup < 0:
        raise InputError(None, f"--llmc-warmup {args.llmc_warmup}: must be >= 0")
    if args.llmc_train_bin:
        for cfg in cfgs:  # before any timing: a config train_gpt2 cannot run fails at once
            check_llmc(args.llmc_train_bin, cfg)

    steps = len(cfgs) * len(batches) * len(seqs) * len(modes) * (args.warmup + args.repeats)
    rows = []
    with StepProgress(steps, "bench") as prog:
        for cfg in cfgs:
            name = cfg.name or cfg.slug()
            for b in batches:
                for t in seqs:
                    for dev, comp in modes:
                        tag = f"{dev}+compile" if comp else dev
                        prog.update(0, label=f"bench {name} B{b} T{t} {tag}: step")
                        peak = override
                        if peak is None and dev == "cpu":
                            peak = lookup_peak("", kind="cpu")
                        rows.append(bench_reference(cfg, batch=b, seq=t, device=dev, compile=comp,
                                                    warmup=args.warmup, repeats=args.repeats, seed=args.seed,
                                                    profile=args.profile,
                                                    threads=args.threads if dev == "cpu" else None,
                                                    peak=peak, progress=prog))
            if args.llmc_train_bin:
                prog.update(0, label=f"bench {name} llm.c train_gpt2 (up to {args.llmc_timeout:g} s)")
                rows.append(bench_llmc(args.llmc_train_bin, cfg, seed=args.seed, threads=threads,
                                       warmup=args.llmc_warmup, timeout=args.llmc_timeout, peak=override))
    out = record(rows)
    dest = args.json or args.output
    if dest:
        emit_json(dest, out)
    if dest != "-":
        sys.stdout.write(render(rows))
        if any(r["mfu"] is None for r in rows):
            reasons = sorted({r["peak_reason"] for r in rows if r["mfu"] is None})
            print("MFU '-': " + "; ".join(reasons))
    return EXIT_OK


def register(sub) -> None:
    q = sub.add_parser("bench", help="time forward/backward/AdamW of the reference GPT-2 at random init "
                                     "(CPU float32; CUDA bf16 autocast) and llm.c's train_gpt2: tokens/s, "
                                     "TFLOP/s, MFU, peak memory; --merge joins machines' JSON")
    add_config_args(q)
    q.add_argument("--configs", metavar="D1,D2", help="several descriptors, e.g. d6,d12 (with or instead "
                                                      "of the positional descriptor / custom config)")
    q.add_argument("--batch", default="4", metavar="B[,B...]", help="batch sizes (4)")
    q.add_argument("--seq", default="64", metavar="T[,T...]", help="sequence lengths (64; at most maxT)")
    q.add_argument("--threads", type=int, help="torch CPU threads, also llm.c's OMP_NUM_THREADS "
                                               "(default: torch's)")
    q.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CPU, plus CUDA when torch sees a GPU (default)")
    q.add_argument("--compile", action="store_true", help="also time torch.compile'd CUDA rows")
    q.add_argument("--warmup", type=int, default=2, help="untimed steps first (2)")
    q.add_argument("--repeats", type=int, default=5, help="timed steps (5)")
    q.add_argument("--peak-tflops", type=float, help="peak TFLOPS for MFU, overriding the table "
                                                     "(verify/bench/flops.py PEAKS) for every row")
    q.add_argument("--cpu-peak-estimate", metavar="GHZ,FLOPS_PER_CYCLE",
                   help="estimate the CPU peak as threads x GHz x FLOPs per cycle per core (e.g. 2.0,64 "
                        "for AVX-512 with 2 FMA units); only on request, CPUs have no table entry")
    q.add_argument("--llmc-train-bin", metavar="PATH",
                   help="also run this llm.c CPU train_gpt2 build on each config (its fixed B=4, T=64; "
                        "needs maxT >= 64, V <= 65536): rows with impl 'llmc'")
    q.add_argument("--llmc-timeout", type=float, default=900.0,
                   help="seconds train_gpt2 may run; the steps printed by then are used (900)")
    q.add_argument("--llmc-warmup", type=int, default=1, help="train_gpt2 step times dropped first (1)")
    q.add_argument("--merge", nargs="+", metavar="FILE", help="merge bench JSON files and print one table")
    q.add_argument("--json", metavar="FILE", help="write the JSON record ('-': stdout, JSON only)")
    q.add_argument("-o", "--output", metavar="FILE", help="same as --json FILE")
    q.set_defaults(func=cmd_bench)
