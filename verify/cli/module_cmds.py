"""`gpt2-verify module SPEC`: judge a PyTorch GPT-2 nn.Module against the float64 reference.

    gpt2-verify module model.py:make_model                   default config L2 C64 NH4 V1000
    gpt2-verify module mypkg.models:gpt d12 --seq 64 --batch 4
    gpt2-verify module model.py:make_model --device cuda --dtype bf16 --json report.json

SPEC is FILE.py:FACTORY or package.module:FACTORY; FACTORY(config) returns a torch.nn.Module,
config a dict with keys layers, channels, heads, vocab, padded_vocab, max_seq_len (and
descriptor). Exit 0 pass, 1 a check failed, 2 bad input (missing file, a factory that raises,
a module whose parameters cannot be mapped, a forward that raises).

--json writes the typed record "gpt2-verify/module/1" (verify.records.ModuleRecord: verdict,
config, device/precision and the tolerance table used, every check with its error, limit, % of
the limit used and message, the training steps, findings, the cause named, margins).
Non-finite numbers are written as null.
"""

from __future__ import annotations

from ..errors import EXIT_CHECK_FAILED, EXIT_OK, InputError
from .common import add_config_args, check_seed, emit_json


def _config(args):
    from gpt2_verify.reference.config import GPTConfig, from_descriptor

    from ..torchmodule import DEFAULT_CONFIG

    custom = [args.layers, args.channels, args.heads]
    if args.descriptor:
        if any(v is not None for v in custom):
            raise InputError(None, "give either a descriptor or --layers/--channels/--heads, not both")
        return from_descriptor(args.descriptor)
    if all(v is None for v in custom):
        return DEFAULT_CONFIG
    if any(v is None for v in custom):
        raise InputError(None, "a custom config needs all of --layers, --channels and --heads")
    return GPTConfig(args.layers, args.channels, args.heads, args.vocab, args.padded_vocab,
                     args.max_seq_len)


def cmd_module(args) -> int:
    from ..torchmodule import check_module
    from ..torchmodule.load import load_callable

    cfg = _config(args)
    check_seed(args.seed)
    if args.steps < 0:
        raise InputError(None, f"--steps {args.steps}: give 0 or more")
    if args.batch < 1 or not 1 <= args.seq <= cfg.max_seq_len:
        raise InputError(None, f"--batch {args.batch} --seq {args.seq}: need B >= 1 and "
                               f"1 <= T <= maxT = {cfg.max_seq_len}")
    factory = load_callable(args.spec, what="SPEC")
    call = load_callable(args.call, what="--call") if args.call else "auto"
    try:
        report = check_module(factory, cfg, device=args.device, dtype=args.dtype, steps=args.steps,
                              layout=args.layout, call=call, batch=args.batch, seq=args.seq,
                              seed=args.seed, margins=args.margins, source=args.spec)
    except ValueError as e:
        raise InputError(None, str(e)) from None
    code = EXIT_OK if report.passed else EXIT_CHECK_FAILED
    if args.json:
        emit_json(args.json, report.record().to_dict())
        if args.json == "-":
            return code
    print(report.render())
    return code


def register(sub) -> None:
    q = sub.add_parser("module", help="judge a PyTorch GPT-2 nn.Module's forward, backward and training "
                                      "steps against the float64 reference, and name the cause")
    q.add_argument("spec", metavar="SPEC", help="FILE.py:FACTORY or package.module:FACTORY; "
                                                "FACTORY(config dict) -> torch.nn.Module")
    add_config_args(q, seed=False, profile=False, vocab=1000, max_seq_len=64, default="L2 C64 NH4 V1000")
    q.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    q.add_argument("--dtype", choices=("fp32", "tf32", "bf16"), default="fp32",
                   help="fp32 (TF32 off), tf32 (CUDA matmuls in TF32), bf16 (torch.autocast)")
    q.add_argument("--steps", type=int, default=3, help="AdamW training steps judged (3; 0: none)")
    q.add_argument("--layout", choices=("auto", "llmc-py", "nanogpt", "hf"), default="auto",
                   help="parameter names/shapes: train_gpt2.py and nanoGPT (nn.Linear), hf (Conv1D)")
    q.add_argument("--call", metavar="FILE.py:FN",
                   help="adapter FN(model, idx, targets) -> (logits, loss) instead of the detected call")
    q.add_argument("--batch", type=int, default=2, help="B (2)")
    q.add_argument("--seq", type=int, default=16, help="T (16)")
    q.add_argument("--seed", type=int, default=42, help="seed of the probe weights and tokens (42)")
    q.add_argument("--margins", action="store_true",
                   help="also show how many tolerances each known variant moves the reference")
    q.add_argument("--json", metavar="PATH|-", help="write the JSON report ('-': stdout, only JSON)")
    q.set_defaults(func=cmd_module)
