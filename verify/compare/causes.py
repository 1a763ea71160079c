"""Why a std is off: every candidate cause is a std the values would have under it, and a cause
is named only when the observed std fits it, not because it is the nearest constant.

The candidates for one tensor (and layer), in the order they are named:

- GPT-2's residual scaling gone wrong (plain gpt2 only; L = number of layers): on an output
  projection (attprojw, fcprojw, c_proj) 0.02 (1/sqrt(2L) missing), 0.02/sqrt(L) (1/sqrt(L)
  instead of 1/sqrt(2L): one residual branch per layer counted), 0.02/(2L) (the scaling applied
  twice); on any other weight 0.02/sqrt(2L) (the scaling applied where it does not belong);
- PyTorch's constructor defaults left in place: nn.Embedding N(0, 1), nn.Linear's
  kaiming_uniform_(a=sqrt(5)) U(+-1/sqrt(fan_in)) (the torch-default scheme's laws);
- half and twice the expected std;
- the law of every other built-in scheme (reference.schemes.SCHEMES) for the tensor.

Fit: a sample std s of n values has relative standard error 1/sqrt(2n) for normal data (less
for a uniform, whose kurtosis is lower), so a cause fits when |s / std_cause - 1| is within
6.5 of those standard errors (two-sided p < 1e-10 per cause), plus 1e-3 for float rounding of
the std itself. When several causes fit (L = 2 makes 1/sqrt(2L) = 1/2), all are named.
"""

from __future__ import annotations

import dataclasses
import math

from gpt2_verify.reference.config import BASE_STD, RESIDUAL_TENSORS
from gpt2_verify.reference.schemes import DEFAULT_SCHEME, EMBEDDINGS, SchemeInit

from .laws import matching_schemes, random_law, scheme_init

Z_FIT = 6.5  # standard errors: two-sided normal tail < 1e-10
REL_FLOOR = 1e-3  # float32 std arithmetic (0.02f / sqrtf(2L) vs the double) and storage rounding


@dataclasses.dataclass(frozen=True)
class StdCause:
    std: float  # the std the values would have under this cause
    text: str


def plain_gpt2(init: SchemeInit, name: str) -> bool:
    """gpt2 without a --set touching `name`: the scheme llm.c users know by its bare stds."""
    return init.scheme.name == DEFAULT_SCHEME and not any(name in o.tensors for o in init.overrides)


def candidates(init: SchemeInit, name: str, layer: int | None) -> list[StdCause]:
    """Every cause the module docstring lists for tensor `name` (at `layer`), with its std."""
    cfg, law = init.cfg, random_law(init, name, layer)
    if law is None:
        return []
    expected, L = law.sd, cfg.layers
    out: list[StdCause] = []
    gpt2 = plain_gpt2(init, name)
    if gpt2 and name in RESIDUAL_TENSORS:
        out += [StdCause(BASE_STD, "residual scaling 1/sqrt(2L) missing"),
                StdCause(BASE_STD / math.sqrt(L), f"residual scaling 1/sqrt(L) instead of 1/sqrt(2L) "
                                                   f"(0.02/sqrt({L}))"),
                StdCause(BASE_STD / (2 * L), "residual scaling 1/sqrt(2L) applied twice")]
    elif gpt2:
        out.append(StdCause(expected / math.sqrt(2 * L), "residual scaling 1/sqrt(2L) applied to a tensor "
                                                          "that is not a residual projection"))
    who = "GPT-2" if gpt2 else init.scheme.name
    if init.scheme.name != "torch-default":
        default = random_law(scheme_init("torch-default", cfg, init.profile), name, layer)
        if default is not None:
            out.append(StdCause(default.sd, f"nn.Embedding's default N(0, 1), the {who} init was not applied"
                                if name in EMBEDDINGS else
                                f"PyTorch's default nn.Linear init U(+-1/sqrt(fan_in)) "
                                f"(std {default.sd:.4g}), "
                                f"the {who} init was not applied"))
    out += [StdCause(expected / 2, "half the expected std"), StdCause(expected * 2, "twice the expected std")]
    for scheme, other in matching_schemes(init, name, layer, None):
        out.append(StdCause(other.sd, f"the std of {scheme}'s {other.describe()}"))
    return out


def tolerance(n: int | None) -> float:
    """Relative half-width within which an observed std of n values fits a cause's std."""
    return REL_FLOOR + (Z_FIT / math.sqrt(2.0 * n) if n else 0.0)


def fitting(init: SchemeInit, name: str, layer: int | None, observed: float, n: int | None) -> list[str]:
    """The causes whose std the observed std fits (n values; None: a std read exactly, e.g. off
    a Box-Muller radius), first the scheme's own, then other schemes'. Different causes with the
    same std are all named; a second cause text for the same std is not repeated."""
    tol = tolerance(n)
    out: list[str] = []
    for c in candidates(init, name, layer):
        if c.std > 0 and abs(observed / c.std - 1) <= tol and c.text not in out:
            out.append(c.text)
    return out
