"""How a module is called, and which tokens and targets it is given.

Conventions (detected from the forward's signature, or forced):

    "idx-targets"  train_gpt2.py / nanoGPT: logits, loss = model(idx, targets), targets[t] the
                   token after idx[t], every position scored.
    "hf"           Hugging Face: model(input_ids=idx, labels=idx) returns an object with
                   .logits and .loss; the labels are shifted inside (labels[t + 1] is position
                   t's target), so the last position is not scored: the reference is run with
                   that target ignored.
    "adapter"      --call FILE.py:fn: fn(model, idx, targets) -> (logits, loss), with the
                   idx-targets tokens.

Both conventions see the same idx; only which positions count differs, and the reference (and
each variant it is re-run as) uses the very same tokens and targets.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import numpy as np
from gpt2_verify.reference.config import GPTConfig

from ..errors import InputError
from ..numerics.model import IGNORE

CONVENTIONS = ("auto", "idx-targets", "hf")


@dataclasses.dataclass(frozen=True)
class Batch:
    tokens: np.ndarray  # (B, T) int64
    targets: np.ndarray  # (B, T) int64, IGNORE where not scored


def detect(model) -> str:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "idx-targets"
    return "hf" if "input_ids" in params and "labels" in params else "idx-targets"


def make_batch(cfg: GPTConfig, convention: str, *, batch: int, seq: int, seed: int) -> Batch:
    """idx (B, T) and its targets, cut from one (B, T + 1) draw of numpy PCG64(seed) over [0, V)
    (verify.numerics.model.random_tokens)."""
    from ..numerics.model import random_tokens

    x, y = random_tokens(cfg, batch=batch, seq=seq, seed=seed)
    x, y = x.astype(np.int64), y.astype(np.int64)
    if convention == "hf":
        y = y.copy()
        y[:, -1] = IGNORE  # HF's shift leaves the last position without a label
    return Batch(x, y)


def _unpack(out, what: str):
    if isinstance(out, (tuple, list)) and len(out) >= 2:
        return out[0], out[1]
    if isinstance(out, dict) and "logits" in out:
        return out["logits"], out.get("loss")
    if hasattr(out, "logits"):
        return out.logits, getattr(out, "loss", None)
    raise InputError(None, f"{what} returned {type(out).__name__}; expected (logits, loss) or an "
                           f"object with .logits and .loss")


def caller(convention: str, adapter: Callable | None = None) -> Callable:
    """call(model, idx, targets) -> (logits, loss) for the convention (torch tensors in, out)."""
    if adapter is not None:
        return lambda model, idx, tgt: _unpack(adapter(model, idx, tgt), "the --call adapter")
    if convention == "hf":
        return lambda model, idx, tgt: _unpack(model(input_ids=idx, labels=idx), "model(input_ids=, labels=)")
    if convention == "idx-targets":
        return lambda model, idx, tgt: _unpack(model(idx, tgt), "model(idx, targets)")
    raise ValueError(f"convention must be one of {CONVENTIONS[1:]}, got {convention!r}")


def check_output(cfg: GPTConfig, logits, loss, batch: Batch, vocab_rows: int):
    """The logits (B, T, V or Vp) and a scalar loss, or InputError saying what came back."""
    B, T = batch.tokens.shape
    shape = tuple(getattr(logits, "shape", ()))
    if shape[:2] == (B, 1) and T > 1:
        raise InputError(None, f"the module returned logits for the last position only {shape}; "
                               f"it must return all T={T} positions when given targets")
    if len(shape) != 3 or shape[:2] != (B, T) or shape[2] not in (cfg.vocab, vocab_rows):
        raise InputError(None, f"the module returned logits of shape {shape}, expected "
                               f"{(B, T, cfg.vocab)}" + (f" or {(B, T, vocab_rows)}"
                                                        if vocab_rows != cfg.vocab else ""))
    if loss is None or tuple(getattr(loss, "shape", (1,))) not in ((), (1,)):
        raise InputError(None, f"the module returned loss {loss if loss is None else tuple(loss.shape)}; "
                               f"expected a scalar tensor (the mean cross-entropy)")
    return logits, loss
