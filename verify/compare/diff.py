"""The element-wise pass of the comparison: one read of a tensor beside the reference, and per
region what differs and by how much (RegionDiff)."""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import numpy as np
from gpt2_verify.reference.bf16 import bf16_bits_to_f32, f32_to_bf16_bits

from .regions import Region, split_spans
from .tolerance import close_bound

HEAD = 16  # candidate values kept per region: one normal_ block, for the stream diagnosis


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
    head: np.ndarray | None = None  # the first HEAD candidate values (stream diagnosis)

    @property
    def verdict(self) -> str:
        if self.nonfinite:
            return "mismatch"
        if self.differing == self.negzero:
            return "exact" if self.differing == 0 else "close"
        return "close" if self.over == 0 and self.region.random else "differs"

    @property
    def finite(self) -> int:
        return self.numel - self.nonfinite

    def count(self, pos: int, c: np.ndarray) -> np.ndarray:
        """Count the piece c (at flat position pos): its size and its non-finite values (the
        first one's index kept). Returns the finite mask."""
        self.numel += c.size
        finite = np.isfinite(c)
        if not finite.all():
            bad = ~finite
            if self.first_nonfinite is None:
                self.first_nonfinite = pos + int(np.argmax(bad))
            self.nonfinite += int(bad.sum())
            self.nan += int(np.isnan(c).sum())
        return finite

    def mean(self) -> float:
        return self.sum_ / self.finite if self.finite else math.nan

    def rms(self) -> float:
        return math.sqrt(self.sum_sq / self.finite) if self.finite else math.nan


def _ulps(delta: np.ndarray, ref: np.ndarray, std: float) -> np.ndarray:
    """|diff| in float32 ulps at the larger of |reference| and the std: near zero the float
    spacing shrinks without bound, so a plain ulp distance there says nothing about the math."""
    scale = np.maximum(np.abs(ref.astype(np.float32)), np.float32(std))
    return delta / np.spacing(scale).astype(np.float64)


def round_to(ref: np.ndarray, dtype: str) -> np.ndarray:
    """The reference as the file's storage type would hold it (float32 values)."""
    if dtype == "bf16":
        return bf16_bits_to_f32(f32_to_bf16_bits(ref))
    if dtype == "fp16":
        return ref.astype(np.float16).astype(np.float32)
    return ref


class _Reader:
    """Hands out the next n values of a chunk stream (None once it has fewer left)."""

    def __init__(self, chunks: Iterator[np.ndarray]):
        self.chunks, self.buf = chunks, np.empty(0, np.float32)

    def take(self, n: int) -> np.ndarray | None:
        parts, have = [], 0
        while have < n:
            if self.buf.size == 0:
                nxt = next(self.chunks, None)
                if nxt is None:
                    return None
                self.buf = np.ravel(nxt)
                continue
            k = min(n - have, self.buf.size)
            parts.append(self.buf[:k])
            self.buf, have = self.buf[k:], have + k
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def diff_tensor(candidate: Iterator[np.ndarray], reference: Iterator[np.ndarray],
                parts: list[Region], *, dtype: str, std: float | None = None) -> list[RegionDiff]:
    """One pass over a tensor: per region, what differs from the reference and by how much.
    Random regions are measured against their law's std (Region.scale; `std` overrides it).
    The regions are contiguous and in order; both streams start at the first region's start (0
    unless only some layers are graded), the reference read alongside."""
    out = [RegionDiff(r) for r in parts]
    ref = _Reader(iter(reference))
    start = parts[0].lo if parts else 0
    for i, pos, c in split_spans(candidate, [(r.lo, r.hi) for r in parts], start=start):
        r = ref.take(c.size)
        if r is None:
            break
        _add(out[i], pos, np.asarray(c, dtype=np.float32), np.asarray(r, dtype=np.float32), dtype,
             out[i].region.scale if std is None else std)
    return out


def _add(d: RegionDiff, pos: int, c: np.ndarray, r: np.ndarray, dtype: str, scale: float) -> None:
    """Fold one aligned piece (candidate c, reference r at flat position pos) into d."""
    if d.head is None or d.head.size < HEAD:
        need = HEAD - (0 if d.head is None else d.head.size)
        d.head = c[:need].copy() if d.head is None else np.concatenate([d.head, c[:need]])
    finite = d.count(pos, c)
    want = round_to(r, dtype)
    neq = (c.view(np.uint32) != want.view(np.uint32)) & finite
    if not neq.any():
        return
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


def group_values(chunks: Iterator[np.ndarray], group: list[RegionDiff], start: int = 0
                 ) -> Iterator[np.ndarray]:
    """The values of the group's regions (disjoint) from the tensor's chunk stream (which begins
    at flat index `start`), passed on to a law check while summing x and x^2 per region in
    float64; stops reading after the last region."""
    group = sorted(group, key=lambda d: d.region.lo)
    for i, _pos, part in split_spans(chunks, [(d.region.lo, d.region.hi) for d in group], start=start):
        x = part.astype(np.float64)
        x = x[np.isfinite(x)]
        group[i].sum_ += float(x.sum())
        group[i].sum_sq += float(np.vdot(x, x))
        yield part
