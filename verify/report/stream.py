"""Statistics of a model file's init state, accumulated chunk by chunk in one pass.

A d48 checkpoint holds 1.56B values; the report never holds a tensor whole. Each chunk from
ModelFile.iter_chunks is split at the boundaries of the scheme's parts (one per layer and row
range, reference.schemes.Part) and feeds:

- one histogram per random tensor with fixed bin edges chosen from the expected law before
  any value is read (StreamHistogram: +-6 std for a normal, 1.25x the support of a uniform or
  truncated normal), plus under- and overflow counts, so the sum over chunks equals
  np.histogram of the whole tensor with the same edges;
- float64 sums of x and x^2 per (tensor, layer) over the random parts (per-layer mean and std);
- for constant parts (LayerNorm weights 1, biases 0, wte's padded rows V..Vp), the count of
  values that are not exactly the constant, the largest |difference| and the first such index;
- optionally, per-row and per-column float64 sums of chosen tensors (where a mismatching
  tensor differs).

When a tensor's random parts follow several laws (e.g. olmo-mitchell's per-layer projection
std), its histogram is taken of x / std(law) (units of the expected std), so one set of edges
fits every part; the expected density is then the count-weighted mixture.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from gpt2_verify.reference.config import GPTConfig, parameter_table
from gpt2_verify.reference.special import invert_cdf

from ..compare.regions import split_spans

BINS = 120
NORMAL_HALF_WIDTH = 6.0  # in expected std: P(|z| > 6) = 2e-9, so over/underflow means a wrong law
SUPPORT_MARGIN = 1.25  # bounded laws: edges at 1.25x the support, so values beyond it show


def law_half_width(law) -> float:
    """Half the histogram range for `law` (a reference.schemes.Law), in the law's own units."""
    if law.kind == "uniform":
        return SUPPORT_MARGIN * law.bound
    if law.kind == "truncnormal":
        return SUPPORT_MARGIN * law.k * law.std
    return NORMAL_HALF_WIDTH * law.sd


class StreamHistogram:
    """Counts of values in fixed bins (np.histogram's convention: the last bin is closed) plus
    under/overflow and non-finite counts, accumulated chunk by chunk."""

    def __init__(self, edges: np.ndarray):
        self.edges = np.asarray(edges, dtype=np.float64)
        if self.edges.ndim != 1 or self.edges.size < 2 or not np.all(np.diff(self.edges) > 0):
            raise ValueError("StreamHistogram(edges=...): give at least 2 strictly increasing edges")
        self.counts = np.zeros(self.edges.size - 1, dtype=np.int64)
        self.under = 0
        self.over = 0
        self.nonfinite = 0

    @classmethod
    def symmetric(cls, half: float, *, bins: int = BINS) -> "StreamHistogram":
        return cls(np.linspace(-half, half, bins + 1))

    def add(self, values: np.ndarray) -> None:
        x = np.asarray(values).reshape(-1)
        finite = np.isfinite(x)
        if not finite.all():
            self.nonfinite += int(x.size - np.count_nonzero(finite))
            x = x[finite]
        self.counts += np.histogram(x, bins=self.edges)[0]
        self.under += int(np.count_nonzero(x < self.edges[0]))
        self.over += int(np.count_nonzero(x > self.edges[-1]))

    @property
    def total(self) -> int:
        """Finite values seen."""
        return int(self.counts.sum()) + self.under + self.over

    def quantiles(self, q: np.ndarray) -> np.ndarray:
        """Quantiles of the finite values, linear within a bin; NaN where q falls in the under-
        or overflow (the histogram does not know where those values lie)."""
        q = np.asarray(q, dtype=np.float64)
        n = self.total
        if n == 0:
            return np.full(q.shape, np.nan)
        cum = self.under + np.concatenate([[0], np.cumsum(self.counts)])  # (bins + 1,)
        target = q * n
        out = np.full(q.shape, np.nan)
        inside = (target >= cum[0]) & (target <= cum[-1])
        i = np.clip(np.searchsorted(cum, target[inside], side="right") - 1, 0, self.counts.size - 1)
        width = np.diff(self.edges)[i]
        cnt = self.counts[i]
        frac = np.where(cnt > 0, (target[inside] - cum[i]) / np.maximum(cnt, 1), 0.0)
        out[inside] = self.edges[i] + np.clip(frac, 0.0, 1.0) * width
        return out


@dataclasses.dataclass
class Moments:
    """n, sum x and sum x^2 in float64, min and max."""

    n: int = 0
    s1: float = 0.0
    s2: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    expected_var_sum: float = 0.0  # sum over values of the law's variance

    def add(self, x64: np.ndarray, law_var: float) -> None:
        if x64.size == 0:
            return
        self.n += int(x64.size)
        self.s1 += float(np.sum(x64))
        self.s2 += float(np.dot(x64, x64))
        self.lo = min(self.lo, float(x64.min()))
        self.hi = max(self.hi, float(x64.max()))
        self.expected_var_sum += law_var * x64.size

    @property
    def mean(self) -> float:
        return self.s1 / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        """Population std (ddof 0), as check_normal and the compare report use."""
        if not self.n:
            return math.nan
        return math.sqrt(max(self.s2 / self.n - self.mean**2, 0.0))

    @property
    def expected_std(self) -> float:
        return math.sqrt(self.expected_var_sum / self.n) if self.n else math.nan


@dataclasses.dataclass
class ConstantTally:
    """A constant part of one tensor, all layers together, tallied while streaming: is every value
    exactly `value`? (verify.stats.check_constant is the one-shot check of a value stream.)"""

    tensor: str
    rows: tuple[int, int]  # rows of the per-layer shape
    padded: bool  # wte's rows V..Vp
    value: float
    n: int = 0
    differing: int = 0
    nonfinite: int = 0
    max_abs_diff: float = 0.0
    first_index: int | None = None  # flat index in the tensor

    @property
    def exact(self) -> bool:
        return self.differing == 0


@dataclasses.dataclass
class RowColStats:
    """Per-row and per-column sums of one tensor (rows: every row of every layer, in order)."""

    tensor: str
    rows_per_layer: int
    row_n: np.ndarray
    row_s1: np.ndarray
    row_s2: np.ndarray
    col_s1: np.ndarray
    col_s2: np.ndarray
    col_n: np.ndarray
    expected_std: float

    @staticmethod
    def _std(n, s1, s2):
        with np.errstate(invalid="ignore", divide="ignore"):
            m = s1 / n
            return np.sqrt(np.maximum(s2 / n - m * m, 0.0))

    @property
    def row_std(self) -> np.ndarray:
        return self._std(self.row_n, self.row_s1, self.row_s2)

    @property
    def col_std(self) -> np.ndarray:
        return self._std(self.col_n, self.col_s1, self.col_s2)


@dataclasses.dataclass
class TensorStats:
    name: str
    shape: tuple[int, ...]
    per_layer: bool
    laws: list  # [(law, count)] of the random parts, distinct laws
    standardized: bool  # histogram of x / law.sd
    hist: StreamHistogram | None
    layers: dict  # layer (None for whole tensors) -> Moments over the random parts
    constants: list[ConstantTally]
    nonfinite: int = 0
    rowcol: RowColStats | None = None

    @property
    def random(self) -> bool:
        return self.hist is not None

    @property
    def moments(self) -> Moments:
        """All layers together."""
        m = Moments()
        for x in self.layers.values():
            m.n += x.n
            m.s1 += x.s1
            m.s2 += x.s2
            m.lo, m.hi = min(m.lo, x.lo), max(m.hi, x.hi)
            m.expected_var_sum += x.expected_var_sum
        return m

    def unit_cdf(self, u: np.ndarray) -> np.ndarray:
        """The expected cdf in the histogram's units (a count-weighted mixture of the laws)."""
        total = sum(c for _, c in self.laws)
        out = np.zeros(np.shape(u))
        for law, c in self.laws:
            scale = law.sd if self.standardized else 1.0
            out += c / total * law.cdf(np.asarray(u) * scale)
        return out

    def unit_ppf(self, q: np.ndarray) -> np.ndarray:
        """Inverse of unit_cdf by bisection (60 halvings)."""
        q = np.asarray(q, dtype=np.float64)
        if len(self.laws) == 1:
            law = self.laws[0][0]
            return law.ppf(q) / (law.sd if self.standardized else 1.0)
        half = 2 * max(self.hist.edges[-1], 1e-300)
        return invert_cdf(self.unit_cdf, q, -half, half)

    def expected_counts(self) -> np.ndarray:
        """Expected count per histogram bin under the law (the density overlay)."""
        c = self.unit_cdf(self.hist.edges)
        return np.diff(c) * self.hist.total


@dataclasses.dataclass(frozen=True)
class _Segment:
    start: int  # flat offsets in the tensor
    end: int
    layer: int | None
    law: object
    constant: ConstantTally | None


def _plan(cfg: GPTConfig, spec, init, rowcol: bool) -> tuple[TensorStats, list[_Segment]]:
    from gpt2_verify.reference.schemes import rows_of

    rows, per_row = rows_of(cfg, spec.name)
    layers = list(range(cfg.layers)) if spec.per_layer else [None]
    slice_size = rows * per_row
    laws: dict = {}
    constants: dict = {}
    segments = []
    for li, layer in enumerate(layers):
        base = li * slice_size
        for part in init.parts(spec.name, layer):
            if part.hi <= part.lo:
                continue
            a, b = base + part.lo * per_row, base + part.hi * per_row
            if part.law.random:
                laws[part.law] = laws.get(part.law, 0) + (b - a)
                segments.append(_Segment(a, b, layer, part.law, None))
            else:
                key = (part.lo, part.hi, part.law.value)
                if key not in constants:
                    padded = spec.name == "wte" and part.lo >= cfg.vocab
                    constants[key] = ConstantTally(spec.name, (part.lo, part.hi), padded, part.law.value)
                segments.append(_Segment(a, b, layer, part.law, constants[key]))
    standardized = len({(law.kind, law.k, law.sd) for law in laws}) > 1
    hist = None
    if laws:
        half = max(law_half_width(law) / (law.sd if standardized else 1.0) for law in laws)
        hist = StreamHistogram.symmetric(half)
    stats = TensorStats(
        spec.name,
        spec.shape,
        spec.per_layer,
        list(laws.items()),
        standardized,
        hist,
        {},
        list(constants.values()),
    )
    if rowcol and len(spec.shape) >= 2 and laws:
        k = spec.shape[-1]
        nrows = spec.numel // k
        total = sum(laws.values())
        exp_std = math.sqrt(sum(law.sd**2 * c for law, c in laws.items()) / total)
        stats.rowcol = RowColStats(
            spec.name,
            nrows // len(layers),
            np.zeros(nrows, np.int64),
            np.zeros(nrows),
            np.zeros(nrows),
            np.zeros(k),
            np.zeros(k),
            np.zeros(k, np.int64),
            exp_std,
        )
    return stats, segments


def _feed_rowcol(rc: RowColStats, start: int, x64: np.ndarray, k: int) -> None:
    """Add values at flat offsets [start, start + len) of the random parts to the row/col sums."""
    finite = np.isfinite(x64)
    idx = np.arange(start, start + x64.size)
    if not finite.all():
        idx, x64 = idx[finite], x64[finite]
    r0 = start // k
    rows = idx // k - r0
    nr = int(rows[-1]) + 1 if rows.size else 0
    rc.row_n[r0 : r0 + nr] += np.bincount(rows, minlength=nr)
    rc.row_s1[r0 : r0 + nr] += np.bincount(rows, weights=x64, minlength=nr)
    rc.row_s2[r0 : r0 + nr] += np.bincount(rows, weights=x64 * x64, minlength=nr)
    cols = idx % k
    rc.col_n += np.bincount(cols, minlength=k)
    rc.col_s1 += np.bincount(cols, weights=x64, minlength=k)
    rc.col_s2 += np.bincount(cols, weights=x64 * x64, minlength=k)


def scan_model(
    model, init, *, rowcol: tuple[str, ...] = (), progress=None, chunk: int | None = None, graders=None
) -> dict[str, TensorStats]:
    """One streamed pass over every tensor of `model` (a verify.formats.model.ModelFile) against
    `init` (a reference.schemes.SchemeInit for the model's config): name -> TensorStats.
    `rowcol`: tensors to also take per-row/per-column sums of. `progress`: a Progress (update
    per chunk). `graders`: {name: verify.compare.LawGrader} fed every chunk of the same pass
    (compare's law grading, no second read) and graded as each tensor ends. Memory: one chunk
    (and its float64 copy) at a time, plus the statistics and one tensor's law checks."""
    cfg = model.config
    out = {}
    for spec in parameter_table(cfg):
        stats, segments = _plan(cfg, spec, init, spec.name in rowcol)
        k = spec.shape[-1]
        # a file whose wte holds V rows (a state dict) lacks the padded rows: its table is shorter
        numel = int(np.prod(model.shape(spec.name)))
        segments = [s for s in segments if s.start < min(s.end, numel)]
        kwargs = {} if chunk is None else {"chunk": chunk}
        grader = None if graders is None else graders[spec.name]

        def chunks(name=spec.name, kwargs=kwargs, grader=grader):
            offset = 0
            for values in model.iter_chunks(name, **kwargs):
                if grader is not None:
                    grader.feed(offset, values)
                offset += values.size
                if progress is not None:
                    progress.update(values.size)
                yield values

        # the one chunk splitter (verify.compare.regions.split_spans), at the parts' boundaries;
        # every chunk is pulled (the grader sees the whole tensor), values outside the parts skipped
        for i, lo, sub in split_spans(chunks(), [(s.start, min(s.end, numel)) for s in segments], drain=True):
            seg = segments[i]
            x64 = sub.astype(np.float64)
            finite = np.isfinite(x64)
            bad = int(x64.size - np.count_nonzero(finite))
            stats.nonfinite += bad
            if seg.constant is not None:
                c = seg.constant
                c.n += x64.size
                c.nonfinite += bad
                diff = x64 != np.float64(np.float32(c.value))
                nd = int(np.count_nonzero(diff))
                if nd:
                    c.differing += nd
                    if c.first_index is None:
                        c.first_index = lo + int(np.argmax(diff))
                    d = np.abs(x64[finite] - c.value)
                    if d.size:
                        c.max_abs_diff = max(c.max_abs_diff, float(d.max()))
                continue
            scale = seg.law.sd if stats.standardized else 1.0
            stats.hist.add(x64 / scale if scale != 1.0 else x64)
            m = stats.layers.setdefault(seg.layer, Moments())
            m.add(x64[finite] if bad else x64, seg.law.sd**2)
            if stats.rowcol is not None:
                _feed_rowcol(stats.rowcol, lo, x64, k)
        if grader is not None:
            grader.grade()  # now, while this tensor is the one in memory: frees its law checks' buffers
        out[spec.name] = stats
    return out
