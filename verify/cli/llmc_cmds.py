"""`gpt2-verify debug-state` and `gpt2-verify llmc`: llm.c's test files without pretrained GPT-2,
and a real verdict (and exit code) for a user's llm.c CPU and CUDA binaries (verify.llmc)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EXIT_CHECK_FAILED, EXIT_OK, InputError
from .common import add_config_args, check_seed, config_from_args, emit_json


def _model(args):
    """(config, weights or None for the probe/plain init, weights label). --model is a checkpoint
    file (its weights are used as they are) or a descriptor."""
    from gpt2_verify.reference.config import ConfigError, GPTConfig, from_descriptor

    if args.model is not None:
        if args.descriptor is not None or args.layers is not None:
            raise InputError(None, "give --model or a descriptor / --layers/--channels/--heads, not both")
        if os.path.isfile(args.model):
            return _model_file(args)
        try:
            return from_descriptor(args.model), None, None
        except ConfigError as e:
            raise InputError(args.model, f"neither a file nor a model descriptor ({e})") from None
    if args.descriptor is None and args.layers is None:  # the default small random config
        return GPTConfig(2, 64, 4, vocab=1000, max_seq_len=64), None, None
    return config_from_args(args), None, None


def _model_file(args):
    import numpy as np

    from ..formats.checkpoint import check_finite, open_checkpoint

    if args.plain_init:
        raise InputError(None, "--plain-init picks the reference init: not with --model FILE")
    check_finite(args.model)  # NaN/inf weights: InputError naming the tensor and index
    with open_checkpoint(args.model) as ck:
        cfg = ck.config
        params = {s.name: np.array(ck.tensor_f32(s.name), dtype=np.float32) for s in ck.specs}
    return cfg, params, f"file:{args.model}"


def _check_sizes(args, cfg) -> None:
    if args.batch < 1 or args.seq < 1:
        raise InputError(None, f"--batch {args.batch} --seq {args.seq}: both must be at least 1")
    if args.seq > cfg.max_seq_len:
        raise InputError(None, f"--seq {args.seq} exceeds the model's max_seq_len {cfg.max_seq_len}")


def cmd_debug_state(args) -> int:
    from ..llmc.harness import prepare

    cfg, params, weights = _model(args)
    check_seed(args.seed)
    _check_sizes(args, cfg)
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(out, f"cannot create: {e.strerror or e}") from None
    exp = prepare(out, cfg, seed=args.seed, batch=args.batch, seq=args.seq, plain=args.plain_init,
                  need_train=False, params=params, profile=args.profile)
    print(f"wrote {out}/gpt2_124M.bin (fp32, version 3: test_gpt2, train_gpt2, test_gpt2fp32cu and a "
          f"PRECISION=FP32 test_gpt2cu open it), gpt2_124M_bf16.bin (bf16, version 5: test_gpt2cu's default "
          f"PRECISION=BF16 build opens it), gpt2_124M_debug_state.bin (B={exp.test_B}, T={exp.test_T}, "
          f"reference loss {exp.loss:.6f}), gpt2_tokenizer.bin and "
          f"dev/data/tinyshakespeare/tiny_shakespeare_{{train,val}}.bin for {cfg.describe()} "
          f"({weights or ('plain init' if args.plain_init else 'probe weights')})")
    return EXIT_OK


TEST_NAMES = ["test_gpt2", "test_gpt2cu", "test_gpt2fp32cu"]  # llm.c's Makefile targets
TRAIN_NAMES = ["train_gpt2", "train_gpt2cu"]


def _say(line: str) -> None:
    """Progress on stderr (stdout may carry JSON): what runs now and why it takes long."""
    import sys
    import time

    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def cmd_llmc(args) -> int:
    from ..llmc.cuda import kind_of
    from ..llmc.harness import config_problems, run_harness

    cfg, params, weights = _model(args)
    check_seed(args.seed)
    _check_sizes(args, cfg)
    tests, trains = list(args.test_bin or []), list(args.train_bin or [])
    if args.bin_dir:
        d = Path(args.bin_dir)
        if not d.is_dir():
            raise InputError(d, "not a directory")
        tests += [str(d / n) for n in TEST_NAMES if (d / n).exists()]
        trains += [str(d / n) for n in TRAIN_NAMES if (d / n).exists()]
        if not tests and not trains:
            raise InputError(d, f"holds none of {', '.join(TEST_NAMES + TRAIN_NAMES)}")
    if not tests and not trains:
        raise InputError(None, "give --bin-dir DIR or --test-bin/--train-bin paths")
    for b in tests + trains:
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            raise InputError(b, "not an executable file")
    kinds = {f"{prog}:{'cuda' if kind_of(b) == 'fp32cu' else kind_of(b)}"
             for prog, bs in (("test", tests), ("train", trains)) for b in bs}
    problems = config_problems(cfg, kinds=kinds, batch=args.batch, seq=args.seq, precision=args.precision)
    if problems:
        raise InputError(None, f"the binaries cannot run this config: {problems[0]}")
    report = run_harness(cfg, test_bins=tests, train_bins=trains, seed=args.seed, batch=args.batch,
                         seq=args.seq, plain=args.plain_init, steps=args.steps, timeout=args.timeout,
                         determinism=not args.no_determinism, params=params, weights=weights,
                         profile=args.profile, precision=args.precision, say=_say)
    if args.json:
        emit_json(args.json, report.to_dict())
    if args.json != "-":
        print(report.render())
    return EXIT_OK if report.verdict == "pass" else EXIT_CHECK_FAILED


def _common(q) -> None:
    add_config_args(q)
    q.add_argument("--model", metavar="FILE|DESCRIPTOR",
                   help="an llm.c checkpoint whose weights are used as they are (fp32 or bf16; written "
                        "back as fp32 version 3, what the CPU binaries read), or a descriptor such as "
                        "d12 (slow: test_gpt2 on d12 takes ~1 min on 2 cores). Default: L2 C64 V1000 "
                        "with the probe weights")
    q.add_argument("--batch", type=int, default=2, help="B of the debug state (2; small batches make "
                                                         "optimizer errors visible, verify/llmc/harness.py)")
    q.add_argument("--seq", type=int, default=16, help="T of the debug state (16, at most maxT)")
    q.add_argument("--plain-init", action="store_true",
                   help="use the reference init as it is instead of the probe weights "
                        "(verify/llmc/harness.py)")


def register(sub) -> None:
    q = sub.add_parser("debug-state", help="write gpt2_124M.bin, its debug state, token shards and a "
                                           "tokenizer so llm.c's test_gpt2/train_gpt2 run without "
                                           "pretrained GPT-2 (default model: L2 C64 V1000)")
    _common(q)
    q.add_argument("-o", "--output", required=True, help="directory to write into")
    q.set_defaults(func=cmd_debug_state)

    q = sub.add_parser("llmc", help="run llm.c's CPU and CUDA binaries against the float64 reference and "
                                    "judge every printed figure (test_gpt2 exits 0 even when it fails)")
    _common(q)
    q.add_argument("--bin-dir", help="directory with any of test_gpt2, train_gpt2 (CPU), test_gpt2cu, "
                                     "train_gpt2cu, test_gpt2fp32cu (CUDA)")
    q.add_argument("--test-bin", action="append", help="a test_gpt2 / test_gpt2cu / test_gpt2fp32cu build "
                                                       "(repeat for several; a name ending in 'cu' is CUDA)")
    q.add_argument("--train-bin", action="append",
                   help="a train_gpt2 / train_gpt2cu build (repeat for several)")
    q.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                   help="the PRECISION the CUDA binaries were built with (bf16, llm.c's default; fp32 for "
                        "`make ... PRECISION=FP32`): picks the model file they get and their derived limits")
    q.add_argument("--steps", type=int, default=10, help="train_gpt2 steps compared (10)")
    q.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds per binary run (1800: train_gpt2 on d12 takes minutes on a few cores)")
    q.add_argument("--no-determinism", action="store_true", help="run each test binary once, not twice")
    q.add_argument("--json", metavar="PATH", help="write the report as JSON ('-': stdout, JSON only)")
    q.set_defaults(func=cmd_llmc)
