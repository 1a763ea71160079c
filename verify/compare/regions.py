"""The parts of a tensor graded separately (regions), and the one place a flat chunk stream is
split at their boundaries.

A region is one scheme part (reference.schemes.Part) of one layer as a flat element range of
the (stacked) tensor, with its law. `split_spans` cuts a tensor's chunk stream
(ModelFile.iter_chunks) at the boundaries of any sorted, disjoint spans: the comparator's
element-wise pass, its law checks and the report's statistics (verify.report.stream) all read
values through it.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, Sequence

import numpy as np
from gpt2_verify.reference.config import GPTConfig, TensorSpec
from gpt2_verify.reference.schemes import DEFAULT_SCHEME, Law, SchemeInit, resolve, rows_of


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
    def size(self) -> int:
        return self.hi - self.lo

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


def law_group_sizes(init: SchemeInit, spec: TensorSpec) -> dict[Law, int]:
    """Values per distinct random law of one tensor (what each law check gets to see)."""
    _, per_row = rows_of(init.cfg, spec.name)
    out: dict[Law, int] = {}
    for layer in (range(init.cfg.layers) if spec.per_layer else (None,)):
        for p in init.parts(spec.name, layer):
            if p.law.random:
                out[p.law] = out.get(p.law, 0) + (p.hi - p.lo) * per_row
    return out


def layer_ranges(xs: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    xs = sorted(xs)
    parts, start = [], xs[0]
    for a, b in zip(xs, xs[1:] + [None]):
        if b != a + 1:
            parts.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ", ".join(parts)


def split_spans(chunks: Iterable[np.ndarray], spans: Sequence[tuple[int, int]], *, start: int = 0,
                drain: bool = False) -> Iterator[tuple[int, int, np.ndarray]]:
    """(span index, flat position, piece) for every piece of a flat chunk stream that lies in
    one of `spans` ([lo, hi) flat ranges, sorted and disjoint); the stream begins at flat index
    `start`. Values outside every span are skipped, and reading stops after the last span (the
    rest of the stream is never pulled) unless `drain` (then every chunk is pulled: the stream
    has other consumers)."""
    if not spans:
        for _ in chunks if drain else ():
            pass
        return
    pos, i = start, 0
    for c in chunks:
        c = np.ravel(c)
        a, b = pos, pos + c.size
        pos = b
        while i < len(spans) and spans[i][1] <= a:
            i += 1
        if i == len(spans):
            if drain:
                continue
            return
        j = i
        while j < len(spans) and spans[j][0] < b:
            lo, hi = max(spans[j][0], a), min(spans[j][1], b)
            if lo < hi:
                yield j, lo, c[lo - a:hi - a]
            j += 1
        if j == len(spans) and spans[-1][1] <= b and not drain:
            return
