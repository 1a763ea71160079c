"""Golden per-tensor statistics and checksums, written by `gpt2-verify golden write`."""

from pathlib import Path

DIR = Path(__file__).resolve().parent


def path(name: str) -> Path:
    return DIR / name
