"""`gpt2-verify gradflow`: gradient flow, activation scales, the width sweep and a candidate's
numbers against the reference, one module per job, gathered here:

    gradients.py    check_gradients, initial_loss_bound
    activations.py  activation_scales, expected_stream_ratio
    widthsweep.py   width_sweep (its own AdamW loop), predicted_scales
    gradcompare.py  compare_numerics, TOLERANCES, token_mismatch, measure_fp32_errors
    findings.py     Finding


Every function returns a dataclass with `to_dict()` (JSON-ready, the config as cfg.as_dict())
and a list of `Finding`s, each with a one-line `reason` naming the tensor and layer.

    check_gradients(cfg, grads, *, loss, params, ...)   does every parameter learn?
        finite        every gradient value finite (count, first index)
        nonzero       every tensor and every layer slice gets a non-zero gradient; every wte row
                      < V too (the tied lm head touches all of them), wpe rows < T too
        padding       wte rows V..Vp-1 and wpe rows >= T get exactly zero
        initial-loss  a random init's loss near ln V + s^2/2 (derivation at `initial_loss_bound`)
        adam-eps      the first AdamW update (llm.c gpt2_update, t=1: m_hat = g, v_hat = g^2, so
                      |update| = lr |g| / (|g| + eps) ~ lr) has rms >= lr/2, i.e. the gradient is
                      not buried under AdamW's eps
        neighbours    a layer's gradient norm within NEIGHBOUR_FACTOR of the median of its
                      neighbouring layers' (same tensor, up to NEIGHBOUR_SPAN layers away)
    activation_scales(cfg, params, tokens)              mean |x| of the residual stream per block
    width_sweep(widths=..., layers=..., steps=...)      muP-style coordinate check
    compare_numerics(reference, candidate, tolerances=TOLERANCES[...])
        per-quantity max abs / rel error, mismatches, % of the allowed error used, and rules so
        loose that a 2x error (or a NaN) would pass. TOLERANCES: "fp32-cpu" (measured, tight),
        "llmc-test_gpt2.c", "llmc-test_gpt2.cu-bf16", "llmc-test_gpt2.cu-fp32" (llm.c's own
        rules, reproduced in float32 as its C code evaluates them)

The model itself is verify.numerics.model (forward_backward, random_tokens), the optimizer
verify.numerics.adamw (AdamW, ADAMW); torch is imported only when a function needs a forward pass.
"""

from __future__ import annotations

from .activations import (  # noqa: F401
    ActivationReport,
    activation_scales,
    expected_stream_ratio,
    stream_level_limit,
    unscaled_stream_ratio,
)
from .findings import Finding, json_float  # noqa: F401
from .gradcompare import (  # noqa: F401
    MEASURED_CONFIGS,
    TOLERANCES,
    NumericsReport,
    QuantityResult,
    ToleranceTable,
    compare_numerics,
    measure_fp32_errors,
    normwise_errors,
    scaled_params,
    token_mismatch,
)
from .gradients import GradientReport, GradRow, LossBound, TensorSummary, check_gradients, initial_loss_bound  # noqa: F401
from .widthsweep import SWEEP_INITS, WidthSweep, predicted_scales, width_sweep  # noqa: F401

SCHEMA = "gpt2-verify/gradflow/1"
