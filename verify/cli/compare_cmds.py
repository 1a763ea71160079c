"""`gpt2-verify compare`: grade any implementation's initialized weights against the reference."""

from __future__ import annotations

import argparse
import os

from gpt2_verify.reference.config import LLMC_VOCAB, ConfigError, GPTConfig, from_descriptor
from gpt2_verify.reference.normal import PROFILES

from ..compare.grade import MIN_VALUES
from ..errors import EXIT_CHECK_FAILED, EXIT_OK, InputError
from .common import add_scheme_args, check_seed, emit_json, scheme_from_args


def _against(args, heads: int | None):
    """None (the file's own config), a GPTConfig, or another model file."""
    custom = [args.layers, args.channels, args.heads]
    if args.against and any(v is not None for v in custom):
        raise InputError(None, "give either --against or --layers/--channels/--heads, not both")
    if args.against:
        if os.path.exists(args.against):
            from ..formats.model import open_model
            return open_model(args.against, heads=heads)
        try:
            return from_descriptor(args.against)
        except ConfigError as e:
            raise InputError(None, f"--against {args.against}: not a file, and {e}") from None
    if any(v is not None for v in custom):
        if any(v is None for v in custom):
            raise InputError(None, "a custom --against config needs all of --layers, --channels, --heads")
        return GPTConfig(args.layers, args.channels, args.heads, args.vocab or LLMC_VOCAB,
                         args.padded_vocab, args.max_seq_len or 1024)
    return None


def _layers(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise InputError(None, f"--layers {text!r}: write A:B (layers A to B-1), e.g. 10:12") from None
    return a, b


def cmd_compare(args) -> int:
    from ..compare import compare
    from ..formats.model import open_model

    if args.layers is not None and ":" in args.layers:  # --layers A:B: a layer range of --tensor
        args.layers_range, args.layers = args.layers, None
    elif args.layers is not None:
        try:
            args.layers = int(args.layers)
        except ValueError:
            raise InputError(None, f"--layers {args.layers!r}: an integer L (custom config) or a range A:B "
                                   "(with --tensor)") from None
    if args.layers_range and not args.tensor:
        raise InputError(None, "--layers A:B (a layer range) needs --tensor NAME")
    check_seed(args.seed)
    if args.min_values < 3:
        raise InputError(None, f"--min-values {args.min_values}: give at least 3 "
                                     "(a law check needs 3 values)")
    if not 0 < args.fpr <= 0.5:
        raise InputError(None, f"--fpr {args.fpr}: use a false-positive rate in (0, 0.5], e.g. 1e-9")
    against = _against(args, args.heads)
    # NH from --heads or the file (config.json); a descriptor's NH is not forced on the file, whose
    # own config may differ (compare then says which fields do)
    with open_model(args.file, fmt=args.format, layout=args.layout, heads=args.heads) as model:
        cfg = (against if isinstance(against, GPTConfig) else
               model.config if against is None else against.config)
        scheme = scheme_from_args(args, cfg)  # bad --set: one-line error, exit 2
        try:
            report = compare(model, against=against, seed=args.seed, profile=args.profile, scheme=scheme,
                             fpr=args.fpr, require=args.require, min_values=args.min_values,
                             tensor=args.tensor, layers=_layers(args.layers_range))
        except ValueError as e:
            if args.tensor is None:
                raise
            raise InputError(None, f"--tensor {args.tensor}: {e}") from None
        if args.json:
            emit_json(args.json, report.to_dict())
        if args.json != "-":
            print(report.render())
    return EXIT_OK if report.passed() else EXIT_CHECK_FAILED


def register(sub) -> None:
    q = sub.add_parser("compare", help="grade a model file's init against the reference: exact, close, "
                                       "distribution or mismatch, per tensor, with the cause")
    q.add_argument("file", help="llm.c checkpoint, PyTorch state dict (.pt/.pth/.bin), .safetensors, "
                                "Hugging Face model directory, or .npz")
    q.add_argument("--against", metavar="DESCRIPTOR|FILE",
                   help="grade against this descriptor's reference init (e.g. d12), or against another "
                        "model file (no regeneration); default: the config inferred from FILE")
    q.add_argument("--layers", help="custom --against config: L; or, with --tensor, a layer range A:B")
    q.add_argument("--tensor", metavar="NAME", help="grade only this tensor (llm.c name, e.g. fcprojw): its "
                                                    "reference is generated alone, from its stream position")
    q.add_argument("--layers-range", metavar="A:B", help=argparse.SUPPRESS)  # --layers A:B lands here
    q.add_argument("--channels", type=int, help="custom --against config: C")
    q.add_argument("--heads", type=int, help="heads NH (custom --against config, or when FILE cannot tell)")
    q.add_argument("--vocab", type=int, help="custom --against config: V (50257)")
    q.add_argument("--max-seq-len", type=int, help="custom --against config: maxT (1024)")
    q.add_argument("--padded-vocab", type=int, help="custom --against config: Vp (V rounded up to 128)")
    q.add_argument("--seed", type=int, default=42, help="the reference's mt19937 seed (42, llm.c's)")
    q.add_argument("--profile", choices=PROFILES,
                   help="llmc: llm.c's C init; torch: PyTorch's CPU normal_ (train_gpt2.py); default llmc. "
                        "Giving it claims that profile's stream: --require defaults to close")
    q.add_argument("--format", choices=("llmc", "torch", "safetensors", "npz"),
                   help="override the format detected from the magic and suffix")
    q.add_argument("--layout", choices=("llmc", "nanogpt", "hf"),
                   help="override the layout detected from the tensor names")
    add_scheme_args(q)
    q.add_argument("--require", choices=("exact", "close", "distribution"),
                   help="the verdict needed to exit 0; default: close for an llm.c checkpoint or with "
                        "--profile, distribution (right laws, any RNG) for every other file")
    q.add_argument("--min-values", type=int, default=MIN_VALUES, metavar="N",
                   help=f"fewest values a law check runs on; a tensor with fewer is untestable "
                        f"({MIN_VALUES})")
    q.add_argument("--fpr", type=float, default=1e-9,
                   help="false-positive rate of all distribution checks together (1e-9)")
    q.add_argument("--json", metavar="PATH", help="write the report as JSON ('-': stdout, JSON only)")
    q.set_defaults(func=cmd_compare)
