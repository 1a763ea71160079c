"""Grade a model's initialized tensors against the reference init (or against another file).

Per llm.c tensor (all layers together, with per-layer figures), one verdict, best to worst:

    exact         bit-identical to the reference (after rounding it to the file's storage type)
    close         same random stream, other float math: every value within tolerance.close_bound
    distribution  another stream (RNG, order, seed, draw count), but the values pass the law
                  check of the init scheme's law (verify.compare.laws.check_law: normal, uniform
                  or truncated normal) and the constant parts are exact
    mismatch      anything else, with the reason (std/mean off, range or shape of the law wrong,
                  constants wrong, NaN/Inf, shape, missing tensor, ...)

The parts graded separately (regions) come from the init scheme (reference.schemes): per layer
and per row range, each with its law; constant parts (LayerNorm 1/0, biases, wte's padded rows,
muP's zero query) are exact checks against their value. Random parts sharing one law (all layers
of a gpt2 weight; one layer of olmo-mitchell's output projections) are tested together, one
law check each.

Streaming: the candidate is read chunk by chunk (ModelFile.iter_chunks) beside the reference
generated chunk by chunk (reference.init.iter_tensor_chunks), so no tensor is held twice and
a d48 compares in bounded memory. Only a random tensor that is neither exact nor close is read
again, once per law it holds, for its law checks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import numpy as np
from gpt2_verify.reference.bf16 import bf16_bits_to_f32, f32_to_bf16_bits
from gpt2_verify.reference.config import RESIDUAL_TENSORS, GPTConfig, TensorSpec
from gpt2_verify.reference.schemes import (
    BIAS_OF,
    DEFAULT_SCHEME,
    EMBEDDINGS,
    Law,
    SchemeInit,
    fans,
    resolve,
    rows_of,
)

from ..stats import NormalCheck
from .laws import KIND_WORDS, check_law, law_origin, matching_schemes, random_law, scheme_init, shape_hint
from .tolerance import close_bound

VERDICTS = ("exact", "close", "distribution", "mismatch")  # best to worst
CHUNK = 1 << 20


def worst(verdicts) -> str:
    return max(verdicts, key=VERDICTS.index, default="exact")


# ---- regions: the parts of a tensor graded separately ------------------------------------------

@dataclasses.dataclass(frozen=True)
class Region:
    label: str  # "layer 3", "layer 3 rows 0:64", "padded rows", "" (whole tensor)
    layer: int | None
    lo: int  # flat element range [lo, hi) of the tensor
    hi: int
    kind: str  # the law's kind: "normal", "uniform", "truncnormal", "constant"
    law: Law | None = None  # None: a region made without a scheme (treated as constant 0)
    part: int = 0  # index of the scheme part in its tensor-layer (reference.schemes.Draw.index)
    fixed: bool = False  # the scheme's structure (wte's padded rows, muP's zero query)
    rows: tuple[int, int] | None = None  # the part's rows of the (per-layer) tensor

    @property
    def random(self) -> bool:
        return self.kind != "constant"

    @property
    def value(self) -> float:
        return self.law.value if self.law is not None else 0.0

    @property
    def scale(self) -> float:
        """The std the close bound and ulp figures are relative to (1 for constants)."""
        return self.law.sd if self.random and self.law is not None else 1.0


def regions(cfg: GPTConfig, spec: TensorSpec, rows: int | None = None, *,
            init: SchemeInit | None = None) -> list[Region]:
    """The scheme's parts of one tensor as flat element ranges: per layer, per row range.

    rows: wte's rows as the file holds them (V or Vp; default Vp): parts beyond are dropped.
    init: the resolved scheme (reference.schemes.resolve); default gpt2, llm.c's init."""
    init = resolve(DEFAULT_SCHEME, cfg) if init is None else init
    if init.cfg != cfg:
        raise ValueError(f"regions: the scheme was resolved for {init.cfg.describe()}, not {cfg.describe()}; "
                         "resolve it for the config being graded")
    n_rows, per_row = rows_of(cfg, spec.name)
    if spec.name == "wte" and rows is not None:
        n_rows = rows
    out = []
    for layer in (range(cfg.layers) if spec.per_layer else (None,)):
        base = 0 if layer is None else layer * (spec.numel // cfg.layers)
        parts = init.parts(spec.name, layer)
        for i, p in enumerate(parts):
            lo, hi = p.lo, min(p.hi, n_rows)
            if lo >= hi:
                continue
            label = "" if layer is None else f"layer {layer}"
            if spec.name == "wte" and p.fixed and lo == cfg.vocab:
                label = "padded rows"
            elif len(parts) > 1 and spec.name != "wte":
                label = f"{label} rows {lo}:{hi}".strip()
            out.append(Region(label, layer, base + lo * per_row, base + hi * per_row, p.law.kind, p.law,
                              i, p.fixed, (lo, hi)))
    return out


def law_entries(init: SchemeInit, spec: TensorSpec) -> list[dict]:
    """The expected laws of one tensor, compact: [{"rows": [lo, hi], "layers": [first, last] or
    null, "law": Law.to_dict(), "fixed"}], consecutive layers with the same parts folded."""
    return [{"rows": [p.lo, p.hi], "layers": None if ls == [None] else [ls[0], ls[-1]],
             "law": p.law.to_dict(), "fixed": p.fixed} for ls, parts in init.layer_groups(spec.name)
            for p in parts]


def law_groups(init: SchemeInit, spec: TensorSpec) -> list[Law]:
    """The distinct random laws of one tensor, in order: one law check each."""
    out: list[Law] = []
    for layer in (range(init.cfg.layers) if spec.per_layer else (None,)):
        for p in init.parts(spec.name, layer):
            if p.law.random and p.law not in out:
                out.append(p.law)
    return out


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
        return "close" if self.over == 0 and self.region.random else "differs"

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


def _aligned(a: Iterator[np.ndarray], b: Iterator[np.ndarray], cuts: list[int], start: int = 0
             ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(offset, a_piece, b_piece) of equal length, split at every position in `cuts`; both
    streams begin at offset `start`."""
    a = (np.ravel(x) for x in a)
    b = (np.ravel(x) for x in b)
    abuf = bbuf = np.empty(0, np.float32)
    pos, ci = start, 0
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
                parts: list[Region], *, dtype: str, std: float | None = None) -> list[RegionDiff]:
    """One pass over a tensor: per region, what differs from the reference and by how much.
    Random regions are measured against their law's std (Region.scale; `std` overrides it).
    Both streams start at the first region's start (0 unless only some layers are graded)."""
    out = [RegionDiff(r) for r in parts]
    cuts = [r.lo for r in parts] + [parts[-1].hi]
    ri = 0
    start = parts[0].lo if parts else 0
    for pos, c, r in _aligned(candidate, _take(reference, parts[-1].hi - start), cuts, start):
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
        scale = d.region.scale if std is None else std
        d.max_ulps = max(d.max_ulps, int(np.ceil(_ulps(delta, rv, scale).max())))
        over = delta > close_bound(rv, scale, dtype) if d.region.random else ~negzero
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
    expected_std: float | None = None  # the law's std; several laws: their rms, weighted by count
    std_ratio: float | None = None
    nonfinite: int = 0
    first_divergence: dict | None = None
    cause: str | None = None
    layers: list[dict] = dataclasses.field(default_factory=list)
    distribution: dict | None = None  # the law check figures, when they ran
    laws: list[dict] = dataclasses.field(default_factory=list)  # law_entries: what was expected

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


def _plain_gpt2(init: SchemeInit, name: str) -> bool:
    return init.scheme.name == DEFAULT_SCHEME and not any(name in o.tensors for o in init.overrides)


def _expected(init: SchemeInit, name: str, law: Law) -> str:
    """How a std reason names what was expected: gpt2's bare std (as llm.c users know it), or
    the law with where it comes from."""
    if _plain_gpt2(init, name):
        return f"{law.sd:.4g}"
    sd = f", std {law.sd:.4g}" if law.kind != "normal" else ""
    return f"{law.describe()}{sd} ({law_origin(init, name)})"


def _std_reason(label: str, name: str, cfg: GPTConfig, obs: float, law: Law, init: SchemeInit,
                layer: int | None) -> str:
    expected = law.sd
    ratio = obs / expected if expected else math.inf
    text = f"{label} std {obs:.4g} = {ratio:.3g}x expected {_expected(init, name, law)}"
    if obs == 0:
        return f"{label} is all zero: never initialized"
    gpt2 = _plain_gpt2(init, name)
    two_l = math.sqrt(2 * cfg.layers)
    if gpt2 and name in RESIDUAL_TENSORS and cfg.layers > 1 and abs(ratio / two_l - 1) < 0.05:
        return text + ": residual scaling 1/sqrt(2L) missing"
    if gpt2 and name not in RESIDUAL_TENSORS and cfg.layers > 1 and abs(ratio * two_l - 1) < 0.05:
        if cfg.layers == 2:  # 1/sqrt(2L) = 1/2: say both
            return text + " (half the expected std, = 1/sqrt(2L) at L=2)"
        return text + ": residual scaling 1/sqrt(2L) applied to a tensor that is not a residual projection"
    # PyTorch's module defaults left in place (the torch-default scheme's laws)
    who = "GPT-2" if gpt2 else init.scheme.name
    if init.scheme.name != "torch-default":
        default = random_law(scheme_init("torch-default", cfg, init.profile), name, layer)
        if default is not None and abs(obs / default.sd - 1) < 0.05:
            if name in EMBEDDINGS:
                return text + f": nn.Embedding's default N(0, 1), the {who} init was not applied"
            return text + (f": PyTorch's default nn.Linear init U(+-1/sqrt(fan_in)) (std {default.sd:.4g}),"
                           f" the {who} init was not applied")
    if gpt2:
        for factor, word in ((0.5, "half"), (2.0, "twice")):
            if abs(ratio / factor - 1) < 0.05:
                return text + f" ({word} the expected std)"
    others = matching_schemes(init, name, layer, obs)
    if others:
        text += ": the std of " + " or ".join(f"{s}'s {lw.describe()}" for s, lw in others[:3])
    elif not gpt2:
        for factor, word in ((0.5, "half"), (2.0, "twice")):
            if abs(ratio / factor - 1) < 0.05:
                return text + f" ({word} the expected std)"
    return text


def _law_reason(label: str, name: str, cfg: GPTConfig, check: NormalCheck, law: Law, init: SchemeInit,
                layer: int | None) -> str:
    """Why one law check failed, in one line: range, std, mean, then the law's shape (KS)."""
    parts = []
    hint = shape_hint(check)
    if hint and hint.startswith(KIND_WORDS[law.kind] + "-like"):
        hint = None  # the values look like the law's own kind: nothing to add
    rt = check.range_test
    if rt is not None and not rt.passed:
        edge = (f"+-{law.bound:.4g}" if law.kind == "uniform" else
                f"the cut +-{law.k:g} std = +-{law.k * law.std:.4g}")
        top = max(abs(check.min), abs(check.max))
        parts.append(f"{label}: {check.n_outside:,} values beyond {edge} (max |x| {top:.4g}), "
                     f"expected {law.describe()} ({law_origin(init, name)})"
                     + (f"; values are {hint}" if hint else ""))
    vt = check.variance_test
    if vt is not None and not vt.passed:
        parts.append(_std_reason(label, name, cfg, vt.statistic * check.expected_std, law, init, layer))
    mt = check.mean_test
    # the mean's z uses the expected std: when the std itself is far off, report the mean only if
    # it is off by the observed std too (|z| > 6.5 there: two-sided p < 1e-10)
    z_obs = check.mean * math.sqrt(check.n) / check.std if check.std > 0 else math.inf
    if mt is not None and not mt.passed and (vt is None or vt.passed or abs(z_obs) > 6.5):
        parts.append(f"{label} mean {check.mean:.3g} (z = {mt.statistic:+.1f}): not centred at 0")
    kt = check.ks_test
    range_said = rt is not None and not rt.passed
    if kt is not None and not kt.passed:
        ks = f"KS distance {kt.statistic:.3g} > bound {kt.upper:.3g}"
        if not parts:
            what = hint or f"not {KIND_WORDS[law.kind]}"
            parts.append(f"{label} values are {what}: {ks} against {law.describe()} "
                         f"({law_origin(init, name)})")
        elif hint and not range_said:
            parts.append(f"values are {hint} ({ks})")
    elif parts and hint and not range_said:
        parts.append(f"values are {hint}")
    return "; ".join(parts) or check.reason


def _constant_reason(name: str, shape, d: RegionDiff, value: float, init: SchemeInit) -> str:
    where = _at(name, shape, d.first_diff) if d.first_diff is not None else name
    got = d.first_values[0] if d.first_values else math.nan
    label = f"{name} {d.region.label}".strip()
    if d.region.label == "padded rows":
        return (f"wte padded rows not zero: {d.differing:,} of {d.numel:,} values non-zero, first "
                f"{where} = {got:.4g} (rows V..Vp-1 must stay 0)")
    if name in ("ln1w", "ln2w", "lnfw"):
        what = "LayerNorm weight"
    elif name in BIAS_OF or name in ("ln1b", "ln2b", "lnfb"):
        what = "bias"
    elif d.region.fixed and d.region.rows is not None:
        what = f"rows {d.region.rows[0]}:{d.region.rows[1]} of {init.scheme.name}'s {name}"
    else:
        what = f"{name} under {law_origin(init, name)}"
    text = (f"{label} not {value:g}: {d.differing:,} of {d.numel:,} values differ, first {where} = "
            f"{got:.4g} ({what} must be {value:g})")
    if name in BIAS_OF and value == 0 and d.differing == d.numel and d.numel >= 16:
        bound = 1.0 / math.sqrt(fans(init.cfg, name)[0])  # nn.Linear.reset_parameters' bias bound
        if 0.5 * bound < d.max_abs <= bound * (1 + 1e-6):
            text += (f": PyTorch's default nn.Linear bias init U(+-1/sqrt(fan_in)) = +-{bound:.4g} "
                     "left in place")
    return text


def _group_label(name: str, group: list[RegionDiff], random: list[RegionDiff], layers: int) -> str:
    """The values one law check covers: 'attprojw', 'attprojw layer 3', 'qkvw rows 64:192'."""
    if len(group) == len(random):
        label = name
    else:
        got = sorted({d.region.layer for d in group if d.region.layer is not None})
        label = name if len(got) in (0, layers) else (
            f"{name} layer {got[0]}" if len(got) == 1 else f"{name} layers {layer_ranges(got)}")
    rows = group[0].region.rows
    if "rows" in group[0].region.label and rows is not None:
        label += f" rows {rows[0]}:{rows[1]}"
    return label


def layer_ranges(xs: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    xs = sorted(xs)
    parts, start = [], xs[0]
    for a, b in zip(xs, xs[1:] + [None]):
        if b != a + 1:
            parts.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ", ".join(parts)


def _pooled_sd(ds: list[RegionDiff]) -> float:
    n = sum(d.region.hi - d.region.lo for d in ds)
    return math.sqrt(sum((d.region.hi - d.region.lo) * d.region.scale ** 2 for d in ds) / n) if n else 0.0


def grade_tensor(cfg: GPTConfig, spec: TensorSpec, diffs: list[RegionDiff], *, shape, dtype: str,
                 source: list[str], candidate_chunks, fpr: float, init: SchemeInit | None = None
                 ) -> TensorGrade:
    """Turn one tensor's region diffs into its verdict; runs one law check per distinct random
    law (each at false-positive rate `fpr`) when the values are not exact/close.
    candidate_chunks(start) iterates the candidate tensor's flat values from index `start`."""
    init = resolve(DEFAULT_SCHEME, cfg) if init is None else init
    numel = sum(d.numel for d in diffs)
    g = TensorGrade(spec.name, tuple(shape), dtype, list(source), "exact", "", numel=numel)
    g.laws = law_entries(init, spec)
    g.differing = sum(d.differing for d in diffs)
    g.mismatched = sum(d.over for d in diffs)
    g.nonfinite = sum(d.nonfinite for d in diffs)
    g.max_ulps = max(d.max_ulps for d in diffs)
    top = max(diffs, key=lambda d: d.max_abs)
    g.max_abs_diff = top.max_abs
    if top.max_abs_at is not None:
        g.max_abs_diff_index = _index(shape, top.max_abs_at)
    drawn = [d for d in diffs if d.region.random]
    random = bool(drawn)
    if random:
        g.expected_std = _pooled_sd(drawn)
    by_layer: dict[int, list[RegionDiff]] = {}
    for d in diffs:
        if d.region.layer is not None:
            by_layer.setdefault(d.region.layer, []).append(d)
    for layer, ds in by_layer.items():
        vs = [d.verdict for d in ds]
        verdict = "mismatch" if "mismatch" in vs else None if "differs" in vs else worst(vs)
        g.layers.append({"layer": layer, "verdict": verdict, "differing": sum(d.differing for d in ds),
                         "mismatched": sum(d.over for d in ds), "max_abs_diff": max(d.max_abs for d in ds),
                         "nonfinite": sum(d.nonfinite for d in ds)})

    # NaN / Inf first: nothing else is meaningful
    if g.nonfinite:
        first = min(d.first_nonfinite for d in diffs if d.first_nonfinite is not None)
        nan = sum(d.nan for d in diffs)
        g.verdict = "mismatch"
        g.reason = (f"{spec.name}: {nan:,} NaN and {g.nonfinite - nan:,} Inf among {numel:,} values, "
                    f"first at {_at(spec.name, shape, first)}")
        return _layer_verdicts(g, "mismatch")
    bad_constant = [d for d in diffs if not d.region.random and d.differing > d.negzero]
    if bad_constant:
        g.verdict = "mismatch"
        g.reason = "; ".join(_constant_reason(spec.name, shape, d, d.region.value, init)
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
    # the drawn values come from another stream, or are wrong: is the law right? One check per law.
    first = min((d for d in diffs if d.first_over is not None), key=lambda d: d.first_over, default=None)
    groups: dict[Law, list[RegionDiff]] = {}
    for d in drawn:
        groups.setdefault(d.region.law, []).append(d)
    quant = None if dtype == "fp32" else _QUANT.get(dtype)
    checks: list[tuple[str, Law, list[RegionDiff], NormalCheck | None, str]] = []
    for law, group in groups.items():
        label = _group_label(spec.name, group, drawn, cfg.layers)
        lo = min(d.region.lo for d in group)
        values = _group_values(candidate_chunks(lo), group, lo)  # read from the group's first value
        n = sum(d.region.hi - d.region.lo for d in group)
        if n >= 3:
            check = check_law(values, law, fpr=fpr, quantization=quant, name=label)
            why = "" if check.passed else _law_reason(label, spec.name, cfg, check, law, init,
                                                      group[0].region.layer)
        else:
            for _ in values:
                pass
            check, why = None, f"{label}: {n} values, too few to test the law"
        checks.append((label, law, group, check, why))
    g.distribution = _distribution_dict(checks, fpr)
    law_ok = all(c is not None and c.passed for _l, _w, _g, c, _y in checks)
    n = sum(d.numel - d.nonfinite for d in drawn)
    if n:
        g.mean = sum(d.sum_ for d in drawn) / n
        g.std = math.sqrt(max(sum(d.sum_sq for d in drawn) / n - g.mean ** 2, 0.0))
        g.std_ratio = g.std / g.expected_std
    bad_ids = {id(d) for d in bad_constant}
    failed_at = {id(d) for _l, _w, group, c, _y in checks if c is None or not c.passed for d in group}
    for x in g.layers:
        ds = [d for d in by_layer[x["layer"]] if d.region.random]
        if ds:
            m = sum(d.numel - d.nonfinite for d in ds)
            x["std"] = math.sqrt(sum(d.sum_sq for d in ds) / m) if m else math.nan
            x["std_ratio"] = x["std"] / _pooled_sd(ds)
        if x["verdict"] is None:
            bad = any(id(d) in failed_at or id(d) in bad_ids for d in by_layer[x["layer"]])
            x["verdict"] = "mismatch" if bad else "distribution"
    diff_text = mismatched_message(spec.name, shape, g.mismatched, numel, g.max_abs_diff, top.max_abs_at)
    if first is not None:
        diff_text += (f"; first at {_at(spec.name, shape, first.first_over)}: "
                      f"{first.first_values[0]:.6g} vs {first.first_values[1]:.6g}")
    if law_ok and not bad_constant:
        g.verdict = "distribution"
        laws = [c[1] for c in checks]
        what = (f"right law ({laws[0].describe()})" if len(laws) == 1 else
                f"right laws ({len(laws)}: {laws[0].describe()} ... {laws[-1].describe()})")
        g.reason = f"{spec.name}: another stream, {what}: {diff_text}"
    else:
        g.verdict = "mismatch"
        whys = [y for _l, _w, _g, c, y in checks if y]
        law_reason = whys[0] if whys else ""
        if len(whys) > 1:
            more = [lb for lb, _w, _g, c, y in checks if y][1:]
            law_reason += f" (and {len(more)} more law checks failed: {', '.join(more[:4])}" + (
                ", ..." if len(more) > 4 else "") + ")"
        g.reason = "; ".join(p for p in (g.reason, law_reason) if p) or diff_text
        g.reason += std_off_layers(g.layers, numel)
    return _layer_verdicts(g, g.verdict)


def std_off_layers(layers: list[dict], numel: int) -> str:
    """'; std off in layer 1 (1.5x), ...' naming the layers whose rms is off by more than ~8
    standard errors (rms of n normals has relative standard error 1/sqrt(2n)), when only some
    layers are; '' otherwise."""
    per = numel // max(len(layers), 1)
    slack = max(0.05, 8.0 / math.sqrt(2.0 * max(per, 1)))
    with_std = [x for x in layers if "std_ratio" in x]
    bad_layers = [x for x in with_std if abs(x["std_ratio"] - 1) > slack]
    if bad_layers and len(bad_layers) < len(with_std):
        return "; std off in " + ", ".join(f"layer {x['layer']} ({x['std_ratio']:.3g}x)"
                                           for x in bad_layers[:8])
    return ""


def _distribution_dict(checks, fpr: float) -> dict:
    """The law checks' figures: the first failing check's (else the first's) at the top level, as
    before schemes, and every check under "checks"."""
    rows = []
    for label, law, group, c, why in checks:
        rows.append({"label": label, "law": law.to_dict(), "passed": bool(c is not None and c.passed),
                     "fpr": fpr, "reason": why or (c.reason if c is not None else ""),
                     "n": c.n if c is not None else sum(d.numel for d in group),
                     "mean": c.mean if c is not None else None, "std": c.std if c is not None else None})
    head = next((r for r in rows if not r["passed"]), rows[0])
    n = sum(r["n"] for r in rows)
    return {"passed": all(r["passed"] for r in rows), "fpr": fpr * len(rows), "reason": head["reason"],
            "n": n, "mean": head["mean"], "std": head["std"], "law": head["law"], "checks": rows}


_QUANT = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -11, "fp64": 0.0}


def _group_values(chunks: Iterator[np.ndarray], group: list[RegionDiff], start: int = 0
                  ) -> Iterator[np.ndarray]:
    """The values of the group's regions (disjoint, in order) from the tensor's chunk stream
    (which begins at flat index `start`), passed on to the law check while summing x and x^2 per
    region in float64; stops reading after the last region."""
    group = sorted(group, key=lambda d: d.region.lo)
    pos, i = start, 0
    for c in chunks:
        c = np.ravel(c)
        start, end = pos, pos + c.size
        pos = end
        while i < len(group) and group[i].region.hi <= start:
            i += 1
        if i == len(group):
            return
        j = i
        while j < len(group) and group[j].region.lo < end:
            r = group[j].region
            a, b = max(r.lo, start), min(r.hi, end)
            if a < b:
                part = c[a - start:b - start]
                x = part.astype(np.float64)
                x = x[np.isfinite(x)]
                group[j].sum_ += float(x.sum())
                group[j].sum_sq += float(np.vdot(x, x))
                yield part
            j += 1


def _layer_verdicts(g: TensorGrade, fallback: str) -> TensorGrade:
    for x in g.layers:
        if x["verdict"] is None:
            x["verdict"] = fallback if fallback in ("distribution", "mismatch") else "mismatch"
    return g


def expected_shape(cfg: GPTConfig, spec: TensorSpec, wte_rows: int | None) -> tuple[int, ...]:
    if spec.name == "wte" and wte_rows is not None:
        return (wte_rows, cfg.channels)
    return spec.shape
