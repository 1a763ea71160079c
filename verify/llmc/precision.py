"""Tolerances for llm.c's CUDA builds, derived from their precision's rounding through the depth.

The CPU binaries' tolerances (harness.TOLERANCES) are measured: 10x the worst of many correct
float32 builds. The CUDA builds cannot be measured here (no GPU) and llm.c's own limits for
them are hand-tuned per GPU (test_gpt2.cu: "I set the tolerances manually by inspecting the
gradient differences"; re-tuned in llm.c #223, #429, #614, #615), so their tolerances are
derived instead, from three facts about how llm.c computes:

1. Storage. `PRECISION=BF16` (llm.c's default) keeps parameters, activations and gradients in
   floatX = bf16 and computes every kernel in float32 (cuBLASLt accumulates in float32;
   layernorm, softmax and GELU load bf16 and compute in float). Each stored value is rounded
   once, relative error at most u = 2^-8 (bf16 keeps 8 significant bits; round to nearest even),
   uniform in (-u, u) for a value not on the grid: rms u / sqrt(3). `PRECISION=FP32` stores
   float32: u = 2^-24.
2. Depth. On the path from the tokens to the logits a value is rounded at every stored
   activation: the embedding sum, per layer ln1, qkv, the attention, its output, attproj, the
   residual, ln2, fch, GELU, fcproj, the residual (11), and at the weights it meets, rounded
   from the float32 file once: qkvw, attprojw, fcw, fcprojw per layer (4) and wte, then lnf and
   the logits. R_fwd = 4 + 15 L roundings. The backward pass stores one gradient per stored
   activation and weight and starts from the forward's values: R_bwd = 2 R_fwd. Independent
   roundings add in quadrature, so the relative error of a value is sigma = u sqrt(R / 3).
   Float32 arithmetic adds the rounding of each accumulation (cuBLAS and the reductions: inner
   lengths 3C + C + 4C (matmuls), 2C (two layernorms), T + hs (attention) per layer, C for the
   logits: R_acc) and llm.c compiles with `--use_fast_math`, whose __expf and tanh are good to
   2 + 1.16|x| ulp (CUDA Programming Guide, intrinsic functions; |x| < 25 here): 32 ulp for the
   2 L + 1 exponentials and tanhs on the path (R_fm). Altogether
       sigma^2 = u_s^2 / 3 * R  +  u32^2 / 3 * R_acc  +  (32 u32)^2 / 3 * R_fm
   where u_s is the storage precision's unit roundoff and u32 = 2^-24.
3. The figure judged. A printed maximum over n elements of errors with that sigma (relative to
   the largest reference value, the normwise scale the CPU checks use too) exceeds
   z(n) sigma with probability at most n exp(-z^2 / 2); z(n) = sqrt(2 ln(n / 1e-9)) keeps each
   check's false-positive rate under 1e-9 (z = 7.9 for 32,000 logits, 6.4 for one figure).
   The mean loss over B T positions moves by delta z_y - E_p[delta z] per position (log-softmax),
   rms at most sqrt(2) sigma rms|z|, averaged over B T independent positions, plus the float32
   sum of the B T losses (rms u32 loss sqrt(B T / 3)):
   sigma_loss^2 = (sqrt(2) sigma_fwd rms|z| / sqrt(B T))^2 + (u32 loss)^2 B T / 3.
   A step loss after updates carries the
   gradients' error into the update direction (AdamW normalises the step, so a relative gradient
   error is a relative update error) and re-rounds the parameters each step: its sigma uses
   R_fwd + R_bwd. The drift is the least-squares slope of n such errors:
   sigma_slope = sigma_step / sqrt(n (n^2 - 1) / 12).
Printed resolution is added: `%f` figures (logits max diff, losses) carry 5e-7.

What this means (L2 C64, B2 T16, probe weights): bf16 logits may differ by ~10% of the largest
logit and gradients by ~15% of their largest value; a GELU constant 5% off or an attention scale
of 1/sqrt(hs + 1) moves them by 0.1-3%: a bf16 build cannot show such bugs, whatever the limit,
which is why the FP32 build exists (`make test_gpt2cu PRECISION=FP32`: limits near the CPU
build's). A pessimistic CPU emulation that rounds every op to bf16 (tests/test_llmc_cuda.py)
stays inside these limits.
"""

from __future__ import annotations

import dataclasses
import math

from gpt2_verify.reference.config import GPTConfig

from ..tolerance import Tolerance

PRECISIONS = ("bf16", "fp32")
UNIT_ROUNDOFF = {"bf16": 2.0 ** -8, "fp32": 2.0 ** -24}
U32 = 2.0 ** -24
FAST_MATH_ULPS = 32  # __expf / tanh under --use_fast_math: 2 + 1.16 |x| ulp for |x| < 25
FALSE_POSITIVE = 1e-9  # per check
PRINT_F = 5e-7  # half a unit of `%f`'s 6th decimal


def z_score(n: int) -> float:
    """z with n exp(-z^2/2) = FALSE_POSITIVE: the largest of n standard normal errors exceeds
    z with probability below FALSE_POSITIVE (Gaussian tail bound P(|X| > z) <= exp(-z^2/2))."""
    return math.sqrt(2.0 * math.log(max(1, n) / FALSE_POSITIVE))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RoundingPath:
    """Rounding counts on the path from tokens to logits (module docstring, point 2)."""

    store: int  # stored values: activations and weights rounded to the storage precision
    acc: int  # float32 accumulation roundings (inner lengths of sums)
    fast_math: int  # fast-math exponentials / tanhs

    @classmethod
    def forward(cls, cfg: GPTConfig, T: int) -> "RoundingPath":
        L, C = cfg.layers, cfg.channels
        hs = C // cfg.heads
        return cls(store=4 + 15 * L, acc=L * (3 * C + C + 4 * C + 2 * C + T + hs) + C,
                   fast_math=2 * L + 1)

    def times(self, k: int) -> "RoundingPath":
        return RoundingPath(store=k * self.store, acc=k * self.acc, fast_math=k * self.fast_math)

    def sigma(self, precision: str) -> float:
        """rms relative error of a value at the end of this path."""
        u = UNIT_ROUNDOFF[check_precision(precision)]
        var = u * u * self.store + U32 * U32 * self.acc + (FAST_MATH_ULPS * U32) ** 2 * self.fast_math
        return math.sqrt(var / 3.0)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


@dataclasses.dataclass(frozen=True, kw_only=True)
class CudaTolerances:
    """Absolute limits for one CUDA build's figures on one probe (module docstring), each from
    its verify.tolerance.Tolerance in `terms` (what the JSON record carries)."""

    precision: str
    sigma_fwd: float  # relative rms error of a forward value
    sigma_bwd: float  # of a gradient
    logits: float
    loss: float
    step_loss: float
    grads: dict[str, float]  # per tensor name
    n_steps: int
    terms: dict[str, Tolerance] = dataclasses.field(default_factory=dict)  # the limits as Tolerances

    def drift(self, n: int) -> float:
        """Limit of the least-squares slope over n steps (printed - reference)."""
        if n < 3:
            raise ValueError(f"a slope needs at least 3 steps, got {n}")
        sigma_step = (self.step_loss - PRINT_F) / z_score(1)
        return z_score(1) * sigma_step / math.sqrt(n * (n * n - 1) / 12.0) + PRINT_F

    def summary(self) -> dict:
        return {"precision": self.precision, "sigma_fwd": self.sigma_fwd, "sigma_bwd": self.sigma_bwd,
                "logits": self.logits, "loss": self.loss, "step_loss": self.step_loss,
                "grads": dict(self.grads), "terms": {k: t.to_dict() for k, t in self.terms.items()}}


def cuda_tolerances(cfg: GPTConfig, *, precision: str, B: int, T: int, logits_max: float,
                    logits_rms: float, loss: float, grad_max: dict[str, float], grad_numel: dict[str, int],
                    n_steps: int = 10) -> CudaTolerances:
    """The limits for a CUDA build of `precision` on a B x T probe whose reference logits have
    largest magnitude logits_max and rms logits_rms, loss `loss`, gradients largest magnitude
    grad_max."""
    check_precision(precision)
    fwd = RoundingPath.forward(cfg, T)
    s_fwd, s_bwd = fwd.sigma(precision), fwd.times(3).sigma(precision)  # R_fwd + R_bwd = 3 R_fwd
    s_grad = fwd.times(2).sigma(precision)  # the backward's own R_bwd = 2 R_fwd

    def loss_sigma(sigma: float) -> float:
        positions = 2.0 * (sigma * logits_rms) ** 2 / (B * T)
        total = U32 * U32 * loss * loss * B * T / 3.0
        return math.sqrt(positions + total)

    src = (f"derived (verify/llmc/precision.py): {precision} rounding through the model's depth "
           f"(sigma {{}} = u sqrt(R / 3) with float32 accumulation and fast-math terms), times z(n) = "
           f"sqrt(2 ln(n / 1e-9)) for a 1e-9 false-positive rate over the figure's n values")
    terms = {
        "logits": Tolerance(norm=z_score(B * T * cfg.vocab) * s_fwd, abs=PRINT_F,
                            scale_of="max|reference logit|",
                            source=src.format(f"{s_fwd:.3g}") + "; + half a unit of %f"),
        "loss": Tolerance(abs=z_score(1) * loss_sigma(s_fwd) + PRINT_F,
                          source=src.format(f"{s_fwd:.3g}") + ", averaged over B T positions (log-softmax "
                                 "moves by at most sqrt(2) sigma rms|z| each) plus the float32 sum; + %f"),
        "step_loss": Tolerance(abs=z_score(1) * loss_sigma(s_bwd) + PRINT_F,
                               source=src.format(f"{s_bwd:.3g} (forward and backward)") + ", as the loss"),
    }
    for n in grad_max:
        terms[f"d{n}"] = Tolerance(norm=z_score(grad_numel[n]) * s_grad,
                                   scale_of="max|reference grad| of d" + n,
                                   source=src.format(f"{s_grad:.3g} (backward)"))
    return CudaTolerances(precision=precision, sigma_fwd=s_fwd, sigma_bwd=s_grad,
                          logits=terms["logits"].bound(scale=logits_max), loss=terms["loss"].bound(),
                          step_loss=terms["step_loss"].bound(),
                          grads={n: terms[f"d{n}"].bound(scale=grad_max[n]) for n in grad_max},
                          n_steps=n_steps, terms=terms)
