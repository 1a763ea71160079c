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

A NaN never passes (the comparison is `err <= limit`, false for NaN), and no limit reaches
MAX_LIMIT: a module whose outputs are 2x the reference's (normwise error 1) always fails.
"""

from __future__ import annotations

import dataclasses

MARGIN = 10.0  # limit = MARGIN x the worst measured figure (as verify.llmc.harness's tables)
MAX_LIMIT = 0.5  # a 2x error (normwise 1.0) must fail, with room to spare
QUANTITIES = ("logits", "loss", "grads", "steps")
MEASURED_ON = ("torch 2.13.0 CPU, x86-64 AVX512 (2-core AMD EPYC); probe weights seeds 0-2 of L2 C64 NH4 "
               "V1000 Vp1024 (B2 T16, B4 T64), L3 C48 NH3 V500 Vp512 (B2 T16), L1 C128 NH8 V2000 "
               "Vp2048 (B1 T32); 3 AdamW steps (train_gpt2.py's, weight decay 0.1)")
PRECISIONS = ("fp32", "tf32", "bf16")
DEVICES = ("cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class Tolerance:
    device: str
    precision: str
    limits: dict  # quantity -> normwise limit
    measured: dict | None  # quantity -> worst figure of the correct peers (None: derived)
    source: str

    @property
    def key(self) -> str:
        return f"{self.device}-{self.precision}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"key": self.key}


# worst figures of the correct peers (measure_module_tolerances.py), per precision on CPU
CPU_FP32_WORST = {"logits": 1.0e-06, "loss": 1.0e-07, "grads": 2.0e-06, "steps": 1.0e-07}
CPU_BF16_WORST = {"logits": 1.2e-02, "loss": 1.0e-04, "grads": 3.0e-02, "steps": 1.0e-04}
BF16_MARGIN = 4.0  # bf16 figures are a well-sampled noise floor; 10x would hide the LayerNorm eps
# TF32 rounds matmul inputs to 10 explicit mantissa bits (unit roundoff 2^-11), bf16 to 7 (2^-8),
# and both accumulate in float32; bf16 autocast also rounds the matmul outputs, TF32 does not.
# So TF32's error is at most bf16's scaled by 2^-3.
TF32_OVER_BF16 = 2.0 ** -3


def _limits(worst: dict, margin: float, scale: float = 1.0) -> dict:
    return {q: min(MAX_LIMIT, float(f"{margin * scale * v:.2g}")) for q, v in worst.items()}


TOLERANCES: dict[str, Tolerance] = {t.key: t for t in (
    Tolerance("cpu", "fp32", _limits(CPU_FP32_WORST, MARGIN), CPU_FP32_WORST,
              f"measured: {MARGIN:g}x the worst correct peer; {MEASURED_ON}"),
    Tolerance("cpu", "bf16", _limits(CPU_BF16_WORST, BF16_MARGIN), CPU_BF16_WORST,
              f"measured under torch.autocast('cpu', bfloat16): {BF16_MARGIN:g}x the worst correct "
              f"peer; {MEASURED_ON}"),
    Tolerance("cuda", "fp32", _limits(CPU_FP32_WORST, MARGIN), None,
              "derived: the cpu-fp32 table (TF32 off: float32 products and sums like the CPU's, in "
              "another order, which the 10x margin covers)"),
    Tolerance("cuda", "tf32", _limits(CPU_BF16_WORST, MARGIN, TF32_OVER_BF16), None,
              f"derived: cpu-bf16's worst figures x 2^-3 (TF32 inputs keep 3 more mantissa bits than "
              f"bf16, outputs stay float32) x {MARGIN:g}"),
    Tolerance("cuda", "bf16", _limits(CPU_BF16_WORST, MARGIN), None,
              f"derived: cpu-bf16's worst figures x {MARGIN:g} (CUDA autocast rounds the same ops to "
              f"bf16; flash attention also rounds its probabilities)"),
)}


def tolerance_for(device: str, precision: str) -> Tolerance:
    key = f"{device}-{precision}"
    if key not in TOLERANCES:
        hint = " (TF32 is a CUDA matmul mode)" if precision == "tf32" else ""
        raise ValueError(f"no tolerance table for device {device!r} with {precision!r}{hint}; "
                         f"tables: {', '.join(TOLERANCES)}")
    return TOLERANCES[key]
