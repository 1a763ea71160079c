"""Per-tensor statistics and SHA-256 checksums of a parameter stream, in bounded memory.

Input: (spec, chunk) pairs in llm.c's flat file order (reference.init.iter_params, or a
checkpoint's tensors). Moments are merged chunk by chunk in float64 (Chan et al.'s parallel
update), so a 1.5B-parameter model needs one chunk of memory. Checksums are over the
little-endian float32 bytes, and over bf16 bits rounded to nearest even as llm.c writes them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterable

import numpy as np
from gpt2_verify.reference.bf16 import f32_to_bf16_bits
from gpt2_verify.reference.config import TensorSpec


@dataclasses.dataclass(frozen=True)
class Moments:
    """Count, mean, sum of squared deviations, min, max of a chunk's finite values (float64),
    and how many values were not finite."""

    n: int
    mean: float
    m2: float
    min: float
    max: float
    nonfinite: int


def chunk_moments(a: np.ndarray) -> Moments:
    x = np.asarray(a).reshape(-1).astype(np.float64)
    finite = np.isfinite(x)
    nonfinite = 0
    if not finite.all():
        nonfinite = int(x.size - finite.sum())
        x = x[finite]
    if not x.size:
        return Moments(0, 0.0, 0.0, float("inf"), float("-inf"), nonfinite)
    mean = float(x.mean())
    return Moments(x.size, mean, float(np.square(x - mean).sum()), float(x.min()), float(x.max()), nonfinite)


@dataclasses.dataclass(frozen=True)
class Digested:
    """A chunk whose moments and bf16 bits were computed where it was generated (a worker):
    digest_stream then only hashes it."""

    values: np.ndarray  # float32
    bf16: np.ndarray | None  # uint16, llm.c's round-to-nearest-even bits
    moments: Moments

    @classmethod
    def of(cls, values: np.ndarray, *, bf16: bool = True) -> "Digested":
        a = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
        return cls(a, np.ascontiguousarray(f32_to_bf16_bits(a), dtype="<u2") if bf16 else None,
                   chunk_moments(a))


@dataclasses.dataclass
class TensorDigest:
    name: str
    shape: tuple[int, ...]
    finite: int = 0  # values the moments cover
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean
    min: float = float("inf")
    max: float = float("-inf")
    nonfinite: int = 0
    sha256: str = ""
    _h: "hashlib._Hash" = dataclasses.field(default_factory=hashlib.sha256, repr=False)

    @property
    def numel(self) -> int:
        return self.finite + self.nonfinite

    @property
    def std(self) -> float:
        """Population standard deviation (ddof=0) of the finite values."""
        return float(np.sqrt(self.m2 / self.finite)) if self.finite else 0.0

    def update(self, chunk: np.ndarray) -> None:
        a = np.ascontiguousarray(chunk, dtype="<f4").reshape(-1)
        if a.size == 0:
            return
        self._h.update(a.data)
        self.merge(chunk_moments(a))

    def merge(self, m: "Moments") -> None:
        """Fold in the moments of the next chunk (Chan et al.'s pairwise update)."""
        self.nonfinite += m.nonfinite
        if m.n:
            total = self.finite + m.n
            delta = m.mean - self.mean
            self.mean += delta * m.n / total
            self.m2 += m.m2 + delta * delta * self.finite * m.n / total
            self.min = min(self.min, m.min)
            self.max = max(self.max, m.max)
            self.finite = total

    def finish(self) -> "TensorDigest":
        self.sha256 = self._h.hexdigest()
        return self

    def as_dict(self) -> dict:
        return {"shape": list(self.shape), "numel": self.numel,
                "mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
                "nonfinite": self.nonfinite, "sha256_fp32": self.sha256}


@dataclasses.dataclass
class ModelDigest:
    tensors: dict[str, TensorDigest]
    sha256_fp32: str
    sha256_bf16: str
    numel: int

    def as_dict(self) -> dict:
        return {"numel": self.numel, "sha256_fp32": self.sha256_fp32,
                "sha256_bf16": self.sha256_bf16,
                "tensors": {k: v.as_dict() for k, v in self.tensors.items()}}


def digest_stream(pairs: Iterable[tuple[TensorSpec, "np.ndarray | Digested"]], *, bf16: bool = True,
                  progress=None) -> ModelDigest:
    """Digest (spec, chunk) pairs in file order; a Digested chunk (moments and bf16 bits made by
    a worker) is only hashed here, its three hashes updated in parallel threads (hashlib
    releases the GIL), so this loop is no bottleneck for sharded generation."""
    tensors: dict[str, TensorDigest] = {}
    h32, h16 = hashlib.sha256(), hashlib.sha256()
    total = 0
    pool = None
    try:
        for spec, chunk in pairs:
            d = tensors.get(spec.name)
            if d is None:
                d = tensors[spec.name] = TensorDigest(spec.name, tuple(spec.shape))
            if isinstance(chunk, Digested):
                if pool is None:
                    from concurrent.futures import ThreadPoolExecutor

                    pool = ThreadPoolExecutor(3, thread_name_prefix="gpt2v-sha")
                a = chunk.values
                jobs = [pool.submit(d._h.update, a.data), pool.submit(h32.update, a.data)]
                if bf16:
                    jobs.append(pool.submit(h16.update, chunk.bf16.data))
                d.merge(chunk.moments)
                for j in jobs:
                    j.result()
            else:
                a = np.ascontiguousarray(chunk, dtype="<f4").reshape(-1)
                d.update(a)
                h32.update(a.data)
                if bf16:
                    h16.update(np.ascontiguousarray(f32_to_bf16_bits(a), dtype="<u2").data)
            total += a.size
            if progress is not None:
                progress.update(a.size)
    finally:
        if pool is not None:
            pool.shutdown()
    for d in tensors.values():
        d.finish()
    return ModelDigest(tensors, h32.hexdigest(), h16.hexdigest() if bf16 else "", total)
