"""pytest plugin (entry point `gpt2_verify`): reference fixtures for other projects' tests.

    def test_my_init(gpt2_reference):
        ref = gpt2_reference("d6")                    # name -> float32 array, llm.c shapes
        assert (my_init()["wte"] == ref["wte"]).all()

The reference is computed once per (config, seed, profile) and session.

pytest loads this module in every project where gpt2-verify is installed, so it has a name of
its own and imports nothing of gpt2-verify (whose packages are called `reference` and
`verify`, names other projects use too) until a fixture is used: a project with its own
`verify` or `reference` package keeps importing its own.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def gpt2_reference():
    from reference.config import from_descriptor
    from reference.init import init_tensors

    cache: dict = {}

    def get(config, seed: int = 42, profile: str = "llmc"):
        cfg = from_descriptor(config) if isinstance(config, str) else config
        key = (cfg, seed, profile)
        if key not in cache:
            cache[key] = init_tensors(cfg, seed, profile)
        return cache[key]

    return get
