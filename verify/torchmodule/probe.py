"""Probe weights: a GPT-2 under which every part of the forward shows in its outputs.

At GPT-2's init (std 0.02) the network is nearly linear: a GELU of the wrong form, a wrong
attention scale or LayerNorm eps move the outputs by less than float32 noise. The probe keeps
llm.c's draws (reference.init, seed) and rescales them so that each of those parts moves the
logits, the loss and the gradients by far more than a correct float32 implementation differs
from float64 (the margins are measured and printed by `gpt2-verify module --explain`):

    qkvw, fcw, attprojw, fcprojw  std 1.6 / sqrt(C) (residual projections / sqrt(2L)): q.k / sqrt(hs)
                                  has std ~2.6, GELU inputs std ~1.6 (its curved part)
    wte, wpe                      std EMBED_STD = 0.004: the embedding's variance (3.2e-5) is of the
                                  order of LayerNorm's eps (1e-5), so eps changes the first
                                  LayerNorm's output by ~10%
    lnfw, lnfb                    HEAD_GAIN / (EMBED_STD sqrt(C)) x (1 + 0.1 N(0, 1)) and 0.05 N(0, 1):
                                  logits of std ~1 through the small tied wte
    ln1w, ln2w / biases           1 + 0.1 N(0, 1) / 0.05 N(0, 1)
    wte rows V..Vp-1              0, as llm.c keeps them

N(0, 1) draws come from numpy PCG64(seed). The values are rounded to float32, the precision
modules hold their weights in.
"""

from __future__ import annotations

import math

import numpy as np
from gpt2_verify.reference.config import ONES_TENSORS, RANDOM_TENSORS, ZERO_TENSORS, GPTConfig

MATRIX_GAIN = 1.6  # std x sqrt(C) of qkvw and fcw
EMBED_STD = 0.004
HEAD_GAIN = 1.0  # std of the logits
LN_JITTER = 0.1
BIAS_STD = 0.05


def probe_params(cfg: GPTConfig, seed: int = 42) -> dict[str, np.ndarray]:
    """float32 probe weights in llm.c's layout (wte (Vp, C), per-layer tensors stacked)."""
    from gpt2_verify.reference.config import nominal_std
    from gpt2_verify.reference.init import init_tensors

    params = {k: np.asarray(v, dtype=np.float64) for k, v in init_tensors(cfg, seed).items()}
    matrix_std = MATRIX_GAIN / math.sqrt(cfg.channels)
    for name in RANDOM_TENSORS:
        if name in ("wte", "wpe"):
            params[name] = params[name] * (EMBED_STD / nominal_std(cfg, name))
        else:  # nominal_std keeps the residual projections' 1/sqrt(2L)
            params[name] = params[name] * (matrix_std / 0.02)
    rng = np.random.Generator(np.random.PCG64(seed))
    for name in ONES_TENSORS:
        params[name] = 1.0 + LN_JITTER * rng.standard_normal(params[name].shape)
    for name in ZERO_TENSORS:
        params[name] = BIAS_STD * rng.standard_normal(params[name].shape)
    gain = HEAD_GAIN / (EMBED_STD * math.sqrt(cfg.channels))
    params["lnfw"] = params["lnfw"] * gain
    params["lnfb"] = params["lnfb"] * gain
    params["wte"][cfg.vocab:] = 0.0
    return {k: v.astype(np.float32) for k, v in params.items()}
