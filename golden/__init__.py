"""Golden per-tensor statistics and checksums, written by `gpt2-verify golden write`.

Data only: read through `gpt2_verify.verify.golden.golden_path` (importlib.resources)."""
