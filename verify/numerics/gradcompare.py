"""A candidate's logits, loss and gradients against the float64 reference under a tolerance table
(`compare_numerics`, `TOLERANCES`: measured fp32-cpu and llm.c's own test rules), whether they
come from the reference's batch at all (`token_mismatch`), and the measurement behind fp32-cpu.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
from gpt2_verify.reference.config import BASE_STD, PER_LAYER_TENSORS, RANDOM_TENSORS, TENSOR_NAMES, GPTConfig

from ..tolerance import Tolerance
from .findings import Finding, json_float


def _model():
    from . import model  # torch: only when a forward pass is needed

    return model


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
        return {"quantity": self.quantity, "numel": self.numel, "max_abs": json_float(self.max_abs),
                "max_rel": json_float(self.max_rel),
                "worst_index": None if self.worst_index is None else list(self.worst_index),
                "mismatched": self.mismatched, "used_percent": json_float(self.used),
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
    if quantity not in PER_LAYER_TENSORS or not index:
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
