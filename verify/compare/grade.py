"""Grade a model's initialized tensors against the reference init (or against another file).

Per llm.c tensor (all layers together, with per-layer figures), one verdict, best to worst:

    exact         bit-identical to the reference (after rounding it to the file's storage type)
    close         same random stream, other float math: every value within tolerance.close_bound
    distribution  another stream (RNG, order, seed, draw count), but the values pass
                  verify.stats.check_normal for the expected law and the constants are exact
    mismatch      anything else, with the reason (std/mean off, constants wrong, NaN/Inf, shape,
                  missing tensor, ...)

Streaming: the candidate is read chunk by chunk (ModelFile.iter_chunks) beside the reference
generated chunk by chunk (reference.init.iter_tensor_chunks), so no tensor is held twice and
a d48 compares in bounded memory. Only a random tensor that is neither exact nor close is read a
second time, for its distribution check.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import numpy as np

from reference.bf16 import bf16_bits_to_f32, f32_to_bf16_bits
from reference.config import (
    RANDOM_TENSORS,
    RESIDUAL_TENSORS,
    GPTConfig,
    TensorSpec,
    nominal_std,
)

from ..stats import NormalCheck, check_normal
from .tolerance import close_bound

VERDICTS = ("exact", "close", "distribution", "mismatch")  # best to worst
CHUNK = 1 << 20


def worst(verdicts) -> str:
    return max(verdicts, key=VERDICTS.index, default="exact")


# ---- regions: the parts of a tensor graded separately ------------------------------------------

@dataclasses.dataclass(frozen=True)
class Region:
    label: str  # "layer 3", "padded rows", "" (whole tensor)
    layer: int | None
    lo: int  # flat element range [lo, hi) of the tensor
    hi: int
    kind: str  # "normal", "ones", "zeros"


def regions(cfg: GPTConfig, spec: TensorSpec, rows: int | None = None) -> list[Region]:
    """wte: drawn rows, then padded rows V..rows-1 (zero); per-layer tensors: one per layer."""
    if spec.name == "wte":
        rows = cfg.padded_vocab if rows is None else rows
        drawn = min(rows, cfg.vocab) * cfg.channels
        out = [Region("", None, 0, drawn, "normal")]
        if rows > cfg.vocab:
            out.append(Region("padded rows", None, drawn, rows * cfg.channels, "zeros"))
        return out
    kind = spec.init
    if not spec.per_layer:
        return [Region("", None, 0, spec.numel, kind)]
    per = spec.numel // cfg.layers
    return [Region(f"layer {i}", i, i * per, (i + 1) * per, kind) for i in range(cfg.layers)]


# ---- the element-wise comparison pass ---------------------------------------------------------

@dataclasses.dataclass
class RegionDiff:
    region: Region
    numel: int = 0
    differing: int = 0  # bits differ from the reference (rounded to the storage type)
    over: int = 0  # |diff| above the close bound
    negzero: int = 0  # differs only as -0.0 vs +0.0
    nonfinite: int = 0
    nan: int = 0
    first_nonfinite: int | None = None  # flat index in the tensor
    first_diff: int | None = None
    first_over: int | None = None
    first_values: tuple[float, float] | None = None  # (candidate, reference) at first_over/diff
    max_abs: float = 0.0
    max_abs_at: int | None = None
    max_ulps: int = 0
    sum_sq: float = 0.0  # over finite candidate values (second pass, tensors not exact/close)
    sum_: float = 0.0
    head: np.ndarray | None = None  # the first 16 candidate values (stream diagnosis)

    @property
    def verdict(self) -> str:
        if self.nonfinite:
            return "mismatch"
        if self.differing == self.negzero:
            return "exact" if self.differing == 0 else "close"
        return "close" if self.over == 0 and self.region.kind == "normal" else "differs"

    def mean(self) -> float:
        n = self.numel - self.nonfinite
        return self.sum_ / n if n else math.nan

    def rms(self) -> float:
        n = self.numel - self.nonfinite
        return math.sqrt(self.sum_sq / n) if n else math.nan


def _ulps(delta: np.ndarray, ref: np.ndarray, std: float) -> np.ndarray:
    """|diff| in float32 ulps at the larger of |reference| and the std: near zero the float
    spacing shrinks without bound, so a plain ulp distance there says nothing about the math."""
    scale = np.maximum(np.abs(ref.astype(np.float32)), np.float32(std))
    return delta / np.spacing(scale).astype(np.float64)


def _round_to(ref: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bf16":
        return bf16_bits_to_f32(f32_to_bf16_bits(ref))
    if dtype == "fp16":
        return ref.astype(np.float16).astype(np.float32)
    return ref


def _aligned(a: Iterator[np.ndarray], b: Iterator[np.ndarray], cuts: list[int]
             ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(offset, a_piece, b_piece) of equal length, split at every position in `cuts`."""
    a = (np.ravel(x) for x in a)
    b = (np.ravel(x) for x in b)
    abuf = bbuf = np.empty(0, np.float32)
    pos, ci = 0, 0
    cuts = sorted(set(cuts))
    while True:
        # refill whichever side ran dry; either stream ending ends the pairing
        abuf = next(a, None) if abuf.size == 0 else abuf
        bbuf = next(b, None) if bbuf.size == 0 else bbuf
        if abuf is None or bbuf is None:
            return
        if abuf.size == 0 or bbuf.size == 0:
            continue  # an empty chunk
        while ci < len(cuts) and cuts[ci] <= pos:
            ci += 1
        n = min(abuf.size, bbuf.size, (cuts[ci] - pos) if ci < len(cuts) else abuf.size)
        yield pos, abuf[:n], bbuf[:n]
        abuf, bbuf, pos = abuf[n:], bbuf[n:], pos + n


def _take(chunks: Iterator[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """The first n values of a chunk stream."""
    left = n
    for c in chunks:
        if left <= 0:
            return
        c = np.ravel(c)
        yield c[:left]
        left -= min(left, c.size)


def diff_tensor(candidate: Iterator[np.ndarray], reference: Iterator[np.ndarray],
                parts: list[Region], *, std: float, dtype: str) -> list[RegionDiff]:
    """One pass over a tensor: per region, what differs from the reference and by how much."""
    out = [RegionDiff(r) for r in parts]
    cuts = [r.lo for r in parts] + [parts[-1].hi]
    ri = 0
    for pos, c, r in _aligned(candidate, _take(reference, parts[-1].hi), cuts):
        while pos >= parts[ri].hi:
            ri += 1
        d = out[ri]
        c = np.asarray(c, dtype=np.float32)
        r = np.asarray(r, dtype=np.float32)
        if d.head is None or d.head.size < 16:
            need = 16 - (0 if d.head is None else d.head.size)
            d.head = c[:need].copy() if d.head is None else np.concatenate([d.head, c[:need]])
        d.numel += c.size
        finite = np.isfinite(c)
        if not finite.all():
            bad = ~finite
            k = int(bad.sum())
            if d.first_nonfinite is None:
                d.first_nonfinite = pos + int(np.argmax(bad))
            d.nonfinite += k
            d.nan += int(np.isnan(c).sum())
        want = _round_to(r, dtype)
        neq = (c.view(np.uint32) != want.view(np.uint32)) & finite
        if not neq.any():
            continue
        idx = np.flatnonzero(neq)
        cv, rv, wv = c[idx], r[idx], want[idx]
        negzero = (cv == 0) & (wv == 0)
        d.negzero += int(negzero.sum())
        d.differing += idx.size
        if d.first_diff is None:
            d.first_diff = pos + int(idx[0])
        delta = np.abs(cv.astype(np.float64) - rv.astype(np.float64))
        k = int(np.argmax(delta))
        if delta[k] > d.max_abs or d.max_abs_at is None:
            d.max_abs, d.max_abs_at = float(delta[k]), pos + int(idx[k])
        d.max_ulps = max(d.max_ulps, int(np.ceil(_ulps(delta, rv, std).max())))
        over = delta > close_bound(rv, std, dtype) if d.region.kind == "normal" else ~negzero
        if over.any():
            j = int(np.argmax(over))
            if d.first_over is None:
                d.first_over = pos + int(idx[j])
                d.first_values = (float(cv[j]), float(rv[j]))
            d.over += int(over.sum())
        elif d.first_values is None:
            d.first_values = (float(cv[0]), float(rv[0]))
    return out


# ---- per-tensor grade -------------------------------------------------------------------------

@dataclasses.dataclass
class TensorGrade:
    name: str
    shape: tuple[int, ...]
    dtype: str
    source: list[str]
    verdict: str
    reason: str
    numel: int = 0
    mismatched: int = 0  # values outside the close bound (constants: any value differing)
    differing: int = 0  # values not bit-identical
    max_abs_diff: float = 0.0
    max_abs_diff_index: tuple[int, ...] | None = None
    max_ulps: int = 0
    mean: float | None = None
    std: float | None = None
    expected_std: float | None = None
    std_ratio: float | None = None
    nonfinite: int = 0
    first_divergence: dict | None = None
    cause: str | None = None
    layers: list[dict] = dataclasses.field(default_factory=list)
    distribution: dict | None = None  # the check_normal figures, when it ran

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        if self.max_abs_diff_index is not None:
            d["max_abs_diff_index"] = list(self.max_abs_diff_index)
        return d


def _index(shape: tuple[int, ...], flat: int) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape))


def _at(name: str, shape, flat: int) -> str:
    return f"{name}[{', '.join(map(str, _index(shape, flat)))}]"


def mismatched_message(name: str, shape, mismatched: int, numel: int, max_abs: float,
                       at: int | None, what: str = "greatest absolute difference") -> str:
    """torch.testing style: 'Mismatched elements: 62 / 20,480 (0.3%), greatest ... at index (1, 7)'."""
    text = f"Mismatched elements: {mismatched:,} / {numel:,} ({100.0 * mismatched / max(numel, 1):.1f}%)"
    if at is not None:
        text += f", {what} {max_abs:.3g} at index {_index(shape, at)}"
    return text


def _std_reason(name: str, cfg: GPTConfig, obs: float, expected: float) -> str:
    ratio = obs / expected if expected else math.inf
    text = f"{name} std {obs:.4g} = {ratio:.3g}x expected {expected:.4g}"
    two_l = math.sqrt(2 * cfg.layers)
    if obs == 0:
        return f"{name} is all zero: never initialized"
    if name in RESIDUAL_TENSORS and cfg.layers > 1 and abs(ratio / two_l - 1) < 0.05:
        return text + ": residual scaling 1/sqrt(2L) missing"
    if name not in RESIDUAL_TENSORS and cfg.layers > 1 and abs(ratio * two_l - 1) < 0.05:
        if cfg.layers == 2:  # 1/sqrt(2L) = 1/2: say both
            return text + " (half the expected std, = 1/sqrt(2L) at L=2)"
        return text + ": residual scaling 1/sqrt(2L) applied to a tensor that is not a residual projection"
    if name in ("wte", "wpe") and abs(obs - 1.0) < 0.05:
        return text + ": nn.Embedding's default N(0, 1), the GPT-2 init was not applied"
    fan_in = cfg.channels * (4 if name == "fcprojw" else 1)
    torch_default = 1.0 / math.sqrt(3.0 * fan_in)  # nn.Linear's U(-1/sqrt(fan_in), +1/sqrt(fan_in))
    if name not in ("wte", "wpe") and abs(obs / torch_default - 1) < 0.05:
        return text + (f": PyTorch's default nn.Linear init U(+-1/sqrt(fan_in)) (std {torch_default:.4g}),"
                       f" the GPT-2 init was not applied")
    for factor, label in ((0.5, "half"), (2.0, "twice")):
        if abs(ratio / factor - 1) < 0.05:
            return text + f" ({label} the expected std)"
    return text


def _distribution_reason(name: str, cfg: GPTConfig, check: NormalCheck) -> str:
    parts = []
    if check.variance_test is not None and not check.variance_test.passed:
        rms = check.variance_test.statistic * check.expected_std
        parts.append(_std_reason(name, cfg, rms, check.expected_std))
    if check.mean_test is not None and not check.mean_test.passed:
        parts.append(f"{name} mean {check.mean:.3g} (z = {check.mean_test.statistic:+.1f}): not centred at 0")
    if check.ks_test is not None and not check.ks_test.passed and not parts:
        parts.append(f"{name} values are not normal: KS distance {check.ks_test.statistic:.3g} > "
                     f"bound {check.ks_test.upper:.3g} (e.g. uniform or truncated)")
    return "; ".join(parts) or check.reason


def _constant_reason(name: str, shape, d: RegionDiff, value: float) -> str:
    what = {"ln1w": "LayerNorm weight", "ln2w": "LayerNorm weight", "lnfw": "LayerNorm weight"}.get(
        name, "bias")
    where = _at(name, shape, d.first_diff) if d.first_diff is not None else name
    got = d.first_values[0] if d.first_values else math.nan
    label = f"{name} {d.region.label}".strip()
    if d.region.label == "padded rows":
        return (f"wte padded rows not zero: {d.differing:,} of {d.numel:,} values non-zero, first "
                f"{where} = {got:.4g} (rows V..Vp-1 must stay 0)")
    return (f"{label} not {value:g}: {d.differing:,} of {d.numel:,} values differ, first {where} = "
            f"{got:.4g} ({what} must be {value:g})")


def grade_tensor(cfg: GPTConfig, spec: TensorSpec, diffs: list[RegionDiff], *, shape, dtype: str,
                 source: list[str], candidate_chunks, fpr: float) -> TensorGrade:
    """Turn one tensor's region diffs into its verdict; runs check_normal when needed."""
    numel = sum(d.numel for d in diffs)
    g = TensorGrade(spec.name, tuple(shape), dtype, list(source), "exact", "", numel=numel)
    g.differing = sum(d.differing for d in diffs)
    g.mismatched = sum(d.over for d in diffs)
    g.nonfinite = sum(d.nonfinite for d in diffs)
    g.max_ulps = max(d.max_ulps for d in diffs)
    top = max(diffs, key=lambda d: d.max_abs)
    g.max_abs_diff = top.max_abs
    if top.max_abs_at is not None:
        g.max_abs_diff_index = _index(shape, top.max_abs_at)
    random = spec.name in RANDOM_TENSORS
    if random:
        g.expected_std = nominal_std(cfg, spec.name)
    for d in diffs:
        if d.region.layer is not None:
            layer = {"layer": d.region.layer, "verdict": d.verdict if d.verdict != "differs" else
                     None, "differing": d.differing, "mismatched": d.over,
                     "max_abs_diff": d.max_abs, "nonfinite": d.nonfinite}
            g.layers.append(layer)

    # NaN / Inf first: nothing else is meaningful
    if g.nonfinite:
        first = min(d.first_nonfinite for d in diffs if d.first_nonfinite is not None)
        nan = sum(d.nan for d in diffs)
        g.verdict = "mismatch"
        g.reason = (f"{spec.name}: {nan:,} NaN and {g.nonfinite - nan:,} Inf among {numel:,} values, "
                    f"first at {_at(spec.name, shape, first)}")
        return _layer_verdicts(g, "mismatch")
    bad_constant = [d for d in diffs if d.region.kind != "normal" and d.differing > d.negzero]
    if bad_constant:
        g.verdict = "mismatch"
        g.reason = "; ".join(_constant_reason(spec.name, shape, d, 1.0 if d.region.kind == "ones" else 0.0)
                             for d in bad_constant)
        if not random:
            return _layer_verdicts(g, "mismatch")
    verdicts = [d.verdict for d in diffs]
    if all(v == "exact" for v in verdicts):
        g.reason = f"{spec.name}: bit-identical ({numel:,} values)"
        return _layer_verdicts(g, "exact")
    if not bad_constant and all(v in ("exact", "close") for v in verdicts):
        g.verdict = "close"
        negz = sum(d.negzero for d in diffs)
        if g.differing == negz:
            g.reason = f"{spec.name}: equal values, {negz:,} zeros with the wrong sign (-0.0)"
        else:
            g.reason = (f"{spec.name}: same stream, other float math: "
                        + mismatched_message(spec.name, shape, g.differing, numel, g.max_abs_diff,
                                             top.max_abs_at) + f", max {g.max_ulps} ulps")
        return _layer_verdicts(g, "close")
    # the drawn values come from another stream, or are wrong: is the law right?
    first = min((d for d in diffs if d.first_over is not None), key=lambda d: d.first_over, default=None)
    region = next(d.region for d in diffs if d.region.kind == "normal")
    lo, hi = region.lo, max(d.region.hi for d in diffs if d.region.kind == "normal")
    drawn = [d for d in diffs if d.region.kind == "normal"]
    values = _second_pass(_take(_skip(candidate_chunks(), lo), hi - lo), drawn, lo)
    if hi - lo >= 3:
        check = check_normal(values, g.expected_std, fpr=fpr, name=spec.name,
                             quantization=None if dtype == "fp32" else _QUANT.get(dtype))
        g.distribution = {"passed": check.passed, "fpr": check.fpr, "reason": check.reason,
                          "n": check.n, "mean": check.mean, "std": check.std}
        law_ok = check.passed
        law_reason = _distribution_reason(spec.name, cfg, check) if not check.passed else ""
    else:
        for _ in values:
            pass
        law_ok, law_reason = False, f"{spec.name}: {hi - lo} values, too few to test the law"
    n = sum(d.numel - d.nonfinite for d in drawn)
    if n:
        g.mean = sum(d.sum_ for d in drawn) / n
        g.std = math.sqrt(max(sum(d.sum_sq for d in drawn) / n - g.mean ** 2, 0.0))
        g.std_ratio = g.std / g.expected_std
    for x, d in zip(g.layers, [d for d in diffs if d.region.layer is not None]):
        x["std"] = d.rms()
        x["std_ratio"] = d.rms() / g.expected_std
    diff_text = mismatched_message(spec.name, shape, g.mismatched, numel, g.max_abs_diff, top.max_abs_at)
    if first is not None:
        diff_text += (f"; first at {_at(spec.name, shape, first.first_over)}: "
                      f"{first.first_values[0]:.6g} vs {first.first_values[1]:.6g}")
    if law_ok and not bad_constant:
        g.verdict = "distribution"
        g.reason = f"{spec.name}: another stream, right law (N(0, {g.expected_std:.4g})): {diff_text}"
    else:
        g.verdict = "mismatch"
        g.reason = "; ".join(p for p in (g.reason, law_reason) if p) or diff_text
        # name the layers whose rms is off by more than ~8 standard errors (rms of n normals has
        # relative standard error 1/sqrt(2n)) when only some layers are
        per = numel // max(len(g.layers), 1)
        slack = max(0.05, 8.0 / math.sqrt(2.0 * max(per, 1)))
        bad_layers = [x for x in g.layers if abs(x["std_ratio"] - 1) > slack]
        if bad_layers and len(bad_layers) < len(g.layers):
            g.reason += "; std off in " + ", ".join(
                f"layer {x['layer']} ({x['std_ratio']:.3g}x)" for x in bad_layers[:8])
    return _layer_verdicts(g, g.verdict)


_QUANT = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -11, "fp64": 0.0}


def _skip(chunks: Iterator[np.ndarray], n: int) -> Iterator[np.ndarray]:
    left = n
    for c in chunks:
        c = np.ravel(c)
        if left >= c.size:
            left -= c.size
            continue
        yield c[left:]
        left = 0


def _second_pass(chunks: Iterator[np.ndarray], drawn: list[RegionDiff], lo: int) -> Iterator[np.ndarray]:
    """Pass the chunks on (to check_normal) while summing x and x^2 per region, in float64."""
    ri, pos = 0, lo
    for c in chunks:
        c = np.ravel(c)
        while c.size:
            while pos >= drawn[ri].region.hi:
                ri += 1
            part, c = c[:drawn[ri].region.hi - pos], c[drawn[ri].region.hi - pos:]
            x = part.astype(np.float64)
            x = x[np.isfinite(x)]
            drawn[ri].sum_ += float(x.sum())
            drawn[ri].sum_sq += float(np.vdot(x, x))
            pos += part.size
            yield part


def _layer_verdicts(g: TensorGrade, fallback: str) -> TensorGrade:
    for x in g.layers:
        if x["verdict"] is None:
            x["verdict"] = fallback if fallback in ("distribution", "mismatch") else "mismatch"
    return g


def expected_shape(cfg: GPTConfig, spec: TensorSpec, wte_rows: int | None) -> tuple[int, ...]:
    if spec.name == "wte" and wte_rows is not None:
        return (wte_rows, cfg.channels)
    return spec.shape
