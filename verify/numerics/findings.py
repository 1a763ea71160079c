"""One finding of a gradient-flow check, and the small helpers every check module shares."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from gpt2_verify.reference.config import GPTConfig, TensorSpec


@dataclasses.dataclass(frozen=True)
class Finding:
    check: str  # finite | nonzero | layernorm-zero | padding | initial-loss | adam-eps | neighbours |
    #             depth-growth | stream-level | width | mismatch | too-loose | tokens | missing | shape
    reason: str  # one line naming tensor and layer
    tensor: str | None = None  # llm.c tensor name; "logits"/"loss"/"embed"/"block{l}" for the
    #                            compare and width checks; None for the loss and stream checks
    layer: int | None = None
    severity: str = "fail"  # "fail" | "warn"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def where(name: str, layer: int | None) -> str:
    return name if layer is None else f"{name} layer {layer}"


def json_float(x: float | None) -> float | None:
    """A JSON-safe float (NaN/Inf -> None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def layer_slices(cfg: GPTConfig, spec: TensorSpec, arr: np.ndarray):
    """(layer, view) for each layer slice of a per-layer tensor, (None, arr) otherwise."""
    if spec.per_layer:
        for layer in range(cfg.layers):
            yield layer, arr[layer]
    else:
        yield None, arr
