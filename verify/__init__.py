"""gpt2-verify: checks, formats, CLI."""

__version__ = "0.1.0"
