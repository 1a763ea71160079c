"""`--set` overrides of an init scheme: `TENSORS.FIELD=VALUE` or `PARAM=VALUE`, parsed and applied
to a law."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

from .config import TENSOR_NAMES
from .laws import Law, constant, normal, truncnormal, uniform

OVERRIDE_FIELDS = ("std", "bound", "k", "value", "scale")


@dataclasses.dataclass(frozen=True)
class Override:
    """`TENSORS.FIELD=VALUE` (TENSORS: one name or a comma list) or `PARAM=VALUE` (a scheme
    parameter, e.g. mup's base_width)."""

    tensors: tuple[str, ...]
    field: str
    value: float
    text: str

    def apply(self, law: Law) -> Law:
        f, x = self.field, self.value
        if f == "scale":
            return law.scaled(x)
        if f == "std":
            return truncnormal(x, law.k) if law.kind == "truncnormal" else normal(x)
        if f == "bound":
            return uniform(x)
        if f == "value":
            return constant(x)
        if law.kind not in ("normal", "truncnormal"):  # f == "k"
            raise ValueError(f"--set {self.text!r}: k truncates a normal law, but the law is "
                             f"{law.describe()}; set std too (e.g. TENSOR.std=0.02 TENSOR.k=3)")
        return truncnormal(law.std, x)


_OVERRIDE = re.compile(r"^\s*(?:([A-Za-z0-9_,]+)\.)?([A-Za-z_]+)\s*=\s*(\S+)\s*$")


def parse_override(text: str) -> Override:
    """Parse `wpe.std=0.01`, `attprojw,fcprojw.scale=10`, `qkvb.std=0.02`, `base_width=64`."""
    m = _OVERRIDE.match(text)
    if not m:
        raise ValueError(f"--set {text!r}: write TENSOR.FIELD=VALUE (e.g. wpe.std=0.01, attprojw.scale=10) "
                         "or PARAM=VALUE (e.g. base_width=64)")
    names, field, raw = m.groups()
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"--set {text!r}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"--set {text!r}: the value must be finite")
    if names is None:
        return Override((), field, value, text.strip())
    tensors = tuple(n for n in names.split(",") if n)
    for n in tensors:
        if n not in TENSOR_NAMES:
            raise ValueError(f"--set {text!r}: unknown tensor {n!r}; tensors: {', '.join(TENSOR_NAMES)}")
    if field not in OVERRIDE_FIELDS:
        raise ValueError(f"--set {text!r}: unknown field {field!r}; use one of {', '.join(OVERRIDE_FIELDS)}")
    if field in ("std", "bound", "k", "scale") and not value > 0:
        raise ValueError(f"--set {text!r}: {field} must be positive (for an all-zero tensor use "
                         f"{tensors[0]}.value=0)")
    return Override(tensors, field, value, text.strip())


def parse_overrides(texts: Sequence[str | Override]) -> tuple[Override, ...]:
    """Parse every --set; one field of one tensor (or one parameter) set twice is refused:
    overrides apply in turn, so `scale` would compound and `std` would silently take the last."""
    out = tuple(t if isinstance(t, Override) else parse_override(t) for t in texts)
    seen: dict[tuple[str, str], str] = {}
    for o in out:
        for target in o.tensors or ("",):
            if (target, o.field) in seen:
                what = f"{target}.{o.field}" if target else o.field
                first = seen[(target, o.field)]
                raise ValueError(f"--set {o.text!r}: {what} is already set by --set {first!r}; set each "
                                 "field once (repeated --set values do not compound)")
            seen[(target, o.field)] = o.text
    return out
