"""pytest plugin (entry point `gpt2_verify`): reference fixtures for other projects' tests.

    def test_my_init(gpt2_reference):
        ref = gpt2_reference("d6")                    # name -> float32 array, llm.c shapes
        assert (my_init()["wte"] == ref["wte"]).all()
        xav = gpt2_reference("d6", scheme="xavier-uniform", overrides=["wpe.std=0.01"])

The reference is computed once per (config, seed, profile, scheme, overrides) and session.

    def test_my_init_on_any_config(gpt2_fuzz):
        gpt2_fuzz(my_module.init, examples=20, require="close")   # fn(config, seed) -> {name: array}
        gpt2_fuzz(cmd="./my_init -L {L} -C {C} -H {NH} -V {V} -T {T} --seed {seed} -o {out}")

    def test_my_model(gpt2_check_module):
        gpt2_check_module(lambda config: MyGPT(config))      # forward, backward, 3 AdamW steps
        gpt2_check_module(make_gpt, "d12", dtype="bf16", steps=0, seq=64, batch=4)

gpt2_check_module runs `gpt2-verify module` (verify.torchmodule.check_module) on a factory
fn(config dict) -> torch.nn.Module and raises AssertionError with the whole report (every
quantity's error against its tolerance, and the named cause) when the module fails.

gpt2_fuzz runs `gpt2-verify fuzz`'s property (verify.compare.fuzz) inside your test: Hypothesis
draws configs and seeds, your initializer fills each, the comparator grades it, and a failure
is shrunk to the smallest config and raised as an AssertionError with the full report.

pytest loads this module in every project where gpt2-verify is installed. Everything it uses
lives under the one import root `gpt2_verify` (gpt2_verify.reference, gpt2_verify.verify), and
it imports none of it until a fixture is used: a project with packages of its own called
`verify`, `reference` or `golden` keeps importing its own, under any install.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def gpt2_reference():
    """gpt2_reference(config, seed=42, profile="llmc", *, scheme="gpt2", overrides=()) ->
    {name: float32 array}: the reference init (llm.c's bits under profile "llmc"), in llm.c's
    16 tensors and shapes (wte over the padded vocab Vp).

    config: a descriptor ("d6", "gpt3:c768") or a gpt2_verify.reference.config.GPTConfig;
    scheme/overrides: any init scheme and --set overrides ("wpe.std=0.01"). Computed once per
    argument set and session."""
    from gpt2_verify.reference.config import from_descriptor
    from gpt2_verify.reference.init import init_tensors

    cache: dict = {}

    def get(config, seed: int = 42, profile: str = "llmc", *, scheme: str = "gpt2", overrides=()):
        cfg = from_descriptor(config) if isinstance(config, str) else config
        key = (cfg, seed, profile, scheme, tuple(overrides))
        if key not in cache:
            cache[key] = init_tensors(cfg, seed, profile, scheme=scheme, overrides=tuple(overrides))
        return cache[key]

    return get


@pytest.fixture
def gpt2_fuzz():
    """gpt2_fuzz(candidate=None, *, cmd=None, adapter=None, examples=25, max_params=200_000,
    require="close", profile="llmc", timeout=60, derandomize=False, scheme="gpt2", overrides=(),
    **config_kwargs) -> FuzzResult.

    candidate: a callable fn(config, seed) -> {name: array}, a command template with {out} or
    "module:function"; raises AssertionError (minimal failing config, reproducing command and
    the comparison report) when some drawn config fails."""
    def run(candidate=None, *, cmd: str | None = None, adapter: str | None = None, examples: int = 25,
            max_params: int = 200_000, require: str = "close", profile: str = "llmc",
            timeout: float = 60.0, derandomize: bool = False, scheme: str = "gpt2", overrides=(),
            **config_kwargs):
        from gpt2_verify.verify.compare.candidate import Candidate, as_candidate
        from gpt2_verify.verify.compare.fuzz import fuzz

        if candidate is not None:
            if cmd is not None or adapter is not None:
                raise TypeError("gpt2_fuzz: give one of candidate, cmd= or adapter=")
            cand = as_candidate(candidate, timeout=timeout)
        else:
            cand = Candidate(cmd=cmd, adapter=adapter, timeout=timeout)
        result = fuzz(cand, examples=examples, max_params=max_params, require=require, profile=profile,
                      config_kwargs=config_kwargs or None, derandomize=derandomize, progress=False,
                      scheme=scheme, overrides=tuple(overrides))
        if result.failure is not None:
            raise AssertionError(result.render())
        return result

    return run


@pytest.fixture
def gpt2_check_module():
    """gpt2_check_module(factory, config=None, *, device="cpu", dtype="fp32", steps=3,
    layout="auto", call="auto", batch=2, seq=16, seed=42, optimizer=None) -> ModuleReport.

    factory(config dict) -> torch.nn.Module; config: None (L2 C64 NH4 V1000), a descriptor
    ("d12"), a GPTConfig or a config dict. Raises AssertionError with the report when the
    module's logits, loss, gradients or training steps fall outside the tolerance."""
    def run(factory, config=None, **options):
        from gpt2_verify.verify.torchmodule import check_module

        report = check_module(factory, config, **options)
        if not report.passed:
            raise AssertionError(report.render())
        return report

    return run
