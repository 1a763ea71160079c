"""GPT-2 forward/backward exactly as llm.c's train_gpt2.c computes it, and its training loop.

One code path, two precisions: float64 is the judge every other implementation is graded
against, float32 the fast path (and what llm.c's CPU build computes in). Torch autograd (CPU by
default) does the backward pass; the math is re-expressed from llm.c's train_gpt2.c:

    encoder_forward     x = wte[token] + wpe[t]                                   # (B, T, C)
    per layer l:
      layernorm_forward  eps 1e-5, biased variance (divide by C)
      matmul_forward     qkv = ln1 @ qkvw[l]^T + qkvb[l]                        # (B, T, 3C)
      attention_forward  q, k, v split in that order; head h owns channels [h*hs, (h+1)*hs);
                         scores scaled by 1/sqrt(hs); softmax over t2 <= t (causal)
      matmul_forward     attproj, then residual_forward
      layernorm_forward, fc (C -> 4C), gelu_forward (tanh approximation), fcproj (4C -> C),
      residual_forward
    layernorm_forward    final (lnfw, lnfb)
    matmul_forward       logits = x @ wte^T over the padded vocab Vp (no bias)      # (B, T, Vp)
    softmax_forward      over the first V logits only: llm.c's padded logits never enter
    crossentropy_forward loss = mean over B*T of -log p[target]

Parameters use llm.c's 16-tensor layout (reference.config.parameter_table): weights are
(out, in), per-layer tensors stacked on a leading L axis, wte has Vp rows of which the last
Vp - V are padding (their gradient is exactly 0 because they only feed ignored logits).

Deliberately not copied from llm.c's float code: its softmaxes start the running max at
-10000.0f (wrong only if every score is below -10000) and its bias correction uses powf in
float; this module computes the exact softmax in the chosen dtype (and numerics.adamw the
corrections in double).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np
from gpt2_verify.reference.config import (
    GLOBAL_TENSORS,
    PER_LAYER_TENSORS,
    TENSOR_NAMES,
    GPTConfig,
    parameter_table,
)

# the optimizer lives in .adamw; ADAMW is re-exported because callers pick settings with the model
from .adamw import ADAMW, AdamW, adamw_step  # noqa: F401

LN_EPS = 1e-5  # llm.c layernorm_forward
GELU_SCALE = math.sqrt(2.0 / math.pi)  # llm.c gelu_forward's GELU_SCALING_FACTOR
_DTYPES = ("float64", "float32")
IGNORE = -1  # a target that takes no part in the loss (train_gpt2.py's cross_entropy ignore_index=-1)


@dataclasses.dataclass(frozen=True)
class Arch:
    """What the forward computes. The defaults are GPT-2 as llm.c computes it; every other value
    is a common departure from it, so the float64 reference can be re-run as the variant an
    implementation under test may have (verify.module names the one it matches).

    gelu:        "tanh" (GPT-2, llm.c gelu_forward) | "erf" (exact GELU, torch's nn.GELU())
    ln_eps:      LayerNorm's eps, inside the sqrt (llm.c 1e-5)
    ln_unbiased: variance divided by C - 1 (torch.var's default) instead of C
    attn_scale:  "head" 1/sqrt(hs) | "channels" 1/sqrt(C) | "head-linear" 1/hs | "none" 1
    causal:      mask t2 > t (False: every position attends to the whole sequence)
    padded_softmax: softmax and loss over all Vp logits (the padded ones included)
    tied:        lm_head is wte; False: a separate "lm_head" tensor (Vp, C) in params/grads
    attn_residual, mlp_residual: x + branch(x) (False: the branch's output replaces x)
    positions:   "absolute" wpe[t] | "none" (no position embedding) | "shifted" wpe[t + 1]
    """

    gelu: str = "tanh"
    ln_eps: float = LN_EPS
    ln_unbiased: bool = False
    attn_scale: str = "head"
    causal: bool = True
    padded_softmax: bool = False
    tied: bool = True
    attn_residual: bool = True
    mlp_residual: bool = True
    positions: str = "absolute"

    def __post_init__(self) -> None:
        for field, allowed in (("gelu", ("tanh", "erf")),
                               ("attn_scale", ("head", "channels", "head-linear", "none")),
                               ("positions", ("absolute", "none", "shifted"))):
            if getattr(self, field) not in allowed:
                raise ValueError(f"Arch.{field} must be one of {allowed}, got {getattr(self, field)!r}")
        if not self.ln_eps >= 0:
            raise ValueError(f"Arch.ln_eps must be >= 0, got {self.ln_eps}")


GPT2 = Arch()


@dataclasses.dataclass
class ForwardBackward:
    """Result of one forward (and optionally backward) pass."""

    logits: np.ndarray  # (B, T, V): the first V of Vp logits, like llm.c's debug state
    loss: float | None  # mean cross-entropy over B*T; None when no targets were given
    grads: dict[str, np.ndarray] | None  # llm.c name -> gradient in llm.c shapes (wte (Vp, C))
    activations: dict[str, np.ndarray] | None  # "block{l}": residual stream after block l (B, T, C)


def _torch():
    import torch  # imported lazily: the CLI and formats never need it

    return torch


def _check_dtype(dtype: str) -> str:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    return dtype


def _check_tokens(cfg: GPTConfig, tokens, what: str, *, limit: int) -> np.ndarray:
    a = np.asarray(tokens)
    if a.ndim != 2:
        raise ValueError(f"{what} must be a (B, T) integer array, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integers, got dtype {a.dtype}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{what} must have B >= 1 and T >= 1, got shape {a.shape}")
    if a.shape[1] > cfg.max_seq_len:
        raise ValueError(f"{what} has T={a.shape[1]} > max_seq_len={cfg.max_seq_len}; use T <= maxT")
    if a.size and (a.min() < 0 or a.max() >= limit):
        raise ValueError(f"{what} values must lie in [0, {limit}), got [{a.min()}, {a.max()}]")
    return a.astype(np.int64)


def _check_targets(cfg: GPTConfig, targets, idx: np.ndarray) -> np.ndarray:
    a = np.asarray(targets)
    if a.ndim == 2 and a.dtype.kind in "iu" and a.size and a.min() == IGNORE:
        kept = np.where(a == IGNORE, 0, a)
        if not np.any(a != IGNORE):
            raise ValueError("every target is the ignore value -1: nothing to compute a loss on")
        out = _check_tokens(cfg, kept, "targets", limit=cfg.vocab)
        out[a == IGNORE] = IGNORE
    else:
        out = _check_tokens(cfg, a, "targets", limit=cfg.vocab)
    if out.shape != idx.shape:
        raise ValueError(f"targets shape {out.shape} differs from tokens shape {idx.shape}")
    return out


def _check_params(cfg: GPTConfig, params: Mapping[str, np.ndarray], arch: Arch = GPT2) -> None:
    if not arch.tied and "lm_head" in params and np.shape(params["lm_head"]) != (cfg.padded_vocab,
                                                                                cfg.channels):
        raise ValueError(f"params['lm_head'] has shape {np.shape(params['lm_head'])}, an untied head "
                         f"needs ({cfg.padded_vocab}, {cfg.channels})")
    for spec in parameter_table(cfg):
        if spec.name not in params:
            raise ValueError(f"params lacks {spec.name!r}; give all 16 llm.c tensors {TENSOR_NAMES}")
        shape = tuple(np.shape(params[spec.name]))
        if shape != spec.shape:
            raise ValueError(f"params[{spec.name!r}] has shape {shape}, llm.c's layout needs {spec.shape}")


def _layernorm(torch, x, w, b, arch: Arch = GPT2):
    # llm.c layernorm_forward: biased variance (mean of squared deviations), eps inside the sqrt
    mean = x.mean(dim=-1, keepdim=True)
    xc = x - mean
    if arch.ln_unbiased:
        var = (xc * xc).sum(dim=-1, keepdim=True) / (x.shape[-1] - 1)
    else:
        var = (xc * xc).mean(dim=-1, keepdim=True)
    return xc * torch.rsqrt(var + arch.ln_eps) * w + b


def _gelu(torch, x, arch: Arch = GPT2):
    if arch.gelu == "erf":  # exact GELU: x Phi(x)
        return 0.5 * x * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))
    # llm.c gelu_forward: tanh approximation
    return 0.5 * x * (1.0 + torch.tanh(GELU_SCALE * (x + 0.044715 * x * x * x)))


_ATTN_SCALE = {"head": lambda hs, C: 1.0 / math.sqrt(hs), "channels": lambda hs, C: 1.0 / math.sqrt(C),
               "head-linear": lambda hs, C: 1.0 / hs, "none": lambda hs, C: 1.0}


def _attention(torch, qkv, NH: int, arch: Arch = GPT2):
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // NH
    # llm.c attention_forward: q at [0, C), k at [C, 2C), v at [2C, 3C); head h at h*hs
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:3 * C]
    q = q.reshape(B, T, NH, hs).transpose(1, 2)  # (B, NH, T, hs)
    k = k.reshape(B, T, NH, hs).transpose(1, 2)
    v = v.reshape(B, T, NH, hs).transpose(1, 2)
    att = (q @ k.transpose(-1, -2)) * _ATTN_SCALE[arch.attn_scale](hs, C)  # (B, NH, T, T)
    if arch.causal:
        mask = torch.ones(T, T, dtype=torch.bool, device=qkv.device).tril()
        att = att.masked_fill(~mask, float("-inf"))
    att = torch.softmax(att, dim=-1)
    y = att @ v  # (B, NH, T, hs)
    return y.transpose(1, 2).reshape(B, T, NH * hs)


def _embed(P: dict, idx, T: int, arch: Arch):
    x = P["wte"][idx]  # (B, T, C)
    if arch.positions == "absolute":
        return x + P["wpe"][:T]
    if arch.positions == "shifted":
        return x + P["wpe"][1:T + 1]
    return x


def _forward(torch, cfg: GPTConfig, P: dict, idx, *, keep_activations: bool, arch: Arch = GPT2):
    """Logits over Vp (B, T, Vp) and, if asked, the residual stream after each block."""
    NH = cfg.heads
    T = idx.shape[1]
    if arch.positions == "shifted" and T + 1 > cfg.max_seq_len:
        raise ValueError(f"positions='shifted' reads wpe[T]: needs T < maxT = {cfg.max_seq_len}")
    linear = torch.nn.functional.linear  # x @ w^T + b with llm.c's (out, in) weights
    # one unbind per stacked tensor: its backward stacks the L layer gradients once, where
    # indexing P[name][layer] would allocate and add a zero (L, ...) gradient per layer
    W = {name: P[name].unbind(0) for name in PER_LAYER_TENSORS}
    x = _embed(P, idx, T, arch)  # (B, T, C)
    acts = {} if keep_activations else None
    for layer in range(cfg.layers):
        w = {name: t[layer] for name, t in W.items()}
        h = _layernorm(torch, x, w["ln1w"], w["ln1b"], arch)
        qkv = linear(h, w["qkvw"], w["qkvb"])  # (B, T, 3C): h @ qkvw^T + qkvb
        a = linear(_attention(torch, qkv, NH, arch), w["attprojw"], w["attprojb"])
        x = x + a if arch.attn_residual else a
        h = _layernorm(torch, x, w["ln2w"], w["ln2b"], arch)
        h = _gelu(torch, linear(h, w["fcw"], w["fcb"]), arch)  # (B, T, 4C)
        m = linear(h, w["fcprojw"], w["fcprojb"])
        x = x + m if arch.mlp_residual else m
        if acts is not None:
            acts[f"block{layer}"] = x.detach()
    x = _layernorm(torch, x, P["lnfw"], P["lnfb"], arch)
    head = P["wte"] if arch.tied else P["lm_head"]
    return x @ head.T, acts  # (B, T, Vp)


def _loss(torch, cfg: GPTConfig, logits_p, tgt, arch: Arch):
    """Mean cross-entropy over the targets that are not IGNORE; the softmax spans the first V
    logits (llm.c), or all Vp with arch.padded_softmax."""
    logits = logits_p if arch.padded_softmax else logits_p[..., :cfg.vocab]
    logp = torch.log_softmax(logits, dim=-1)
    keep = tgt != IGNORE
    picked = logp.gather(-1, tgt.clamp(min=0)[..., None])[..., 0]  # (B, T)
    if bool(keep.all()):
        return -picked.mean()
    return -(picked * keep).sum() / keep.sum()


def forward_backward(cfg: GPTConfig, params: Mapping[str, np.ndarray], tokens: np.ndarray,
                     targets: np.ndarray | None, *, dtype: str = "float64", backward: bool = True,
                     keep_activations: bool = False, device: str = "cpu",
                     arch: Arch = GPT2) -> ForwardBackward:
    """One llm.c gpt2_forward (+ gpt2_backward) on `tokens` (B, T) with `targets` (B, T).

    targets None -> no loss and no gradients (backward is then ignored). A target -1 (IGNORE)
    takes no part in the loss (the mean is over the others). Gradients are the gradient of the
    mean loss, as llm.c's (dlosses = 1/(B*T)), in llm.c shapes. `arch`: GPT-2 (llm.c) unless a
    variant is asked for (Arch); an untied arch reads params["lm_head"] (default: a copy of
    wte) and returns its gradient as grads["lm_head"]."""
    torch = _torch()
    tdt = getattr(torch, _check_dtype(dtype))
    _check_params(cfg, params, arch)
    idx = _check_tokens(cfg, tokens, "tokens", limit=cfg.vocab)
    tgt = None if targets is None else _check_targets(cfg, targets, idx)
    want_grad = backward and tgt is not None
    names = TENSOR_NAMES if arch.tied else TENSOR_NAMES + ("lm_head",)
    if not arch.tied and "lm_head" not in params:
        params = {**params, "lm_head": np.array(params["wte"])}
    P = {}
    for name in names:
        a = np.asarray(params[name])
        if a.dtype == np.dtype(dtype) and a.flags.c_contiguous and a.flags.writeable:
            t = torch.from_numpy(a).to(device)  # no copy on CPU (d12 float64 is 1 GB); never written
        else:
            t = torch.tensor(a, dtype=tdt, device=device)
        P[name] = t.requires_grad_(want_grad)
    idx_t = torch.from_numpy(idx).to(device)
    with torch.set_grad_enabled(want_grad):
        logits_p, acts = _forward(torch, cfg, P, idx_t, keep_activations=keep_activations, arch=arch)
        logits = logits_p[..., :cfg.vocab]  # (B, T, V): padded logits never enter the loss
        loss = None
        if tgt is not None:
            loss = _loss(torch, cfg, logits_p, torch.from_numpy(tgt).to(device), arch)
        grads = None
        if want_grad:
            loss.backward()
            grads = {}
            for name in names:
                g = P[name].grad
                grads[name] = (np.zeros(P[name].shape, dtype=dtype) if g is None
                               else g.detach().cpu().numpy())
    return ForwardBackward(
        logits=logits.detach().cpu().numpy(),
        loss=None if loss is None else float(loss.detach()),
        grads=grads,
        activations=None if acts is None else {k: v.cpu().numpy() for k, v in acts.items()},
    )


def random_tokens(cfg: GPTConfig, *, batch: int, seq: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Reproducible inputs: x, y int32 (B, T) with y = x shifted by one, both cut from one
    (B, T+1) draw of numpy Generator(PCG64(seed)).integers(0, V)."""
    if batch < 1 or seq < 1:
        raise ValueError(f"batch and seq must be >= 1, got batch={batch} seq={seq}")
    if seq > cfg.max_seq_len:
        raise ValueError(f"seq={seq} > max_seq_len={cfg.max_seq_len}; use seq <= maxT")
    rng = np.random.Generator(np.random.PCG64(seed))
    draw = rng.integers(0, cfg.vocab, size=(batch, seq + 1), dtype=np.int64).astype(np.int32)
    return np.ascontiguousarray(draw[:, :-1]), np.ascontiguousarray(draw[:, 1:])


@dataclasses.dataclass
class TrainState:
    """What llm.c carries from one step to the next: parameters, AdamW moments m and v, and the
    number of updates done (the next update uses t = step + 1)."""

    params: dict[str, np.ndarray]
    m: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    v: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    step: int = 0

    @classmethod
    def fresh(cls, params: Mapping[str, np.ndarray], *, dtype: str = "float64") -> "TrainState":
        """A copy of `params` in `dtype`, moments zero, step 0 (llm.c's calloc'd m_memory/v_memory)."""
        _check_dtype(dtype)
        return cls({name: np.array(params[name], dtype=dtype) for name in TENSOR_NAMES})


def train_steps(cfg: GPTConfig, params: Mapping[str, np.ndarray] | None, tokens: np.ndarray,
                targets: np.ndarray, *, steps: int, optimizer: AdamW, dtype: str = "float64",
                state: TrainState | None = None, arch: Arch = GPT2) -> list[float]:
    """`steps` llm.c training steps on the same batch: forward+backward, (clip), AdamW update;
    gradients are fresh each step (llm.c gpt2_zero_grad). Returns the loss of each step, computed
    before its update.

    Without `state`, training starts from a copy of `params` (not modified) with zero moments.
    With `state` (TrainState.fresh(params) or one a previous call advanced), training continues
    from it and updates it in place; `params` must then be None."""
    _check_dtype(dtype)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if targets is None:
        raise ValueError("train_steps needs targets (the loss is what it trains on)")
    if state is None:
        if params is None:
            raise ValueError("give params, or state=TrainState.fresh(params) to continue a run")
        state = TrainState.fresh(params, dtype=dtype)
    elif params is not None:
        raise ValueError("give either params or state, not both (state carries its own params)")
    elif any(a.dtype != np.dtype(dtype) for a in state.params.values()):
        raise ValueError(f"state holds params of another dtype than {dtype}; "
                         f"make it with TrainState.fresh(params, dtype={dtype!r})")
    losses = []
    for _ in range(steps):
        fb = forward_backward(cfg, state.params, tokens, targets, dtype=dtype, arch=arch)
        losses.append(fb.loss)
        state.step += 1
        adamw_step(state.params, fb.grads, state.m, state.v, state.step, optimizer)
    return losses


class TorchModel:
    """The reference model held as torch tensors on a device, for training loops and benchmarks.

    `forward_backward` and `train_steps` take and return numpy arrays (the judge's interface:
    every call starts from the caller's values). A loop of hundreds of steps (`ablate`) or a
    timing (`bench`) keeps parameters, gradients and AdamW moments on the device instead;
    the math is the same `_forward` and the same `adamw_step` (numerics.adamw).

        model = TorchModel(cfg, params, dtype="float32", device="cpu")
        loss = model.loss(x, y)         # forward; x, y int (B, T) numpy or torch
        loss.backward()                 # gradients in model.params[name].grad
        model.step(opt)                 # clip (if opt says so), AdamW update, zero the grads
    """

    def __init__(self, cfg: GPTConfig, params: Mapping[str, np.ndarray], *, dtype: str = "float32",
                 device: str = "cpu"):
        torch = self.torch = _torch()
        _check_params(cfg, params)
        self.cfg, self.device = cfg, device
        tdt = getattr(torch, _check_dtype(dtype))
        self.params = {name: torch.tensor(np.asarray(params[name]), dtype=tdt, device=device)
                       .requires_grad_(True) for name in TENSOR_NAMES}
        self.m = {name: torch.zeros_like(p) for name, p in self.params.items()}
        self.v = {name: torch.zeros_like(p) for name, p in self.params.items()}
        self.t = 0  # updates done; the next uses t + 1

    def _tokens(self, tokens, what: str):
        if isinstance(tokens, np.ndarray):
            tokens = self.torch.from_numpy(_check_tokens(self.cfg, tokens, what, limit=self.cfg.vocab))
        return tokens.to(self.device, dtype=self.torch.long)

    def loss(self, tokens, targets, *, autocast: str | None = None, keep_activations: bool = False):
        """Mean cross-entropy over the first V logits (a 0-d tensor); with keep_activations,
        (loss, {"block<l>": residual stream after block l}). autocast: e.g. "bfloat16" runs the
        forward under torch.autocast on the model's device (mixed precision, as llm.c's CUDA
        build trains)."""
        torch = self.torch
        idx, tgt = self._tokens(tokens, "tokens"), self._tokens(targets, "targets")
        ctx = (torch.autocast(device_type=torch.device(self.device).type, dtype=getattr(torch, autocast))
               if autocast else _nullcontext())
        with ctx:
            logits_p, acts = _forward(torch, self.cfg, self.params, idx, keep_activations=keep_activations)
            logits = logits_p[..., :self.cfg.vocab]  # (B, T, V)
            if logits.dtype in (torch.bfloat16, torch.float16):  # autocast: softmax in float32
                logits = logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            loss = -logp.gather(-1, tgt[..., None]).mean()
        return (loss, acts) if keep_activations else loss

    def grad_norms(self) -> dict[str, list[float]]:
        """L2 norm of each tensor's gradient, per layer for the (L, ...) tensors."""
        out = {}
        for name, p in self.params.items():
            g = p.grad
            if g is None:
                out[name] = [0.0] * (self.cfg.layers if name in PER_LAYER_TENSORS else 1)
                continue
            g = g.detach().double()
            if name in GLOBAL_TENSORS:
                out[name] = [float(g.norm())]
            else:
                out[name] = [float(x) for x in g.reshape(self.cfg.layers, -1).norm(dim=1)]
        return out

    def step(self, opt: AdamW) -> float:
        """One AdamW update from the current gradients (`adamw_step`, the same code the numpy
        loop runs), then zero the gradients (llm.c gpt2_zero_grad). Returns the global gradient
        norm before clipping."""
        torch = self.torch
        grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p))
                 for n, p in self.params.items()}
        self.t += 1
        norm = adamw_step(self.params, grads, self.m, self.v, self.t, opt)
        for p in self.params.values():
            p.grad = None
        return norm

    def numpy_params(self) -> dict[str, np.ndarray]:
        return {name: p.detach().cpu().numpy().copy() for name, p in self.params.items()}


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
