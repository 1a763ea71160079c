"""Grade a model's initialized tensors against the reference init (or against another file).

Per llm.c tensor (all layers together, with per-layer figures), one verdict, best to worst:

    exact         bit-identical to the reference (after rounding it to the file's storage type)
    close         same random stream, other float math: every value within tolerance.close_bound
    distribution  another stream (RNG, order, seed, draw count), but the values pass the law
                  check of the init scheme's law (verify.compare.laws.check_law: normal, uniform
                  or truncated normal) and the constant parts are exact
    untestable    another stream, and too few values to test the law (fewer than min_values,
                  MIN_VALUES by default): nothing can be said about the law; not a failure
                  unless every random tensor of the file is untestable (Report.verdict)
    mismatch      anything else, with the reason (std/mean off, range or shape of the law wrong,
                  constants wrong, NaN/Inf, shape, missing tensor, ...)

The parts graded separately (verify.compare.regions) come from the init scheme
(reference.schemes): per layer and per row range, each with its law; constant parts
(LayerNorm 1/0, biases, wte's padded rows, muP's zero query) are exact checks against their
value. Random parts sharing one law (all layers of a gpt2 weight; one layer of olmo-mitchell's
output projections) are tested together, one law check each.

Streaming: the candidate is read chunk by chunk (ModelFile.iter_chunks) beside the reference
generated chunk by chunk (verify.compare.diff.diff_tensor), so no tensor is held twice and a
d48 compares in bounded memory. Only a random tensor that is neither exact nor close is read
again, once per law it holds, for its law checks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterator

import numpy as np
from gpt2_verify.reference.config import GPTConfig, TensorSpec
from gpt2_verify.reference.schemes import DEFAULT_SCHEME, Law, SchemeInit, resolve

from ..stats import NormalCheck
from .diff import RegionDiff, diff_tensor, group_values
from .laws import check_law
from .names import Names
from .reasons import constant_reason, index_of, law_reason, mismatched_message
from .regions import law_entries, law_group_sizes, law_groups, layer_ranges, regions

VERDICTS = ("exact", "close", "distribution", "untestable", "mismatch")  # best to worst
CHUNK = 1 << 20
# Fewest values a law check is run on. Below it a check at a per-check false-positive rate of
# 1e-10 cannot reliably see even a std off by 2x: the variance test's statistic is chi-square
# with n degrees of freedom, and at n = 128 a variance 4x (std 2x) or 1/4x too large is
# rejected with probability > 0.9999 at one-sided level 5e-11 (scipy.stats.chi2: isf(5e-11,
# 128) / 4 lies below chi2(128)'s 1e-4 quantile); at n = 64 that power drops below 0.99.
MIN_VALUES = 128

__all__ = ["VERDICTS", "CHUNK", "MIN_VALUES", "TensorGrade", "LawCheck", "grade_tensor", "worst",
           "diff_tensor", "regions", "law_groups", "layer_ranges", "expected_shape", "RegionDiff",
           "law_group_sizes"]


def worst(verdicts) -> str:
    return max(verdicts, key=VERDICTS.index, default="exact")


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
    distribution: dict | None = None  # the law checks' figures, when they ran
    laws: list[dict] = dataclasses.field(default_factory=list)  # law_entries: what was expected
    key: str | None = None  # the file's key (pattern with {i} for per-layer tensors)

    @property
    def random(self) -> bool:
        return self.expected_std is not None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        if self.max_abs_diff_index is not None:
            d["max_abs_diff_index"] = list(self.max_abs_diff_index)
        return d


@dataclasses.dataclass
class LawCheck:
    """One law check of a tensor: the values of `group` (regions sharing `law`) against it."""
    label: str  # what the check covers, in the file's terms
    law: Law
    group: list[RegionDiff]
    check: NormalCheck | None  # None: untestable (fewer than min_values values)
    why: str  # why it failed or is untestable ("" when it passed)

    @property
    def n(self) -> int:
        return sum(d.region.size for d in self.group)

    @property
    def passed(self) -> bool:
        return self.check is not None and self.check.passed

    @property
    def testable(self) -> bool:
        return self.check is not None

    def to_dict(self, fpr: float) -> dict:
        c = self.check
        return {"label": self.label, "law": self.law.to_dict(), "passed": self.passed,
                "testable": self.testable, "fpr": fpr,
                "reason": self.why or (c.reason if c is not None else ""),
                "n": c.n if c is not None else self.n,
                "mean": c.mean if c is not None else None, "std": c.std if c is not None else None}


# ---- grading one tensor ---------------------------------------------------------------------------

def grade_tensor(cfg: GPTConfig, spec: TensorSpec, diffs: list[RegionDiff], *, shape, dtype: str,
                 source: list[str], candidate_chunks: Callable[[int], Iterator[np.ndarray]], fpr: float,
                 init: SchemeInit | None = None, min_values: int = MIN_VALUES,
                 names: Names | None = None) -> TensorGrade:
    """Turn one tensor's region diffs into its verdict; runs one law check per distinct random
    law (each at false-positive rate `fpr`, on at least `min_values` values) when the values are
    not exact/close. candidate_chunks(start) iterates the candidate's flat values from `start`;
    names: how the file names tensors (default llm.c's)."""
    init = resolve(DEFAULT_SCHEME, cfg) if init is None else init
    names = names or Names()
    g = _summary(spec, diffs, shape, dtype, source, init, names)
    if g.nonfinite:
        return _nonfinite(g, diffs, names)
    bad_constant = [d for d in diffs if not d.region.random and d.differing > d.negzero]
    if bad_constant:
        g.verdict = "mismatch"
        g.reason = "; ".join(constant_reason(names, spec.name, shape, d, d.region.value, init)
                             for d in bad_constant)
        if g.expected_std is None:
            return _finish(g, diffs, bad_constant, [], names)
    if not bad_constant and all(d.verdict in ("exact", "close") for d in diffs):
        return _same_stream(g, diffs, names)
    checks = law_checks(spec, diffs, candidate_chunks, dtype=dtype, fpr=fpr, init=init,
                        min_values=min_values, names=names)
    g.distribution = _distribution_of(checks, fpr)
    _moments(g, [d for d in diffs if d.region.random])
    return _finish(g, diffs, bad_constant, checks, names)


def _summary(spec: TensorSpec, diffs: list[RegionDiff], shape, dtype: str, source: list[str],
             init: SchemeInit, names: Names) -> TensorGrade:
    """The counts every verdict reports, and the per-layer rows (verdicts filled in later)."""
    numel = sum(d.numel for d in diffs)
    g = TensorGrade(spec.name, tuple(shape), dtype, list(source), "", "", numel=numel,
                    key=names.key(spec.name))
    g.laws = law_entries(init, spec)
    g.differing = sum(d.differing for d in diffs)
    g.mismatched = sum(d.over for d in diffs)
    g.nonfinite = sum(d.nonfinite for d in diffs)
    g.max_ulps = max(d.max_ulps for d in diffs)
    top = max(diffs, key=lambda d: d.max_abs)
    g.max_abs_diff = top.max_abs
    if top.max_abs_at is not None:
        g.max_abs_diff_index = index_of(shape, top.max_abs_at)
    drawn = [d for d in diffs if d.region.random]
    if drawn:
        g.expected_std = _pooled_sd(drawn)
    for layer, ds in _by_layer(diffs).items():
        g.layers.append({"layer": layer, "key": names.key(spec.name, layer), "verdict": None,
                         "differing": sum(d.differing for d in ds), "mismatched": sum(d.over for d in ds),
                         "max_abs_diff": max(d.max_abs for d in ds),
                         "nonfinite": sum(d.nonfinite for d in ds)})
    return g


def _by_layer(diffs: list[RegionDiff]) -> dict[int, list[RegionDiff]]:
    out: dict[int, list[RegionDiff]] = {}
    for d in diffs:
        if d.region.layer is not None:
            out.setdefault(d.region.layer, []).append(d)
    return out


def _nonfinite(g: TensorGrade, diffs: list[RegionDiff], names: Names) -> TensorGrade:
    """NaN / Inf first: nothing else is meaningful."""
    first = min(d.first_nonfinite for d in diffs if d.first_nonfinite is not None)
    nan = sum(d.nan for d in diffs)
    g.verdict = "mismatch"
    g.reason = (f"{names.label(g.name, all_layers=True)}: {nan:,} NaN and {g.nonfinite - nan:,} Inf among "
                f"{g.numel:,} values, first at {names.at(g.name, g.shape, first)}")
    return _finish(g, diffs, [], [], names)


def _same_stream(g: TensorGrade, diffs: list[RegionDiff], names: Names) -> TensorGrade:
    """exact, or close: the reference's stream with other float math (or -0.0 for 0.0)."""
    label = names.label(g.name, all_layers=True)
    if g.differing == 0:
        g.verdict, g.reason = "exact", f"{label}: bit-identical ({g.numel:,} values)"
        return _finish(g, diffs, [], [], names)
    g.verdict = "close"
    negz = sum(d.negzero for d in diffs)
    if g.differing == negz:
        g.reason = f"{label}: equal values, {negz:,} zeros with the wrong sign (-0.0)"
    else:
        top = max(diffs, key=lambda d: d.max_abs)
        g.reason = (f"{label}: same stream, other float math: "
                    + mismatched_message(g.name, g.shape, g.differing, g.numel, g.max_abs_diff,
                                         top.max_abs_at) + f", max {g.max_ulps} ulps")
    return _finish(g, diffs, [], [], names)


def law_checks(spec: TensorSpec, diffs: list[RegionDiff], candidate_chunks, *, dtype: str, fpr: float,
               init: SchemeInit, min_values: int, names: Names) -> list[LawCheck]:
    """One check per distinct random law, each reading its values from its first region on."""
    drawn = [d for d in diffs if d.region.random]
    groups: dict[Law, list[RegionDiff]] = {}
    for d in drawn:
        groups.setdefault(d.region.law, []).append(d)
    quant = None if dtype == "fp32" else _QUANT.get(dtype)
    out = []
    for law, group in groups.items():
        label = _group_label_in(spec.name, group, drawn, init.cfg.layers, names)
        lo = min(d.region.lo for d in group)
        values = group_values(candidate_chunks(lo), group, lo)
        n = sum(d.region.size for d in group)
        if n < min_values:
            for _ in values:  # the sums still feed the std figures
                pass
            word = "value" if n == 1 else "values"
            out.append(LawCheck(label, law, group, None,
                                f"{label}: {n:,} {word}, fewer than the {min_values:,} a law check needs "
                                f"(untestable)"))
            continue
        check = check_law(values, law, fpr=fpr, quantization=quant, name=label)
        why = "" if check.passed else law_reason(label, spec.name, check, law, init, group[0].region.layer)
        out.append(LawCheck(label, law, group, check, why))
    return out


def _moments(g: TensorGrade, drawn: list[RegionDiff]) -> None:
    """mean, std and std ratio of the drawn values, whole tensor and per layer (from the sums
    the law checks' read took)."""
    n = sum(d.finite for d in drawn)
    if n:
        g.mean = sum(d.sum_ for d in drawn) / n
        g.std = math.sqrt(max(sum(d.sum_sq for d in drawn) / n - g.mean ** 2, 0.0))
        g.std_ratio = g.std / g.expected_std
    by_layer = _by_layer(drawn)
    for x in g.layers:
        ds = by_layer.get(x["layer"], [])
        m = sum(d.finite for d in ds)
        if ds and m:
            x["std"] = math.sqrt(sum(d.sum_sq for d in ds) / m)
            x["std_ratio"] = x["std"] / _pooled_sd(ds)


def _finish(g: TensorGrade, diffs: list[RegionDiff], bad_constant: list[RegionDiff],
            checks: list[LawCheck], names: Names) -> TensorGrade:
    """The verdict of a tensor whose law checks ran (or did not need to), and every layer's
    verdict from the same facts, so the text and the JSON name the same layers."""
    failed = [c for c in checks if c.testable and not c.passed]
    untestable = [c for c in checks if not c.testable]
    singled = _singled_out_layers(g, failed)
    _layer_verdicts(g, diffs, bad_constant, failed, untestable, singled)
    if g.verdict in ("exact", "close") or g.nonfinite or (not checks and bad_constant):
        return g
    diff_text = _diff_text(g, diffs)
    if not failed and not bad_constant:
        if untestable and len(untestable) == len(checks):
            g.verdict, g.reason = "untestable", "; ".join(c.why for c in untestable)
            return g
        g.verdict = "distribution"
        laws = [c.law for c in checks if c.testable]
        what = (f"right law {laws[0].describe()}" if len(laws) == 1 else
                f"right laws ({len(laws)}: {laws[0].describe()} ... {laws[-1].describe()})")
        g.reason = f"{names.label(g.name, all_layers=True)}: {what}, values from another stream: {diff_text}"
        if untestable:
            g.reason += "; " + "; ".join(c.why for c in untestable)
        return g
    g.verdict = "mismatch"
    law_reason_text = failed[0].why if failed else ""
    if len(failed) > 1:
        more = [c.label for c in failed[1:]]
        law_reason_text += f" (and {len(more)} more law checks failed: {', '.join(more[:4])}" + (
            ", ..." if len(more) > 4 else "") + ")"
    g.reason = "; ".join(p for p in (g.reason, law_reason_text) if p) or diff_text
    if singled:
        g.reason += "; std off in " + ", ".join(
            f"layer {x['layer']} ({x['std_ratio']:.3g}x)" for x in singled[:8])
    return g


def _singled_out_layers(g: TensorGrade, failed: list[LawCheck]) -> list[dict]:
    """The layers of a failed law check whose own rms is off by more than ~8 standard errors
    (the rms of n normals has relative standard error 1/sqrt(2n)), when only some are: those
    layers, not the whole group, are the mismatch."""
    if not failed:
        return []
    in_failed = {d.region.layer for c in failed for d in c.group if d.region.layer is not None}
    rows = [x for x in g.layers if x["layer"] in in_failed and "std_ratio" in x]
    if not rows:
        return []
    slack = _slack(g.layers, g.numel)
    off = [x for x in rows if abs(x["std_ratio"] - 1) > slack]
    return off if off and len(off) < len(rows) else []


def _layer_verdicts(g: TensorGrade, diffs: list[RegionDiff], bad_constant: list[RegionDiff],
                    failed: list[LawCheck], untestable: list[LawCheck], singled: list[dict]) -> None:
    bad = {id(d) for d in bad_constant}
    only = {x["layer"] for x in singled}
    for c in failed:
        bad.update(id(d) for d in c.group if not only or d.region.layer in only)
    untested = {id(d) for c in untestable for d in c.group}
    for x in g.layers:
        ds = [d for d in diffs if d.region.layer == x["layer"]]
        vs = [d.verdict for d in ds]
        if "mismatch" in vs or any(id(d) in bad for d in ds):
            x["verdict"] = "mismatch"
        elif "differs" not in vs:
            x["verdict"] = worst(vs)
        elif any(id(d) in untested for d in ds if d.verdict == "differs"):
            x["verdict"] = "untestable"
        else:
            x["verdict"] = "distribution"


def _diff_text(g: TensorGrade, diffs: list[RegionDiff]) -> str:
    top = max(diffs, key=lambda d: d.max_abs)
    text = mismatched_message(g.name, g.shape, g.mismatched, g.numel, g.max_abs_diff, top.max_abs_at)
    first = min((d for d in diffs if d.first_over is not None), key=lambda d: d.first_over, default=None)
    if first is not None:
        text += (f"; first at index {index_of(g.shape, first.first_over)}: "
                 f"{first.first_values[0]:.6g} vs {first.first_values[1]:.6g}")
    return text


def _group_label_in(name: str, group: list[RegionDiff], random: list[RegionDiff], layers: int,
                    names: Names) -> str:
    """The values one law check covers: 'attprojw', 'attprojw layer 3', 'qkvw rows 64:192' (or
    the file's keys with llm.c's name beside)."""
    got = sorted({d.region.layer for d in group if d.region.layer is not None})
    every = len(group) == len(random) or len(got) in (0, layers)
    label = names.label(name, got, all_layers=every)
    rows = group[0].region.rows
    if "rows" in group[0].region.label and rows is not None:
        label += f" rows {rows[0]}:{rows[1]}"
    return label


def _pooled_sd(ds: list[RegionDiff]) -> float:
    n = sum(d.region.size for d in ds)
    return math.sqrt(sum(d.region.size * d.region.scale ** 2 for d in ds) / n) if n else 0.0


def _distribution_of(checks: list[LawCheck], fpr: float) -> dict:
    """The law checks' figures: the first failing check's (else the first's) at the top level,
    and every check under "checks"."""
    rows = [c.to_dict(fpr) for c in checks]
    head = next((r for r in rows if r["testable"] and not r["passed"]), rows[0])
    return {"passed": all(r["passed"] or not r["testable"] for r in rows),
            "fpr": fpr * sum(r["testable"] for r in rows), "reason": head["reason"],
            "n": sum(r["n"] for r in rows), "mean": head["mean"], "std": head["std"], "law": head["law"],
            "checks": rows}


_QUANT = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -11, "fp64": 0.0}


def expected_shape(cfg: GPTConfig, spec: TensorSpec, wte_rows: int | None) -> tuple[int, ...]:
    if spec.name == "wte" and wte_rows is not None:
        return (wte_rows, cfg.channels)
    return spec.shape


# ---- the pieces verify.compare.lawgrade (the report's streamed grading) shares ----------------------

def _slack(layers: list[dict], numel: int) -> float:
    """How far a layer's rms may stray: ~8 standard errors (rms of n normals has relative
    standard error 1/sqrt(2n)), at least 5%."""
    per = numel // max(len(layers), 1)
    return max(0.05, 8.0 / math.sqrt(2.0 * max(per, 1)))


def std_off_layers(layers: list[dict], numel: int) -> str:
    """'; std off in layer 1 (1.5x), ...' naming the layers whose rms is off by more than the
    slack, when only some layers are; '' otherwise."""
    slack = _slack(layers, numel)
    with_std = [x for x in layers if "std_ratio" in x]
    bad = [x for x in with_std if abs(x["std_ratio"] - 1) > slack]
    if bad and len(bad) < len(with_std):
        return "; std off in " + ", ".join(f"layer {x['layer']} ({x['std_ratio']:.3g}x)" for x in bad[:8])
    return ""


def _at(name: str, shape, flat: int) -> str:
    return Names().at(name, shape, flat)


def _constant_reason(name: str, shape, d: RegionDiff, value: float, init: SchemeInit) -> str:
    return constant_reason(Names(), name, shape, d, value, init)


def _group_label(name: str, group: list[RegionDiff], random: list[RegionDiff], layers: int) -> str:
    return _group_label_in(name, group, random, layers, Names())


def _law_reason(label: str, name: str, cfg: GPTConfig, check: NormalCheck, law: Law, init: SchemeInit,
                layer: int | None) -> str:
    return law_reason(label, name, check, law, init, layer)


def _distribution_dict(checks, fpr: float) -> dict:
    """The law checks' figures (LawCheck, or (label, law, group, check, why) tuples)."""
    return _distribution_of([c if isinstance(c, LawCheck) else LawCheck(*c) for c in checks], fpr)
