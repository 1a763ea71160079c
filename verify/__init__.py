"""gpt2-verify: formats, comparators, numerics, the llm.c harness, experiments, report and CLI."""

from gpt2_verify import __version__  # noqa: F401  (one version, the import root's)
