"""`gpt2-verify fuzz`: drive any initializer through Hypothesis-drawn configs (schema in
verify.compare.fuzz)."""

from __future__ import annotations

from gpt2_verify.reference.normal import PROFILES

from ..compare.grade import MIN_VALUES
from ..errors import EXIT_CHECK_FAILED, EXIT_OK, InputError
from .common import add_scheme_args, emit_json


def cmd_fuzz(args) -> int:
    from ..compare.candidate import Candidate
    from ..compare.fuzz import SchemeError, fuzz

    if (args.cmd is None) == (args.adapter is None):
        raise InputError(None, "give exactly one of --cmd TEMPLATE or --adapter module:function")
    if args.examples < 1:
        raise InputError(None, f"--examples {args.examples}: must be at least 1")
    if args.min_values < 3:
        raise InputError(None, f"--min-values {args.min_values}: give at least 3 "
                                     "(a law check needs 3 values)")
    if args.max_params < 100:
        raise InputError(None, f"--max-params {args.max_params}: must be at least 100")
    if not args.timeout > 0:
        raise InputError(None, f"--timeout {args.timeout}: must be positive (seconds)")
    from hypothesis.errors import InvalidArgument

    candidate = Candidate(cmd=args.cmd, adapter=args.adapter, timeout=args.timeout)
    try:
        result = fuzz(candidate, examples=args.examples, max_params=args.max_params, require=args.require,
                      profile=args.profile, hypothesis_seed=args.hypothesis_seed, scheme=args.scheme,
                      overrides=args.overrides, min_values=args.min_values)
    except InvalidArgument as e:
        raise InputError(None, f"fuzz: {' '.join(str(e).split())}") from None
    except SchemeError as e:  # a bad --set, found before the candidate runs
        raise InputError(None, str(e)) from None
    if args.json:
        emit_json(args.json, result.to_dict())
    if args.json != "-":
        print(result.render())
    return EXIT_CHECK_FAILED if result.failure else EXIT_OK


def register(sub) -> None:
    q = sub.add_parser("fuzz", help="run an initializer over Hypothesis-drawn configs and seeds, grade "
                                    "each output, shrink a failure to the smallest config")
    q.add_argument("--cmd", metavar="TEMPLATE",
                   help="command for any language with placeholders {L} {C} {NH} {V} {Vp} {T} {seed} "
                        "{out}; it writes a weights file (any supported format) at {out}")
    q.add_argument("--adapter", metavar="MODULE:FUNCTION",
                   help="Python function(config, seed) -> {name: array} (llm.c names or state-dict keys)")
    q.add_argument("--examples", type=int, default=50, help="configs to try (50)")
    q.add_argument("--max-params", type=int, default=200_000,
                   help="largest model drawn, in parameters (200,000)")
    q.add_argument("--require", choices=("exact", "close", "distribution"),
                   help="the grade every example must reach; default: each output file decides (close for "
                        "an llm.c checkpoint or with --profile, distribution for anything else)")
    q.add_argument("--profile", choices=PROFILES, help="the reference profile (llmc); giving it claims "
                                                        "that profile's stream (close by default)")
    q.add_argument("--min-values", type=int, default=MIN_VALUES, metavar="N",
                   help=f"fewest values a law check runs on; in distribution mode no config with a "
                        f"smaller random tensor is tried, so a failure never shrinks into one ({MIN_VALUES})")
    add_scheme_args(q)  # the scheme the candidate implements (e.g. xavier-uniform)
    q.add_argument("--timeout", type=float, default=60.0, help="seconds per candidate run (60)")
    q.add_argument("--hypothesis-seed", type=int, metavar="N",
                   help="draw the same examples on every run (default: fresh ones each run)")
    q.add_argument("--json", metavar="PATH", help="write the result as JSON ('-': stdout, JSON only)")
    q.set_defaults(func=cmd_fuzz)
