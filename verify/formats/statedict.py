"""A flat {key: tensor} mapping (a state dict, an npz, a safetensors file) -> llm.c's 16 tensors.

Keys are recognised in three layouts (verify.formats.layouts has the table):

    llmc      wte, wpe, ln1w, ..., lnfb         per-layer tensors stacked (L, ...), weights (out, in)
    nanogpt   transformer.h.{i}.attn.c_attn.weight ... (train_gpt2.py, nanoGPT)   (out, in)
    hf        the same keys, Conv1D weights (in, out)                  (Hugging Face GPT2)

Prefixes `_orig_mod.` (torch.compile) and `module.` (DDP) are stripped wherever they lead a key,
repeatedly; a GPT2Model's keys without `transformer.` are accepted. The causal-mask buffers
`attn.bias` / `attn.masked_bias` of older state dicts are ignored. nanoGPT and Hugging Face keep
the (3C, C) vs (C, 3C) c_attn weight apart, so the layout is read from the shapes: every c_attn,
c_fc and mlp c_proj weight votes, and a weight stored against the majority is reported as
"stored transposed" (and handed out turned back). A gap in the layer indices is an error; a
missing key of an existing layer is listed in `missing`. L, C, V and maxT
come from the shapes; NH cannot (no tensor's shape depends on it): it comes from config.json or
the caller, else C // 64 is assumed (the init does not depend on NH) and `heads_assumed` is set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from gpt2_verify.reference.config import PER_LAYER_TENSORS, GPTConfig, parameter_table

from ..errors import InputError
from .layouts import BIASES, LM_HEAD_KEY, STATE_DICT_KEYS, state_dict_key, transposed_in

PREFIXES = ("_orig_mod.", "module.")
WRAPPERS = ("model", "state_dict", "model_state_dict", "module")
_LAYER = re.compile(r"^transformer\.h\.(\d+)\.")
_WEIGHT = re.compile(r"^transformer\.h\.\d+\.(attn\.c_attn|mlp\.c_fc|mlp\.c_proj)\.weight$")
_BUFFER = re.compile(r"^transformer\.h\.\d+\.attn\.(bias|masked_bias)$")
DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}
WIDTH = {"fp16": 1, "bf16": 1, "fp32": 2, "fp64": 3}


def dtype_name(value: Any) -> str | None:
    """fp32 / bf16 / fp16 / fp64, or None for any other (non-float) dtype."""
    return DTYPE_NAMES.get(str(getattr(value, "dtype", "")).replace("torch.", ""))


def to_f32(value: Any) -> np.ndarray:
    """A torch tensor or numpy array -> float32 numpy (exact for fp16/bf16; fp64 rounds once)."""
    if hasattr(value, "detach"):  # torch
        import torch
        return value.detach().to(device="cpu", dtype=torch.float32).numpy()
    return np.asarray(value, dtype=np.float32)


def unwrap(obj: Any, source: str) -> dict:
    """A checkpoint dict -> its state dict: {"model": sd}, {"state_dict": sd}, ... (two levels)."""
    for _ in range(2):
        if isinstance(obj, Mapping):
            inner = [obj[k] for k in WRAPPERS if isinstance(obj.get(k), Mapping)]
            if inner and not any(_is_tensor(v) for v in obj.values()):
                obj = inner[0]
    if not isinstance(obj, Mapping):
        raise InputError(source, f"holds a {type(obj).__name__}, not a state dict (a mapping of "
                                 f"names to tensors)")
    return dict(obj)


def _is_tensor(v: Any) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype")


def normalise_keys(sd: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in sd.items():
        if not isinstance(key, str) or not _is_tensor(value):
            continue  # iter_num, config, optimizer scalars ...
        k = key
        while k.startswith(PREFIXES):
            k = k.split(".", 1)[1]
        if k.startswith(("wte.", "wpe.", "h.", "ln_f.")):  # GPT2Model: no "transformer."
            k = "transformer." + k
        out[k] = value
    return out


class Mapped:
    """llm.c tensors assembled lazily from a normalised mapping (per-layer pieces kept apart)."""

    def __init__(self, source: str, sd: Mapping[str, Any], *, layout: str | None, heads: int | None,
                 config: GPTConfig | None, json_config: dict | None = None):
        self.source = source
        keys = normalise_keys(sd)
        if not keys:
            raise InputError(source, "holds no tensors")
        for k, v in keys.items():
            if dtype_name(v) is None:
                if k in ("wte", "wpe") or k.startswith("transformer.") or k == LM_HEAD_KEY:
                    raise InputError(source, f"tensor {k} has dtype {v.dtype}: GPT-2 weights must be "
                                             f"floating point (fp32, bf16, fp16, fp64)")
        self.layout = layout or self._detect(keys)
        self.pieces: dict[str, list[tuple[str, Any]]] = {}  # llm.c name -> [(key, tensor)]
        self.missing: list[str] = []
        self.extra: list[str] = []
        self.shape_problems: list[str] = []
        self.unusable: dict[str, str] = {}
        self._transposed: set[tuple[str, int]] = set()  # (name, layer) stored the other way round
        self.lm_head = "absent"
        self._lm_head: Any = None
        self.biases = True  # False: not one bias key (nanoGPT's bias=False), none expected
        if self.layout == "llmc":
            self._map_llmc(keys)
        else:
            self._map_state_dict(keys)
        self.config, self.heads_assumed = self._infer(keys, heads, config, json_config)
        self._check_shapes()
        dts = {n: dtype_name(p[0][1]) for n, p in self.pieces.items() if p}
        self.dtypes = dts
        self.dtype = max(set(dts.values()) or {"fp32"}, key=WIDTH.get)

    # ---- layout ---------------------------------------------------------------------------------
    def _detect(self, keys) -> str:
        names = {s.name for s in parameter_table(GPTConfig(1, 1, 1, 1, 1, 1))}
        if "wte" in keys and names & set(keys) == names:
            return "llmc"
        qkv = keys.get("transformer.h.0.attn.c_attn.weight")
        wte = keys.get("transformer.wte.weight")
        if qkv is not None and wte is None:
            raise InputError(self.source, "cannot infer the config: wte is missing (transformer.wte.weight)")
        if qkv is None or wte is None:
            if names & set(keys):
                return "llmc"
            sample = ", ".join(list(keys)[:4])
            raise InputError(self.source, f"no GPT-2 tensors found (keys look like {sample}); expected "
                                          f"llm.c names (wte, qkvw, ...) or state-dict keys "
                                          f"(transformer.wte.weight, ...)")
        C = int(wte.shape[-1])
        # Every Conv1D-style weight votes, so one weight stored the other way round (layer 0's
        # included) is reported as transposed instead of flipping the whole file's layout.
        votes = {"nanogpt": 0, "hf": 0}
        for key, value in keys.items():
            m = _WEIGHT.match(key)
            if not m:
                continue
            out_in = {"attn.c_attn": (3 * C, C), "mlp.c_fc": (4 * C, C), "mlp.c_proj": (C, 4 * C)}[m.group(1)]
            shape = tuple(value.shape)
            if shape == out_in:
                votes["nanogpt"] += 1
            elif shape == out_in[::-1]:
                votes["hf"] += 1
        if votes["nanogpt"] != votes["hf"]:
            return max(votes, key=votes.get)
        if tuple(qkv.shape) == (3 * C, C):
            return "nanogpt"
        if tuple(qkv.shape) == (C, 3 * C):
            return "hf"
        raise InputError(self.source, f"transformer.h.0.attn.c_attn.weight has shape {tuple(qkv.shape)}: "
                                      f"neither ({3 * C}, {C}) (nn.Linear) nor ({C}, {3 * C}) (Conv1D)")

    def _map_llmc(self, keys) -> None:
        for spec in parameter_table(GPTConfig(1, 1, 1, 1, 1, 1)):
            if spec.name in keys:
                self.pieces[spec.name] = [(spec.name, keys[spec.name])]
            else:
                self.missing.append(spec.name)
        used = set(self.pieces)
        self.extra = [k for k in keys if k not in used]

    def _map_state_dict(self, keys) -> None:
        layers = sorted({int(m.group(1)) for k in keys if (m := _LAYER.match(k))})
        L = (max(layers) + 1) if layers else 0
        if layers != list(range(L)):
            gap = sorted(set(range(L)) - set(layers))
            raise InputError(self.source, f"layer index gap: keys for transformer.h.{{i}} go up to layer "
                                          f"{L - 1} but layer(s) {', '.join(map(str, gap[:8]))} have none")
        used = set()
        bias_keys = [state_dict_key(n, i) if "{i}" in STATE_DICT_KEYS[n][0] else state_dict_key(n)
                     for n in BIASES for i in range(max(L, 1))]
        self.biases = any(k in keys for k in bias_keys)
        for name, (template, _) in STATE_DICT_KEYS.items():
            if name in BIASES and not self.biases:
                continue
            wanted = [state_dict_key(name, i) for i in range(L)] if "{i}" in template else [template]
            found = [(k, keys[k]) for k in wanted if k in keys]
            self.missing += [k for k in wanted if k not in keys]
            used.update(k for k, _ in found)
            if len(found) == len(wanted) and found:
                self.pieces[name] = found
        if LM_HEAD_KEY in keys:
            used.add(LM_HEAD_KEY)
            head, wte = keys[LM_HEAD_KEY], keys.get("transformer.wte.weight")
            self._lm_head = head
            if wte is not None and _same_storage(head, wte):
                self.lm_head = "tied"
            elif wte is not None and tuple(head.shape) == tuple(wte.shape) and np.array_equal(
                    to_f32(head).view(np.uint32), to_f32(wte).view(np.uint32)):
                self.lm_head = "equal"
            else:
                self.lm_head = "separate"
        self.extra = [k for k in keys if k not in used and not _BUFFER.match(k)]

    # ---- config ---------------------------------------------------------------------------------
    def _infer(self, keys, heads, config, json_config) -> tuple[GPTConfig, bool]:
        def shape(name):
            p = self.pieces.get(name)
            return tuple(p[0][1].shape) if p else None

        wte, wpe = shape("wte"), shape("wpe")
        if wte is None or len(wte) != 2:
            what = "missing" if wte is None else f"of shape {wte}"
            raise InputError(self.source, f"cannot infer the config: wte is {what}")
        rows, C = wte
        if self.layout == "llmc":
            q = shape("qkvw")
            L = q[0] if q and len(q) == 3 else 0
        else:
            L = len(self.pieces.get("qkvw", [])) or max(
                (len(p) for n, p in self.pieces.items() if n in PER_LAYER_TENSORS),
                default=0)
        if L == 0:
            raise InputError(self.source, "cannot infer the number of layers: no qkvw / c_attn weight")
        T = wpe[0] if wpe else 1
        if config is not None:
            return config, False
        V, Vp = rows, None
        if self.layout == "llmc" and rows > 1:
            # llm.c files pad wte to Vp rows with zeros: V is where the trailing zero rows start
            # (a drawn row is never all zero; with non-zero padding V = Vp and wte's grade shows it)
            a = to_f32(self.pieces["wte"][0][1])
            nonzero = np.flatnonzero(np.any(a != 0, axis=1))
            if nonzero.size and nonzero[-1] + 1 < rows:
                V, Vp = int(nonzero[-1]) + 1, rows
        if json_config:
            want = {"n_layer": L, "n_embd": C, "vocab_size": rows, "n_positions": T}
            for k, v in want.items():
                if k in json_config and json_config[k] != v:
                    raise InputError(self.source, f"config.json says {k}={json_config[k]} but the "
                                                  f"tensors say {v}")
            heads = heads or json_config.get("n_head")
        assumed = heads is None
        if assumed:
            heads = C // 64 if C % 64 == 0 and C >= 64 else 1
        try:
            return GPTConfig(L, C, heads, V, Vp, T), assumed
        except ValueError as e:
            raise InputError(self.source, f"the shapes give an impossible config: {e}") from None

    def _check_shapes(self) -> None:
        cfg = self.config
        for spec in parameter_table(cfg):
            pieces = self.pieces.get(spec.name)
            if not pieces:
                continue
            if self.layout == "llmc":
                want = spec.shape
                got = tuple(pieces[0][1].shape)
                ok = got == want or (spec.name == "wte" and got in ((cfg.vocab, cfg.channels),
                                                                      (cfg.padded_vocab, cfg.channels)))
                if not ok:
                    self._bad(spec.name, f"{spec.name} has shape {got}, expected {want}")
                continue
            want = spec.shape[1:] if spec.per_layer else spec.shape
            if spec.name == "wte" and tuple(pieces[0][1].shape) == (cfg.padded_vocab, cfg.channels):
                want = (cfg.padded_vocab, cfg.channels)  # padded like llm.c (nanoGPT's 50304)
            elif spec.name == "wte":
                want = (cfg.vocab, cfg.channels)
            for i, (key, t) in enumerate(pieces):
                got = tuple(t.shape)
                stored = tuple(reversed(want)) if transposed_in(spec.name, self.layout) else tuple(want)
                if got == stored:
                    continue
                if len(got) == 2 and got == tuple(reversed(stored)):
                    self.shape_problems.append(f"{key}: stored transposed, shape {got} instead of {stored}")
                    self._transposed.add((spec.name, i))
                    continue
                self._bad(spec.name, f"{key} has shape {got}, expected {stored}")

    def _bad(self, name: str, text: str) -> None:
        self.shape_problems.append(text)
        self.unusable[name] = text

    # ---- values ---------------------------------------------------------------------------------
    def _layer_array(self, name: str, i: int) -> np.ndarray:
        key, t = self.pieces[name][i]
        a = to_f32(t)
        flip = transposed_in(name, self.layout) != ((name, i) in self._transposed)
        return np.ascontiguousarray(a.T) if flip and a.ndim == 2 else a

    def tensor(self, name: str) -> np.ndarray:
        if name not in self.pieces or name in self.unusable:
            raise KeyError(name)
        if self.layout == "llmc" or len(self.pieces[name]) == 1 and not _per_layer(name):
            return self._layer_array(name, 0)
        return np.stack([self._layer_array(name, i) for i in range(len(self.pieces[name]))])

    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self.pieces or name in self.unusable:
            raise KeyError(name)
        pieces = self.pieces[name]
        one = tuple(pieces[0][1].shape)
        if ((name, 0) in self._transposed) != transposed_in(name, self.layout):
            one = tuple(reversed(one)) if len(one) == 2 else one
        if self.layout == "llmc" or not _per_layer(name):
            return one
        return (len(pieces), *one)

    def iter_chunks(self, name: str, chunk: int, start: int = 0) -> Iterator[np.ndarray]:
        base = 0  # flat index of piece i's first value
        for i in range(len(self.pieces[name])):
            size = math.prod(self.pieces[name][i][1].shape)
            if base + size <= start:  # wholly before start: not converted
                base += size
                continue
            flat = self._layer_array(name, i).reshape(-1)
            for lo in range(max(start - base, 0), flat.size, chunk):
                yield flat[lo:lo + chunk]
            base += size

    def sources(self) -> dict[str, list[str]]:
        return {n: [k for k, _ in p] for n, p in self.pieces.items() if n not in self.unusable}

    def lm_head_tensor(self) -> np.ndarray | None:
        return None if self._lm_head is None else to_f32(self._lm_head)


def _per_layer(name: str) -> bool:
    return "{i}" in STATE_DICT_KEYS[name][0]


def _same_storage(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.shape == b.shape
    except AttributeError:
        return False
