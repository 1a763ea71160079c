"""Real peers, rebuilt in torch at small sizes: how each initializes GPT-2.

* `train_gpt2_py`: llm.c's train_gpt2.py `GPT`: modules registered in the order wte, wpe, h[i]
  (ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj), ln_f, lm_head; lm_head tied to
  wte and flagged LLMC_SKIP_INIT; c_proj flagged LLMC_RESIDUAL_SCALE_FLAG (std 0.02/sqrt(2L) in
  double); `self.apply(self._init_weights)` with its own torch.Generator seeded 42; each
  attention keeps the causal mask as a buffer named `attn.bias`.
* `nanogpt`: nanoGPT model.py `GPT`: same modules, lm_head tied BEFORE `self.apply(...)`, so
  the tied tensor is drawn twice (the lm_head draw, last, wins); then every `c_proj.weight` is
  drawn again with 0.02/sqrt(2L); the global generator (train.py seeds 1337).
* Hugging Face: `transformers.GPT2LMHeadModel(GPT2Config(...))`, Conv1D weights (in, out).

Only the parts that decide the init are rebuilt; forward passes are not needed here.
"""

from __future__ import annotations

import math

import numpy as np
from gpt2_verify.reference.config import GPTConfig


def _modules(cfg: GPTConfig, bias: bool = True):
    import torch.nn as nn

    C = cfg.channels

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(C, 3 * C, bias=bias)
            self.c_proj = nn.Linear(C, C, bias=bias)
            self.c_proj.LLMC_RESIDUAL_SCALE_FLAG = 1
            T = cfg.max_seq_len
            import torch
            self.register_buffer("bias", torch.tril(torch.ones(T, T)).view(1, 1, T, T))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(C, 4 * C, bias=bias)
            self.c_proj = nn.Linear(4 * C, C, bias=bias)
            self.c_proj.LLMC_RESIDUAL_SCALE_FLAG = 1

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(C, bias=bias)
            self.attn = Attn()
            self.ln_2 = nn.LayerNorm(C, bias=bias)
            self.mlp = MLP()

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(cfg.vocab, C),
                wpe=nn.Embedding(cfg.max_seq_len, C),
                h=nn.ModuleList([Block() for _ in range(cfg.layers)]),
                ln_f=nn.LayerNorm(C, bias=bias),
            ))
            self.lm_head = nn.Linear(C, cfg.vocab, bias=False)

    return GPT()


def train_gpt2_py(cfg: GPTConfig, seed: int = 42):
    """llm.c train_gpt2.py's GPT(config) right after __init__: its state dict (torch tensors)."""
    import torch
    import torch.nn as nn

    model = _modules(cfg)
    model.lm_head.LLMC_SKIP_INIT = 1
    model.transformer.wte.weight = model.lm_head.weight
    rng = torch.Generator()
    rng.manual_seed(seed)

    def init(module):
        if isinstance(module, nn.Linear):
            std = 0.02 if not hasattr(module, "LLMC_RESIDUAL_SCALE_FLAG") else \
                0.02 / math.sqrt(2 * cfg.layers)
            if not hasattr(module, "LLMC_SKIP_INIT"):
                torch.nn.init.normal_(module.weight, mean=0.0, std=std, generator=rng)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02, generator=rng)

    with torch.no_grad():
        model.apply(init)
    return model.state_dict()


def nanogpt(cfg: GPTConfig, seed: int = 1337, *, bias: bool = True, tied: bool = True,
            proj_std=lambda layers: 0.02 / math.sqrt(2 * layers), redraw: bool = True):
    """nanoGPT model.py's GPT(config) after __init__ (global generator seeded like train.py).

    The knobs plant the bugs of real forks: proj_std(L) the c_proj re-draw's std (nanoGPT:
    0.02/sqrt(2L)), redraw=False skips that loop, tied=False leaves lm_head its own tensor,
    bias=False is nanoGPT's GPTConfig(bias=False)."""
    import torch
    import torch.nn as nn

    torch.manual_seed(seed)
    model = _modules(cfg, bias)
    if tied:
        model.transformer.wte.weight = model.lm_head.weight  # tied before init: drawn twice

    def init(module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    with torch.no_grad():
        model.apply(init)
        for pn, p in model.named_parameters():
            if redraw and pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=proj_std(cfg.layers))
    return model.state_dict()


def hf_model(cfg: GPTConfig, seed: int = 0, *, cproj_unscaled: bool = False):
    """transformers.GPT2LMHeadModel at random init; `cproj_unscaled` re-draws every c_proj weight
    with std 0.02, what transformers 5.14.1 shipped (issue #47458)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=cfg.layers, n_embd=cfg.channels, n_head=cfg.heads,
                                       vocab_size=cfg.vocab, n_positions=cfg.max_seq_len))
    if cproj_unscaled:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("c_proj.weight"):
                    p.normal_(0.0, 0.02)
    return model


def llmc_flat(cfg: GPTConfig, state_dict) -> np.ndarray:
    """What train_gpt2.py's write_model puts in a version-3 checkpoint: the 16 tensors in llm.c
    order, wte padded with zero rows to Vp."""
    def get(key):
        return state_dict[key].detach().cpu().to(dtype=__import__("torch").float32).numpy()

    L = cfg.layers
    parts = [np.concatenate([get("transformer.wte.weight"),
                             np.zeros((cfg.padded_vocab - cfg.vocab, cfg.channels), np.float32)]),
             get("transformer.wpe.weight")]
    for suffix in ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                   "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                   "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"):
        parts += [get(f"transformer.h.{i}.{suffix}") for i in range(L)]
    parts += [get("transformer.ln_f.weight"), get("transformer.ln_f.bias")]
    return np.concatenate([p.reshape(-1) for p in parts])
