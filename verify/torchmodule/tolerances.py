"""How far a correct PyTorch GPT-2 may land from the float64 reference, per (device, precision).

Every limit is normwise: max |module - reference| / max |reference| over a quantity (logits
(B, T, V); each of the 16 gradient tensors, wte over the module's rows; each step loss relative
to the reference's step-0 loss; the loss relative to itself). One table serves every width
because the probe weights keep the activations O(1) (verify.torchmodule.probe).

Measured tables: MARGIN x the worst figure of the correct peers (llm.c's train_gpt2.py GPT with
FLASH 0 and 1, Hugging Face GPT2LMHeadModel eager and sdpa) over MEASURED_ON
(`python benchmarks/measure_module_tolerances.py` prints the figures). Derived tables (CUDA,
where no GPU was at hand when they were written) scale a measured one by how the precision
rounds; `benchmarks/device_module.sh` prints how much of each they use on a GPU.

Step losses after AdamW updates (`steps_limit`). Step i's loss is the loss after i updates. The
update m/(sqrt(v)+eps) moves every weight by ~lr whatever its gradient's size, so where the
float32 gradient's rounding (or a first/second moment that nearly cancels) flips an update's
sign, fp32 and float64 weights part by ~2 lr on that element, and the next gradient, evaluated at
the parted weights, carries the difference on into later updates. The loss error after i updates
is then |dL/dw . dw| with dw a sum of i sign-flip vectors of +-2 lr entries over a fraction of
the N parameters: it grows like lr * sqrt(N) (random signs) and with i. The bound for step i >= 1
is therefore the measured step bound x max(1, sqrt(N / STEPS_BASE_PARAMS)) x max(1, lr / 1e-4)
x max(1, i / STEPS_MEASURED_UPDATES), where STEPS_BASE_PARAMS is the default config's N (the
smallest-but-one of MEASURED_ON's; the bound is 10x their worst) and STEPS_MEASURED_UPDATES the
updates measured; step 0 (no update yet) keeps the plain bound. At the default config and lr the bound
is the measured one, so a model whose trajectory is wrong still fails there.

Measured (llm.c's train_gpt2.py GPT, fp32 CPU, probe weights, 4 steps, seeds 0-1; step-loss
error relative to the step-0 loss, worst of steps 1-3 (`python benchmarks/measure_module_steps.py`)):
STEPS_BY_SIZE below. d12 (B4 T64, seed 42) is the outlier the rule was written for: 7.6e-6 at
step 2, so small configs alone do not show the growth; sqrt(N/N0) = 27 at d12 gives 4.9e-5,
which it uses 15.5% of (`gpt2-verify module tests/module_peers.py:llmc_gpt d12 --batch 4 --seq 64
--steps 3`: PASS, 4 min, 11.3 GiB peak RSS on 2 cores).

A NaN never passes (the comparison is `err <= limit`, false for NaN), and no limit reaches
MAX_LIMIT: a module whose outputs are 2x the reference's (normwise error 1) always fails.
"""

from __future__ import annotations

import dataclasses
import math

from ..tolerance import Tolerance as Bound

MARGIN = 10.0  # bound = MARGIN x the worst measured figure (as verify.llmc.harness's tables)
BF16_MARGIN = 4.0  # bf16's figures are its own rounding's floor, sampled 48 times; 10x would hide
#                    the LayerNorm eps and attention scale variants under bf16 (see --margins)
MAX_LIMIT = 0.5  # a 2x error (normwise 1.0) must fail, with room to spare
QUANTITIES = ("logits", "loss", "grads", "steps")
MEASURED_ON = ("torch 2.13.0 CPU, x86-64 AVX512 (2-core AMD EPYC), transformers 5.25.0; probe weights, "
               "seeds 0-2 of L2 C64 NH4 V1000 (B2 T16 and B4 T64), L3 C48 NH3 V500 (B2 T16), L1 C128 "
               "NH8 V2000 (B1 T32), 3 AdamW steps (train_gpt2.py's, weight decay 0.1): 48 runs per "
               "precision (`python benchmarks/measure_module_tolerances.py`)")
_SCALE = {"logits": "max|ref|", "loss": "|ref|", "grads": "max|ref| per tensor",
          "steps": "|reference step-0 loss|"}

# worst figures of the correct peers, per precision on CPU (measure_module_tolerances.py)
CPU_FP32_WORST = {"logits": 1.58e-06, "loss": 1.83e-07, "grads": 3.09e-06, "steps": 1.83e-07}
CPU_BF16_WORST = {"logits": 2.19e-02, "loss": 5.57e-04, "grads": 6.34e-02, "steps": 7.75e-04}
# step-loss growth (see the docstring): the measured steps bound holds up to these
STEPS_BASE_PARAMS = 168_192  # DEFAULT_CONFIG's parameter count (L2 C64 V1000, Vp 1024)
STEPS_BASE_LR = 1e-4  # train_gpt2.py's lr, the measured table's
STEPS_MEASURED_UPDATES = 3  # MEASURED_ON runs 3 steps; later ones extrapolate linearly
# (config, batch, seq, N params, worst step-loss error over steps 1-3 and seeds 0-1)
STEPS_BY_SIZE = (
    ("L2 C64 NH4 V1000", 2, 16, 168_192, 7.06e-08),
    ("L2 C64 NH4 V1000", 4, 64, 168_192, 7.35e-08),
    ("L4 C128 NH4 V1000", 4, 64, 929_536, 9.81e-08),
    ("L6 C256 NH8 V2000", 4, 64, 5_267_456, 1.42e-07),
    ("d12 (L12 C768 NH12 V50257)", 4, 64, 124_439_808, 7.6e-06),
)
# TF32 rounds matmul inputs to 10 explicit mantissa bits (unit roundoff 2^-11), bf16 to 7 (2^-8);
# both accumulate in float32, and bf16 autocast also rounds the matmul outputs. So TF32's error
# is at most bf16's scaled by 2^-3.
TF32_OVER_BF16 = 2.0 ** -3


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """The bounds of one (device, precision): quantity -> verify.tolerance.Tolerance (normwise;
    its `measured` is the worst correct peer's figure, None for a derived table)."""

    device: str
    precision: str
    bounds: dict
    derived: bool

    @property
    def key(self) -> str:
        return f"{self.device}-{self.precision}"

    @property
    def limits(self) -> dict:
        return {q: b.norm for q, b in self.bounds.items()}

    @property
    def measured(self) -> dict | None:
        return None if self.derived else {q: b.measured for q, b in self.bounds.items()}

    def to_dict(self) -> dict:
        return {"device": self.device, "precision": self.precision, "key": self.key,
                "derived": self.derived, "limits": self.limits, "measured": self.measured,
                "bounds": {q: b.to_dict() for q, b in self.bounds.items()}}


def _table(device: str, precision: str, worst: dict, margin: float, source: str, *,
           scale: float = 1.0, derived: bool = False) -> Tolerance:
    bounds = {}
    for q, v in worst.items():
        norm = min(MAX_LIMIT, float(f"{margin * scale * v:.2g}"))
        bounds[q] = Bound(norm=norm, scale_of=_SCALE[q], source=source,
                          measured=None if derived else v)
    return Tolerance(device, precision, bounds, derived)


TOLERANCES: dict[str, Tolerance] = {t.key: t for t in (
    _table("cpu", "fp32", CPU_FP32_WORST, MARGIN,
           f"measured: {MARGIN:g}x the worst correct peer; {MEASURED_ON}"),
    _table("cpu", "bf16", CPU_BF16_WORST, BF16_MARGIN,
           f"measured under torch.autocast('cpu', bfloat16): {BF16_MARGIN:g}x the worst correct peer; "
           f"{MEASURED_ON}"),
    _table("cuda", "fp32", CPU_FP32_WORST, MARGIN,
           f"derived: cpu-fp32's worst figures x {MARGIN:g} (TF32 off: float32 products and sums like "
           f"the CPU's, in another order); benchmarks/device_module.sh checks it", derived=True),
    _table("cuda", "tf32", CPU_BF16_WORST, MARGIN,
           f"derived: cpu-bf16's worst figures x 2^-3 (TF32 inputs keep 3 more mantissa bits than bf16, "
           f"outputs stay float32) x {MARGIN:g}; benchmarks/device_module.sh checks it",
           scale=TF32_OVER_BF16, derived=True),
    _table("cuda", "bf16", CPU_BF16_WORST, MARGIN,
           f"derived: cpu-bf16's worst figures x {MARGIN:g} (CUDA autocast rounds the same ops to bf16; "
           f"flash attention also rounds its probabilities); benchmarks/device_module.sh checks it",
           derived=True),
)}


def steps_limit(base: float, *, step: int, params: int, lr: float) -> float:
    """The bound on step `step`'s loss (after `step` AdamW updates) of a model with `params`
    parameters trained at `lr`, from the (device, precision) table's steps bound `base`."""
    if step == 0:
        return base
    growth = (max(1.0, math.sqrt(params / STEPS_BASE_PARAMS)) * max(1.0, lr / STEPS_BASE_LR)
              * max(1.0, step / STEPS_MEASURED_UPDATES))
    return min(MAX_LIMIT, float(f"{base * growth:.2g}"))


def tolerance_for(device: str, precision: str) -> Tolerance:
    key = f"{device}-{precision}"
    if key not in TOLERANCES:
        hint = " (TF32 is a CUDA matmul mode)" if precision == "tf32" else ""
        raise ValueError(f"no tolerance table for device {device!r} with {precision!r}{hint}; "
                         f"tables: {', '.join(TOLERANCES)}")
    return TOLERANCES[key]
