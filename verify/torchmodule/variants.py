"""Naming the cause: which common departure from GPT-2 a failing module computes.

Each variant is the float64 reference re-run with one knob of verify.numerics.model.Arch
changed. A module that fails is compared with every variant; the one that brings it closest is
kept and the others are tried on top of it (greedy, up to MAX_DEPTH variants), until every
quantity lies within its tolerance of the combination or nothing improves by IMPROVEMENT. A
module that disagrees with GPT-2 and with every variant gets no name: "no known variant".
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from ..numerics.model import Arch

MAX_DEPTH = 3
IMPROVEMENT = 0.5  # a variant joins the explanation only if it halves the worst error at least


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    what: str
    changes: dict  # Arch fields

    def arch(self, base: Arch | None = None) -> Arch:
        return dataclasses.replace(base or Arch(), **self.changes)


VARIANTS: tuple[Variant, ...] = (
    Variant("gelu-erf", "exact-erf GELU (torch nn.GELU()) instead of GPT-2's tanh form", {"gelu": "erf"}),
    Variant("ln-eps-1e-6", "LayerNorm eps 1e-6 instead of 1e-5", {"ln_eps": 1e-6}),
    Variant("ln-eps-1e-12", "LayerNorm eps 1e-12 (or 0) instead of 1e-5", {"ln_eps": 1e-12}),
    Variant("ln-eps-1e-3", "LayerNorm eps 1e-3 instead of 1e-5", {"ln_eps": 1e-3}),
    Variant("ln-unbiased", "LayerNorm variance divided by C - 1 (torch.var's default) instead of C",
            {"ln_unbiased": True}),
    Variant("attn-scale-channels", "attention scaled by 1/sqrt(C) instead of 1/sqrt(head size)",
            {"attn_scale": "channels"}),
    Variant("attn-scale-head-linear", "attention scaled by 1/head size (muP) instead of 1/sqrt(head size)",
            {"attn_scale": "head-linear"}),
    Variant("attn-scale-none", "attention scores not scaled (1/sqrt(head size) missing)",
            {"attn_scale": "none"}),
    Variant("no-causal-mask", "no causal mask: positions attend to later tokens", {"causal": False}),
    Variant("padded-softmax", "softmax over the padded vocabulary: the Vp - V padded logits enter the "
            "loss (llm.c leaves them out)", {"padded_softmax": True}),
    Variant("untied", "lm_head not tied to wte: wte gets only the embedding's gradient",
            {"tied": False}),
    Variant("no-attn-residual", "attention output replaces the residual stream (x = attn(ln_1(x)))",
            {"attn_residual": False}),
    Variant("no-mlp-residual", "MLP output replaces the residual stream (x = mlp(ln_2(x)))",
            {"mlp_residual": False}),
    Variant("no-positions", "position embedding not added", {"positions": "none"}),
    Variant("shifted-positions", "position embedding off by one (wpe[t + 1])", {"positions": "shifted"}),
)
BY_NAME = {v.name: v for v in VARIANTS}


@dataclasses.dataclass
class Explanation:
    variants: list[Variant]
    score: float  # worst error / tolerance against the combination (<= 1: it matches)
    baseline: float  # the same against GPT-2 itself

    @property
    def matches(self) -> bool:
        return bool(self.variants) and self.score <= 1.0

    def describe(self) -> str:
        if not self.variants:
            return (f"no known variant: the module is {self.baseline:.3g}x its tolerance from GPT-2 "
                    f"and no variant ({', '.join(v.name for v in VARIANTS)}) comes closer")
        names = " + ".join(v.what for v in self.variants)
        if self.matches:
            return (f"matches GPT-2 with {names}: every quantity within {self.score:.2g}x its "
                    f"tolerance of that variant (GPT-2 itself: {self.baseline:.3g}x)")
        return (f"closest: GPT-2 with {names} ({self.score:.3g}x its tolerance away, GPT-2 itself "
                f"{self.baseline:.3g}x); more differs than the known variants")

    def to_dict(self) -> dict:
        return {"variants": [v.name for v in self.variants], "matches": self.matches,
                "score": _finite(self.score), "baseline": _finite(self.baseline), "text": self.describe()}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def explain(score: Callable[[Arch], float], *, baseline: float,
            variants=VARIANTS, max_depth: int = MAX_DEPTH) -> Explanation:
    """Greedy search over `variants`; score(arch) -> worst error / tolerance of the module
    against the reference run as `arch` (inf when the variant cannot run on this input)."""
    chosen: list[Variant] = []
    current = baseline
    arch = Arch()
    for _ in range(max_depth):
        fields = {f for v in chosen for f in v.changes}
        trials = []
        for v in variants:
            if v in chosen or fields & set(v.changes):
                continue
            trials.append((score(v.arch(arch)), v))
        if not trials:
            break
        best_score, best = min(trials, key=lambda t: t[0])
        if not best_score <= IMPROVEMENT * current:
            break
        chosen.append(best)
        arch = best.arch(arch)
        current = best_score
        if current <= 1.0:
            break
    return Explanation(chosen, current, baseline)
