"""Pieces every command group shares: config arguments, seed range, JSON output."""

from __future__ import annotations

import argparse
import json
import sys

from gpt2_verify.reference.config import GPTConfig, descriptor_names, from_descriptor
from gpt2_verify.reference.mt19937 import MAX_SEED
from gpt2_verify.reference.normal import PROFILES

from ..atomic import write_text_atomic
from ..errors import InputError


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage + 2 lines)
        # main() prints "gpt2-verify: error: ": name only the subcommand here, not the program again
        sub = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        where = f"{sub}: " if sub else ""
        raise InputError(None, f"{where}{message} (see {self.prog} --help)")


# ---- config arguments shared by init and checksum ---------------------------------------------

def add_config_args(p: argparse.ArgumentParser, *, seed: bool = True, profile: bool = True,
                    vocab: int = 50257, max_seq_len: int = 1024, default: str | None = None) -> None:
    """The config (a descriptor or --layers/--channels/--heads ...), --seed unless seed=False (a
    command with seeds of its own) and --profile unless profile=False (a command that draws no
    reference init). vocab and max_seq_len are the custom
    config's defaults (llm.c's unless a command runs small models by default); `default` names
    the config used when none is given."""
    p.add_argument("descriptor", nargs="?",
                   help=f"llm.c model descriptor: {', '.join(descriptor_names())} (gpt2:dN too)"
                        + (f"; default {default}" if default else ""))
    p.add_argument("--layers", type=int, help="custom config: number of layers L")
    p.add_argument("--channels", type=int, help="custom config: channels C")
    p.add_argument("--heads", type=int, help="custom config: attention heads NH (C %% NH == 0)")
    p.add_argument("--vocab", type=int, default=vocab, help=f"custom config: vocab V ({vocab})")
    p.add_argument("--max-seq-len", type=int, default=max_seq_len,
                   help=f"custom config: maxT ({max_seq_len})")
    p.add_argument("--padded-vocab", type=int, default=None,
                   help="custom config: Vp (default V rounded up to a multiple of 128)")
    if seed:
        p.add_argument("--seed", type=int, default=42, help="mt19937 seed (42, llm.c's)")
    if profile:
        p.add_argument("--profile", choices=PROFILES, default="llmc",
                       help="llmc: llm.c's C init bit for bit; torch: PyTorch CPU normal_ (scalar)")


def add_scheme_args(p: argparse.ArgumentParser) -> None:
    from gpt2_verify.reference.schemes import DEFAULT_SCHEME, SCHEMES

    p.add_argument("--scheme", choices=list(SCHEMES), default=DEFAULT_SCHEME,
                   help=f"init scheme (default {DEFAULT_SCHEME}, llm.c's); `gpt2-verify params --scheme S` "
                        "shows its laws")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="T.F=V",
                   help="override a tensor's law: TENSOR[,TENSOR].FIELD=VALUE with FIELD one of std, bound, "
                        "k, value, scale (e.g. wpe.std=0.01, attprojw,fcprojw.scale=10), or a scheme "
                        "parameter (base_width=64); repeatable")


def add_executor_args(p: argparse.ArgumentParser, *, what: str) -> None:
    """--executor, --ray-address and, for the init, --workers (verify.executors)."""
    from ..executors import EXECUTORS

    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help=f"where {what} run: local (this machine) or ray (a Ray cluster; needs "
                        "pip install 'gpt2-verify[ray]')")
    p.add_argument("--ray-address", metavar="ADDR", default=None,
                   help="the Ray cluster to use (e.g. ray://head:10001 or auto); default: start a local Ray")


def scheme_from_args(args, cfg: GPTConfig):
    """The resolved scheme (reference.schemes.SchemeInit) of --scheme/--set/--profile."""
    from gpt2_verify.reference.schemes import resolve

    try:
        return resolve(args.scheme, cfg, profile=args.profile or "llmc", overrides=args.overrides)
    except ValueError as e:
        raise InputError(None, str(e)) from None


def config_from_args(args) -> GPTConfig:
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


def check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise InputError(None, f"--seed {seed} out of range: llm.c and torch seed mt19937 with "
                               f"a uint32 (0..{MAX_SEED})")


def emit_json(dest: str, obj) -> None:
    text = json.dumps(obj, indent=1) + "\n"
    if dest == "-":
        sys.stdout.write(text)
    else:
        try:
            write_text_atomic(dest, text)
        except OSError as e:
            raise InputError(dest, f"cannot write: {e.strerror or e}") from None


