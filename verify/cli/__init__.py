"""gpt2-verify command line. Exit codes: 0 ok, 1 a check failed, 2 bad input or usage.

Errors are one line on stderr naming the file (or argument) and the problem; no tracebacks.
One module per command group registers its subcommands (`register(sub)`).
"""

from __future__ import annotations

import argparse
import sys

from gpt2_verify.reference.config import ConfigError

from .. import __version__
from ..errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_OK, CheckFailed, InputError, TaskFailed
from . import (
    ablate_cmds,
    bench_cmds,
    compare_cmds,
    fuzz_cmds,
    llmc_cmds,
    model_cmds,
    module_cmds,
    numerics_cmds,
    report_cmds,
)
from .common import Parser

GROUPS = (model_cmds, compare_cmds, fuzz_cmds, numerics_cmds, module_cmds, llmc_cmds, ablate_cmds,
          report_cmds, bench_cmds)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="gpt2-verify", description="Verify GPT-2 init and training numerics "
                                               "against an llm.c-exact reference.")
    p.add_argument("--version", action="version", version=f"gpt2-verify {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in GROUPS:
        group.register(sub)
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
    except TaskFailed as e:
        print(f"gpt2-verify: error: {e}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except KeyboardInterrupt:
        print("gpt2-verify: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
