"""Same bits with numpy's SIMD dispatch switched off (AVX2/AVX512 kernels disabled).

numpy's float log/cos/sin change their last bits with the dispatched kernel; the reference
never calls them, and this proves it: a subprocess rebuilds the Box-Muller tables from
scratch (disk cache off) under NPY_DISABLE_CPU_FEATURES and must produce the same checksums
as one with every feature on, and as llm.c itself (test_reference.LLMC_SHA256).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.known import LLMC_SHA256

SCRIPT = r"""
import hashlib, json
import numpy as np
from numpy._core._multiarray_umath import __cpu_features__ as feats
from gpt2_verify.reference import boxmuller_tables as T
from gpt2_verify.reference.config import GPTConfig
from gpt2_verify.reference.init import iter_params
out = {"features": {k: bool(feats.get(k)) for k in ("X86_V3", "X86_V4", "AVX512_SKX")}}
for name in ("radius_eps", "radius", "sincos"):
    out[name] = hashlib.sha256(T.table(name).tobytes()).hexdigest()
for profile in ("llmc", "torch"):
    h = hashlib.sha256()
    for _s, part in iter_params(GPTConfig(2, 64, 4), 42, profile):
        h.update(part.tobytes())
    out[profile] = h.hexdigest()
print(json.dumps(out))
"""

DISABLE = "X86_V4 X86_V3 AVX512_ICL AVX512_SPR"


def _run(disable: str | None) -> dict:
    env = dict(os.environ, GPT2_VERIFY_CACHE="off")
    env.pop("NPY_DISABLE_CPU_FEATURES", None)
    if disable:
        env["NPY_DISABLE_CPU_FEATURES"] = disable
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


@pytest.mark.skipif(not hasattr(__import__("numpy"), "_core"), reason="numpy >= 2 feature names")
def test_bits_do_not_depend_on_numpy_simd_dispatch():
    full = _run(None)
    scalar = _run(DISABLE)
    assert not scalar["features"]["X86_V3"] and not scalar["features"]["X86_V4"], \
        "NPY_DISABLE_CPU_FEATURES did not switch AVX2/AVX512 dispatch off"
    for key in ("radius_eps", "radius", "sincos", "llmc", "torch"):
        assert full[key] == scalar[key], f"{key} changes with numpy's SIMD dispatch"
    assert full["llmc"] == LLMC_SHA256[(2, 64, 4, 50257, 50304, 1024, 42)]
