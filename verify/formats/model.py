"""Any weights file -> llm.c's 16 tensors: the one entry point the comparator reads through.

    open_model(path)           llm.c checkpoint (magic 20240326, v3 fp32 / v5 bf16), PyTorch state
                               dict (.pt/.pth/.bin, zip or legacy pickle, weights_only), .safetensors,
                               Hugging Face model directory (model.safetensors or pytorch_model.bin,
                               plus config.json), .npz (allow_pickle=False)
    model_from_mapping(d)      a dict of numpy arrays / torch tensors (a Python candidate's output)

The format is detected from the first bytes (llm.c magic; zip "PK\\3\\4" holding .npy members =
npz, else torch; pickle protocol byte 0x80 = legacy torch; u64 length then "{" = safetensors),
then from the suffix; a directory is a Hugging Face model directory. Every ModelFile hands out
float32 tensors in llm.c's checkpoint orientation (weights (out, in), per-layer tensors stacked
(L, ...)), with the file's own keys for each (`sources`) and the dtype it stored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from gpt2_verify.reference.bf16 import bf16_bits_to_f32
from gpt2_verify.reference.config import GPTConfig

from ..errors import InputError
from . import checkpoint as ckpt_format
from .layouts import LAYOUTS
from .statedict import WIDTH, Mapped, dtype_name, unwrap

FORMATS = ("llmc", "torch", "safetensors", "npz")
CHUNK = 1 << 20


@dataclasses.dataclass
class ModelFile:
    path: str
    format: str  # one of FORMATS (a Hugging Face directory reports its inner file's)
    layout: str  # "llmc" | "nanogpt" | "hf"
    config: GPTConfig  # from the header / config.json / shapes
    dtype: str  # the file's widest float type: "fp32" | "bf16" | "fp16" | "fp64"
    dtypes: dict[str, str]  # llm.c name -> its stored dtype
    heads_assumed: bool  # NH not known from the file (the init does not depend on it)
    wte_rows: int  # V or Vp
    sources: dict[str, list[str]]  # llm.c name -> the file's own key(s)
    missing: list[str]  # file keys expected but absent
    extra: list[str]  # file keys not used (attention-mask buffers excluded)
    lm_head: str  # "absent" | "tied" | "equal" | "separate"
    shape_problems: list[str]
    unusable: dict[str, str]  # llm.c name -> why it cannot be graded value by value
    _backend: Any = dataclasses.field(repr=False, default=None)
    variant: str = ""  # llm.c checkpoints: whose header was read (CheckpointHeader.describe)
    biases: bool = True  # False: a model without bias tensors (nanoGPT's bias=False)

    def tensor(self, name: str) -> np.ndarray:
        """float32, llm.c orientation, all layers stacked (wte: (wte_rows, C))."""
        return self._backend.tensor(name)

    def shape(self, name: str) -> tuple[int, ...]:
        """tensor(name).shape, without reading the values."""
        return self._backend.shape(name)

    def iter_chunks(self, name: str, chunk: int = CHUNK, *, start: int = 0) -> Iterator[np.ndarray]:
        """float32 flat chunks of tensor(name) in row-major order from flat index `start`, bounded
        memory (values before `start` are not read)."""
        return self._backend.iter_chunks(name, chunk, start)

    def lm_head_tensor(self) -> np.ndarray | None:
        return self._backend.lm_head_tensor()

    def close(self) -> None:
        close = getattr(self._backend, "close", None)
        if close:
            close()

    def __enter__(self) -> ModelFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- llm.c checkpoints --------------------------------------------------------------------------

class _Checkpoint:
    """Reads with plain file reads, not a memory map: a streamed comparison then keeps only a
    chunk of the file in memory (a map's touched pages would count in the RSS)."""

    def __init__(self, path, header):
        self.path, self.header = path, header
        self.specs = {s.name: s for s in header.config.tensors()}
        self.itemsize = header.np_dtype.itemsize

    def _read(self, offset: int, count: int) -> np.ndarray:
        raw = np.fromfile(self.path, dtype=self.header.np_dtype, count=count,
                          offset=ckpt_format.HEADER_BYTES + offset * self.itemsize)
        if raw.size != count:
            raise InputError(self.path, "file shrank while being read")
        return bf16_bits_to_f32(raw) if self.header.dtype == "bf16" else raw

    def iter_chunks(self, name: str, chunk: int, start: int = 0) -> Iterator[np.ndarray]:
        s = self.specs[name]
        for lo in range(start, s.numel, chunk):
            yield self._read(s.offset + lo, min(chunk, s.numel - lo))

    def tensor(self, name: str) -> np.ndarray:
        s = self.specs[name]
        return self._read(s.offset, s.numel).reshape(s.shape)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.specs[name].shape

    def lm_head_tensor(self):
        return None


def _open_checkpoint(path) -> ModelFile:
    header = ckpt_format.read_header(path)
    cfg = header.config
    names = [s.name for s in cfg.tensors()]
    return ModelFile(str(path), "llmc", "llmc", cfg, header.dtype, {n: header.dtype for n in names},
                     False, cfg.padded_vocab, {n: [n] for n in names}, [], [], "absent", [], {},
                     _Checkpoint(path, header), variant=header.describe())


# ---- mappings -----------------------------------------------------------------------------------

class _MappedBackend:
    def __init__(self, mapped: Mapped, stored: dict[str, str]):
        self.m = mapped

    def tensor(self, name):
        return self.m.tensor(name)

    def shape(self, name):
        return self.m.shape(name)

    def iter_chunks(self, name, chunk, start=0):
        return self.m.iter_chunks(name, chunk, start)

    def lm_head_tensor(self):
        return self.m.lm_head_tensor()


def model_from_mapping(mapping: Mapping[str, Any], *, source: str = "<mapping>", layout: str | None = None,
                       heads: int | None = None, config: GPTConfig | None = None, fmt: str = "npz",
                       json_config: dict | None = None, stored: dict[str, str] | None = None) -> ModelFile:
    """A dict of numpy arrays or torch tensors, keyed by llm.c names or state-dict keys.

    `stored` overrides the dtype of keys whose arrays were decoded on reading (bf16 as float32)."""
    if layout is not None and layout not in LAYOUTS:
        raise InputError(source, f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if heads is not None and (not isinstance(heads, int) or heads < 1):
        raise InputError(source, f"heads must be a positive integer, got {heads!r}")
    m = Mapped(source, unwrap(mapping, source), layout=layout, heads=heads, config=config,
               json_config=json_config)
    dtypes = dict(m.dtypes)
    for name, pieces in m.pieces.items():
        for key, _ in pieces:
            if stored and key in stored:
                dtypes[name] = stored[key]
    dtype = max(set(dtypes.values()) or {"fp32"}, key=WIDTH.get)
    wte = m.pieces.get("wte")
    rows = int(wte[0][1].shape[0]) if wte else m.config.vocab
    lm_head = m.lm_head
    if lm_head == "absent" and json_config and json_config.get("tie_word_embeddings", True):
        # save_pretrained drops the tied lm_head.weight from model.safetensors (one storage, one
        # entry); config.json's tie_word_embeddings (default true) says it is wte
        lm_head = "tied"
    return ModelFile(source, fmt, m.layout, m.config, dtype, dtypes, m.heads_assumed, rows, m.sources(),
                     m.missing, m.extra, lm_head, m.shape_problems, m.unusable,
                     _MappedBackend(m, dtypes), biases=m.biases)


# ---- detection and dispatch -------------------------------------------------------------------

def detect_format(path: str | os.PathLike) -> str:
    p = Path(path)
    if p.is_dir():
        return "hf-dir"
    try:
        with open(p, "rb") as fh:
            head = fh.read(9)
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from None
    if len(head) >= 4:
        (magic,) = struct.unpack("<i", head[:4])
        if magic in ckpt_format.VARIANTS:
            return "llmc"  # read_header tells an llm.mojo checkpoint from an llm.c token shard
        if magic in ckpt_format.OTHER_MAGICS:
            raise InputError(path, f"this is {ckpt_format.OTHER_MAGICS[magic]}, not a model checkpoint")
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise InputError(path, f"truncated or corrupt zip archive: {e}") from None
        return "npz" if names and all(n.endswith(".npy") for n in names) else "torch"
    if head[:1] == b"\x80":
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    suffix = p.suffix.lower()
    by_suffix = {".safetensors": "safetensors", ".npz": "npz", ".pt": "torch", ".pth": "torch",
                 ".ckpt": "torch"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    raise InputError(path, "cannot tell the format: not an llm.c checkpoint, zip (torch/npz), pickle or "
                           "safetensors file; use --format")


def open_model(path: str | os.PathLike, *, fmt: str | None = None, layout: str | None = None,
               heads: int | None = None, config: GPTConfig | None = None) -> ModelFile:
    if not os.path.exists(path):
        raise InputError(path, "no such file or directory")
    kind = fmt or detect_format(path)
    if kind not in FORMATS + ("hf-dir",):
        raise InputError(path, f"unknown format {kind!r}; use one of {', '.join(FORMATS)}")
    if kind == "llmc":
        if layout not in (None, "llmc"):
            raise InputError(path, f"an llm.c checkpoint has the llmc layout, not {layout}")
        return _open_checkpoint(path)
    if kind == "hf-dir":
        return _open_hf_dir(Path(path), layout=layout, heads=heads, config=config)
    data, stored = _load(path, kind)
    return model_from_mapping(data, source=str(path), layout=layout, heads=heads, config=config, fmt=kind,
                              stored=stored)


def _load(path, kind: str) -> tuple[dict, dict]:
    if kind == "torch":
        from .torchfile import load_state_dict
        return unwrap(load_state_dict(path), str(path)), {}
    if kind == "safetensors":
        from .safetensors_file import load_safetensors, read_header
        header, _ = read_header(path)
        stored = {k: "bf16" for k, e in header.items() if e["dtype"] == "BF16"}
        return load_safetensors(path), stored
    from .npz import load_npz
    return load_npz(path), {}


def _open_hf_dir(d: Path, *, layout, heads, config) -> ModelFile:
    cfg_path = d / "config.json"
    json_config = None
    if cfg_path.exists():
        try:
            json_config = json.loads(cfg_path.read_text())
        except (ValueError, OSError) as e:
            raise InputError(cfg_path, f"not valid JSON: {e}") from None
        if not isinstance(json_config, dict):
            raise InputError(cfg_path, "not a JSON object")
    for name, kind in (("model.safetensors", "safetensors"), ("pytorch_model.bin", "torch")):
        if (d / name).exists():
            data, stored = _load(d / name, kind)
            return model_from_mapping(data, source=str(d), layout=layout, heads=heads, config=config,
                                      fmt=kind, json_config=json_config, stored=stored)
    raise InputError(d, "a directory, but without model.safetensors or pytorch_model.bin")


__all__ = ["FORMATS", "ModelFile", "open_model", "model_from_mapping", "detect_format", "dtype_name"]
