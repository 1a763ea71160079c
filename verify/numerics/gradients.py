"""Does every parameter learn? Checks on one backward pass (`check_gradients`) and the initial loss
of a random init (`initial_loss_bound`); part of `gpt2-verify gradflow`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
from gpt2_verify.reference.config import BASE_STD, TENSOR_NAMES, GPTConfig, TensorSpec, parameter_table

from .adamw import ADAMW, adamw_update, global_norm
from .findings import Finding, json_float, layer_slices, where

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
            d[k] = json_float(d[k])
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
            d[k] = json_float(d[k])
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
                "loss": json_float(self.loss),
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
        for layer, gs in layer_slices(cfg, spec, g):
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
                        "adam-eps", f"{where(spec.name, layer)}: first AdamW update rms "
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
            for layer, ps in layer_slices(cfg, spec[name], np.asarray(params[name])) if not np.any(ps)]


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
                   + ", ".join(where(f.tensor, f.layer) for f in starved[:4] if f.tensor)
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
    at = where(spec.name, layer)
    if bad:
        first = _first_index(~finite, layer)
        kind = "NaN" if np.isnan(gs.reshape(-1)[int(np.flatnonzero(~finite)[0])]) else "Inf"
        findings.append(Finding("finite", f"{at}: {bad} non-finite gradient value(s), first "
                                          f"({kind}) at {list(first)}", spec.name, layer))
    g64 = np.asarray(gs, dtype=np.float64)
    norm = float(np.sqrt(np.sum(g64 * g64))) if not bad else math.nan
    zero = not bool(np.any(gs != 0))
    if zero:
        findings.append(Finding("nonzero", f"{at}: gradient is exactly zero ({gs.size} values): "
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
