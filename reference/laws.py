"""Laws: the distributions an init draws a tensor (part) from, and their moments.

normal(std), uniform(-bound, bound), truncnormal(std, cut at +-k std) and constant(value); each
with its float64 cdf, pdf and ppf (plots, QQ lines, KS references), its sd and mean. A `Part`
says which rows of a tensor follow which law.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

from .special import invert_cdf, normal_cdf

KINDS = ("normal", "uniform", "truncnormal", "constant")


@dataclasses.dataclass(frozen=True)
class Law:
    """normal(std) | uniform(-bound, bound) | truncnormal(std, |z| <= k) | constant(value)."""

    kind: str
    std: float = 0.0  # normal, truncnormal: std of the (untruncated) normal
    bound: float = 0.0  # uniform
    k: float = 0.0  # truncnormal: cut at +-k std
    value: float = 0.0  # constant

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"law kind {self.kind!r}: use one of {KINDS}")
        for field in {"normal": ("std",), "truncnormal": ("std", "k"), "uniform": ("bound",),
                      "constant": ()}[self.kind]:
            x = getattr(self, field)
            if not (math.isfinite(x) and x > 0):
                raise ValueError(f"{self.kind} law needs a finite positive {field}, got {x!r}")
        if not math.isfinite(self.value):
            raise ValueError(f"constant law needs a finite value, got {self.value!r}")

    @property
    def random(self) -> bool:
        return self.kind != "constant"

    @property
    def sd(self) -> float:
        """The law's standard deviation (0 for a constant)."""
        if self.kind == "normal":
            return self.std
        if self.kind == "uniform":
            return self.bound / math.sqrt(3.0)
        if self.kind == "truncnormal":
            return self.std * math.sqrt(truncnormal_variance(self.k))
        return 0.0

    @property
    def mean(self) -> float:
        return self.value if self.kind == "constant" else 0.0

    def scaled(self, factor: float) -> "Law":
        return dataclasses.replace(self, std=self.std * factor, bound=self.bound * factor,
                                   value=self.value * factor)

    def describe(self) -> str:
        if self.kind == "normal":
            return f"N(0, {self.std:.6g})"
        if self.kind == "uniform":
            return f"U(-{self.bound:.6g}, {self.bound:.6g})"
        if self.kind == "truncnormal":
            return f"TN(0, {self.std:.6g}, +-{self.k:g} std)"
        return f"= {self.value:g}"

    def to_dict(self) -> dict:
        keys = {"normal": ("std",), "truncnormal": ("std", "k"), "uniform": ("bound",),
                "constant": ("value",)}[self.kind]
        return {"kind": self.kind, **{k: getattr(self, k) for k in keys}, "sd": self.sd}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Law":
        return cls(d["kind"], **{k: float(d[k]) for k in ("std", "bound", "k", "value") if k in d})

    # float64 density, distribution and quantile functions (plots, QQ lines, KS references)
    def cdf(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "normal":
            return normal_cdf(x / self.std)
        if self.kind == "uniform":
            return np.clip((x + self.bound) / (2 * self.bound), 0.0, 1.0)
        if self.kind == "truncnormal":
            z = np.clip(x / self.std, -self.k, self.k)
            lo = normal_cdf(-self.k)
            return (normal_cdf(z) - lo) / (1.0 - 2.0 * lo)
        return (x >= self.value).astype(np.float64)

    def pdf(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.kind in ("normal", "truncnormal"):
            d = np.exp(-0.5 * (x / self.std) ** 2) / (self.std * math.sqrt(2 * math.pi))
            if self.kind == "truncnormal":
                d = np.where(np.abs(x) <= self.k * self.std, d / (1.0 - 2.0 * normal_cdf(-self.k)),
                             0.0)
            return d
        if self.kind == "uniform":
            return np.where(np.abs(x) <= self.bound, 1.0 / (2 * self.bound), 0.0)
        return np.where(x == self.value, np.inf, 0.0)

    def ppf(self, q) -> np.ndarray:
        """Quantiles, by bisection on cdf (60 halvings: float64-exact for plotting)."""
        q = np.asarray(q, dtype=np.float64)
        if self.kind == "constant":
            return np.full(q.shape, self.value)
        if self.kind == "uniform":
            return (2 * q - 1) * self.bound
        half = (self.k if self.kind == "truncnormal" else 40.0) * self.std
        return invert_cdf(self.cdf, q, -half, half)


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(64)


def truncnormal_moments(k: float) -> tuple[float, float, float]:
    """(Z, E z^2, E z^4) of the standard normal truncated to [-k, k]; Z = 2 Phi(k) - 1.

    Closed forms (integration by parts) for k >= 2; below, where they cancel, 64-point
    Gauss-Legendre on [0, k] (the integrand is entire and mild there: error ~1e-16).
    """
    z_mass = math.erf(k / math.sqrt(2.0))
    if k >= 2.0:
        pdf = math.exp(-0.5 * k * k) / math.sqrt(2 * math.pi)
        return (z_mass, 1.0 - 2.0 * k * pdf / z_mass,
                3.0 - 2.0 * pdf * (k ** 3 + 3.0 * k) / z_mass)
    u = 0.5 * k * (_GL_NODES + 1.0)
    w = _GL_WEIGHTS * np.exp(-0.5 * u * u)
    total = float(w.sum())
    return z_mass, float(np.dot(w, u ** 2)) / total, float(np.dot(w, u ** 4)) / total


def truncnormal_variance(k: float) -> float:
    """Var of N(0, 1) restricted to [-k, k]: 1 - 2 k phi(k) / (2 Phi(k) - 1)."""
    return truncnormal_moments(k)[1]


def normal(std: float) -> Law:
    return Law("normal", std=float(std))


def uniform(bound: float) -> Law:
    return Law("uniform", bound=float(bound))


def truncnormal(std: float, k: float) -> Law:
    return Law("truncnormal", std=float(std), k=float(k))


def constant(value: float) -> Law:
    return Law("constant", value=float(value))


ZERO = constant(0.0)


@dataclasses.dataclass(frozen=True)
class Part:
    """Rows [lo, hi) of one tensor (of one layer's slice for per-layer tensors) follow `law`.

    Rows are the first axis of the per-layer shape (a 1-D tensor's rows are its elements).
    `fixed` parts are the scheme's structure (wte's padded rows, muP's zero query), which
    overrides do not touch."""

    lo: int
    hi: int
    law: Law
    fixed: bool = False
