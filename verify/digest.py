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
        x = a.astype(np.float64)
        finite = np.isfinite(x)
        if not finite.all():
            self.nonfinite += int(a.size - finite.sum())
            x = x[finite]
        n = x.size
        if n:
            mean = float(x.mean())
            m2 = float(np.square(x - mean).sum())
            total = self.finite + n
            delta = mean - self.mean
            self.mean += delta * n / total
            self.m2 += m2 + delta * delta * self.finite * n / total
            self.min = min(self.min, float(x.min()))
            self.max = max(self.max, float(x.max()))
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


def digest_stream(pairs: Iterable[tuple[TensorSpec, np.ndarray]], *, bf16: bool = True,
                  progress=None) -> ModelDigest:
    tensors: dict[str, TensorDigest] = {}
    h32, h16 = hashlib.sha256(), hashlib.sha256()
    total = 0
    for spec, chunk in pairs:
        d = tensors.get(spec.name)
        if d is None:
            d = tensors[spec.name] = TensorDigest(spec.name, tuple(spec.shape))
        a = np.ascontiguousarray(chunk, dtype="<f4").reshape(-1)
        d.update(a)
        h32.update(a.data)
        if bf16:
            h16.update(np.ascontiguousarray(f32_to_bf16_bits(a), dtype="<u2").data)
        total += a.size
        if progress is not None:
            progress.update(a.size)
    for d in tensors.values():
        d.finish()
    return ModelDigest(tensors, h32.hexdigest(), h16.hexdigest() if bf16 else "", total)
