"""Where llm.c's 16 tensors live in a PyTorch GPT-2 module, and how they are stored there.

The names and shapes are verify.formats.layouts' (train_gpt2.py / nanoGPT nn.Linear (out, in),
Hugging Face Conv1D (in, out)). A module maps when every parameter it has is one of those
(under any common prefix such as DDP's `module.` or torch.compile's `_orig_mod.`), every tensor
llm.c has is there with its shape, except biases a module may leave out all together (nanoGPT
`bias=False`: they are held at 0 in the reference and not judged), and wte has V or Vp rows.
lm_head is tied when it is the very parameter wte is (or absent); a separate lm_head
parameter is an untied head.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from gpt2_verify.reference.config import TENSOR_NAMES, ZERO_TENSORS, GPTConfig, parameter_table

from ..errors import InputError
from ..formats.layouts import LM_HEAD_KEY, STATE_DICT_KEYS

LAYOUTS = ("auto", "llmc-py", "nanogpt", "hf")
_ANCHOR = STATE_DICT_KEYS["wte"][0]  # transformer.wte.weight


@dataclasses.dataclass
class ParamMap:
    """llm.c tensor (and layer) -> the module's parameter; built by `map_module`."""

    cfg: GPTConfig
    layout: str  # "llmc-py" (= nanogpt's names and shapes) or "hf"
    prefix: str
    params: dict[tuple[str, int | None], object]  # (llm.c name, layer) -> torch Parameter
    keys: dict[tuple[str, int | None], str]  # same -> the module's parameter name
    absent: tuple[str, ...]  # llm.c biases the module does not have (held at 0)
    lm_head: object | None  # a separate (untied) lm_head parameter, else None
    vocab_rows: int  # rows of the module's wte: V or Vp

    @property
    def tied(self) -> bool:
        return self.lm_head is None

    def transposed(self, name: str) -> bool:
        return self.layout == "hf" and STATE_DICT_KEYS[name][1]

    def load(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy llm.c-layout `values` into the module (untied lm_head: wte's values too) and
        return what the module now holds, read back in float64 in llm.c's layout (wte with
        Vp rows; absent biases 0): the exact weights the reference must use."""
        import torch

        with torch.no_grad():
            for (name, layer), p in self.params.items():
                v = values[name] if layer is None else values[name][layer]
                if name == "wte":
                    v = v[: self.vocab_rows]
                if self.transposed(name):
                    v = v.T
                p.copy_(torch.as_tensor(np.ascontiguousarray(v)).to(p.dtype))
            if self.lm_head is not None:
                self.lm_head.copy_(torch.as_tensor(values["wte"][: self.vocab_rows]).to(self.lm_head.dtype))
        return self.read(lambda p: p.detach())

    def grads(self) -> dict[str, np.ndarray]:
        """The module's parameter gradients in llm.c's layout (float64; wte with the module's
        own rows; an untied head's gradient as "lm_head"); absent biases have none."""
        out = self.read(lambda p: p.grad, rows="module")
        return {k: v for k, v in out.items() if k not in self.absent}

    def read(self, get, *, rows: str = "padded") -> dict[str, np.ndarray]:
        cfg = self.cfg
        out = {}
        for spec in parameter_table(cfg):
            shape = spec.shape
            if spec.name == "wte" and rows == "module":
                shape = (self.vocab_rows, cfg.channels)
            out[spec.name] = np.zeros(shape, dtype=np.float64)
        for (name, layer), p in self.params.items():
            t = get(p)
            if t is None:
                continue  # no gradient reached it: zeros
            a = t.detach().to("cpu", dtype=_torch_f64()).numpy()
            if self.transposed(name):
                a = a.T
            if name == "wte":
                out[name][: a.shape[0]] = a
            elif layer is None:
                out[name][...] = a
            else:
                out[name][layer] = a
        if self.lm_head is not None:
            t = get(self.lm_head)
            head = np.zeros((out["wte"].shape[0], cfg.channels))
            if t is not None:
                head[: t.shape[0]] = t.detach().to("cpu", dtype=_torch_f64()).numpy()
            out["lm_head"] = head
        return out


def _torch_f64():
    import torch

    return torch.float64


def _find_prefix(names) -> str:
    hits = [n[: -len(_ANCHOR)] for n in names if n.endswith(_ANCHOR)]
    if len(hits) != 1:
        raise InputError(None, f"cannot map the module: {'no' if not hits else 'more than one'} "
                               f"parameter named ...{_ANCHOR} (train_gpt2.py, nanoGPT and Hugging Face "
                               f"GPT-2 all have one); wrap it, or call it through --call FILE.py:fn")
    return hits[0]


def _detect(cfg: GPTConfig, named: dict, prefix: str) -> str:
    key = prefix + STATE_DICT_KEYS["qkvw"][0].format(i=0)
    p = named.get(key)
    if p is None:
        raise InputError(None, f"cannot map the module: no parameter {key}")
    C = cfg.channels
    if tuple(p.shape) == (C, 3 * C):
        return "hf"
    if tuple(p.shape) == (3 * C, C):
        return "llmc-py"
    raise InputError(None, f"cannot map the module: {key} has shape {tuple(p.shape)}; GPT-2 with "
                           f"C={C} has (3C, C) = {(3 * C, C)} (nn.Linear) or (C, 3C) (Conv1D)")


def map_module(model, cfg: GPTConfig, *, layout: str = "auto") -> ParamMap:
    """Map `model`'s parameters onto llm.c's tensors, checking names and shapes. Raises
    InputError with one line naming what is missing, extra or misshapen."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    named = dict(model.named_parameters(remove_duplicate=False))
    prefix = _find_prefix(named)
    found = _detect(cfg, named, prefix)
    if layout == "auto":
        layout = found
    elif (layout == "hf") != (found == "hf"):
        stored = "(in, out) Conv1D (use --layout hf)" if found == "hf" else "(out, in) nn.Linear"
        raise InputError(None, f"--layout {layout}: the module stores c_attn.weight as {stored}")
    layout = "hf" if layout == "hf" else "llmc-py"
    pmap = ParamMap(cfg, layout, prefix, {}, {}, (), None, cfg.vocab)
    used, absent = set(), []
    for spec in parameter_table(cfg):
        layers = range(cfg.layers) if spec.per_layer else [None]
        keys = [prefix + (STATE_DICT_KEYS[spec.name][0].format(i=i) if i is not None
                          else STATE_DICT_KEYS[spec.name][0]) for i in layers]
        have = [k in named for k in keys]
        if not any(have) and spec.name in ZERO_TENSORS:
            absent.append(spec.name)  # bias=False
            continue
        if not all(have):
            raise InputError(None, f"cannot map the module: no parameter {keys[have.index(False)]} "
                                   f"(llm.c's {spec.name}); the {layout} layout needs all of "
                                   f"{', '.join(TENSOR_NAMES)}")
        for layer, key in zip(layers, keys):
            p = named[key]
            want = spec.shape[1:] if spec.per_layer else spec.shape
            if spec.name == "wte":
                if tuple(p.shape) not in ((cfg.vocab, cfg.channels), (cfg.padded_vocab, cfg.channels)):
                    raise InputError(None, f"cannot map the module: {key} has shape {tuple(p.shape)}, "
                                           f"expected V or Vp rows: {(cfg.vocab, cfg.channels)} or "
                                           f"{(cfg.padded_vocab, cfg.channels)}")
                pmap.vocab_rows = int(p.shape[0])
                want = tuple(p.shape)
            elif pmap.transposed(spec.name):
                want = tuple(reversed(want))
            if tuple(p.shape) != tuple(want):
                raise InputError(None, f"cannot map the module: {key} has shape {tuple(p.shape)}, "
                                       f"llm.c's {spec.name} needs {tuple(want)} in the {layout} layout")
            pmap.params[(spec.name, layer)] = p
            pmap.keys[(spec.name, layer)] = key
            used.add(key)
    head_key = prefix + LM_HEAD_KEY
    wte = pmap.params[("wte", None)]
    if head_key in named:
        used.add(head_key)
        head = named[head_key]
        if head is not wte:
            if tuple(head.shape) != tuple(wte.shape):
                raise InputError(None, f"cannot map the module: {head_key} has shape "
                                       f"{tuple(head.shape)}, wte {tuple(wte.shape)}")
            pmap.lm_head = head
    extra = [k for k in named if k not in used]
    if extra:
        raise InputError(None, f"cannot map the module: parameter {extra[0]} is not one of GPT-2's "
                               f"({len(extra)} unmapped): only GPT-2's 16 tensors (and a tied or untied "
                               f"lm_head) can be judged")
    pmap.absent = tuple(absent)
    return pmap
