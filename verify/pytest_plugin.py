"""pytest plugin (entry point `gpt2_verify`): reference fixtures for other projects' tests.

    def test_my_init(gpt2_reference):
        ref = gpt2_reference("d6")                    # name -> float32 array, llm.c shapes
        assert (my_init()["wte"] == ref["wte"]).all()

The reference is computed once per (config, seed, profile) and session.
"""

from __future__ import annotations

import pytest

from reference.config import GPTConfig, from_descriptor
from reference.init import init_tensors


@pytest.fixture(scope="session")
def gpt2_reference():
    cache: dict = {}

    def get(config: str | GPTConfig, seed: int = 42, profile: str = "llmc"):
        cfg = from_descriptor(config) if isinstance(config, str) else config
        key = (cfg, seed, profile)
        if key not in cache:
            cache[key] = init_tensors(cfg, seed, profile)
        return cache[key]

    return get
