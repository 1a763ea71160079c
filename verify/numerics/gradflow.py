"""Gradient flow, activation scale, width sweep and candidate-vs-reference numeric comparison.

Every function returns a dataclass with `to_dict()` (JSON-ready, the config as cfg.as_dict())
and a list of `Finding`s, each with a one-line `reason` naming the tensor and layer.

    check_gradients(cfg, grads, *, loss, params, ...)   does every parameter learn?
        finite        every gradient value finite (count, first index)
        nonzero       every tensor and every layer slice gets a non-zero gradient; every wte row
                      < V too (the tied lm head touches all of them), wpe rows < T too
        padding       wte rows V..Vp-1 and wpe rows >= T get exactly zero
        initial-loss  a random init's loss near ln V + s^2/2 (derivation at `initial_loss_bound`)
        adam-eps      the first AdamW update (llm.c gpt2_update, t=1: m_hat = g, v_hat = g^2, so
                      |update| = lr |g| / (|g| + eps) ~ lr) has rms >= lr/2, i.e. the gradient is
                      not buried under AdamW's eps
        neighbours    a layer's gradient norm within NEIGHBOUR_FACTOR of the median of its
                      neighbouring layers' (same tensor, up to NEIGHBOUR_SPAN layers away)
    activation_scales(cfg, params, tokens)              mean |x| of the residual stream per block
    width_sweep(widths=..., layers=..., steps=...)      muP-style coordinate check
    compare_numerics(reference, candidate, tolerances=TOLERANCES[...])
        per-quantity max abs / rel error, mismatches, % of the allowed error used, and rules so
        loose that a 2x error (or a NaN) would pass. TOLERANCES: "fp32-cpu" (measured, tight),
        "llmc-test_gpt2.c", "llmc-test_gpt2.cu-bf16", "llmc-test_gpt2.cu-fp32" (llm.c's own
        rules, reproduced in float32 as its C code evaluates them)

The model itself is verify.numerics.model (forward_backward, random_tokens), the optimizer
verify.numerics.adamw (AdamW, ADAMW); torch is imported only when a function needs a forward pass.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from gpt2_verify.reference.config import (
    BASE_STD,
    RANDOM_TENSORS,
    RESIDUAL_TENSORS,
    TENSOR_NAMES,
    GPTConfig,
    TensorSpec,
    parameter_table,
)

from ..tolerance import Tolerance
from .adamw import ADAMW, adamw_step, adamw_update, global_norm

# ---- thresholds (each one's reason is where it is used) ---------------------------------------

# A layer's gradient norm vs the median of its neighbours' (same tensor, layers within
# NEIGHBOUR_SPAN). At GPT-2's init (pre-LN, residual scaling) gradients reach every layer through
# the residual stream almost unattenuated: measured ratios stay within 1.6x (C=64, L=2 and 8)
# and 3.5x (d12: ln1b of layer 0, the layer next to the embedding; the rest within 1.5x).
# 100x is two orders of magnitude: only a broken path (a sublayer that outputs ~0, a saturated
# nonlinearity, a scaled-away branch) gets there. With L = 2 each layer has one neighbour and
# the check cannot tell which of the two is off: it names both.
NEIGHBOUR_FACTOR = 100.0
NEIGHBOUR_SPAN = 2
# First AdamW step: |update_i| = lr |g_i| / (|g_i| + eps). An rms below lr/2 means most of the
# slice's gradient is at or below eps (1e-8): AdamW cannot move it.
ADAM_UPDATE_FLOOR = 0.5
# initial loss: number of standard deviations of the mean target logit (two-sided Gaussian tail
# 8e-11 <= 1e-9) and an additive slack for the small-V corrections of the Gaussian log-sum-exp
LOSS_SIGMAS = 6.5
LOSS_SLACK = 0.05
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


# ---- findings ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Finding:
    check: str  # finite | nonzero | layernorm-zero | padding | initial-loss | adam-eps | neighbours |
    #             depth-growth | stream-level | width | mismatch | too-loose | tokens | missing | shape
    reason: str  # one line naming tensor and layer
    tensor: str | None = None  # llm.c tensor name; "logits"/"loss"/"embed"/"block{l}" for the
    #                            compare and width checks; None for the loss and stream checks
    layer: int | None = None
    severity: str = "fail"  # "fail" | "warn"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _where(name: str, layer: int | None) -> str:
    return name if layer is None else f"{name} layer {layer}"


def _f(x: float | None) -> float | None:
    """A JSON-safe float (NaN/Inf -> None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _slices(cfg: GPTConfig, spec: TensorSpec, arr: np.ndarray):
    """(layer, view) for each layer slice of a per-layer tensor, (None, arr) otherwise."""
    if spec.per_layer:
        for layer in range(cfg.layers):
            yield layer, arr[layer]
    else:
        yield None, arr


# ---- initial loss -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LossBound:
    """The loss of a random init: ln V + s^2/2 +- LOSS_SIGMAS s / sqrt(n) + LOSS_SLACK.

    Derivation. The logits are z_v = h . wte_v with h = lnfw * n + lnfb the final LayerNorm
    output (n has zero mean and unit variance over C). For a row v independent of h, z_v is a
    sum of C small independent terms: ~N(0, s^2) with s^2 = sigma_wte^2 (|lnfw|^2 + |lnfb|^2)
    (= 0.02^2 C at llm.c's init). Over V such logits the log-sum-exp concentrates at
    ln(V E[e^z]) = ln V + s^2/2 (relative fluctuation sqrt((e^{s^2} - 1)/V)), and the target
    logits z_y average to 0 with standard deviation s/sqrt(n_eff), n_eff = min(B*T, V) distinct
    target rows. So loss = ln V + s^2/2 - mean(z_y) and |loss - ln V - s^2/2| <= 6.5 s/sqrt(n_eff)
    + slack; the slack covers the token's own row (h contains wte_x: z_x is larger, raising the
    log-sum-exp by ~e^{z_x}/V) and small-V corrections. Measured over 9 configs (C 4..1024,
    V 5..50257), 2 seeds, B*T in 1, 8, 256: |loss - ln V - s^2/2| <= 2.7 s/sqrt(n_eff) + 0.
    d12 at B=4, T=64: ln V = 10.825, s = 0.554, centre 10.979, half-width 0.275.
    """

    ln_v: float
    s: float
    positions: int
    centre: float
    half_width: float

    @property
    def lo(self) -> float:
        return self.centre - self.half_width

    @property
    def hi(self) -> float:
        return self.centre + self.half_width

    def to_dict(self) -> dict:
        return {"ln_v": self.ln_v, "logit_std": self.s, "positions": self.positions,
                "centre": self.centre, "half_width": self.half_width, "lo": self.lo, "hi": self.hi}


def initial_loss_bound(cfg: GPTConfig, *, params: Mapping[str, np.ndarray] | None = None,
                       positions: int = 1) -> LossBound:
    """Where a random init's loss must lie (derivation in LossBound). Without params the
    nominal init is assumed (wte std 0.02, lnfw 1, lnfb 0)."""
    if positions < 1:
        raise ValueError(f"positions must be >= 1 (B*T predicted tokens), got {positions}")
    if params is None:
        s = BASE_STD * math.sqrt(cfg.channels)
    else:
        wte = np.asarray(params["wte"], dtype=np.float64)[: cfg.vocab]
        sigma = math.sqrt(float(np.mean(wte * wte)))
        lnfw = np.asarray(params["lnfw"], dtype=np.float64)
        lnfb = np.asarray(params["lnfb"], dtype=np.float64)
        s = sigma * math.sqrt(float(np.sum(lnfw * lnfw) + np.sum(lnfb * lnfb)))
    n_eff = min(positions, cfg.vocab)
    ln_v = math.log(cfg.vocab)
    return LossBound(ln_v, s, positions, ln_v + s * s / 2,
                     LOSS_SIGMAS * s / math.sqrt(n_eff) + LOSS_SLACK)


# ---- check_gradients --------------------------------------------------------------------------

@dataclasses.dataclass
class GradRow:
    """One tensor, or one layer slice of a per-layer tensor."""

    tensor: str
    layer: int | None
    numel: int
    grad_norm: float  # NaN when a value is non-finite
    nonfinite: int
    first_nonfinite: tuple[int, ...] | None  # index in the full llm.c-shaped tensor
    zero: bool  # every value exactly 0
    param_norm: float | None = None
    update_rms: float | None = None  # rms of the first AdamW update (wte rows < V, wpe rows < T)
    update_norm: float | None = None  # |update| over the whole slice
    update_ratio: float | None = None  # |update| / |param| (None when |param| = 0)
    vs_neighbours: float | None = None  # grad norm / median of neighbouring layers' (same tensor)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("grad_norm", "param_norm", "update_rms", "update_norm", "update_ratio",
                  "vs_neighbours"):
            d[k] = _f(d[k])
        d["first_nonfinite"] = None if self.first_nonfinite is None else list(self.first_nonfinite)
        return d


@dataclasses.dataclass
class TensorSummary:
    tensor: str
    grad_norm: float
    update_ratio: float | None
    norm_spread: float | None  # max / min layer grad norm (per-layer tensors, non-zero layers)
    ratio_spread: float | None  # max / min layer update ratio
    min_layer: int | None
    max_layer: int | None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("grad_norm", "update_ratio", "norm_spread", "ratio_spread"):
            d[k] = _f(d[k])
        return d


@dataclasses.dataclass
class GradientReport:
    config: GPTConfig
    rows: list[GradRow]
    tensors: list[TensorSummary]
    findings: list[Finding]
    loss: float | None = None
    loss_bound: LossBound | None = None
    optimizer: Any = None

    @property
    def passed(self) -> bool:
        return not any(f.severity == "fail" for f in self.findings)

    def row(self, tensor: str, layer: int | None = None) -> GradRow:
        for r in self.rows:
            if r.tensor == tensor and r.layer == layer:
                return r
        raise KeyError((tensor, layer))

    def to_dict(self) -> dict:
        opt = self.optimizer
        return {"config": self.config.as_dict(), "passed": self.passed,
                "loss": _f(self.loss),
                "loss_bound": None if self.loss_bound is None else self.loss_bound.to_dict(),
                "optimizer": None if opt is None else {
                    "name": getattr(opt, "name", None), "lr": opt.lr, "beta1": opt.beta1,
                    "beta2": opt.beta2, "eps": opt.eps, "weight_decay": opt.weight_decay,
                    "grad_clip": opt.grad_clip},
                "rows": [r.to_dict() for r in self.rows],
                "tensors": [t.to_dict() for t in self.tensors],
                "findings": [f.to_dict() for f in self.findings]}


def _first_index(mask: np.ndarray, layer: int | None) -> tuple[int, ...]:
    i = int(np.flatnonzero(mask)[0])
    idx = np.unravel_index(i, mask.shape)
    return ((layer,) if layer is not None else ()) + tuple(int(k) for k in idx)


def _zero_rows(rows: np.ndarray) -> np.ndarray:
    """Indices of rows (first axis) that are exactly zero."""
    return np.flatnonzero(~np.any(rows != 0, axis=tuple(range(1, rows.ndim))))


def check_gradients(cfg: GPTConfig, grads: Mapping[str, np.ndarray], *, loss: float | None = None,
                    params: Mapping[str, np.ndarray] | None = None, positions: int | None = None,
                    seq: int | None = None, random_init: bool = True, optimizer=None,
                    neighbour_factor: float = NEIGHBOUR_FACTOR) -> GradientReport:
    """Gradient-flow checks on one backward pass (llm.c names, llm.c shapes; wte (Vp, C) or
    (V, C)).

    loss:       the step-0 loss; checked against `initial_loss_bound` when random_init.
    params:     the parameters the gradients belong to: enables the update/parameter ratios and a
                loss bound from the actual wte/lnf scale.
    positions:  B*T predicted tokens (tightens the loss bound; default 1, the loosest).
    seq:        T, when known: wpe rows < T must get gradient, rows >= T exactly none.
    optimizer:  an AdamW (verify.numerics.adamw.ADAMW[...]); default llm.c train_gpt2.c's.
    """
    if optimizer is None:
        optimizer = ADAMW["train_gpt2.c"]
    findings: list[Finding] = []
    rows: list[GradRow] = []
    V = cfg.vocab
    specs = parameter_table(cfg)
    usable: dict[str, np.ndarray] = {}
    for spec in specs:
        g = grads.get(spec.name)
        if g is None:
            findings.append(Finding("missing", f"{spec.name}: no gradient given", spec.name))
            continue
        g = np.asarray(g)
        ok_shapes = {spec.shape} | ({(V, cfg.channels)} if spec.name == "wte" else set())
        if tuple(g.shape) not in ok_shapes:
            findings.append(Finding("shape", f"{spec.name}: gradient has shape {tuple(g.shape)}, "
                                             f"expected {spec.shape}", spec.name))
            continue
        usable[spec.name] = g

    scale = optimizer.clip_scale(global_norm(usable)) if params is not None else 1.0
    for spec in specs:
        if spec.name not in usable:
            continue
        g = usable[spec.name]
        p = None if params is None else np.asarray(params[spec.name])
        if p is not None and spec.name == "wte":
            p = p[: g.shape[0]]
        for layer, gs in _slices(cfg, spec, g):
            row = _grad_row(spec, layer, gs, findings)
            if p is not None:
                ps = p[layer] if layer is not None else p
                with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf: reported above
                    p64 = np.array(ps, dtype=np.float64)  # the first update, in float64
                    upd = adamw_update(p64, gs, np.zeros(gs.shape), np.zeros(gs.shape), t=1,
                                       opt=optimizer, name=spec.name, scale=scale, apply=False)
                row.param_norm = float(np.linalg.norm(np.asarray(ps, dtype=np.float64)))
                live = _live_rows(cfg, spec.name, gs, seq)  # rows the batch can reach
                row.update_rms = float(np.sqrt(np.mean(upd[live] ** 2))) if live.size else 0.0
                row.update_norm = float(np.linalg.norm(upd))
                row.update_ratio = (row.update_norm / row.param_norm if row.param_norm > 0
                                    else None)
                if (not row.zero and row.nonfinite == 0
                        and row.update_rms < ADAM_UPDATE_FLOOR * optimizer.lr):
                    findings.append(Finding(
                        "adam-eps", f"{_where(spec.name, layer)}: first AdamW update rms "
                        f"{row.update_rms:.2e} < lr/2 = {optimizer.lr / 2:.1e}: most gradient "
                        f"values are at or below eps {optimizer.eps:g} (grad norm "
                        f"{row.grad_norm:.2e})", spec.name, layer))
            rows.append(row)
        _row_checks(cfg, spec, g, seq, findings)

    _neighbour_check(cfg, rows, neighbour_factor, findings)
    if params is not None:
        findings = _layernorm_root_cause(cfg, params, findings)
    bound = None
    if loss is not None:
        if not math.isfinite(loss):
            findings.append(Finding("initial-loss", f"loss is {loss}"))
        elif random_init:
            bound = initial_loss_bound(cfg, params=params, positions=positions or 1)
            if not bound.lo <= loss <= bound.hi:
                findings.append(Finding(
                    "initial-loss", f"initial loss {loss:.4f} outside [{bound.lo:.4f}, "
                    f"{bound.hi:.4f}] = ln V + s^2/2 +- {bound.half_width:.3f} (ln V = "
                    f"{bound.ln_v:.4f}, logit std s = {bound.s:.3f}): a random init's logits are "
                    f"small and nearly uniform"))
    return GradientReport(cfg, rows, _summaries(rows), findings, loss, bound, optimizer)


LAYERNORM_WEIGHTS = ("ln1w", "ln2w", "lnfw")


def _zero_slices(cfg: GPTConfig, params: Mapping[str, np.ndarray], names) -> list[tuple[str, int | None]]:
    spec = {s.name: s for s in parameter_table(cfg)}
    return [(name, layer) for name in names
            for layer, ps in _slices(cfg, spec[name], np.asarray(params[name])) if not np.any(ps)]


def _layernorm_root_cause(cfg: GPTConfig, params: Mapping[str, np.ndarray],
                          findings: list[Finding]) -> list[Finding]:
    """LayerNorm weights exactly 0 (e.g. zeros_ where ones_ was meant): such a LayerNorm outputs
    its bias whatever its input, so no gradient flows back through it, and every tensor it
    cuts off reports a zero gradient. Name that once, as the cause, instead of one line per
    starved tensor."""
    zero = _zero_slices(cfg, params, LAYERNORM_WEIGHTS)
    if not zero:
        return findings
    starved = [f for f in findings if f.check == "nonzero"]
    rest = [f for f in findings if f.check != "nonzero"]
    groups: dict[str, list[int | None]] = {}
    for name, layer in zero:
        groups.setdefault(name, []).append(layer)
    parts = []
    for name, layers in groups.items():
        if layers == [None]:
            parts.append(name)
        else:
            parts.append(f"{name} in layer{'s' if len(layers) > 1 else ''} {_layer_span(layers)}"
                         + (" (all)" if len(layers) == cfg.layers > 1 else ""))
    what = ", ".join(parts)
    consequence = (f"; {len(starved)} tensor slice(s) get exactly zero gradient as a result ("
                   + ", ".join(_where(f.tensor, f.layer) for f in starved[:4] if f.tensor)
                   + (", ..." if len(starved) > 4 else "") + ")") if starved else ""
    cause = Finding("layernorm-zero", f"LayerNorm weight exactly 0: {what}. A LayerNorm with weight 0 "
                                      f"outputs its bias whatever its input, so no gradient flows back "
                                      f"through it (LayerNorm weights start at 1){consequence}",
                    zero[0][0], zero[0][1])
    return [cause] + rest


def _layer_span(layers: list) -> str:
    if len(layers) > 1 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ", ".join(map(str, layers))


def _live_rows(cfg: GPTConfig, name: str, gs: np.ndarray, seq: int | None) -> np.ndarray | slice:
    """Rows of wte/wpe a batch gives gradient to (wte: < V; wpe: < T, or the non-zero rows when
    T is unknown); every row of the other tensors."""
    if name == "wte":
        return np.arange(min(cfg.vocab, gs.shape[0]))
    if name == "wpe":
        return np.arange(min(seq, gs.shape[0])) if seq else np.flatnonzero(np.any(gs != 0, axis=1))
    return np.arange(gs.shape[0]) if gs.ndim else slice(None)


def _grad_row(spec: TensorSpec, layer: int | None, gs: np.ndarray, findings: list[Finding]) -> GradRow:
    finite = np.isfinite(gs)
    bad = int(gs.size - np.count_nonzero(finite))
    first = None
    where = _where(spec.name, layer)
    if bad:
        first = _first_index(~finite, layer)
        kind = "NaN" if np.isnan(gs.reshape(-1)[int(np.flatnonzero(~finite)[0])]) else "Inf"
        findings.append(Finding("finite", f"{where}: {bad} non-finite gradient value(s), first "
                                          f"({kind}) at {list(first)}", spec.name, layer))
    g64 = np.asarray(gs, dtype=np.float64)
    norm = float(np.sqrt(np.sum(g64 * g64))) if not bad else math.nan
    zero = not bool(np.any(gs != 0))
    if zero:
        findings.append(Finding("nonzero", f"{where}: gradient is exactly zero ({gs.size} values): "
                                           f"no gradient reaches it (detached, or its input or "
                                           f"output path is zero)", spec.name, layer))
    return GradRow(spec.name, layer, int(gs.size), norm, bad, first, zero)


def _row_checks(cfg: GPTConfig, spec: TensorSpec, g: np.ndarray, seq: int | None,
                findings: list[Finding]) -> None:
    V = cfg.vocab
    if spec.name == "wte":
        if g.shape[0] > V:
            pad = g[V:]
            nz = np.flatnonzero(np.any(pad != 0, axis=1))
            if nz.size:
                findings.append(Finding(
                    "padding", f"wte: padded rows {V}..{g.shape[0] - 1} must get exactly zero "
                    f"gradient (their logits are not in the loss); {nz.size} row(s) do not, first "
                    f"row {V + int(nz[0])}", "wte"))
        if np.any(g[:V] != 0):  # an all-zero wte is already reported
            zr = _zero_rows(g[:V])
            if zr.size:
                findings.append(Finding(
                    "nonzero", f"wte: {zr.size} of {V} vocabulary rows get no gradient (first row "
                    f"{int(zr[0])}); through the tied lm head every row < V must", "wte"))
    if spec.name == "wpe" and seq is not None and np.any(g != 0):
        zr = _zero_rows(g[:seq])
        if zr.size:
            findings.append(Finding(
                "nonzero", f"wpe: {zr.size} of the {seq} used position rows get no gradient "
                f"(first row {int(zr[0])})", "wpe"))
        extra = np.flatnonzero(np.any(g[seq:] != 0, axis=1))
        if extra.size:
            findings.append(Finding(
                "padding", f"wpe: rows >= T={seq} are never used but {extra.size} get gradient "
                f"(first row {seq + int(extra[0])})", "wpe"))


def _neighbour_check(cfg: GPTConfig, rows: list[GradRow], factor: float,
                     findings: list[Finding]) -> None:
    by_tensor: dict[str, list[GradRow]] = {}
    for r in rows:
        if r.layer is not None:
            by_tensor.setdefault(r.tensor, []).append(r)
    for name, rs in by_tensor.items():
        rs.sort(key=lambda r: r.layer)
        # zero and non-finite slices are reported on their own and do not serve as references
        good = {r.layer: r.grad_norm for r in rs if not r.zero and r.nonfinite == 0}
        for r in rs:
            if r.layer not in good:
                continue
            near = [good[k] for k in range(r.layer - NEIGHBOUR_SPAN, r.layer + NEIGHBOUR_SPAN + 1)
                    if k != r.layer and k in good]
            if not near:
                continue
            # median in log space (an even count: geometric mean of the middle two), so one bad
            # neighbour k-fold off moves a good layer's reference by at most sqrt(k)
            ref = float(np.exp(np.median(np.log(near))))
            r.vs_neighbours = r.grad_norm / ref
            if r.vs_neighbours > factor or r.vs_neighbours < 1 / factor:
                kind = "exploding" if r.vs_neighbours > 1 else "vanishing"
                findings.append(Finding(
                    "neighbours", f"{name} layer {r.layer}: gradient norm {r.grad_norm:.2e} is "
                    f"{r.vs_neighbours:.3g}x the median of its neighbouring layers' ({ref:.2e}): "
                    f"{kind} (limit {factor:g}x)", name, r.layer))


def _summaries(rows: list[GradRow]) -> list[TensorSummary]:
    out = []
    for name in TENSOR_NAMES:
        rs = [r for r in rows if r.tensor == name]
        if not rs:
            continue
        norm = math.sqrt(sum(r.grad_norm ** 2 for r in rs))
        pn = [r.param_norm for r in rs if r.param_norm is not None]
        ratio = None
        if pn and sum(p * p for p in pn) > 0 and all(r.update_norm is not None for r in rs):
            un = math.sqrt(sum(r.update_norm ** 2 for r in rs))
            ratio = un / math.sqrt(sum(p * p for p in pn))
        ns = [r for r in rs if r.layer is not None and not r.zero and math.isfinite(r.grad_norm)]
        nspread = rspread = lo = hi = None
        if len(ns) >= 2:
            lo_r = min(ns, key=lambda r: r.grad_norm)
            hi_r = max(ns, key=lambda r: r.grad_norm)
            nspread, lo, hi = hi_r.grad_norm / lo_r.grad_norm, lo_r.layer, hi_r.layer
            rr = [r.update_ratio for r in ns if r.update_ratio]
            if len(rr) >= 2:
                rspread = max(rr) / min(rr)
        out.append(TensorSummary(name, norm, ratio, nspread, rspread, lo, hi))
    return out


# ---- activation scales ------------------------------------------------------------------------

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
        return {"config": self.config.as_dict(), "passed": self.passed, "embed": _f(self.embed),
                "blocks": [_f(b) for b in self.blocks], "last_over_embed": _f(self.ratio),
                "expected_last_over_embed": _f(self.expected_ratio),
                "unscaled_last_over_embed": _f(self.unscaled_ratio), "level_limit": _f(self.level_limit),
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


# ---- width sweep ------------------------------------------------------------------------------

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
                "scales": {q: [[_f(x) for x in row] for row in v] for q, v in self.scales.items()},
                "slopes": {q: [_f(x) for x in v] for q, v in self.slopes.items()},
                "expected_slopes": {q: _f(x) for q, x in self.expected.items()},
                "losses": [[_f(x) for x in row] for row in self.losses],
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


# ---- tolerance tables and compare_numerics ----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ToleranceTable:
    """One Tolerance (verify.tolerance) per compared quantity."""

    name: str
    source: str  # where the numbers come from
    logits: Tolerance | None  # None: not compared by this table
    loss: Tolerance | None
    grads: Mapping[str, Tolerance]  # llm.c tensor name -> tolerance (missing: not compared)
    wte_rows: str = "Vp"  # "V": compare dwte over V rows only (test_gpt2.c)

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source,
                "logits": None if self.logits is None else self.logits.to_dict(),
                "loss": None if self.loss is None else self.loss.to_dict(),
                "grads": {k: r.to_dict() for k, r in self.grads.items()},
                "wte_rows": self.wte_rows}


# test_gpt2.cu check_tensor thresholds, parameter order (wte .. lnfb), BF16 build
_CU_BF16_THRESHOLDS = (5e-1, 4e-3, 1e-1, 4e-2, 5e-2, 3.5e-2, 2e-2, 3e-2, 5e-2, 3e-2, 3e-2, 3e-2,
                       2e-2, 1e-2, 1e-1, 2e-2)
_CU_EPSILON = 0.079  # check_tensor's "BF16 epsilon value" (~10x bf16's 2^-7)

# fp32-cpu: float32 forward/backward (verify.numerics.model, dtype="float32") vs the float64
# judge, normwise: max|a - b| <= k * max|ref| per tensor (loss: relative). k = FP32_MARGIN x the
# worst normwise error `measure_fp32_errors()` found over MEASURED_CONFIGS x seeds 0..2 x std
# 0.02 and 0.2 (`scaled_params`), rounded up to one significant digit. FP32_MEASURED holds those
# worsts (torch 2.13 CPU, x86-64 AVX512); at std 0.02 every quantity stayed <= 1e-6, the rest
# comes from std 0.2 (C = 128 worst). Also measured, not in the table: d12 at std 0.02 (B=4,
# T=64) <= 1.3e-6 everywhere. The table assumes a well-conditioned network: at std 0.2 and
# C >= 256 the saturated softmax/GELU amplify float32 rounding itself (C=256: 4.6e-5, d12: 9e-3),
# so a correct float32 implementation fails it there - compare such inputs in float64.
FP32_MARGIN = 10.0
FP32_MEASURED: dict[str, float] = {
    "logits": 2.0e-06, "loss": 1.4e-07,
    "wte": 9.0e-06, "wpe": 6.4e-06, "ln1w": 5.4e-06, "ln1b": 4.8e-06, "qkvw": 7.5e-06,
    "qkvb": 3.6e-06, "attprojw": 3.8e-06, "attprojb": 3.2e-06, "ln2w": 2.6e-06, "ln2b": 2.1e-06,
    "fcw": 2.7e-06, "fcb": 4.0e-06, "fcprojw": 3.0e-06, "fcprojb": 1.8e-06, "lnfw": 5.7e-07,
    "lnfb": 5.2e-07,
}


def _round_up_1sig(x: float) -> float:
    e = math.floor(math.log10(x))
    return float(f"{math.ceil(x / 10 ** e)}e{e}")  # 7e-05, not 7.000000000000001e-05


def _fp32_table() -> ToleranceTable:
    src = (f"float32 CPU path vs the float64 judge: {FP32_MARGIN:g}x the worst measured normwise "
           f"error (measure_fp32_errors)")

    def tol(q: str, kind: str) -> Tolerance:
        return Tolerance(**{kind: _round_up_1sig(FP32_MARGIN * FP32_MEASURED[q])}, measured=FP32_MEASURED[q],
                         source=src)

    return ToleranceTable("fp32-cpu", src, logits=tol("logits", "norm"), loss=tol("loss", "rel"),
                          grads={n: tol(n, "norm") for n in TENSOR_NAMES})


_TEST_GPT2_C = ("llm.c test_gpt2.c: logits `diff >= 1e-2f` fails, loss `fabsf(...) >= 1e-2` fails, "
                "check_tensor `diff <= 2e-2f` passes; dwte compared over V*C values")
_TEST_GPT2_CU_BF16 = ("llm.c test_gpt2.cu, BF16 build: logits `diff >= 25.0f` fails; check_tensor passes "
                      "`diff <= threshold + fabs(ref) * 0.079f` with per-tensor thresholds; the step-0 loss "
                      "is read but never compared")
_TEST_GPT2_CU_FP32 = ("llm.c test_gpt2.cu, FP32 build: logits `diff >= 1e-3f` fails; check_tensor passes "
                      "`diff <= 1e-6f + fabs(ref) * 0.079f`; the step-0 loss is read but never compared")
_C = dict(arith="float32")  # evaluated as the C code does, in float

TOLERANCES: dict[str, ToleranceTable] = {
    "fp32-cpu": _fp32_table(),
    "llmc-test_gpt2.c": ToleranceTable(
        "llmc-test_gpt2.c", _TEST_GPT2_C,
        logits=Tolerance(abs=1e-2, strict=True, nan_passes=True, source=_TEST_GPT2_C, **_C),
        loss=Tolerance(abs=1e-2, strict=True, literal="double", nan_passes=True, source=_TEST_GPT2_C, **_C),
        grads={n: Tolerance(abs=2e-2, source=_TEST_GPT2_C, **_C) for n in TENSOR_NAMES}, wte_rows="V"),
    "llmc-test_gpt2.cu-bf16": ToleranceTable(
        "llmc-test_gpt2.cu-bf16", _TEST_GPT2_CU_BF16,
        logits=Tolerance(abs=25.0, strict=True, nan_passes=True, source=_TEST_GPT2_CU_BF16, **_C), loss=None,
        grads={n: Tolerance(abs=t, rel=_CU_EPSILON, nan_passes=True, source=_TEST_GPT2_CU_BF16, **_C)
               for n, t in zip(TENSOR_NAMES, _CU_BF16_THRESHOLDS)}),
    "llmc-test_gpt2.cu-fp32": ToleranceTable(
        "llmc-test_gpt2.cu-fp32", _TEST_GPT2_CU_FP32,
        logits=Tolerance(abs=1e-3, strict=True, nan_passes=True, source=_TEST_GPT2_CU_FP32, **_C), loss=None,
        grads={n: Tolerance(abs=1e-6, rel=_CU_EPSILON, nan_passes=True, source=_TEST_GPT2_CU_FP32, **_C)
               for n in TENSOR_NAMES}),
}


@dataclasses.dataclass
class QuantityResult:
    quantity: str  # "logits", "loss" or a tensor name
    numel: int
    max_abs: float
    max_rel: float  # at the element of max_abs (0 where ref is 0), like test_gpt2.cu
    worst_index: tuple[int, ...] | None
    mismatched: int
    used: float  # max diff / allowed, in % (> 100: fails)
    passed: bool
    rule: Tolerance
    double_passes: bool  # a candidate 2x the reference would pass this rule

    def to_dict(self) -> dict:
        return {"quantity": self.quantity, "numel": self.numel, "max_abs": _f(self.max_abs),
                "max_rel": _f(self.max_rel),
                "worst_index": None if self.worst_index is None else list(self.worst_index),
                "mismatched": self.mismatched, "used_percent": _f(self.used),
                "passed": self.passed, "rule": self.rule.to_dict(),
                "double_passes": self.double_passes}


@dataclasses.dataclass
class NumericsReport:
    table: ToleranceTable
    results: list[QuantityResult]
    findings: list[Finding]

    @property
    def passed(self) -> bool:
        return not any(f.severity == "fail" for f in self.findings)

    def result(self, quantity: str) -> QuantityResult:
        for r in self.results:
            if r.quantity == quantity:
                return r
        raise KeyError(quantity)

    def to_dict(self) -> dict:
        return {"table": self.table.to_dict(), "passed": self.passed,
                "results": [r.to_dict() for r in self.results],
                "findings": [f.to_dict() for f in self.findings]}


def _compare_one(quantity: str, ref: np.ndarray, cand: np.ndarray, rule: Tolerance) -> QuantityResult:
    diff, allowed, ok = rule.evaluate(cand, ref)
    diff = np.asarray(diff, dtype=np.float64)
    allowed = np.asarray(allowed, dtype=np.float64)
    dz = np.where(np.isfinite(diff), diff, np.inf)
    worst = int(np.argmax(dz)) if dz.size else 0
    max_abs = float(dz.reshape(-1)[worst]) if dz.size else 0.0
    r = float(np.abs(np.asarray(ref, dtype=np.float64)).reshape(-1)[worst]) if dz.size else 0.0
    max_rel = max_abs / r if r else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(allowed > 0, dz / allowed, np.where(dz > 0, np.inf, 0.0))
    used = float(np.max(frac, initial=0.0)) * 100
    idx = tuple(int(i) for i in np.unravel_index(worst, np.shape(ref))) if np.ndim(ref) else None
    _d2, _a2, ok2 = rule.evaluate(2 * np.asarray(ref, dtype=np.float64), ref)
    return QuantityResult(quantity, int(np.size(ref)), max_abs, max_rel, idx,
                          int(np.size(ok) - np.count_nonzero(ok)), used, bool(np.all(ok)), rule,
                          bool(np.all(ok2)) and bool(np.any(np.asarray(ref) != 0)))


def compare_numerics(reference, candidate: Mapping[str, Any], *,
                     tolerances: ToleranceTable | str = "fp32-cpu") -> NumericsReport:
    """Candidate (dict with any of "logits" (B,T,V), "loss", "grads" {name: array}) against the
    reference ForwardBackward, under one tolerance table. Quantities the candidate lacks or the
    table does not compare are skipped; a rule under which a candidate of 2x the reference
    would pass is reported as "too loose" (a warning about the rule, not the candidate)."""
    table = TOLERANCES[tolerances] if isinstance(tolerances, str) else tolerances
    pairs: list[tuple[str, np.ndarray, np.ndarray, Tolerance]] = []
    findings: list[Finding] = []
    cl = candidate.get("logits")
    if cl is not None and table.logits is not None:
        ref_l = np.asarray(reference.logits)
        cl = np.asarray(cl)
        if cl.shape != ref_l.shape:
            raise ValueError(f"candidate logits have shape {cl.shape}, reference {ref_l.shape}")
        pairs.append(("logits", ref_l, cl, table.logits))
    cs = candidate.get("loss")
    if cs is not None and table.loss is not None:
        pairs.append(("loss", np.asarray(reference.loss, dtype=np.float64),
                      np.asarray(cs, dtype=np.float64), table.loss))
    elif cs is not None and table.loss is None:
        findings.append(Finding("too-loose", f"loss: not compared by {table.name}", "loss",
                                severity="warn"))
    cg = candidate.get("grads") or {}
    for name in TENSOR_NAMES:
        if name not in cg or name not in table.grads:
            continue
        ref_g = np.asarray(reference.grads[name])
        g = np.asarray(cg[name])
        if name == "wte":
            rows = min(g.shape[0], ref_g.shape[0])
            if table.wte_rows == "V":
                rows = min(rows, reference.logits.shape[-1])
            if g.shape[1:] != ref_g.shape[1:] or g.shape[0] < rows:
                raise ValueError(f"candidate wte gradient has shape {g.shape}, reference "
                                 f"{ref_g.shape}")
            ref_g, g = ref_g[:rows], g[:rows]
        if g.shape != ref_g.shape:
            raise ValueError(f"candidate {name} gradient has shape {g.shape}, reference "
                             f"{ref_g.shape}")
        pairs.append((name, ref_g, g, table.grads[name]))
    nan_ok = [q for q, _r, _c, rule in pairs if rule.nan_passes]
    if nan_ok:
        findings.append(Finding(
            "too-loose", f"too loose: a NaN passes {table.name}'s check of "
            f"{', '.join(nan_ok) if len(nan_ok) < 4 else f'{len(nan_ok)} quantities'} (the C "
            f"code tests `diff > threshold`, false for NaN)", severity="warn"))
    results = []
    for quantity, ref, cand, rule in pairs:
        r = _compare_one(quantity, ref, cand, rule)
        results.append(r)
        where = "" if r.worst_index is None else f" at {list(r.worst_index)}"
        if not r.passed:
            findings.append(Finding(
                "mismatch", f"{quantity}: {r.mismatched} of {r.numel} values outside "
                f"{rule.describe()} ({table.name}); max |a-b| {r.max_abs:.3e}{where}, "
                f"{r.used:.3g}% of the allowed error", None if quantity in ("logits", "loss")
                else quantity, _layer_of(quantity, r.worst_index)))
        if r.double_passes:
            findings.append(Finding(
                "too-loose", f"too loose: a 2x error in {quantity} passes {table.name} "
                f"({rule.describe()}; max |ref| {float(np.max(np.abs(ref))):.3e})",
                quantity, severity="warn"))
    return NumericsReport(table, results, findings)


TOKEN_OVERLAP = 0.5  # share of the reference batch's own fingerprint a candidate must reach


def token_mismatch(cfg: GPTConfig, reference_grads: Mapping[str, np.ndarray],
                   candidate_grads: Mapping[str, np.ndarray], tokens: np.ndarray,
                   targets: np.ndarray) -> Finding | None:
    """Whether the candidate's gradients come from another batch than (tokens, targets).

    A batch leaves a fingerprint: wpe gets gradient in rows < T only, and through the tied head
    the rows of wte that are the batch's targets get -h (O(1)) while every other row gets
    p h with p ~ 1/V, and the input tokens' rows get the embedding's gradient. So the
    rows of dwte with the largest norms are the batch's tokens. The candidate's top rows are
    compared with the reference batch's token set, and the overlap with what the reference's
    own gradient reaches (the gauge): below TOKEN_OVERLAP of it, the batches differ. Not
    decided (None) when the batch touches more than a quarter of the vocabulary."""
    T = int(np.shape(tokens)[1])
    gw = np.asarray(candidate_grads.get("wpe", np.zeros(1)))
    if gw.ndim == 2 and np.any(gw):
        used = np.flatnonzero(np.any(gw != 0, axis=1))
        if used.size and (used[-1] != T - 1):
            return Finding("tokens", f"the tokens differ from the reference's: the candidate's dwpe has "
                                     f"gradient up to row {int(used[-1])}, so its batch had T = "
                                     f"{int(used[-1]) + 1}, the reference's T = {T}; compute the candidate's "
                                     f"gradients on the tokens `gradflow --tokens-out FILE` writes", "wpe")
    V = cfg.vocab
    batch = np.unique(np.concatenate([np.ravel(tokens), np.ravel(targets)]))
    batch = batch[(batch >= 0) & (batch < V)]
    n = batch.size
    if not 0 < n <= V // 4 or "wte" not in candidate_grads:
        return None

    def overlap(g) -> float:
        rows = np.linalg.norm(np.asarray(g, dtype=np.float64)[:V], axis=1)
        top = np.argpartition(-rows, n - 1)[:n]
        return np.intersect1d(top, batch).size / n

    gauge = overlap(reference_grads["wte"])
    got = overlap(candidate_grads["wte"])
    if got < TOKEN_OVERLAP * gauge:
        return Finding("tokens", f"the tokens differ from the reference's: the {n} rows of the candidate's "
                                 f"dwte with the largest gradient include {got:.0%} of the reference batch's "
                                 f"tokens (the reference's own: {gauge:.0%}); compute the candidate's "
                                 f"gradients on the tokens `gradflow --tokens-out FILE` writes (or give "
                                 f"an llm.c debug state, which carries its tokens)", "wte")
    return None


def _layer_of(quantity: str, index: tuple[int, ...] | None) -> int | None:
    if quantity in ("logits", "loss", "wte", "wpe", "lnfw", "lnfb") or not index:
        return None
    return index[0]


# ---- measuring the fp32-cpu table ---------------------------------------------------------------

# (L, C, NH, V, maxT) configs the fp32-cpu table was measured on
MEASURED_CONFIGS = ((1, 8, 1, 10, 8), (2, 64, 4, 1000, 64), (4, 32, 2, 50257, 16),
                    (2, 128, 8, 500, 32), (3, 48, 3, 77, 24))


def scaled_params(cfg: GPTConfig, seed: int, std: float) -> dict[str, np.ndarray]:
    """llm.c's init with the random tensors rescaled to std (residual ones std/sqrt(2L)) and,
    when std != 0.02, LayerNorm weights 1 + N(0, std) and biases N(0, std) - inputs under which
    every nonlinearity matters (float32 arrays)."""
    from gpt2_verify.reference.init import init_tensors

    params = {k: v.astype(np.float64) for k, v in init_tensors(cfg, seed).items()}
    for name in RANDOM_TENSORS:
        params[name] *= std / BASE_STD
    if std != BASE_STD:
        rng = np.random.Generator(np.random.PCG64(seed + 1))
        for name in ("ln1w", "ln2w", "lnfw"):
            params[name] = params[name] + rng.normal(0, std, params[name].shape)
        for name in ("ln1b", "ln2b", "lnfb", "qkvb", "attprojb", "fcb", "fcprojb"):
            params[name] = rng.normal(0, std, params[name].shape)
    return {k: v.astype(np.float32) for k, v in params.items()}


def normwise_errors(ref, cand) -> dict[str, float]:
    """max|a - b| / max|ref| per quantity (loss: relative error)."""
    out = {"logits": float(np.max(np.abs(np.asarray(cand.logits, np.float64) - ref.logits))
                           / np.max(np.abs(ref.logits))),
           "loss": abs(float(cand.loss) - ref.loss) / abs(ref.loss)}
    for name in TENSOR_NAMES:
        r = np.asarray(ref.grads[name], dtype=np.float64)
        c = np.asarray(cand.grads[name], dtype=np.float64)
        out[name] = float(np.max(np.abs(c - r)) / np.max(np.abs(r)))
    return out


def measure_fp32_errors(configs=MEASURED_CONFIGS, seeds=(0, 1, 2), stds=(0.02, 0.2), *,
                        batch: int = 4, seq: int | None = None) -> dict[str, float]:
    """Worst normwise error of the float32 path against the float64 judge, per quantity."""
    m = _model()
    worst: dict[str, float] = {}
    for (L, C, NH, V, T) in configs:
        cfg = GPTConfig(L, C, NH, vocab=V, max_seq_len=T)
        for seed in seeds:
            for std in stds:
                params = scaled_params(cfg, seed, std)
                x, y = m.random_tokens(cfg, batch=batch, seq=seq or T, seed=seed)
                ref = m.forward_backward(cfg, params, x, y, dtype="float64")
                cand = m.forward_backward(cfg, params, x, y, dtype="float32")
                for q, e in normwise_errors(ref, cand).items():
                    worst[q] = max(worst.get(q, 0.0), e)
    return worst
