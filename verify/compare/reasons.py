"""One-line reasons of a tensor's grade: torch.testing-style mismatch counts, why a law check
failed (range, std with its cause, mean, shape), why a constant part is wrong."""

from __future__ import annotations

import math

import numpy as np
from gpt2_verify.reference.schemes import BIAS_OF, Law, SchemeInit, fans

from ..stats import NormalCheck
from . import causes
from .diff import RegionDiff
from .laws import KIND_WORDS, law_origin, shape_hint
from .names import Names


def index_of(shape, flat: int) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape))


def mismatched_message(name: str, shape, mismatched: int, numel: int, max_abs: float,
                       at_flat: int | None, what: str = "greatest absolute difference") -> str:
    """torch.testing style: 'Mismatched elements: 62 / 20,480 (0.3%), greatest ... at index (1, 7)'."""
    text = f"Mismatched elements: {mismatched:,} / {numel:,} ({100.0 * mismatched / max(numel, 1):.1f}%)"
    if at_flat is not None:
        text += f", {what} {max_abs:.3g} at index {index_of(shape, at_flat)}"
    return text


def _expected(init: SchemeInit, name: str, law: Law) -> str:
    """How a std reason names what was expected: gpt2's bare std (as llm.c users know it), or
    the law with where it comes from."""
    if causes.plain_gpt2(init, name):
        return f"{law.sd:.4g}"
    sd = f", std {law.sd:.4g}" if law.kind != "normal" else ""
    return f"{law.describe()}{sd} ({law_origin(init, name)})"


def std_reason(label: str, name: str, obs: float, n: int, law: Law, init: SchemeInit,
               layer: int | None) -> str:
    """'<label> std 0.01 = 1.41x expected 0.007071: residual scaling 1/sqrt(L) instead of ...':
    the causes (verify.compare.causes) whose std the observed one fits."""
    if obs == 0:
        return f"{label} is all zero: never initialized"
    ratio = obs / law.sd if law.sd else math.inf
    text = f"{label} std {obs:.4g} = {ratio:.3g}x expected {_expected(init, name, law)}"
    fits = causes.fitting(init, name, layer, obs, n)
    return text + (": " + "; or ".join(fits) if fits else "")


def law_reason(label: str, name: str, check: NormalCheck, law: Law, init: SchemeInit,
               layer: int | None) -> str:
    """Why one law check failed, in one line: range, std, mean, then the law's shape (KS)."""
    parts = []
    hint = shape_hint(check)
    if hint and hint.startswith(KIND_WORDS[law.kind] + "-like"):
        hint = None  # the values look like the law's own kind: nothing to add
    rt = check.range_test
    range_said = rt is not None and not rt.passed
    if range_said:
        edge = (f"+-{law.bound:.4g}" if law.kind == "uniform" else
                f"the cut +-{law.k:g} std = +-{law.k * law.std:.4g}")
        top = max(abs(check.min), abs(check.max))
        parts.append(f"{label}: {check.n_outside:,} values beyond {edge} (max |x| {top:.4g}), "
                     f"expected {law.describe()} ({law_origin(init, name)})"
                     + (f"; values are {hint}" if hint else ""))
    vt = check.variance_test
    if vt is not None and not vt.passed:
        parts.append(std_reason(label, name, vt.statistic * check.expected_std, check.n, law, init, layer))
    mt = check.mean_test
    # the mean's z uses the expected std: when the std itself is far off, report the mean only if
    # it is off by the observed std too (|z| > 6.5 there: two-sided p < 1e-10)
    z_obs = check.mean * math.sqrt(check.n) / check.std if check.std > 0 else math.inf
    if mt is not None and not mt.passed and (vt is None or vt.passed or abs(z_obs) > 6.5):
        parts.append(f"{label} mean {check.mean:.3g} (z = {mt.statistic:+.1f}): not centred at 0")
    kt = check.ks_test
    if kt is not None and not kt.passed:
        ks = f"KS distance {kt.statistic:.3g} > bound {kt.upper:.3g}"
        if not parts:
            what = hint or f"not {KIND_WORDS[law.kind]}"
            parts.append(f"{label} values are {what}: {ks} against {law.describe()} "
                         f"({law_origin(init, name)})")
        elif hint and not range_said:
            parts.append(f"values are {hint} ({ks})")
    elif parts and hint and not range_said:
        parts.append(f"values are {hint}")
    return "; ".join(parts) or check.reason


def constant_reason(names: Names, name: str, shape, d: RegionDiff, value: float, init: SchemeInit) -> str:
    """Why a constant part (LayerNorm 1, a bias 0, wte's padded rows) is wrong, in the file's terms."""
    label = names.label(name, all_layers=True)
    where = names.at(name, shape, d.first_diff) if d.first_diff is not None else label
    got = d.first_values[0] if d.first_values else math.nan
    part = f"{label} {d.region.label}".strip()
    if d.region.label == "padded rows":
        return (f"{label} padded rows not zero: {d.differing:,} of {d.numel:,} values non-zero, first "
                f"{where} = {got:.4g} (rows V..Vp-1 must stay 0)")
    if name in ("ln1w", "ln2w", "lnfw"):
        what = "LayerNorm weight"
    elif name in BIAS_OF or name in ("ln1b", "ln2b", "lnfb"):
        what = "bias"
    elif d.region.fixed and d.region.rows is not None:
        what = f"rows {d.region.rows[0]}:{d.region.rows[1]} of {init.scheme.name}'s {name}"
    else:
        what = f"{name} under {law_origin(init, name)}"
    text = (f"{part} not {value:g}: {d.differing:,} of {d.numel:,} values differ, first {where} = "
            f"{got:.4g} ({what} must be {value:g})")
    if name in BIAS_OF and value == 0 and d.differing == d.numel and d.numel >= 16:
        bound = 1.0 / math.sqrt(fans(init.cfg, name)[0])  # nn.Linear.reset_parameters' bias bound
        if 0.5 * bound < d.max_abs <= bound * (1 + 1e-6):
            text += (f": PyTorch's default nn.Linear bias init U(+-1/sqrt(fan_in)) = +-{bound:.4g} "
                     "left in place")
    return text
