"""The `torch` profile is bit-identical to PyTorch's scalar CPU normal_.

torch runs in a subprocess with ATEN_CPU_CAPABILITY=default (its scalar kernel; the AVX2 /
AVX512 kernels use other log/sin/cos and differ in the last bits) and draws the tensors the
way llm.c's train_gpt2.py does: one generator seeded once, nn.init.normal_ on each weight
in module order (wte over V rows, wpe, then per layer c_attn, attn.c_proj, c_fc, mlp.c_proj)
with std 0.02 or 0.02/math.sqrt(2*L) computed in double.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from gpt2_verify.reference.config import GPTConfig, from_descriptor
from gpt2_verify.reference.init import init_params
from gpt2_verify.reference.mt19937 import MT19937
from gpt2_verify.reference.normal import normal_array

torch = pytest.importorskip("torch")

SCRIPT = r"""
import json, math, sys
import numpy as np
import torch
cfg = json.loads(sys.argv[1])
L, C, V, Vp, T, seed = (cfg[k] for k in ("L", "C", "V", "Vp", "T", "seed"))
g = torch.Generator()
g.manual_seed(seed)
def draw(shape, std):
    t = torch.empty(shape)
    torch.nn.init.normal_(t, mean=0.0, std=std, generator=g)
    return t.numpy()
wte = np.zeros((Vp, C), np.float32)
wte[:V] = draw((V, C), 0.02)
wpe = draw((T, C), 0.02)
res = 0.02 / math.sqrt(2 * L)
layers = [(draw((3 * C, C), 0.02), draw((C, C), res), draw((4 * C, C), 0.02), draw((C, 4 * C), res))
          for _ in range(L)]
ones, zeros = np.ones, np.zeros
parts = [wte, wpe, ones((L, C)), zeros((L, C)), [l[0] for l in layers], zeros((L, 3 * C)),
         [l[1] for l in layers], zeros((L, C)), ones((L, C)), zeros((L, C)),
         [l[2] for l in layers], zeros((L, 4 * C)), [l[3] for l in layers], zeros((L, C)),
         ones(C), zeros(C)]
flat = np.concatenate([np.asarray(p, np.float32).reshape(-1) for p in parts])
sys.stdout.buffer.write(flat.astype("<f4").tobytes())
"""


def _torch_init(cfg: GPTConfig, seed: int) -> np.ndarray:
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", OMP_NUM_THREADS="1")
    arg = json.dumps({"L": cfg.layers, "C": cfg.channels, "V": cfg.vocab,
                      "Vp": cfg.padded_vocab, "T": cfg.max_seq_len, "seed": seed})
    out = subprocess.run([sys.executable, "-c", SCRIPT, arg], env=env, check=True,
                         capture_output=True).stdout
    return np.frombuffer(out, dtype="<f4")


CONFIGS = [
    (GPTConfig(1, 2, 1, 5, 5, 1), 42),  # n < 16 everywhere: double path, spare kept
    (GPTConfig(2, 3, 3, 5, 128, 1), 7),  # odd small tensors: the spare crosses tensors
    (GPTConfig(3, 9, 3, 97, 128, 7), 42),  # tails (n % 16 != 0)
    (GPTConfig(2, 64, 4, 1000, 1024, 64), 1337),
    (from_descriptor("d6"), 42),  # L=6: float32-vs-double residual std differs by 1 ulp
]


@pytest.mark.parametrize("cfg,seed", CONFIGS, ids=lambda c: c.slug() if hasattr(c, "slug") else c)
def test_torch_profile_bit_identical(cfg, seed):
    want = _torch_init(cfg, seed)
    got = init_params(cfg, seed, "torch")
    assert want.size == got.size
    diff = np.nonzero(want.view(np.uint32) != got.view(np.uint32))[0]
    assert diff.size == 0, f"{diff.size} values differ, first at flat index {diff[:5]}"


def test_torch_spare_is_kept_across_calls():
    """PyTorch keeps the spare normal of an n < 16 call: normal_(15) then normal_(9): the second
    starts with the spare."""
    code = ("import torch,sys; g=torch.Generator(); g.manual_seed(42); a=torch.empty(15); "
            "a.normal_(generator=g); b=torch.empty(9); b.normal_(generator=g); "
            "sys.stdout.buffer.write(torch.cat([a,b]).numpy().tobytes())")
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True).stdout
    want = np.frombuffer(out, dtype=np.float32)
    s = MT19937(42)
    got = np.concatenate([normal_array(s, 15, 1.0, profile="torch"),
                          normal_array(s, 9, 1.0, profile="torch")])
    assert np.array_equal(want.view(np.uint32), got.view(np.uint32))
    # llm.c discards the spare: its second call starts a fresh pair (one draw pair later)
    s = MT19937(42)
    llmc = np.concatenate([normal_array(s, 15, np.float32(1.0)),
                           normal_array(s, 9, np.float32(1.0))])
    assert not np.array_equal(llmc[15:], got[15:])
