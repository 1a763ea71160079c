"""FLOPs per token and peak throughput: what MFU is computed from.

FLOPs. flops_per_token = 6 N_mm + 12 L T C with N_mm = 12 L C^2 + Vp C, the parameters that
take part in a matrix multiply: qkvw, attprojw, fcw, fcprojw per layer and the tied lm_head
(wte over the padded vocab Vp: the reference, like llm.c, computes all Vp logits). Biases,
LayerNorm weights and wpe do no matmul and are left out. 6 = 2 FLOPs per multiply-add x (forward
+ 2 x backward: the gradient of each matmul's input and of its weight). 12 L T C is attention's
two (T x T) matmuls per head (q k^T and att v), 4 T C FLOPs per token and layer forward, x3 with
backward, counted over the full T x T square: no halving for the causal mask, which is what
the reference computes (it masks after the matmul) and PaLM's convention (Chowdhery et al.
2022, appendix B: 6N + 12 L H Q T, H Q = C; Kaplan et al. 2020, section 2.1: 6N). It is exactly
what torch.utils.flop_counter.FlopCounterMode counts for TorchModel's forward + backward
(tests/test_bench.py). Other conventions, for comparison (`flop_estimates`):
  - nanoGPT model.py estimate_mfu: N = get_num_params() (every parameter but wpe, padded wte
    included: adds the 13 C per layer + 2 C biases and LayerNorm weights), 6N + 12 L H Q T.
    0.085% above ours for d12 at T = 1024; 2.6% for L2 C32 Vp256 at T = 16.
  - llm.c train_gpt2.cu gpt2_estimate_mfu: N = num_parameters (wpe, biases, LayerNorm
    included), 6N + 6 L C T: attention halved for the causal mask.
All rows of this tool use ours (model FLOPs), also llm.c's rows: llm.c's CPU attention loops
over t2 <= t only, so its hardware FLOPs are lower, but the work asked of it is the same.

Peaks and MFU. mfu = achieved_tflops / peak_tflops, with the peak from PEAKS: the vendor's
dense bf16 tensor-core figure for the GPU (datasheets quote bf16 "with sparsity", twice the
dense figure; MFU needs the dense one). nanoGPT's bench.py and estimate_mfu hard-code the A100's
312 TFLOPS, which on an H100 gave MFU above 100% (karpathy/nanoGPT pull request #464): here the
peak is looked up from torch.cuda.get_device_name(), and an unknown device gets no MFU (null,
with the reason) rather than a wrong one. `peak_tflops` (--peak-tflops) overrides the table.
CPUs have no entry: their peak depends on the SIMD width (AVX2 / AVX-512 FMA units per core),
the clock under load and the core count, none of which torch reports; give --peak-tflops, or
ask for an estimate (cores x GHz x FLOPs per cycle, `cpu_peak_estimate`).
"""

from __future__ import annotations

import dataclasses
import math
import re

from gpt2_verify.reference.config import GPTConfig

# ---- FLOPs -------------------------------------------------------------------------------------

def matmul_params(cfg: GPTConfig) -> int:
    """Parameters that take part in a matmul: 12 L C^2 (qkvw 3C^2, attprojw C^2, fcw 4C^2,
    fcprojw 4C^2 per layer) + Vp C (the tied lm_head over the padded vocab)."""
    return 12 * cfg.layers * cfg.channels ** 2 + cfg.padded_vocab * cfg.channels


def flops_per_token(cfg: GPTConfig, *, seq: int) -> int:
    """Forward + backward matmul FLOPs per token at sequence length `seq`: 6 N_mm + 12 L T C
    (module docstring). Exactly FlopCounterMode's count for TorchModel divided by B T."""
    return 6 * matmul_params(cfg) + 12 * cfg.layers * seq * cfg.channels


def flop_estimates(cfg: GPTConfig, *, seq: int) -> dict[str, int]:
    """Ours and the two common estimates, per token (module docstring)."""
    L, C = cfg.layers, cfg.channels
    return {"ours": flops_per_token(cfg, seq=seq),
            "nanogpt_estimate_mfu": 6 * cfg.num_params_nanogpt + 12 * L * seq * C,
            "llmc_gpt2_estimate_mfu": 6 * cfg.num_params_padded + 6 * L * C * seq}


def mfu(achieved_tflops: float, peak: "PeakLookup") -> float | None:
    """Model FLOPs utilization: achieved / peak; None without a peak (unknown device, CPU)."""
    return achieved_tflops / peak.tflops if peak.tflops else None


# ---- peak table --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Peak:
    """One GPU's dense peak for one dtype. pattern: a regular expression matched (re.search)
    against torch.cuda.get_device_name()."""

    pattern: str
    gpu: str
    dtype: str
    tflops: float
    source: str


_A100 = ("NVIDIA A100 Tensor Core GPU datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf): "
         "BF16 Tensor Core 312 TFLOPS (624 with sparsity), SXM and PCIe, 40 and 80 GB")
_H100 = ("NVIDIA H100 Tensor Core GPU Architecture whitepaper (gtc22-whitepaper-hopper), table 'NVIDIA H100 "
         "compared to A100': peak BF16 Tensor TFLOPS with FP32 accumulate {}; the H100 datasheet "
         "quotes the sparse figure")
PEAKS: tuple[Peak, ...] = (
    Peak(r"\bA100\b", "A100 (SXM4 / PCIe)", "bf16", 312.0, _A100),
    Peak(r"\bH100\b.*\bNVL\b", "H100 NVL", "bf16", math.nan, "not listed: no dense figure sourced"),
    Peak(r"\bH100\b.*\bPCIe\b", "H100 PCIe", "bf16", 756.0,
         _H100.format("756 / 1,513 sparse (H100 PCIe)")),
    Peak(r"\bH100\b.*(\bSXM|HBM3\b)", "H100 SXM5", "bf16", 989.4,
         _H100.format("989.4 / 1,978.9 sparse (H100 SXM5)")
         + "; torch names the SXM5 part 'NVIDIA H100 80GB HBM3'"),
    Peak(r"\bH200\b.*\bNVL\b", "H200 NVL", "bf16", math.nan, "not listed: no dense figure sourced"),
    Peak(r"\bH200\b", "H200 SXM", "bf16", 989.4,
         "NVIDIA H200 Tensor Core GPU datasheet: BF16 Tensor Core 1,979 TFLOPS with sparsity (H200 SXM); "
         "dense 989.4, the H100 SXM5 whitepaper's figure (1,979 is its 1,978.9 sparse rounded; same GH100 "
         "compute, only the memory differs)"),
    Peak(r"\bL4\b", "L4", "bf16", 121.0,
         "NVIDIA L4 Tensor Core GPU datasheet: BF16 Tensor Core 242 TFLOPS with sparsity; dense = half"),
    Peak(r"\bA10\b", "A10", "bf16", 125.0,
         "NVIDIA A10 Tensor Core GPU datasheet: BF16 Tensor Core 125 TFLOPS (250 with sparsity). "
         "Not the A10G (AWS), which has no NVIDIA datasheet"),
    Peak(r"RTX 4090$", "GeForce RTX 4090", "bf16", 165.2,
         "NVIDIA Ada GPU architecture whitepaper (nvidia-ada-gpu-architecture.pdf), RTX 4090: peak BF16 "
         "Tensor TFLOPS with FP32 accumulate 165.2 (330.4 with sparsity); llm.c llmc/mfu.h uses the same"),
)
CPU_PEAK_REASON = ("no peak table entry for CPUs: their peak depends on the SIMD width, the clock under "
                   "load and the core count; give --peak-tflops or --cpu-peak-estimate GHZ,FLOPS_PER_CYCLE")


@dataclasses.dataclass(frozen=True)
class PeakLookup:
    tflops: float | None
    source: str | None
    reason: str  # why there is (or is no) peak


def lookup_peak(device_name: str, *, dtype: str = "bf16", kind: str = "cuda") -> PeakLookup:
    """The dense peak for `device_name` (as torch.cuda.get_device_name() spells it) in `dtype`.
    Unknown devices, other dtypes and CPUs give tflops None with the reason."""
    if kind == "cpu":
        return PeakLookup(None, None, CPU_PEAK_REASON)
    for p in PEAKS:
        if re.search(p.pattern, device_name):
            if p.dtype != dtype:
                continue
            if math.isnan(p.tflops):
                return PeakLookup(None, None, f"{device_name!r} is {p.gpu}: {p.source}; give --peak-tflops")
            return PeakLookup(p.tflops, f"{p.gpu}: {p.source}", f"{device_name!r} matched {p.gpu}")
    known = ", ".join(p.gpu for p in PEAKS if not math.isnan(p.tflops))
    return PeakLookup(None, None, f"no {dtype} peak for {device_name!r} in the table ({known}); "
                                  f"give --peak-tflops")


def cpu_peak_estimate(*, cores: int, ghz: float, flops_per_cycle: float) -> PeakLookup:
    """cores x GHz x FLOPs per cycle per core (e.g. 2 AVX-512 FMA units x 16 float32 lanes x 2 =
    64), in TFLOPS. Only an estimate: turbo and AVX-512 clock offsets move it."""
    for name, v in (("cores", cores), ("ghz", ghz), ("flops_per_cycle", flops_per_cycle)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    tf = cores * ghz * flops_per_cycle / 1e3
    return PeakLookup(tf, f"estimate: {cores} cores x {ghz:g} GHz x {flops_per_cycle:g} FLOP/cycle "
                          f"(user-given)", "estimated on request")
