"""Grade a model file's tensors against the init scheme's laws alone, from values pushed chunk
by chunk: compare's grading of a tensor that is not from the reference's stream, for a reader
that streams the file once for other reasons too (`gpt2-verify report`).

    graders = law_graders(model, init)               # {name: LawGrader}
    for values in model.iter_chunks(name):           # any chunking, in order
        graders[name].feed(offset, values); offset += values.size
    g = graders[name].grade()                        # a TensorGrade, as compare's

Verdicts (compare's vocabulary, verify.compare.grade.VERDICTS): "distribution" when every
random part passes its law check and every constant part is exact (the right laws; whether the
values are the reference's own stream needs the reference, which is `compare`'s question), else
"mismatch" with compare's reason, in compare's order: NaN/Inf, constants (LayerNorm 1/0,
biases, wte's padded rows), then the law checks (range, std with its ratio and named cause,
mean, shape). The law checks are compare's (verify.compare.laws.law_check, one per distinct
law of a tensor), each at fpr / (number of law checks in the model): the Bonferroni split
compare.compare makes, so a correct file passes with probability >= 1 - fpr (fpr = 1e-9).
Constants are compared exactly, bit for bit (-0.0 for 0.0 is allowed, as compare allows it).
"""

from __future__ import annotations

import bisect
import math

import numpy as np
from gpt2_verify.reference.config import GPTConfig, TensorSpec, parameter_table
from gpt2_verify.reference.schemes import Law, SchemeInit

from .compare import DEFAULT_FPR
from .grade import (
    _QUANT,
    RegionDiff,
    TensorGrade,
    _at,
    _constant_reason,
    _distribution_dict,
    _group_label,
    _law_reason,
    _pooled_sd,
    law_entries,
    law_groups,
    regions,
    std_off_layers,
)
from .laws import law_check


class LawGrader:
    """One tensor: feed(start, values) with the tensor's flat values in order (start: the flat
    index of values[0]), then grade(). Memory: the law checks' own (verify.stats.StreamCheck)."""

    def __init__(self, cfg: GPTConfig, spec: TensorSpec, init: SchemeInit, *, shape, dtype: str,
                 source=(), fpr: float):
        self.cfg, self.spec, self.init, self.fpr = cfg, spec, init, fpr
        self.shape, self.dtype, self.source = tuple(shape), dtype, list(source)
        rows = self.shape[0] if spec.name == "wte" and len(self.shape) == 2 else None
        self.diffs = [RegionDiff(r) for r in regions(cfg, spec, rows, init=init)]
        self._starts = [d.region.lo for d in self.diffs]
        self.drawn = [d for d in self.diffs if d.region.random]
        quant = None if dtype == "fp32" else _QUANT.get(dtype)
        self.groups: dict[Law, list[RegionDiff]] = {}
        for d in self.drawn:
            self.groups.setdefault(d.region.law, []).append(d)
        self.labels = {law: _group_label(spec.name, g, self.drawn, cfg.layers)
                       for law, g in self.groups.items()}
        self.checks = {law: law_check(law, fpr=fpr, quantization=quant, name=self.labels[law])
                       for law in self.groups}
        self._grade: TensorGrade | None = None

    def feed(self, start: int, values: np.ndarray) -> None:
        values = np.ravel(values)
        a, b = start, start + values.size
        i = max(bisect.bisect_right(self._starts, a) - 1, 0)
        while i < len(self.diffs) and self.diffs[i].region.lo < b:
            d = self.diffs[i]
            i += 1
            lo, hi = max(a, d.region.lo), min(b, d.region.hi)
            if lo < hi:
                self._feed_region(d, lo, values[lo - a:hi - a])

    def _feed_region(self, d: RegionDiff, pos: int, c: np.ndarray) -> None:
        c = np.asarray(c, dtype=np.float32)
        finite = d.count(pos, c)
        if d.region.random:
            self.checks[d.region.law].add(c)
            x = c[finite].astype(np.float64)
            d.sum_ += float(x.sum())
            d.sum_sq += float(np.vdot(x, x))
            return
        want = np.float32(d.region.value)
        neq = (c.view(np.uint32) != np.array(want).view(np.uint32)) & finite
        if not neq.any():
            return
        idx = np.flatnonzero(neq)
        cv = c[idx]
        d.negzero += int(np.count_nonzero((cv == 0) & (want == 0)))
        d.differing += idx.size
        d.over = d.differing - d.negzero
        if d.first_diff is None:
            d.first_diff = pos + int(idx[0])
            d.first_values = (float(cv[0]), float(want))
        delta = np.abs(cv.astype(np.float64) - float(want))
        k = int(np.argmax(delta))
        if delta[k] > d.max_abs or d.max_abs_at is None:
            d.max_abs, d.max_abs_at = float(delta[k]), pos + int(idx[k])

    def grade(self) -> TensorGrade:
        """The tensor's verdict and reason (verify.compare.grade.TensorGrade), once every value
        has been fed. The law checks' buffers are released: a later call returns the same grade."""
        if self._grade is None:
            self._grade = self._compute()
            self.checks = {}
        return self._grade

    def _compute(self) -> TensorGrade:
        name, shape, diffs = self.spec.name, self.shape, self.diffs
        numel = sum(d.numel for d in diffs)
        g = TensorGrade(name, shape, self.dtype, self.source, "distribution", "", numel=numel)
        g.laws = law_entries(self.init, self.spec)
        g.nonfinite = sum(d.nonfinite for d in diffs)
        bad_constant = [d for d in diffs if not d.region.random and d.differing > d.negzero]
        g.differing = g.mismatched = sum(d.differing - d.negzero for d in bad_constant)
        if bad_constant:
            top = max(bad_constant, key=lambda d: d.max_abs)
            g.max_abs_diff = top.max_abs
        if self.drawn:
            g.expected_std = _pooled_sd(self.drawn)
            n = sum(d.numel - d.nonfinite for d in self.drawn)
            if n:
                g.mean = sum(d.sum_ for d in self.drawn) / n
                g.std = math.sqrt(max(sum(d.sum_sq for d in self.drawn) / n - g.mean ** 2, 0.0))
                g.std_ratio = g.std / g.expected_std if g.expected_std else None
        if g.nonfinite:
            first = min(d.first_nonfinite for d in diffs if d.first_nonfinite is not None)
            nan = sum(d.nan for d in diffs)
            g.verdict = "mismatch"
            g.reason = (f"{name}: {nan:,} NaN and {g.nonfinite - nan:,} Inf among {numel:,} values, "
                        f"first at {_at(name, shape, first)}")
            return self._layers(g, set(), bad_constant, all_bad=True)
        checks = []
        for law, group in self.groups.items():
            label = self.labels[law]
            n = sum(d.numel for d in group)
            if n >= 3:
                check = self.checks[law].result()
                why = "" if check.passed else _law_reason(label, name, self.cfg, check, law, self.init,
                                                          group[0].region.layer)
            else:
                check, why = None, f"{label}: {n} values, too few to test the law"
            checks.append((label, law, group, check, why))
        if checks:
            g.distribution = _distribution_dict(checks, self.fpr)
        failed = {id(d) for _l, _w, group, c, _y in checks if c is None or not c.passed for d in group}
        reasons = [_constant_reason(name, shape, d, d.region.value, self.init) for d in bad_constant]
        whys = [(label, y) for label, _w, _g, c, y in checks if y]
        if whys:
            text = whys[0][1]
            if len(whys) > 1:
                more = [label for label, _y in whys[1:]]
                text += (f" (and {len(more)} more law checks failed: {', '.join(more[:4])}"
                         + (", ..." if len(more) > 4 else "") + ")")
            reasons.append(text)
        if reasons:
            g.verdict = "mismatch"
            g.reason = "; ".join(reasons)
            self._layers(g, failed, bad_constant)
            g.reason += std_off_layers(g.layers, numel)
            return g
        if checks:
            laws = [c[1] for c in checks]
            what = (f"right law ({laws[0].describe()})" if len(laws) == 1 else
                    f"right laws ({len(laws)}: {laws[0].describe()} ... {laws[-1].describe()})")
            g.reason = f"{name}: {what}, {sum(c[3].n for c in checks):,} values"
        else:
            g.reason = f"{name}: every value exactly as the scheme sets it ({numel:,} values)"
        return self._layers(g, failed, bad_constant)

    def _layers(self, g: TensorGrade, failed: set, bad_constant: list, all_bad: bool = False) -> TensorGrade:
        """Per-layer figures (compare's `layers` entries) for per-layer tensors."""
        by_layer: dict[int, list[RegionDiff]] = {}
        for d in self.diffs:
            if d.region.layer is not None:
                by_layer.setdefault(d.region.layer, []).append(d)
        bad_ids = failed | {id(d) for d in bad_constant}
        for layer, ds in sorted(by_layer.items()):
            bad = all_bad or any(id(d) in bad_ids or d.nonfinite for d in ds)
            x = {"layer": layer, "verdict": "mismatch" if bad else "distribution",
                 "differing": sum(d.differing for d in ds), "mismatched": sum(d.over for d in ds),
                 "max_abs_diff": max(d.max_abs for d in ds), "nonfinite": sum(d.nonfinite for d in ds)}
            rnd = [d for d in ds if d.region.random]
            m = sum(d.numel - d.nonfinite for d in rnd)
            if rnd and m:
                x["std"] = math.sqrt(sum(d.sum_sq for d in rnd) / m)
                x["std_ratio"] = x["std"] / _pooled_sd(rnd)
            g.layers.append(x)
        return g


def law_graders(model, init: SchemeInit, *, fpr: float = DEFAULT_FPR) -> dict[str, LawGrader]:
    """One LawGrader per tensor of `model` (a verify.formats.model.ModelFile) against `init`,
    the family-wise false-positive rate `fpr` split evenly over every law check (as compare)."""
    cfg = init.cfg
    specs = parameter_table(cfg)
    per_check = fpr / max(sum(len(law_groups(init, s)) for s in specs), 1)
    return {s.name: LawGrader(cfg, s, init, shape=model.shape(s.name),
                              dtype=model.dtypes.get(s.name, model.dtype),
                              source=model.sources.get(s.name, []), fpr=per_check)
            for s in specs}


def model_verdict(grades: dict[str, TensorGrade], init: SchemeInit, *, fpr: float = DEFAULT_FPR
                  ) -> tuple[str, str]:
    """(verdict, one line) for a whole file from its tensors' grades: "distribution" with
    "correct init: ..." when every tensor follows its law, else "mismatch" naming the tensors
    that do not and the first reason."""
    bad = [g for g in grades.values() if g.verdict == "mismatch"]
    if not bad:
        random = sum(g.distribution is not None for g in grades.values())
        return "distribution", (
            f"correct init: every tensor follows the law {init.label} expects ({random} random tensors "
            f"pass their law checks, false-positive rate {fpr:g} for the whole file; every constant "
            f"value exact). Whether the values are llm.c's own stream is `gpt2-verify compare`'s question.")
    names = ", ".join(g.name for g in bad)
    return "mismatch", (f"mismatch: {len(bad)} of {len(grades)} tensors do not follow the laws {init.label} "
                        f"expects ({names}); {bad[0].reason}")
