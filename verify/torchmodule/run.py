"""Running a module and the reference on the same weights and tokens.

`Outputs` is what both give: logits (B, T, V) in float64, the loss, and the gradients in llm.c's
layout (wte over the module's rows; "lm_head" for an untied head). The module runs in eval()
mode (dropout off) on its device, in fp32 (TF32 off), fp32 with TF32 (CUDA), or under bf16
autocast, with its parameters in their own dtype; the backward pass runs outside autocast, as
a training loop does.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
from gpt2_verify.reference.config import GPTConfig

from ..errors import InputError
from ..numerics.model import GPT2, Arch, forward_backward
from . import call as calls
from .layout import ParamMap


@dataclasses.dataclass
class Outputs:
    logits: np.ndarray  # (B, T, V)
    loss: float
    grads: dict[str, np.ndarray]


@contextlib.contextmanager
def precision(device: str, mode: str):
    """fp32: TF32 off (CUDA) and "highest" float32 matmuls; tf32: TF32 on (CUDA only); bf16:
    torch.autocast(device, bfloat16). Restores the global settings it touches."""
    import torch

    if mode == "tf32" and device != "cuda":
        raise InputError(None, f"--dtype tf32 on {device}: TF32 is a CUDA matmul mode; use fp32 or bf16")
    saved = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    try:
        torch.set_float32_matmul_precision("high" if mode == "tf32" else "highest")
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        torch.backends.cudnn.allow_tf32 = mode == "tf32"
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=mode == "bf16"):
            yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cuda.matmul.allow_tf32 = saved[1]
        torch.backends.cudnn.allow_tf32 = saved[2]


def module_loss(model, fn, batch: calls.Batch, *, cfg: GPTConfig, pmap: ParamMap, device: str, mode: str):
    """(logits, loss) tensors of one forward pass of the module."""
    import torch

    idx = torch.from_numpy(batch.tokens).to(device)
    tgt = torch.from_numpy(batch.targets).to(device)
    with precision(device, mode):
        try:
            logits, loss = fn(model, idx, tgt)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's forward: one line, exit 2
            raise InputError(None, f"the module's forward raised {type(e).__name__}: {e}") from None
    return calls.check_output(cfg, logits, loss, batch, pmap.vocab_rows)


def run_module(model, fn, batch: calls.Batch, *, cfg: GPTConfig, pmap: ParamMap, device: str,
               mode: str) -> Outputs:
    """One forward and backward pass of the module (gradients zeroed first)."""
    model.zero_grad(set_to_none=True)
    logits, loss = module_loss(model, fn, batch, cfg=cfg, pmap=pmap, device=device, mode=mode)
    try:
        loss.backward()
    except Exception as e:  # noqa: BLE001
        raise InputError(None, f"the module's backward raised {type(e).__name__}: {e}") from None
    lg = logits.detach().to("cpu", dtype=_f64()).numpy()[..., : cfg.vocab]
    return Outputs(lg, float(loss.detach().to("cpu", dtype=_f64())), pmap.grads())


def _f64():
    import torch

    return torch.float64


def run_reference(cfg: GPTConfig, params: dict, batch: calls.Batch, *, arch: Arch = GPT2,
                  rows: int | None = None) -> Outputs:
    """The float64 reference (as `arch`) on the module's weights and tokens; wte's gradient cut
    to the module's `rows` (V or Vp)."""
    fb = forward_backward(cfg, params, batch.tokens, batch.targets, dtype="float64", arch=arch)
    grads = dict(fb.grads)
    if rows is not None:
        grads["wte"] = grads["wte"][:rows]
        if "lm_head" in grads:
            grads["lm_head"] = grads["lm_head"][:rows]
    return Outputs(np.asarray(fb.logits), float(fb.loss), grads)
