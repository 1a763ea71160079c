"""The width sweep: a muP-style coordinate check with its own short AdamW training loop
(`width_sweep`), judged against what each init's parametrisation predicts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Sequence

import numpy as np
from gpt2_verify.reference.config import RANDOM_TENSORS, RESIDUAL_TENSORS, GPTConfig

from .adamw import ADAMW, adamw_step
from .findings import Finding, json_float

# Width sweep: fitted slope of log(mean |x|) against log(width), judged against the slope the
# init's own parametrisation predicts (`predicted_scales`): standard parametrisation (a fixed
# std: llm.c's 0.02, torch's defaults) grows the logits like sqrt(C) (0.5) and the residual
# stream between 0 (embedding-dominated) and 1 (branch-dominated); muP and fan-in inits keep the
# hidden stream flat (0). SLOPE_LIMIT is the allowed |observed - predicted|: 0.25, half the gap
# between 0 and the smallest scaling failure (0.5). Measured (L=2, widths 32, 64, 128, steps
# 0..3): |observed - predicted| <= 0.12 for llmc, mup, fan-in, fixed-1, torch-default, xavier,
# kaiming, small-init and olmo-mitchell; LayerNorm gains growing like sqrt(C) give +0.5.
# Hidden slopes the parametrisation itself predicts above SLOPE_LIMIT are reported (a warning):
# that init is not width-independent, by design.
SLOPE_LIMIT = 0.25


def _model():
    from . import model  # torch: only when a forward pass is needed

    return model


def _scaled_init(std_of: Callable[[GPTConfig, str], float]):
    """An init that rescales llm.c's draws (std 0.02 or 0.02/sqrt(2L)) to std_of(cfg, name)."""
    def init(cfg: GPTConfig, seed: int) -> dict[str, np.ndarray]:
        from gpt2_verify.reference.config import nominal_std
        from gpt2_verify.reference.init import init_tensors

        params = {k: v.astype(np.float64) for k, v in init_tensors(cfg, seed).items()}
        for name in RANDOM_TENSORS:
            params[name] *= std_of(cfg, name) / nominal_std(cfg, name)
        return params
    return init


def _llmc_init(cfg: GPTConfig, seed: int) -> dict[str, np.ndarray]:
    from gpt2_verify.reference.init import init_tensors

    return init_tensors(cfg, seed)


def _scheme_init(scheme: str) -> Callable[[GPTConfig, int], dict]:
    def init(cfg: GPTConfig, seed: int) -> dict[str, np.ndarray]:
        from gpt2_verify.reference.init import init_tensors

        return init_tensors(cfg, seed, scheme=scheme)
    init.__name__ = scheme
    return init


def _fan_in_std(cfg: GPTConfig, name: str) -> float:
    fan_in = 4 * cfg.channels if name == "fcprojw" else cfg.channels
    std = 1.0 / math.sqrt(fan_in)  # wte/wpe: the tied lm head reads wte with fan-in C
    return std / math.sqrt(2 * cfg.layers) if name in RESIDUAL_TENSORS else std


def _fixed_one_std(cfg: GPTConfig, name: str) -> float:
    return 1.0 / math.sqrt(2 * cfg.layers) if name in RESIDUAL_TENSORS else 1.0


# name -> init(cfg, seed) -> params. "llmc": llm.c's (std 0.02 whatever the width);
# "fan-in": std 1/sqrt(fan_in) (residual projections / sqrt(2L)), width-independent coordinates;
# "fixed-1": std 1.0 whatever the width (the classic unscaled init).
SWEEP_INITS: dict[str, Callable[[GPTConfig, int], dict]] = {
    "llmc": _llmc_init,
    "fan-in": _scaled_init(_fan_in_std),
    "fixed-1": _scaled_init(_fixed_one_std),
}


def predicted_scales(cfg: GPTConfig, params: Mapping[str, np.ndarray]) -> dict[str, float]:
    """rms of the embedding, of the residual stream after each block and of the logits that
    the weights' own scales predict at init (the derivation of `expected_stream_ratio`: block l
    adds (l + 1) / L of the blocks' total variance (sigma_w^2 C)^2; the logits have std
    rms(wte) |lnf|, as in `LossBound`). Only ratios across widths are used."""
    def ms(name, rows=None):
        a = np.asarray(params[name], dtype=np.float64)
        a = a[:rows] if rows else a
        return float(np.mean(a * a))
    e2 = ms("wte", cfg.vocab) + ms("wpe")
    w = np.concatenate([np.asarray(params["qkvw"], dtype=np.float64).reshape(-1),
                        np.asarray(params["fcw"], dtype=np.float64).reshape(-1)])
    branch2 = (float(np.mean(w * w)) * cfg.channels) ** 2
    out = {"embed": math.sqrt(e2)}
    for layer in range(cfg.layers):
        out[f"block{layer}"] = math.sqrt(e2 + (layer + 1) / cfg.layers * branch2)
    lnf = (np.asarray(params["lnfw"], dtype=np.float64) ** 2
           + np.asarray(params["lnfb"], dtype=np.float64) ** 2)
    out["logits"] = math.sqrt(ms("wte", cfg.vocab) * float(np.sum(lnf)))
    return out


@dataclasses.dataclass
class WidthSweep:
    widths: list[int]
    layers: int
    steps: int
    init: str
    quantities: list[str]  # "embed", "block0".., "logits"
    scales: dict[str, list[list[float]]]  # quantity -> [step][width] mean |.|
    slopes: dict[str, list[float]]  # quantity -> per step, d log(scale) / d log(width)
    losses: list[list[float]]  # [width][step]
    findings: list[Finding]
    slope_limit: float = SLOPE_LIMIT
    expected: dict[str, float] = dataclasses.field(default_factory=dict)  # predicted slope per quantity

    @property
    def passed(self) -> bool:
        return not any(f.severity == "fail" for f in self.findings)

    def to_dict(self) -> dict:
        return {"widths": self.widths, "layers": self.layers, "steps": self.steps,
                "init": self.init, "slope_limit": self.slope_limit, "passed": self.passed,
                "scales": {q: [[json_float(x) for x in row] for row in v] for q, v in self.scales.items()},
                "slopes": {q: [json_float(x) for x in v] for q, v in self.slopes.items()},
                "expected_slopes": {q: json_float(x) for q, x in self.expected.items()},
                "losses": [[json_float(x) for x in row] for row in self.losses],
                "findings": [f.to_dict() for f in self.findings]}


def _slope(widths: Sequence[int], values: Sequence[float]) -> float:
    x = np.log(np.asarray(widths, dtype=np.float64))
    y = np.log(np.asarray(values, dtype=np.float64))
    if not np.all(np.isfinite(y)):
        return math.nan
    x = x - x.mean()
    return float(np.dot(x, y - y.mean()) / np.dot(x, x))


def width_sweep(*, widths: Sequence[int] = (32, 64, 128), layers: int = 2, steps: int = 3,
                init: str | Callable[[GPTConfig, int], Mapping[str, np.ndarray]] = "llmc",
                head_size: int = 16, vocab: int = 512, batch: int = 4, seq: int = 32,
                seed: int = 42, optimizer=None, dtype: str = "float64",
                slope_limit: float = SLOPE_LIMIT) -> WidthSweep:
    """muP-style coordinate check: mean |x| of the embedding, of the residual stream after each
    block and of the logits, at `steps` + 1 points (init, then after each AdamW step on the same
    batch) for each width (C, heads = C / head_size, fixed depth, vocab and tokens).

    For each quantity and step, the slope of log(mean |x|) against log(width) is fitted and
    judged against the slope the init's own weights predict (`predicted_scales`, fitted the same
    way): off by more than slope_limit fails (the forward scales activations other than its
    weights say); a predicted hidden-stream slope above slope_limit is a warning (a standard
    parametrisation, not width-independent by design). muP's output multiplier is not part of
    llm.c's forward, so its logits grow like sqrt(C) here, as predicted.
    """
    widths = sorted(int(w) for w in widths)
    if len(widths) < 3 or len(set(widths)) != len(widths):
        raise ValueError(f"width sweep needs at least 3 distinct widths, got {widths}")
    for w in widths:
        if w <= 0 or w % head_size:
            raise ValueError(f"width {w} is not a positive multiple of head_size {head_size}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    m = _model()
    opt = optimizer or ADAMW["train_gpt2.c"]
    init_name = init if isinstance(init, str) else getattr(init, "__name__", "custom")
    if isinstance(init, str):
        from gpt2_verify.reference.schemes import SCHEMES

        if init in SCHEMES:  # any init scheme, e.g. a coordinate check of mup against gpt2
            init = _scheme_init(init)
        elif init in SWEEP_INITS:
            init = SWEEP_INITS[init]
        else:
            raise ValueError(f"unknown init {init!r}; use one of {sorted(SWEEP_INITS)}, an init scheme "
                             f"({', '.join(SCHEMES)}) or a callable (cfg, seed) -> params")
    quantities = ["embed"] + [f"block{layer}" for layer in range(layers)] + ["logits"]
    scales = {q: [[math.nan] * len(widths) for _ in range(steps + 1)] for q in quantities}
    losses = []
    predicted: dict[str, list[float]] = {q: [] for q in quantities}
    x = y = None
    for wi, width in enumerate(widths):
        cfg = GPTConfig(layers, width, width // head_size, vocab=vocab, max_seq_len=seq)
        if x is None:  # the same tokens at every width (they depend on V, T and seed only)
            x, y = m.random_tokens(cfg, batch=batch, seq=seq, seed=seed)
        params = {k: np.array(v, dtype=np.float64) for k, v in init(cfg, seed).items()}
        for q, v in predicted_scales(cfg, params).items():
            predicted[q].append(v)
        mom = {k: np.zeros_like(v) for k, v in params.items()}
        vel = {k: np.zeros_like(v) for k, v in params.items()}
        run = []
        for step in range(steps + 1):
            fb = m.forward_backward(cfg, params, x, y, dtype=dtype, backward=step < steps,
                                    keep_activations=True)
            run.append(float(fb.loss))
            emb = params["wte"][x] + params["wpe"][:seq]
            scales["embed"][step][wi] = float(np.mean(np.abs(emb)))
            for layer in range(layers):
                a = np.asarray(fb.activations[f"block{layer}"], dtype=np.float64)
                scales[f"block{layer}"][step][wi] = float(np.mean(np.abs(a)))
            scales["logits"][step][wi] = float(np.mean(np.abs(np.asarray(fb.logits, np.float64))))
            if step < steps:
                adamw_step(params, fb.grads, mom, vel, step + 1, opt)
        losses.append(run)
    slopes = {q: [_slope(widths, scales[q][s]) for s in range(steps + 1)] for q in quantities}
    expected = {q: _slope(widths, predicted[q]) for q in quantities}
    findings = []
    for q in quantities:
        layer = int(q[5:]) if q.startswith("block") else None
        off = [abs(sl - expected[q]) if not math.isnan(sl) else math.inf for sl in slopes[q]]
        worst = max(range(steps + 1), key=lambda s: off[s])
        if not off[worst] <= slope_limit:
            vals = ", ".join(f"{v:.3g}" for v in scales[q][worst])
            findings.append(Finding(
                "width", f"{q} at step {worst}: mean |x| scales with width as C^{slopes[q][worst]:.2f}, "
                f"its weights predict C^{expected[q]:.2f} (allowed +-{slope_limit:g}; {vals} at widths "
                f"{', '.join(map(str, widths))}), init {init_name}", q, layer))
        elif q.startswith("block") and expected[q] > slope_limit:
            findings.append(Finding(
                "width", f"{q}: grows with width as C^{slopes[q][0]:.2f}, as init {init_name}'s standard "
                f"parametrisation predicts (C^{expected[q]:.2f}): not width-independent (muP or "
                f"1/sqrt(fan_in) inits keep it flat)", q, layer, severity="warn"))
    return WidthSweep(widths, layers, steps, init_name, quantities, scales, slopes, losses, findings,
                      slope_limit, expected)
