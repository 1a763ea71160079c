"""One model of a tolerance: how far a candidate value may lie from its reference, and why.

    |candidate - reference| <= abs + rel * |reference_i| + norm * scale

Three kinds, combinable:
    absolute   `abs`, in the quantity's own unit
    relative   `rel`, times each reference value's magnitude
    normwise   `norm`, times one scale for the whole quantity: by default max |reference| over it
               (the "normwise" error of numerical analysis, max norm), or what `scale_of` names
               (a law's std, the first step's loss), given by the caller as `scale=`

Every tolerance carries its `source` (where the numbers come from: a measurement, a derivation
or the code being reproduced) and may carry `measured`, the worst figure correct implementations
reached in the unit of its leading term (norm, else rel, else abs); the bound must not lie below
it. A tolerance without any term, without a source, with a measurement above its own bound or
with C-evaluation settings that do not fit its terms is refused at construction, with the fix.

The C-evaluation settings reproduce a C program's own check exactly (llm.c's test_gpt2.c and
test_gpt2.cu): `arith="float32"` rounds both sides and computes the difference and the bound in
float32 (test_gpt2.cu check_tensor: t_eff = threshold + fabs(b) * 0.079f), `literal="double"`
compares a float difference with a double literal (test_gpt2.c's loss: `fabsf(...) >= 1e-2`),
`strict` fails on diff >= bound (llm.c's logit checks), and `nan_passes` says the C code tests for
failure (`if (diff > t_eff) ok = 0`), which a NaN never triggers.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

_ARITH = ("float64", "float32")
_LITERAL = ("float", "double")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tolerance:
    abs: float | None = None
    rel: float | None = None
    norm: float | None = None
    source: str = ""
    measured: float | None = None
    scale_of: str = "max|ref|"
    strict: bool = False
    arith: str = "float64"
    literal: str = "float"
    nan_passes: bool = False

    def __post_init__(self) -> None:
        terms = {"abs": self.abs, "rel": self.rel, "norm": self.norm}
        given = {k: v for k, v in terms.items() if v is not None}
        if not given:
            raise ValueError("a tolerance needs at least one of abs=, rel=, norm= (e.g. "
                             "Tolerance(rel=1e-6, source='...')); abs=0.0 asks for exact equality")
        for k, v in given.items():
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{k}= must be a finite number >= 0, got {v!r}")
        if not self.source.strip():
            raise ValueError(f"say where the tolerance {self.describe()} comes from: source='measured ...', "
                             f"'derived ...' or the code it reproduces")
        if self.norm is not None and not self.scale_of.strip():
            raise ValueError("a normwise tolerance needs scale_of= naming what `norm` multiplies "
                             "(default 'max|ref|')")
        if self.arith not in _ARITH:
            raise ValueError(f"arith must be one of {_ARITH}, got {self.arith!r}")
        if self.literal not in _LITERAL:
            raise ValueError(f"literal must be one of {_LITERAL}, got {self.literal!r}")
        if self.literal == "double" and (self.arith != "float32" or set(given) != {"abs"}):
            raise ValueError("literal='double' models a float difference compared with a double "
                             "constant: give it with arith='float32' and abs= alone")
        if self.measured is not None:
            lead = self.leading
            if not (math.isfinite(self.measured) and 0 <= self.measured <= lead):
                raise ValueError(f"measured={self.measured!r} must be a finite figure in [0, {lead:g}]: "
                                 f"a bound below what correct implementations reach fails them; "
                                 f"raise the bound or fix the measurement")

    @property
    def leading(self) -> float:
        """The leading term's value: norm, else rel, else abs (the unit of `measured`)."""
        return self.norm if self.norm is not None else self.rel if self.rel is not None else self.abs

    @property
    def kind(self) -> str:
        """'normwise', 'relative' or 'absolute': the leading term's kind."""
        return "normwise" if self.norm is not None else "relative" if self.rel is not None else "absolute"

    def describe(self) -> str:
        parts = []
        if self.abs:
            parts.append(f"{self.abs:g}")
        if self.rel:
            parts.append(f"{self.rel:g}*|ref|")
        if self.norm:
            parts.append(f"{self.norm:g}*{self.scale_of}")
        op = "<" if self.strict else "<="
        return f"|a-b| {op} " + (" + ".join(parts) or "0")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "kind": self.kind, "text": self.describe()}

    def widened(self, *, abs: float = 0.0, rel: float = 0.0, why: str) -> "Tolerance":
        """This tolerance plus `abs` and `rel` (e.g. one unit of a narrower storage type), the
        reason appended to its source."""
        if not (abs or rel):
            return self
        return dataclasses.replace(
            self, abs=(self.abs or 0.0) + abs if (abs or self.abs is not None) else None,
            rel=(self.rel or 0.0) + rel if (rel or self.rel is not None) else None,
            source=f"{self.source}; {why}")

    def bound(self, ref: float = 0.0, *, scale: float | None = None) -> float:
        """The allowed |a - b| for one scalar reference (float64); normwise: `scale` is the value
        of `scale_of` (default |ref|)."""
        return float(self.allowed(np.float64(ref), scale=scale))

    def allowed(self, ref, *, scale: float | None = None) -> np.ndarray:
        """The allowed |a - b| per element of `ref`, float64: (norm * scale + rel * |ref|) + abs,
        in that order. scale: the normwise term's scale (default max |ref|)."""
        r = np.abs(np.asarray(ref, dtype=np.float64))
        out = r * self.rel if self.rel else np.zeros_like(r)
        inplace = isinstance(out, np.ndarray) and out.ndim > 0  # a 0-d result is a scalar
        if self.norm:
            s = float(np.max(r, initial=0.0)) if scale is None else scale
            out = np.add(out, self.norm * s, out=out if inplace else None)
        if self.abs:
            out = np.add(out, self.abs, out=out if inplace else None)
        return np.asarray(out)

    def evaluate(self, cand, ref, *, scale: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(diff, allowed, ok) elementwise, under the C-evaluation settings."""
        if self.arith == "float32":
            a = np.asarray(cand, dtype=np.float32)
            b = np.asarray(ref, dtype=np.float32)
            diff = np.abs(a - b)
            # test_gpt2.cu order: threshold + fabs(b) * eps, in float
            allowed = np.full(b.shape, np.float32(self.abs or 0.0), dtype=np.float32)
            if self.rel:
                allowed = allowed + np.abs(b) * np.float32(self.rel)
            if self.norm:
                s = np.max(np.abs(b), initial=np.float32(0)) if scale is None else np.float32(scale)
                allowed = allowed + np.float32(self.norm) * s
            if self.literal == "double":
                diff, allowed = diff.astype(np.float64), np.full(b.shape, float(self.abs))
        else:
            a = np.asarray(cand, dtype=np.float64)
            b = np.asarray(ref, dtype=np.float64)
            diff = np.abs(a - b)
            allowed = np.broadcast_to(self.allowed(b, scale=scale), b.shape)
        with np.errstate(invalid="ignore"):
            if self.nan_passes:  # the C code's failure test, negated: NaN compares false
                ok = ~(diff >= allowed) if self.strict else ~(diff > allowed)
            else:
                ok = diff < allowed if self.strict else diff <= allowed
        return diff, allowed, np.asarray(ok)
