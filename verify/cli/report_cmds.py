"""`gpt2-verify report INPUT... -o report.html [--png DIR]`: one self-contained HTML report.

    gpt2-verify report d12.bin -o init.html                       init state of a model file
    gpt2-verify report bug.bin compare.json gradflow.json runs/ablation bench.json -o report.html --png figs

Each INPUT is a JSON record of this tool (compare, fuzz, checksum, stats, gradflow, llmc, ablate,
bench; told apart by their "schema", typed by verify.records), an ablation run directory (its
summary.json), or a model file, graded against the scheme's laws (its verdict is printed too).
Exit 0 written, 2 bad input (one line naming the file, and for a malformed record the field,
and the problem), including a missing matplotlib.
"""

from __future__ import annotations

from ..errors import EXIT_OK, InputError


def cmd_report(args) -> int:
    from ..report import MatplotlibMissing, build_report

    try:
        result = build_report(
            args.inputs,
            output=args.output,
            png_dir=args.png,
            scheme=args.scheme,
            overrides=args.overrides,
            title=args.title,
        )
    except MatplotlibMissing as e:
        raise InputError(None, str(e)) from None
    for path, _verdict, line in result.verdicts:  # each model file's verdict, as the report states it
        print(f"{path}: {line}")
    pngs = f", {len(result.figures)} PNGs in {args.png}" if args.png else ""
    print(f"report: {args.output}: {len(result.sections)} sections, {len(result.figures)} figures{pngs}")
    return EXIT_OK


def register(sub) -> None:
    from gpt2_verify.reference.schemes import DEFAULT_SCHEME, SCHEMES

    p = sub.add_parser("report", help="one self-contained HTML report from model files and JSON records")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="model file (llm.c .bin, state dict, safetensors, npz, HF dir), JSON record of "
        "compare/fuzz/checksum/stats/gradflow/llmc/bench, or an ablation run directory",
    )
    p.add_argument("-o", "--output", required=True, metavar="HTML", help="the report to write")
    p.add_argument("--png", metavar="DIR", help="also write every figure as DIR/NAME.png")
    p.add_argument(
        "--scheme",
        choices=list(SCHEMES),
        default=DEFAULT_SCHEME,
        help=f"init scheme model files are drawn against (default {DEFAULT_SCHEME})",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="T.F=V",
        help="override a tensor's expected law, as `gpt2-verify init --set` (repeatable)",
    )
    p.add_argument("--title", default="gpt2-verify report", help="the page title")
    p.set_defaults(func=cmd_report)
