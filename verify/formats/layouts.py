"""Names and shapes other implementations give llm.c's 16 tensors.

llm.c keeps one flat buffer (reference.config.parameter_table). Its ports and peers use
PyTorch state dicts with Hugging Face's key names:

    llm.c      train_gpt2.py / nanoGPT key                    nanoGPT shape   Hugging Face shape
    wte        transformer.wte.weight                         (V, C)          (V, C)
    wpe        transformer.wpe.weight                         (maxT, C)       (maxT, C)
    ln1w/ln1b  transformer.h.{i}.ln_1.weight / .bias          (C,)            (C,)
    qkvw       transformer.h.{i}.attn.c_attn.weight           (3C, C)         (C, 3C)  Conv1D
    qkvb       transformer.h.{i}.attn.c_attn.bias             (3C,)           (3C,)
    attprojw   transformer.h.{i}.attn.c_proj.weight           (C, C)          (C, C)   Conv1D
    ...        (mlp.c_fc, mlp.c_proj, ln_2, ln_f likewise)
    (tied)     lm_head.weight                                 (V, C)          (V, C)

train_gpt2.py and nanoGPT use nn.Linear, whose weight is (out, in) like llm.c; Hugging Face's
GPT2 uses Conv1D, whose weight is (in, out): those four weights are transposed.
"""

from __future__ import annotations

from gpt2_verify.reference.config import GPTConfig, parameter_table

# llm.c name -> (state-dict key template, Hugging Face Conv1D transposes it)
# Per-layer keys take {i}.
STATE_DICT_KEYS = {
    "wte": ("transformer.wte.weight", False),
    "wpe": ("transformer.wpe.weight", False),
    "ln1w": ("transformer.h.{i}.ln_1.weight", False),
    "ln1b": ("transformer.h.{i}.ln_1.bias", False),
    "qkvw": ("transformer.h.{i}.attn.c_attn.weight", True),
    "qkvb": ("transformer.h.{i}.attn.c_attn.bias", False),
    "attprojw": ("transformer.h.{i}.attn.c_proj.weight", True),
    "attprojb": ("transformer.h.{i}.attn.c_proj.bias", False),
    "ln2w": ("transformer.h.{i}.ln_2.weight", False),
    "ln2b": ("transformer.h.{i}.ln_2.bias", False),
    "fcw": ("transformer.h.{i}.mlp.c_fc.weight", True),
    "fcb": ("transformer.h.{i}.mlp.c_fc.bias", False),
    "fcprojw": ("transformer.h.{i}.mlp.c_proj.weight", True),
    "fcprojb": ("transformer.h.{i}.mlp.c_proj.bias", False),
    "lnfw": ("transformer.ln_f.weight", False),
    "lnfb": ("transformer.ln_f.bias", False),
}
LM_HEAD_KEY = "lm_head.weight"
# the tensors a model built without biases lacks (nanoGPT's GPTConfig(bias=False): every Linear
# and LayerNorm bias)
BIASES = ("ln1b", "qkvb", "attprojb", "ln2b", "fcb", "fcprojb", "lnfb")
LAYOUTS = ("llmc", "nanogpt", "hf")


def state_dict_key(name: str, layer: int | None = None) -> str:
    template, _ = STATE_DICT_KEYS[name]
    if "{i}" in template:
        if layer is None:
            raise ValueError(f"{name} is per layer: pass layer=")
        return template.format(i=layer)
    return template


def transposed_in(name: str, layout: str) -> bool:
    """True when `layout` stores llm.c tensor `name` as (in, out) (Hugging Face Conv1D)."""
    return layout == "hf" and STATE_DICT_KEYS[name][1]


def layout_shape(cfg: GPTConfig, name: str, layout: str) -> tuple[int, ...]:
    """Shape of one (per-layer) tensor in a layout: llmc/nanogpt (out, in), hf (in, out).

    wte has Vp rows in llm.c files, V rows in train_gpt2.py, nanoGPT and Hugging Face
    (nanoGPT's own training default pads to 50304, which shows up as V=50304 there).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {LAYOUTS}")
    spec = {s.name: s for s in parameter_table(cfg)}[name]
    shape = spec.shape[1:] if spec.per_layer else spec.shape
    if name == "wte" and layout != "llmc":
        shape = (cfg.vocab, cfg.channels)
    if transposed_in(name, layout):
        shape = tuple(reversed(shape))
    return tuple(shape)
