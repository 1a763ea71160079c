"""gpt2-verify: checks, formats, CLI."""
