"""Where PyTorch GPT-2 code leaves its values in the global CPU generator's stream.

PyTorch's module constructors draw their default init from the global generator as they are
built, in construction order (torch/nn/modules/sparse.py, linear.py):

    nn.Embedding(n, d)     normal_(0, 1) over n*d values
    nn.Linear(i, o)        kaiming_uniform_(weight, a=sqrt(5)) over o*i values, then (bias=True)
                           uniform_(bias, -1/sqrt(i), 1/sqrt(i)) over o values
    LayerNorm, Dropout     nothing

Then the model's own init draws again. Draw counts per call, measured with torch 2.13 on CPU
(manual_seed, the op, then locating the next 32 uniform_ values in the mt19937 stream): a
float32 uniform_ of n values takes n words (24 bits of each, one word per value, any n); a
normal_ of n >= 16 values takes n words plus 16 when n % 16 != 0 (reference.normal.draws_needed);
nn.Linear(i, o) takes o*i + o words (o*i without bias), nn.Embedding(n, d) draws_needed(n*d).

Two models are laid out call by call:

- nanoGPT (model.py `GPT.__init__`): modules built in the order wte, wpe, h[i] (c_attn, c_proj,
  c_fc, mlp c_proj), lm_head; wte tied to lm_head BEFORE `self.apply(self._init_weights)`;
  Module.apply visits children before the parent (post-order), so _init_weights re-draws
  normal_(0, 0.02) over wte, wpe, each layer's four weights, then lm_head (the tied tensor a
  second time: that draw is wte's final value); biases are zeroed (no draws); then every
  `c_proj.weight` in named_parameters order is drawn again with 0.02/sqrt(2L).
- Hugging Face transformers 5.x `GPT2LMHeadModel(config)` (measured with 5.25): Conv1D's
  constructor draws normal_(0, 0.02) itself; the embeddings N(0, 1); the tied lm_head draws
  nothing. post_init's `_init_weights` then visits modules post-order: wte, wpe, per layer
  c_attn, c_proj, then GPT2Attention re-draws c_proj with 0.02/sqrt(2L), c_fc, mlp c_proj, then
  GPT2MLP re-draws mlp c_proj; the tied lm_head is not drawn again.

A call is one normal_/uniform_ on one tensor; `final` marks the call whose values the model
ends up holding.
"""

from __future__ import annotations

import dataclasses
import math

from gpt2_verify.reference.config import BASE_STD, GPTConfig
from gpt2_verify.reference.normal import draws_needed

PHASES = {"construct": "constructor default", "init": "_init_weights", "redraw": "c_proj re-draw"}


@dataclasses.dataclass(frozen=True)
class TorchCall:
    key: tuple[str, int | None]  # llm.c's (name, layer); ("lm_head", None) for an untied lm_head
    what: str  # "normal" | "uniform"
    count: int  # values
    phase: str  # "construct" | "init" | "redraw"
    std: float  # normal: the std; uniform: the bound
    start: int = 0  # stream position (u32 words before the call)
    final: bool = False

    @property
    def draws(self) -> int:
        return self.count if self.what == "uniform" else _normal_draws(self.count)


def _normal_draws(n: int) -> int:
    # n < 16 takes two 53-bit doubles per pair (4 words), the spare kept for the next call
    return draws_needed(n) if n >= 16 else 4 * ((n + 1) // 2)


@dataclasses.dataclass(frozen=True)
class TorchModel:
    """Which PyTorch init a file may come from, and its shape facts."""
    biases: bool = True
    tied: bool = True
    kinds: tuple[str, ...] = ("nanogpt", "hf")

    @classmethod
    def of(cls, model) -> "TorchModel":
        kinds = {"nanogpt": ("nanogpt",), "hf": ("hf",)}.get(model.layout, ("nanogpt", "hf"))
        return cls(biases=bool(getattr(model, "biases", True)), tied=model.lm_head != "separate", kinds=kinds)


LABELS = {"nanogpt": "nanoGPT's GPT()", "hf": "Hugging Face GPT2LMHeadModel"}


def calls(kind: str, cfg: GPTConfig, rows: int, *, biases: bool = True, tied: bool = True) -> list[TorchCall]:
    """Every draw of model `kind` ("nanogpt" | "hf") for cfg, in stream order, with positions.
    rows: wte's rows as the file holds them (the vocab the model was built with)."""
    L, C, T = cfg.layers, cfg.channels, cfg.max_seq_len
    proj = BASE_STD / math.sqrt(2 * L)
    weights = (("qkvw", 3 * C, C), ("attprojw", C, C), ("fcw", 4 * C, C), ("fcprojw", C, 4 * C))
    out: list[TorchCall] = []
    emb = [(("wte", None), rows * C), (("wpe", None), T * C)]
    if kind == "nanogpt":
        out += [TorchCall(k, "normal", n, "construct", 1.0) for k, n in emb]
        for layer in range(L):
            for name, o, i in weights:
                bound = 1 / math.sqrt(i)
                out.append(TorchCall((name, layer), "uniform", o * i, "construct", bound))
                if biases:
                    out.append(TorchCall((name[:-1] + "b", layer), "uniform", o, "construct", bound))
        out.append(TorchCall(("wte", None) if tied else ("lm_head", None), "uniform", rows * C, "construct",
                             1 / math.sqrt(C)))
        out += [TorchCall(k, "normal", n, "init", BASE_STD) for k, n in emb]
        out += [TorchCall((name, layer), "normal", o * i, "init", BASE_STD)
                for layer in range(L) for name, o, i in weights]
        head = ("wte", None) if tied else ("lm_head", None)
        out.append(TorchCall(head, "normal", rows * C, "init", BASE_STD))
        out += [TorchCall((name, layer), "normal", o * i, "redraw", proj)
                for layer in range(L) for name, o, i in weights if name in ("attprojw", "fcprojw")]
    elif kind == "hf":
        out += [TorchCall(k, "normal", n, "construct", 1.0) for k, n in emb]
        out += [TorchCall((name, layer), "normal", o * i, "construct", BASE_STD)
                for layer in range(L) for name, o, i in weights]
        if not tied:
            out.append(TorchCall(("lm_head", None), "uniform", rows * C, "construct", 1 / math.sqrt(C)))
        out += [TorchCall(k, "normal", n, "init", BASE_STD) for k, n in emb]
        for layer in range(L):
            for name, o, i in weights:
                out.append(TorchCall((name, layer), "normal", o * i, "init", BASE_STD))
                if name in ("attprojw", "fcprojw"):
                    out.append(TorchCall((name, layer), "normal", o * i, "redraw", proj))
        if not tied:
            out.append(TorchCall(("lm_head", None), "normal", rows * C, "init", BASE_STD))
    else:
        raise ValueError(f"unknown PyTorch model {kind!r}; use one of {', '.join(LABELS)}")
    return _place(out)


def _place(seq: list[TorchCall]) -> list[TorchCall]:
    pos, out = 0, []
    last = {c.key: i for i, c in enumerate(seq)}
    for i, c in enumerate(seq):
        out.append(dataclasses.replace(c, start=pos, final=last[c.key] == i))
        pos += c.draws
    return out
