"""gpt2-verify command line. Exit codes: 0 ok, 1 a check failed, 2 bad input or usage.

Errors are one line on stderr naming the file (or argument) and the problem; no tracebacks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import numpy as np

from reference.config import ConfigError, GPTConfig, descriptor_names, from_descriptor
from reference.init import iter_params
from reference.normal import PROFILES

from . import __version__
from .atomic import write_text_atomic
from .errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_OK, CheckFailed, InputError
from .pipeline import background
from .progress import Progress


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage + 2 lines)
        raise InputError(None, f"{self.prog}: {message} (see --help)")


# ---- config arguments shared by init and checksum ---------------------------------------------

def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("descriptor", nargs="?",
                   help=f"llm.c model descriptor: {', '.join(descriptor_names())} (gpt2:dN too)")
    p.add_argument("--layers", type=int, help="custom config: number of layers L")
    p.add_argument("--channels", type=int, help="custom config: channels C")
    p.add_argument("--heads", type=int, help="custom config: attention heads NH (C %% NH == 0)")
    p.add_argument("--vocab", type=int, default=50257, help="custom config: vocab V (50257)")
    p.add_argument("--max-seq-len", type=int, default=1024, help="custom config: maxT (1024)")
    p.add_argument("--padded-vocab", type=int, default=None,
                   help="custom config: Vp (default V rounded up to a multiple of 128)")
    p.add_argument("--seed", type=int, default=42, help="mt19937 seed (42, llm.c's)")
    p.add_argument("--profile", choices=PROFILES, default="llmc",
                   help="llmc: llm.c's C init bit for bit; torch: PyTorch CPU normal_ (scalar)")


def _config(args) -> GPTConfig:
    custom = [args.layers, args.channels, args.heads]
    if args.descriptor:
        if any(v is not None for v in custom):
            raise InputError(None, "give either a descriptor or --layers/--channels/--heads, "
                                   "not both")
        return from_descriptor(args.descriptor)
    if any(v is None for v in custom):
        raise InputError(None, "give a descriptor (e.g. d12) or all of --layers, --channels "
                               "and --heads")
    return GPTConfig(args.layers, args.channels, args.heads, args.vocab, args.padded_vocab,
                     args.max_seq_len)


def _check_seed(seed: int) -> None:
    if not 0 <= seed <= 2**32 - 1:
        raise InputError(None, f"--seed {seed} out of range: llm.c and torch seed mt19937 with "
                               f"a uint32 (0..4294967295)")


# ---- commands -------------------------------------------------------------------------------

def cmd_init(args) -> int:
    from .formats.checkpoint import write_checkpoint

    cfg = _config(args)
    _check_seed(args.seed)
    sha = hashlib.sha256()
    with Progress(cfg.num_params_padded, f"init {cfg.slug()}") as bar:
        def chunks():
            for _spec, part in background(iter_params(cfg, args.seed, args.profile)):
                if args.dtype == "fp32":
                    sha.update(np.ascontiguousarray(part, dtype="<f4").data)
                bar.update(part.size)
                yield part
        try:
            write_checkpoint(args.output, cfg, chunks(), args.dtype)
        except OSError as e:
            raise InputError(args.output, f"cannot write: {e.strerror or e}") from None
    line = (f"wrote {args.output}: {cfg.describe()}, {cfg.num_params_padded:,} params, "
            f"{args.dtype}, profile {args.profile}, seed {args.seed}")
    if args.dtype == "fp32":
        line += f", body sha256 {sha.hexdigest()}"
    print(line)
    return EXIT_OK


def cmd_checksum(args) -> int:
    from .digest import digest_stream

    cfg = _config(args)
    _check_seed(args.seed)
    with Progress(cfg.num_params_padded, f"checksum {cfg.slug()}") as bar:
        d = digest_stream(background(iter_params(cfg, args.seed, args.profile)), progress=bar)
    if args.json:
        out = {"config": cfg.describe(), "seed": args.seed, "profile": args.profile,
               **d.as_dict()}
        _emit_json(args.json, out)
    else:
        print(f"{cfg.describe()} seed {args.seed} profile {args.profile}")
        print(f"sha256 fp32 {d.sha256_fp32}")
        print(f"sha256 bf16 {d.sha256_bf16}")
    return EXIT_OK


def _emit_json(dest: str, obj) -> None:
    text = json.dumps(obj, indent=1) + "\n"
    if dest == "-":
        sys.stdout.write(text)
    else:
        try:
            write_text_atomic(dest, text)
        except OSError as e:
            raise InputError(dest, f"cannot write: {e.strerror or e}") from None


def cmd_stats(args) -> int:
    from reference.bf16 import bf16_bits_to_f32

    from .digest import digest_stream
    from .formats.checkpoint import open_checkpoint

    with open_checkpoint(args.file) as ckpt:  # validates the header and size first
        header = ckpt.header

        def pairs():  # (spec, float32 chunk) in file order, 1M values at a time
            for spec in ckpt.specs:
                flat = ckpt.flat[spec.offset:spec.offset + spec.numel]
                for lo in range(0, spec.numel, 1 << 20):
                    part = flat[lo:lo + (1 << 20)]
                    yield spec, bf16_bits_to_f32(part) if ckpt.dtype == "bf16" else part

        with Progress(header.config.num_params_padded, "stats") as bar:
            rows = list(digest_stream(pairs(), bf16=False, progress=bar).tensors.values())
    if args.json:
        _emit_json(args.json, {"file": args.file, "config": header.config.describe(),
                               "dtype": header.dtype,
                               "tensors": {d.name: d.as_dict() for d in rows}})
    print(f"{args.file}: {header.config.describe()}, {header.dtype}, "
          f"{header.config.num_params_padded:,} params")
    print(f"{'tensor':<9} {'shape':<18} {'numel':>12} {'mean':>12} {'std':>11} "
          f"{'min':>11} {'max':>11}")
    bad = 0
    for d in rows:
        shape = "x".join(map(str, d.shape))
        print(f"{d.name:<9} {shape:<18} {d.numel:>12,} {d.mean:>12.4e} "
              f"{d.std:>11.4e} {d.min:>11.4e} {d.max:>11.4e}"
              + (f"  {d.nonfinite} NaN/Inf" if d.nonfinite else ""))
        bad += d.nonfinite
    return EXIT_CHECK_FAILED if bad else EXIT_OK


def cmd_params(args) -> int:
    from reference.config import layout_shape, state_dict_key

    cfg = _config(args)
    print(cfg.describe())
    print(f"{'#':>2} {'llm.c':<9} {'llm.c shape':<18} {'offset':>12} {'numel':>12}  init      "
          f"{args.layout} key (shape)")
    for spec in cfg.tensors():
        init = spec.init + ("*" if spec.residual else "")
        key = state_dict_key(spec.name, 0 if spec.per_layer else None)
        if spec.per_layer:
            key = key.replace(".h.0.", ".h.{i}.")
        shape = layout_shape(cfg, spec.name, args.layout) if args.layout != "llmc" else spec.shape
        print(f"{spec.index:>2} {spec.name:<9} {'x'.join(map(str, spec.shape)):<18} "
              f"{spec.offset:>12,} {spec.numel:>12,}  {init:<9} "
              + (key if args.layout != "llmc" else "") + f" ({'x'.join(map(str, shape))})")
    print(f"parameters: {cfg.num_params_padded:,} as llm.c stores them (wte over Vp rows), "
          f"{cfg.num_params:,} with V rows, {cfg.num_params_nanogpt:,} nanoGPT non-embedding")
    print("* residual projection: std 0.02/sqrt(2L); hf: Conv1D weights are (in, out)"
          if args.layout == "hf" else "* residual projection: std 0.02/sqrt(2L)")
    return EXIT_OK


def cmd_golden(args) -> int:
    from . import golden

    names = golden.resolve(args.names, all_=args.all)
    if args.action == "write":
        for name in names:
            path = golden.write(name)
            print(f"wrote {path}")
        return EXIT_OK
    failed = 0
    for name in names:
        problems = golden.check(name)
        if problems:
            failed += 1
            for p in problems:
                print(f"FAIL {p}")
        else:
            print(f"ok   {name}")
    if failed:
        raise CheckFailed(f"{failed} of {len(names)} golden records differ")
    return EXIT_OK


# ---- entry point ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gpt2-verify", description="Verify GPT-2 init and training numerics "
                                                "against an llm.c-exact reference.")
    p.add_argument("--version", action="version", version=f"gpt2-verify {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    q = sub.add_parser("init", help="write the reference random init as an llm.c checkpoint")
    _add_config_args(q)
    q.add_argument("-o", "--output", required=True, help="output .bin (written atomically)")
    q.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="fp32 (version 3) or bf16 (version 5, round-to-nearest-even)")
    q.set_defaults(func=cmd_init)

    q = sub.add_parser("checksum", help="SHA-256 and statistics of the reference init, "
                                        "streamed (no file, bounded memory)")
    _add_config_args(q)
    q.add_argument("--json", metavar="PATH", help="write per-tensor statistics as JSON "
                                                  "('-' for stdout)")
    q.set_defaults(func=cmd_checksum)

    q = sub.add_parser("stats", help="per-tensor statistics of an llm.c checkpoint")
    q.add_argument("file")
    q.add_argument("--json", metavar="PATH", help="also write them as JSON ('-' for stdout)")
    q.set_defaults(func=cmd_stats)

    q = sub.add_parser("params", help="the parameter table: names, shapes, offsets, counts, "
                                      "and the state-dict names other implementations use")
    _add_config_args(q)
    q.add_argument("--layout", choices=("llmc", "nanogpt", "hf"), default="nanogpt",
                   help="whose state-dict names/shapes to show (hf transposes Conv1D weights)")
    q.set_defaults(func=cmd_params)

    q = sub.add_parser("golden", help="write or check the golden statistics and checksums")
    q.add_argument("action", choices=("write", "check"))
    q.add_argument("names", nargs="*", help="golden records (default: all but d36/d48)")
    q.add_argument("--all", action="store_true", help="include the large d36 and d48 records")
    q.set_defaults(func=cmd_golden)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (InputError, ConfigError) as e:
        print(f"gpt2-verify: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except CheckFailed as e:
        print(f"gpt2-verify: check failed: {e}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except KeyboardInterrupt:
        print("gpt2-verify: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
