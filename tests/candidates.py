"""Initializers written for the fuzz tests: one correct, the others with bugs that only show in
some configs. Each is `fn(config, seed) -> {llm.c name: array}`, built from the mt19937 stream
and normal_ pieces of the reference (one normal_ call per tensor and layer, llm.c's order)."""

from __future__ import annotations

import numpy as np
from gpt2_verify.reference.config import LAYER_WEIGHTS, ONES_TENSORS, GPTConfig, parameter_table
from gpt2_verify.reference.init import init_tensors
from gpt2_verify.reference.mt19937 import MT19937
from gpt2_verify.reference.normal import init_std, normal_array


def _draw(cfg: GPTConfig, seed: int, std_for) -> dict[str, np.ndarray]:
    """llm.c's gpt_build_from_descriptor with the std of each call chosen by std_for(spec)."""
    specs = {s.name: s for s in parameter_table(cfg)}
    out = {s.name: np.zeros(s.shape, dtype=np.float32) for s in specs.values()}
    for name in ONES_TENSORS:
        out[name][...] = 1.0
    stream = MT19937(seed)
    C = cfg.channels
    out["wte"][:cfg.vocab] = normal_array(stream, cfg.vocab * C, std_for(specs["wte"])).reshape(-1, C)
    out["wpe"][...] = normal_array(stream, cfg.max_seq_len * C, std_for(specs["wpe"])).reshape(-1, C)
    for layer in range(cfg.layers):
        for name in LAYER_WEIGHTS:
            t = out[name][layer]
            t[...] = normal_array(stream, t.size, std_for(specs[name])).reshape(t.shape)
    return out


def correct(cfg: GPTConfig, seed: int):
    return _draw(cfg, seed, lambda spec: init_std(cfg, spec, "llmc"))


def residual_scale_from_l3(cfg: GPTConfig, seed: int):
    """Forgets the 1/sqrt(2L) residual scaling, but only from L = 3 on."""
    return _draw(cfg, seed, lambda spec: np.float32(0.02) if cfg.layers >= 3 and spec.residual
                 else init_std(cfg, spec, "llmc"))


def keeps_spare_normal(cfg: GPTConfig, seed: int):
    """Keeps the spare normal of an odd-sized tensor under 16 values for the next call (PyTorch's
    rule), where llm.c discards it: wrong only when such a tensor is followed by another small one."""
    return init_tensors(cfg, seed, "torch")


def crashes_on_odd_channels(cfg: GPTConfig, seed: int):
    if cfg.channels % 2:
        raise RuntimeError(f"odd channel count {cfg.channels} not supported")
    return correct(cfg, seed)
