"""Real GPT-2 modules, re-stated at small sizes for `gpt2-verify module` (and its planted bugs).

Each factory takes the config dict `gpt2-verify module` passes (layers, channels, heads, vocab,
padded_vocab, max_seq_len) and returns a torch.nn.Module, so the file works as a SPEC:
`gpt2-verify module tests/module_peers.py:llmc_gpt`.

* `llmc_gpt`, `llmc_gpt_flash`: llm.c's train_gpt2.py `GPT` (NewGELU tanh form; attention by
  hand with the `bias` mask buffer, or, with its module-level `FLASH = 1`,
  F.scaled_dot_product_attention(is_causal=True); nn.LayerNorm; lm_head tied to wte;
  `forward(idx, targets) -> (logits, loss)` with cross_entropy(ignore_index=-1)).
* `nanogpt`: nanoGPT model.py `GPT` (its LayerNorm class calling F.layer_norm(eps=1e-5) with an
  optional bias, nn.GELU() - the exact erf form -, SDPA attention, dropout modules) at the
  config's vocab; `nanogpt_padded` builds it with vocab_size = padded_vocab, nanoGPT's habit
  (50304 for GPT-2), so its padded logits enter the softmax.
* `hf_eager`, `hf_sdpa`: transformers' GPT2LMHeadModel (Conv1D weights, gelu_new) with
  attn_implementation "eager" or "sdpa" (needs the `peers` extra).
* `PLANTED`: train_gpt2.py's GPT with one bug each (name -> factory), the variants
  `gpt2-verify module` names.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
from torch.nn import functional as F


class NewGELU(nn.Module):  # train_gpt2.py: the tanh form GPT-2 uses
    def forward(self, input):
        return 0.5 * input * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi)
                                               * (input + 0.044715 * torch.pow(input, 3.0))))


class LayerNorm(nn.Module):  # nanoGPT: F.layer_norm with an optional bias
    def __init__(self, ndim, bias, eps=1e-5, unbiased=False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None
        self.eps, self.unbiased = eps, unbiased

    def forward(self, x):
        if self.unbiased:  # planted: torch.var's default divides by C - 1
            xc = x - x.mean(-1, keepdim=True)
            y = xc / torch.sqrt(x.var(-1, keepdim=True) + self.eps) * self.weight
            return y if self.bias is None else y + self.bias
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class Attention(nn.Module):
    def __init__(self, C, NH, T, *, flash, bias, scale, causal):
        super().__init__()
        self.c_attn = nn.Linear(C, 3 * C, bias=bias)
        self.c_proj = nn.Linear(C, C, bias=bias)
        self.attn_dropout = nn.Dropout(0.1)
        self.resid_dropout = nn.Dropout(0.1)
        self.n_head, self.n_embd, self.flash, self.scale, self.causal = NH, C, flash, scale, causal
        self.register_buffer("bias", torch.tril(torch.ones(T, T)).view(1, 1, T, T))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        hs = k.size(-1)
        scale = {"head": 1.0 / math.sqrt(hs), "channels": 1.0 / math.sqrt(C), "none": 1.0}[self.scale]
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=scale,
                                               dropout_p=0.1 if self.training else 0.0)
        else:
            att = (q @ k.transpose(-2, -1)) * scale
            if self.causal:
                att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            att = self.attn_dropout(F.softmax(att, dim=-1))
            y = att @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, C, *, bias, gelu):
        super().__init__()
        self.c_fc = nn.Linear(C, 4 * C, bias=bias)
        self.gelu = nn.GELU() if gelu == "erf" else NewGELU()
        self.c_proj = nn.Linear(4 * C, C, bias=bias)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, C, NH, T, o):
        super().__init__()
        self.ln_1 = LayerNorm(C, o["bias"], o["eps"], o["unbiased"])
        self.attn = Attention(C, NH, T, flash=o["flash"], bias=o["bias"], scale=o["scale"],
                              causal=o["causal"])
        self.ln_2 = LayerNorm(C, o["bias"], o["eps"], o["unbiased"])
        self.mlp = MLP(C, bias=o["bias"], gelu=o["gelu"])
        self.residual = o["residual"]

    def forward(self, x):
        a = self.attn(self.ln_1(x))
        x = x + a if self.residual != "attn" else a
        m = self.mlp(self.ln_2(x))
        return x + m if self.residual != "mlp" else m


class GPT(nn.Module):
    """train_gpt2.py's / nanoGPT's GPT; the keyword options are the differences (and bugs)."""

    def __init__(self, config: dict, *, vocab=None, flash=False, bias=True, gelu="tanh", eps=1e-5,
                 unbiased=False, scale="head", causal=True, tied=True, residual=None,
                 positions="absolute"):
        super().__init__()
        L, C, NH, T = (config[k] for k in ("layers", "channels", "heads", "max_seq_len"))
        V = vocab or config["vocab"]
        o = dict(flash=flash, bias=bias, gelu=gelu, eps=eps, unbiased=unbiased, scale=scale,
                 causal=causal, residual=residual)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(V, C), wpe=nn.Embedding(T, C), drop=nn.Dropout(0.1),
            h=nn.ModuleList([Block(C, NH, T, o) for _ in range(L)]),
            ln_f=LayerNorm(C, bias, eps, unbiased)))
        self.lm_head = nn.Linear(C, V, bias=False)
        if tied:
            self.transformer.wte.weight = self.lm_head.weight
        self.positions = positions

    def forward(self, idx, targets=None):
        b, t = idx.size()
        start = 1 if self.positions == "shifted" else 0
        pos = torch.arange(start, start + t, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx)
        if self.positions != "none":
            x = x + self.transformer.wpe(pos)
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss


def llmc_gpt(config):
    return GPT(config)


def llmc_gpt_flash(config):
    return GPT(config, flash=True)


def nanogpt(config):
    return GPT(config, flash=True, gelu="erf")


def nanogpt_padded(config):
    return GPT(config, flash=True, gelu="erf", vocab=config["padded_vocab"])


def nanogpt_nobias(config):
    return GPT(config, flash=True, gelu="tanh", bias=False)


def _hf(config, attn):
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(
        n_layer=config["layers"], n_embd=config["channels"], n_head=config["heads"],
        vocab_size=config["vocab"], n_positions=config["max_seq_len"], bos_token_id=0,
        eos_token_id=0, attn_implementation=attn))


def hf_eager(config):
    return _hf(config, "eager")


def hf_sdpa(config):
    return _hf(config, "sdpa")


class LogitsOnly(nn.Module):
    """A home-made convention: forward(x) -> logits; the loss is the caller's (see `call_logits_only`)."""

    def __init__(self, config):
        super().__init__()
        self.transformer = GPT(config).transformer
        self.lm_head = nn.Linear(config["channels"], config["vocab"], bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, x):
        t = x.size(1)
        h = self.transformer.wte(x) + self.transformer.wpe(torch.arange(t, device=x.device))
        for block in self.transformer.h:
            h = block(h)
        return self.lm_head(self.transformer.ln_f(h))


def logits_only(config):
    return LogitsOnly(config)


def call_logits_only(model, idx, targets):
    logits = model(idx)
    return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)


class Doubled(GPT):
    def forward(self, idx, targets=None):
        logits, _ = super().forward(idx)
        logits = 2 * logits
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)


def doubled_logits(config):
    return Doubled(config)


class NaNLogits(GPT):
    def forward(self, idx, targets=None):
        logits, loss = super().forward(idx, targets)
        return logits.index_fill(2, torch.tensor([3]), float("nan")), loss


def nan_logits(config):
    return NaNLogits(config)


class StaleEmbedding(nn.Embedding):
    """Caches its table on the first call (as a precomputed position table would) and keeps
    serving it: forward values stay the first call's, gradients still reach the weight. A
    single forward+backward is exact; the bug only shows once training has moved wpe."""

    def forward(self, idx):
        if not hasattr(self, "stale"):
            self.stale = self.weight.detach().clone()
        return F.embedding(idx, self.stale + (self.weight - self.weight.detach()))


def stale_positions(config):
    m = GPT(config)
    T, C = m.transformer.wpe.weight.shape
    m.transformer.wpe = StaleEmbedding(T, C)
    return m


def raises(config):
    raise RuntimeError("cannot build")


def not_a_module(config):
    return {"wte": None}


def module_with_extra_parameter(config):
    m = GPT(config)
    m.temperature = nn.Parameter(torch.ones(()))
    return m


# planted bug -> factory; the name is the variant `gpt2-verify module` must name
PLANTED = {
    "gelu-erf": functools.partial(GPT, gelu="erf"),
    "ln-eps-1e-6": functools.partial(GPT, eps=1e-6),
    "ln-unbiased": functools.partial(GPT, unbiased=True),
    "attn-scale-channels": functools.partial(GPT, scale="channels"),
    "attn-scale-none": functools.partial(GPT, scale="none"),
    "no-causal-mask": functools.partial(GPT, causal=False),
    "padded-softmax": lambda config: GPT(config, vocab=config["padded_vocab"]),
    "untied": functools.partial(GPT, tied=False),
    "no-attn-residual": functools.partial(GPT, residual="attn"),
    "no-mlp-residual": functools.partial(GPT, residual="mlp"),
    "no-positions": functools.partial(GPT, positions="none"),
    "shifted-positions": functools.partial(GPT, positions="shifted"),
}
