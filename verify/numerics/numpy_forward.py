"""A second GPT-2 forward pass, plain numpy float64, written from the math (not from
verify.numerics.model): used only by tests to judge the torch implementation.

It deliberately takes different routes where there is a choice: attention is an explicit
loop over (batch, head, query position) with a numerically stable softmax over t2 <= t (no
masking with -inf), LayerNorm uses np.var, logits are computed over the padded vocab and then
cut, and the loss is log-sum-exp written out by hand.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from gpt2_verify.reference.config import GPTConfig


def _layernorm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)  # ddof=0: biased, as llm.c
    return (x - mu) / np.sqrt(var + 1e-5) * w + b


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _attention(qkv: np.ndarray, NH: int) -> np.ndarray:
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // NH
    out = np.zeros((B, T, C))
    for b in range(B):
        for h in range(NH):
            cols = slice(h * hs, (h + 1) * hs)
            q = qkv[b, :, 0 * C:1 * C][:, cols]  # (T, hs)
            k = qkv[b, :, 1 * C:2 * C][:, cols]
            v = qkv[b, :, 2 * C:3 * C][:, cols]
            for t in range(T):
                s = np.array([np.dot(q[t], k[t2]) for t2 in range(t + 1)]) / math.sqrt(hs)  # (t+1,)
                e = np.exp(s - s.max())
                p = e / e.sum()
                out[b, t, cols] = p @ v[:t + 1]
    return out


def forward(cfg: GPTConfig, params: Mapping[str, np.ndarray], tokens: np.ndarray,
            targets: np.ndarray | None = None) -> tuple[np.ndarray, float | None]:
    """(logits (B, T, V) float64, mean cross-entropy or None)."""
    P = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    tokens = np.asarray(tokens)
    B, T = tokens.shape
    x = np.stack([P["wte"][tokens[b]] for b in range(B)]) + P["wpe"][:T][None]  # (B, T, C)
    for layer in range(cfg.layers):
        h = _layernorm(x, P["ln1w"][layer], P["ln1b"][layer])
        qkv = np.einsum("btc,oc->bto", h, P["qkvw"][layer]) + P["qkvb"][layer]  # (B, T, 3C)
        a = _attention(qkv, cfg.heads)
        x = x + np.einsum("btc,oc->bto", a, P["attprojw"][layer]) + P["attprojb"][layer]
        h = _layernorm(x, P["ln2w"][layer], P["ln2b"][layer])
        f = _gelu_tanh(np.einsum("btc,oc->bto", h, P["fcw"][layer]) + P["fcb"][layer])  # (B, T, 4C)
        x = x + np.einsum("btf,of->bto", f, P["fcprojw"][layer]) + P["fcprojb"][layer]
    x = _layernorm(x, P["lnfw"], P["lnfb"])
    logits = np.einsum("btc,vc->btv", x, P["wte"])[..., :cfg.vocab]  # (B, T, V) of (B, T, Vp)
    if targets is None:
        return logits, None
    mx = logits.max(axis=-1, keepdims=True)
    lse = (mx + np.log(np.exp(logits - mx).sum(axis=-1, keepdims=True)))[..., 0]  # (B, T)
    picked = np.take_along_axis(logits, np.asarray(targets)[..., None].astype(np.int64), axis=-1)[..., 0]
    return logits, float(np.mean(lse - picked))
