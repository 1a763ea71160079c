"""One quantity of a module against the reference: normwise error, limit, and the message.

The message reads like torch.testing's: "Mismatched elements: 62 / 20480 (0.3%), greatest
absolute difference 1.2e-03 at index (1, 7, 42) (up to 3.1e-05 allowed)", where an element is
mismatched when |a - b| > limit x max|reference| (the normwise limit spread over elements).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass
class Check:
    quantity: str  # "logits", "loss", a tensor name ("wte" ...), "step 2 loss"
    error: float  # normwise: max |a - b| / max |ref| (NaN when the module gave a NaN)
    limit: float
    numel: int
    mismatched: int
    max_abs: float
    worst_index: tuple[int, ...] | None
    allowed_abs: float

    @property
    def passed(self) -> bool:
        return self.error <= self.limit  # False for NaN

    @property
    def used(self) -> float:
        """% of the limit used (inf for NaN)."""
        return self.error / self.limit * 100 if math.isfinite(self.error) else math.inf

    def message(self) -> str:
        where = "" if not self.worst_index else f" at index {tuple(self.worst_index)}"
        if not math.isfinite(self.error):
            return f"{self.quantity}: the module gave a non-finite value{where}"
        pct = 100.0 * self.mismatched / max(self.numel, 1)
        return (f"Mismatched elements: {self.mismatched} / {self.numel} ({pct:.1f}%), greatest absolute "
                f"difference {self.max_abs:.3g}{where} (up to {self.allowed_abs:.3g} allowed)")

    def to_dict(self) -> dict:
        def f(x):
            return x if math.isfinite(x) else None
        return {"quantity": self.quantity, "error": f(self.error), "limit": self.limit,
                "used_percent": f(self.used), "passed": self.passed, "numel": self.numel,
                "mismatched": self.mismatched, "max_abs": f(self.max_abs),
                "worst_index": None if self.worst_index is None else list(self.worst_index),
                "allowed_abs": self.allowed_abs, "message": self.message()}


def normwise(quantity: str, cand, ref, limit: float, *, denom: float | None = None) -> Check:
    """cand vs ref (same shape); error = max|cand - ref| / denom (default max|ref|)."""
    a = np.asarray(cand, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{quantity}: module shape {a.shape} differs from the reference's {b.shape}")
    scale = float(np.max(np.abs(b), initial=0.0)) if denom is None else float(abs(denom))
    diff = np.abs(a - b)
    bad = ~np.isfinite(diff)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        idx = tuple(int(k) for k in np.unravel_index(i, b.shape)) if b.ndim else None
        return Check(quantity, math.nan, limit, b.size, int(bad.sum()), math.inf, idx, limit * scale)
    worst = int(np.argmax(diff)) if diff.size else 0
    max_abs = float(diff.reshape(-1)[worst]) if diff.size else 0.0
    allowed = limit * scale
    error = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    idx = tuple(int(k) for k in np.unravel_index(worst, b.shape)) if b.ndim else None
    return Check(quantity, error, limit, int(b.size), int(np.count_nonzero(diff > allowed)), max_abs,
                 idx, allowed)
