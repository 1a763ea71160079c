"""The law check of one group of values, dispatched on the law's kind, and the words a
mismatch report uses for laws (where an expected law comes from, what the values look like).

Laws are reference.schemes.Law: normal(std), uniform(-bound, bound), truncnormal(std, k) and
constant(value). Random laws are tested with verify.stats (each check's false-positive rate is
at most `fpr`); constants are not tested statistically: the comparator checks them exactly.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from gpt2_verify.reference.config import GPTConfig
from gpt2_verify.reference.schemes import SCHEMES, Law, SchemeInit, resolve
from gpt2_verify.reference.special import normal_isf

from ..stats import NormalCheck, StreamCheck, stream_normal, stream_truncnormal, stream_uniform

KIND_WORDS = {"normal": "normal", "uniform": "uniform", "truncnormal": "truncated-normal"}


def check_law(values: Any, law: Law, *, fpr: float, quantization: float | None = None,
              name: str | None = None) -> NormalCheck:
    """Are `values` (an array or an iterable of arrays) iid draws of `law`? One verify.stats
    check with false-positive rate <= fpr (quantization: the storage rounding, as check_normal)."""
    check = law_check(law, fpr=fpr, quantization=quantization, name=name)
    check.add(values)
    return check.result()


def law_check(law: Law, *, fpr: float, quantization: float | None = None,
              name: str | None = None) -> StreamCheck:
    """check_law fed chunk by chunk: .add(values) as they are read, then .result()."""
    if law.kind == "normal":
        return stream_normal(law.std, fpr=fpr, quantization=quantization, name=name)
    if law.kind == "uniform":
        return stream_uniform(law.bound, fpr=fpr, quantization=quantization, name=name)
    if law.kind == "truncnormal":
        return stream_truncnormal(law.std, law.k, fpr=fpr, quantization=quantization, name=name)
    raise ValueError(f"check_law: {law.describe()} is a constant law; constants are checked exactly "
                     "(compare every value with law.value), not statistically")


# ---- where an expected law comes from -----------------------------------------------------------

def law_origin(init: SchemeInit, name: str) -> str:
    """Why `init` expects its law for `name`: 'xavier-normal: sqrt(2/(fan_in+fan_out))', or the
    --set override that set it."""
    sets = [o.text for o in init.overrides if name in o.tensors]
    if sets:
        return f"{init.scheme.name} with --set {', '.join(sets)}"
    f = init.scheme.short_formula(name)
    return f"{init.scheme.name}: {f}" if f else init.scheme.name


def expected_text(init: SchemeInit, name: str, law: Law) -> str:
    """'expected N(0, 0.0884) (xavier-normal: sqrt(2/(fan_in+fan_out)))'."""
    return f"expected {law.describe()} ({law_origin(init, name)})"


@functools.lru_cache(maxsize=64)
def scheme_init(name: str, cfg: GPTConfig, profile: str) -> SchemeInit:
    """A built-in scheme resolved without overrides (cached: reports consult them often)."""
    return resolve(name, cfg, profile=profile)


def _all_schemes(cfg: GPTConfig, profile: str) -> tuple[SchemeInit, ...]:
    return tuple(scheme_init(s, cfg, profile) for s in SCHEMES)


def random_law(init: SchemeInit, name: str, layer: int | None) -> Law | None:
    """The (first) random law of tensor `name` at `layer` under `init`, or None."""
    return next((p.law for p in init.parts(name, layer) if p.law.random), None)


def matching_schemes(init: SchemeInit, name: str, layer: int | None, sd: float | None,
                     *, rel: float = 0.05) -> list[tuple[str, Law]]:
    """Other built-in schemes whose law for (name, layer) has a std within `rel` of `sd` (None:
    every other law): what an observed std may point to (verify.compare.causes tests them)."""
    mine = random_law(init, name, layer)
    out = []
    for other in _all_schemes(init.cfg, init.profile):
        if other.scheme.name == init.scheme.name and not init.overrides:
            continue
        law = random_law(other, name, layer)
        if law is None or law == mine or (sd is not None and not abs(sd / law.sd - 1) < rel):
            continue
        if any(law.describe() == seen.describe() for _s, seen in out):
            continue  # the same law under another name (mup equals gpt2 at C = base_width)
        out.append((other.scheme.name, law))
    return out


# ---- what the values look like ----------------------------------------------------------------

def shape_hint(check: NormalCheck) -> str | None:
    """'uniform-like', 'truncated-normal-like' or 'normal-like' from the largest |value| in
    units of the observed std, when the sample says so clearly; None otherwise.

    A uniform's values end at sqrt(3) = 1.73 std. n normals exceed z std somewhere unless an
    event of probability (1 - 2 Q(z))^n ~ exp(-2 n Q(z)) happens: with 2 n Q(z) = 20 (z = 2.8
    at n = 4096, 3.6 at 65,536) that is e^-20, so a sample that stays below z is bounded (a
    truncated normal cut at 3 std reaches 3.04 of its own std). A hint only: verdicts come from
    the checks."""
    if not (check.n >= 64 and check.std > 0 and math.isfinite(check.min) and math.isfinite(check.max)):
        return None
    r = max(abs(check.min), abs(check.max)) / check.std
    if r <= 1.8:
        return f"uniform-like (max |x| = {r:.3g} std; a uniform ends at sqrt(3) = 1.73 std)"
    q = min(10.0 / check.n, 0.5)
    z = normal_isf(q)  # Q(z) = q
    if r < z:
        return f"truncated-normal-like (max |x| = {r:.3g} std; {check.n:,} normals would exceed {z:.3g})"
    if r > 3.2:
        return f"normal-like (max |x| = {r:.3g} std)"
    return None
