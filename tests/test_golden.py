"""Golden records regenerate exactly (checksums) and to 1e-9 (statistics)."""

from __future__ import annotations

import copy
import json

import pytest
from gpt2_verify.verify import golden


@pytest.mark.parametrize("name", golden.DEFAULT)
def test_golden_record_regenerates(name):
    problems = golden.check(name)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in golden.GOLDEN if n not in golden.DEFAULT])
def test_large_golden_record_regenerates(name):
    if not golden.golden_path(name).exists():
        pytest.skip(f"{name}: no golden record written (gpt2-verify golden write {name})")
    problems = golden.check(name)
    assert not problems, "\n".join(problems)


def test_golden_records_state_tool_version_and_profile():
    for name in golden.DEFAULT:
        data = json.loads(golden.golden_path(name).read_text())
        assert data["tool"] == "gpt2-verify" and data["format"] == golden.FORMAT
        assert set(data["profiles"]) == {"llmc", "torch"}
        for profile, rec in data["profiles"].items():
            assert rec["profile"] == profile
            cfg, _seed = golden.GOLDEN[name]
            assert [t for t in rec["tensors"]] == [s.name for s in cfg.tensors()]


def test_diff_reports_every_mismatch():
    want = golden.load("tiny-L1-C2")
    got = copy.deepcopy(want)
    got["profiles"]["llmc"]["sha256_fp32"] = "0" * 64
    got["profiles"]["torch"]["tensors"]["wpe"]["std"] *= 1 + 1e-6
    got["profiles"]["torch"]["tensors"]["qkvw"]["sha256_fp32"] = "f" * 64
    problems = golden.diff(want, got)
    assert len(problems) == 3
    assert any("tiny-L1-C2/llmc: model sha256_fp32" in p for p in problems)
    assert any("tiny-L1-C2/torch/wpe: std" in p for p in problems)
    assert any("tiny-L1-C2/torch/qkvw: sha256_fp32" in p for p in problems)
    # statistics within 1e-9 relative are equal (summation order may vary)
    got = copy.deepcopy(want)
    got["profiles"]["llmc"]["tensors"]["wte"]["mean"] *= 1 + 1e-12
    assert golden.diff(want, got) == []


def test_every_scheme_has_golden_records_that_differ():
    from gpt2_verify.reference.schemes import SCHEMES

    for label in golden.SCHEME_CONFIGS:
        sums = {}
        for scheme in SCHEMES:
            name = f"{scheme}-{label}"
            if scheme == "gpt2":
                continue
            data = golden.load(name)
            assert data["scheme"] == scheme
            sums[scheme] = data["profiles"]["llmc"]["sha256_fp32"]
        assert len(set(sums.values())) == len(sums)  # every scheme draws something else
    wrong = golden.load("mup-L3-C48")
    wrong["scheme"] = "gpt2"
    assert any("scheme" in p for p in golden.diff(wrong, golden.compute("mup-L3-C48", ("llmc",))))
