"""Activation scales: mean |x| of the residual stream per block against what GPT-2's residual
scaling predicts (`activation_scales`); part of `gpt2-verify gradflow`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np
from gpt2_verify.reference.config import GPTConfig

from .findings import Finding, json_float

# Residual stream growth across blocks, relative to after block 0: independent increments make
# the variance grow linearly in depth, so mean |x| grows at most like sqrt(l + 1). Measured
# (C=64, L=2..48, std 0.02 and 0.2, with and without residual scaling; d6, d12):
# max (s_l / s_0) / sqrt(l + 1) = 1.23. 2x that law means the blocks amplify the stream itself.
DEPTH_GROWTH_FACTOR = 2.0
# Residual stream after the last block vs the embedding, against what `expected_stream_ratio`
# predicts with GPT-2's 1/sqrt(2L) projection scaling (p1) and without it (p0, the same formula
# with 2L times the branch variance). The formula's own spread, observed/predicted, is the same
# for both hypotheses: 0.81..1.26 (C = 32, 64, 128; L = 2, 4, 8, 12; std 0.02 and 0.2; llm.c's
# init seed 42, tokens B2 T32), and 0.85..1.27 with the scaling up to C = 3456 and L = 48.
# So a correct init lies below STREAM_SPREAD[1] p1 and a missing scaling above STREAM_SPREAD[0] p0;
# the limit is the geometric midpoint of the two edges when they are apart, else the first
# (the blocks add too little next to the embedding to tell the two apart).
STREAM_SPREAD = (0.8, 1.3)


def _model():
    from . import model  # torch: only when a forward pass is needed

    return model


def expected_stream_ratio(cfg: GPTConfig, params: Mapping[str, np.ndarray]) -> float:
    """mean |x| after the last block / mean |x| of the embedding that GPT-2's residual scaling
    predicts from the weights' own scale.

    A branch reads a LayerNorm output (unit coordinates) through a fan-in-C matrix of rms
    sigma_w (qkvw, fcw) and writes through a projection scaled by 1/sqrt(2L). In the near-linear
    regime each of the 2L branches adds variance ~ (sigma_w^2 C)^2 / (2L), so the blocks add
    ~ (sigma_w^2 C)^2 in total, independent of depth. With e the embedding's rms:
    ratio ~ sqrt(1 + (sigma_w^2 C / e)^2). Measured observed/predicted 0.85..1.05 for llm.c's init
    at C = 64..3456 (ratios 1.2 .. 51) and 1.03..1.27 at std 0.2 (C = 64 and 128, L = 2..48);
    without the 1/sqrt(2L) scaling 2.1 (L = 2) .. 12.9 (L = 48), and 2.3 .. 6.5 at std 0.02,
    C = 64 where the blocks add little.
    """
    w = np.concatenate([np.asarray(params["qkvw"], dtype=np.float64).reshape(-1),
                        np.asarray(params["fcw"], dtype=np.float64).reshape(-1)])
    sigma2 = float(np.mean(w * w))
    wte = np.asarray(params["wte"], dtype=np.float64)[: cfg.vocab]
    wpe = np.asarray(params["wpe"], dtype=np.float64)
    e = math.sqrt(float(np.mean(wte * wte)) + float(np.mean(wpe * wpe)))
    if e == 0:
        return math.inf
    return math.sqrt(1.0 + (sigma2 * cfg.channels / e) ** 2)


def unscaled_stream_ratio(cfg: GPTConfig, expected: float) -> float:
    """`expected_stream_ratio` had the projections not been scaled by 1/sqrt(2L): each branch
    adds 2L times the variance, 1 + a^2 -> 1 + 2L a^2."""
    return math.sqrt(1.0 + 2 * cfg.layers * (expected * expected - 1.0))


def stream_level_limit(cfg: GPTConfig, expected: float, spread=STREAM_SPREAD) -> float:
    """Largest last-block/embedding ratio a correctly scaled init may show (see STREAM_SPREAD)."""
    lo, hi = spread
    top_scaled = hi * expected
    bottom_unscaled = lo * unscaled_stream_ratio(cfg, expected)
    return max(top_scaled, math.sqrt(top_scaled * bottom_unscaled))


@dataclasses.dataclass
class ActivationReport:
    config: GPTConfig
    embed: float  # mean |wte[x] + wpe[t]|
    blocks: list[float]  # mean |x| of the residual stream after block l
    expected_ratio: float | None  # expected_stream_ratio (random init only)
    findings: list[Finding]
    unscaled_ratio: float | None = None  # the same without 1/sqrt(2L)
    level_limit: float | None = None  # stream_level_limit

    @property
    def passed(self) -> bool:
        return not any(f.severity == "fail" for f in self.findings)

    @property
    def ratio(self) -> float:
        return self.blocks[-1] / self.embed if self.embed else math.inf

    def to_dict(self) -> dict:
        return {"config": self.config.as_dict(), "passed": self.passed, "embed": json_float(self.embed),
                "blocks": [json_float(b) for b in self.blocks], "last_over_embed": json_float(self.ratio),
                "expected_last_over_embed": json_float(self.expected_ratio),
                "unscaled_last_over_embed": json_float(self.unscaled_ratio),
                "level_limit": json_float(self.level_limit),
                "findings": [f.to_dict() for f in self.findings]}


def activation_scales(cfg: GPTConfig, params: Mapping[str, np.ndarray], tokens: np.ndarray, *,
                      random_init: bool = True, dtype: str = "float64",
                      growth_factor: float = DEPTH_GROWTH_FACTOR, forward=None) -> ActivationReport:
    """mean |x| of the residual stream after the embedding and after each block.

    Flags (1) growth with depth faster than growth_factor * sqrt(l + 1) relative to block 0 (the
    stream amplifies itself), and, for a random init, (2) a last-block/embedding ratio above
    `stream_level_limit` (the residual branches add more than GPT-2's 1/sqrt(2L) projection
    scaling allows, towards what they add without it). `forward`: a ForwardBackward of these tokens made with
    keep_activations=True, to reuse instead of running the model again.
    """
    tokens = np.asarray(tokens)
    fb = forward
    if fb is None or not fb.activations:
        fb = _model().forward_backward(cfg, params, tokens, None, dtype=dtype, backward=False,
                                       keep_activations=True)
    T = tokens.shape[-1]
    emb = (np.asarray(params["wte"], dtype=np.float64)[tokens]
           + np.asarray(params["wpe"], dtype=np.float64)[:T])  # (B, T, C)
    embed = float(np.mean(np.abs(emb)))
    blocks = [float(np.mean(np.abs(np.asarray(fb.activations[f"block{layer}"], dtype=np.float64))))
              for layer in range(cfg.layers)]
    findings: list[Finding] = []
    for layer, s in enumerate(blocks):
        if not math.isfinite(s):
            findings.append(Finding("finite", f"block {layer}: residual stream not finite "
                                              f"(mean |x| = {s})", None, layer))
            break
        limit = growth_factor * math.sqrt(layer + 1) * blocks[0]
        if layer > 0 and s > limit:
            findings.append(Finding(
                "depth-growth", f"block {layer}: residual stream mean |x| {s:.3g} is "
                f"{s / blocks[0]:.3g}x block 0's, above {growth_factor:g} sqrt({layer + 1}) = "
                f"{limit / blocks[0]:.3g}x: the blocks amplify the stream", None, layer))
            break
    expected = unscaled = limit = None
    if random_init:
        expected = expected_stream_ratio(cfg, params)
        unscaled = unscaled_stream_ratio(cfg, expected) if math.isfinite(expected) else None
        limit = stream_level_limit(cfg, expected) if math.isfinite(expected) else None
        ratio = blocks[-1] / embed if embed else math.inf
        if math.isfinite(ratio) and limit is not None and ratio > limit:
            findings.append(Finding(
                "stream-level", f"block {cfg.layers - 1}: residual stream mean |x| is {ratio:.3g}x "
                f"the embedding's; GPT-2's 1/sqrt(2L) residual scaling gives {expected:.3g}x for these "
                f"weights, no scaling {unscaled:.3g}x (limit {limit:.3g}x): attprojw/fcprojw too "
                f"large for depth L={cfg.layers}", None, cfg.layers - 1))
    return ActivationReport(cfg, embed, blocks, expected, findings, unscaled, limit)
