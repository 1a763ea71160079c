"""GPT-2 configurations and the one parameter table every other module uses.

llm.c keeps all parameters in one flat float buffer split into 16 tensors (order below).
Everything about shapes, offsets, counts and the names other implementations use lives here,
so that the initializer, the checkpoint reader and the comparators can never disagree.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterator

# llm.c constants (train_gpt2.cu gpt_build_from_descriptor)
LLMC_VOCAB = 50257
LLMC_PADDED_VOCAB = 50304

# dN -> (channels, heads); maxT 1024
GPT2_DEPTHS = {
    6: (384, 6),
    12: (768, 12),
    24: (1024, 16),
    36: (1280, 20),
    48: (1600, 25),
    60: (1920, 30),
    72: (2880, 30),
    84: (3456, 36),
}
# gpt3:cC -> (depth, head_size); maxT 2048. llm.c sets num_heads = C / head_size (integer
# division), so c5140 gets 40 heads of "128" although 5140 % 40 != 0: we reproduce that.
GPT3_CHANNELS = {
    384: (6, 64),
    768: (12, 64),
    1024: (24, 64),
    1536: (24, 96),
    2048: (24, 128),
    2560: (32, 80),
    4096: (32, 128),
    5140: (40, 128),
    12288: (96, 128),
}

# Sanity limits for custom configs: header fields are int32, llm.c's normal_ takes an
# unsigned int count, and nothing GPT-2 shaped needs more than ~1T parameters.
MAX_FIELD = 2**31 - 1
MAX_DRAW = 2**32 - 1
MAX_PARAMS = 2**40


class ConfigError(ValueError):
    """An invalid configuration; the message says which field and how to fix it."""


def round_up(n: int, multiple: int) -> int:
    return ((n + multiple - 1) // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    layers: int  # L
    channels: int  # C
    heads: int  # NH
    vocab: int = LLMC_VOCAB  # V
    padded_vocab: int | None = None  # Vp; None -> V rounded up to a multiple of 128
    max_seq_len: int = 1024  # maxT
    name: str | None = None  # descriptor it came from, if any
    allow_uneven_heads: bool = False  # only llm.c's gpt3:c5140 needs this

    def __post_init__(self) -> None:
        if self.padded_vocab is None:
            object.__setattr__(self, "padded_vocab", round_up(self.vocab, 128))
        self.validate()

    # ---- validation -------------------------------------------------------------------------
    def validate(self) -> None:
        fields = {
            "layers": self.layers,
            "channels": self.channels,
            "heads": self.heads,
            "vocab": self.vocab,
            "padded_vocab": self.padded_vocab,
            "max_seq_len": self.max_seq_len,
        }
        for key, value in fields.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key} must be an integer, got {value!r}")
            if value <= 0:
                raise ConfigError(f"{key} must be positive, got {value}")
            if value > MAX_FIELD:
                raise ConfigError(f"{key}={value} does not fit llm.c's int32 header (max {MAX_FIELD})")
        if self.channels % self.heads != 0 and not self.allow_uneven_heads:
            raise ConfigError(
                f"channels={self.channels} is not divisible by heads={self.heads}; "
                f"pick heads among the divisors of {self.channels}"
            )
        if self.padded_vocab < self.vocab:
            raise ConfigError(
                f"padded_vocab={self.padded_vocab} is smaller than vocab={self.vocab}; "
                f"use padded_vocab >= vocab (default rounds vocab up to a multiple of 128)"
            )
        biggest = max(self.vocab * self.channels, self.max_seq_len * self.channels,
                      4 * self.channels * self.channels)
        if biggest > MAX_DRAW:
            raise ConfigError(
                f"a tensor of this config has {biggest} values; llm.c's normal_ draws at most "
                f"{MAX_DRAW} per call: reduce channels, vocab or max_seq_len"
            )
        if self.num_params_padded > MAX_PARAMS:
            raise ConfigError(
                f"config has {self.num_params_padded} parameters (> {MAX_PARAMS}); "
                f"that is not a GPT-2 this tool can check"
            )

    # ---- derived quantities -----------------------------------------------------------------
    @property
    def head_size(self) -> int:
        return self.channels // self.heads

    def _count(self, vocab_rows: int) -> int:
        L, C = self.layers, self.channels
        return vocab_rows * C + self.max_seq_len * C + L * (12 * C * C + 13 * C) + 2 * C

    @property
    def num_params(self) -> int:
        """Parameters with wte over V rows (what train_gpt2.py's model holds)."""
        return self._count(self.vocab)

    @property
    def num_params_padded(self) -> int:
        """Parameters as llm.c stores them: wte over Vp rows."""
        return self._count(self.padded_vocab)

    @property
    def num_params_nanogpt(self) -> int:
        """What nanoGPT prints, get_num_params(non_embedding=True): wte over Vp rows (nanoGPT
        pads 50257 to 50304 like llm.c; wte is tied to lm_head) minus wpe. d12: 123.69M."""
        return self.num_params_padded - self.max_seq_len * self.channels

    def tensors(self) -> list["TensorSpec"]:
        return parameter_table(self)

    def describe(self) -> str:
        tag = f"{self.name}: " if self.name else ""
        return (f"{tag}L={self.layers} C={self.channels} NH={self.heads} V={self.vocab} "
                f"Vp={self.padded_vocab} maxT={self.max_seq_len}")

    def slug(self) -> str:
        """A file-name-safe identifier."""
        if self.name:
            return self.name.replace(":", "-")
        return (f"L{self.layers}-C{self.channels}-NH{self.heads}-V{self.vocab}"
                f"-Vp{self.padded_vocab}-T{self.max_seq_len}")


# ---- the parameter table ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One of llm.c's 16 parameter tensors."""

    index: int  # 0..15, position in the checkpoint
    name: str  # llm.c name: wte, wpe, ln1w, ...
    shape: tuple[int, ...]  # row-major shape in the checkpoint
    offset: int  # element offset in the flat buffer
    init: str  # "normal", "ones" or "zeros"
    residual: bool = False  # std scaled by 1/sqrt(2L)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def per_layer(self) -> bool:
        return self.name not in ("wte", "wpe", "lnfw", "lnfb")


TENSOR_NAMES = (
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb",
)


def parameter_table(cfg: GPTConfig) -> list[TensorSpec]:
    L, C, Vp, T = cfg.layers, cfg.channels, cfg.padded_vocab, cfg.max_seq_len
    rows = [
        ("wte", (Vp, C), "normal", False),
        ("wpe", (T, C), "normal", False),
        ("ln1w", (L, C), "ones", False),
        ("ln1b", (L, C), "zeros", False),
        ("qkvw", (L, 3 * C, C), "normal", False),
        ("qkvb", (L, 3 * C), "zeros", False),
        ("attprojw", (L, C, C), "normal", True),
        ("attprojb", (L, C), "zeros", False),
        ("ln2w", (L, C), "ones", False),
        ("ln2b", (L, C), "zeros", False),
        ("fcw", (L, 4 * C, C), "normal", False),
        ("fcb", (L, 4 * C), "zeros", False),
        ("fcprojw", (L, C, 4 * C), "normal", True),
        ("fcprojb", (L, C), "zeros", False),
        ("lnfw", (C,), "ones", False),
        ("lnfb", (C,), "zeros", False),
    ]
    out, offset = [], 0
    for i, (name, shape, init, residual) in enumerate(rows):
        spec = TensorSpec(i, name, shape, offset, init, residual)
        out.append(spec)
        offset += spec.numel
    return out


def draw_order(cfg: GPTConfig) -> Iterator[tuple[TensorSpec, int | None, int, int]]:
    """The normal_ calls llm.c (and train_gpt2.py) make, in order.

    Yields (spec, layer, start, count): `count` values drawn into spec's flat elements
    [start, start + count). wte draws V*C values (not Vp*C): the padded rows stay zero.
    """
    specs = {s.name: s for s in parameter_table(cfg)}
    C = cfg.channels
    yield specs["wte"], None, 0, cfg.vocab * C
    yield specs["wpe"], None, 0, cfg.max_seq_len * C
    for layer in range(cfg.layers):
        for name in ("qkvw", "attprojw", "fcw", "fcprojw"):
            spec = specs[name]
            per = spec.numel // cfg.layers
            yield spec, layer, layer * per, per


# ---- descriptors ------------------------------------------------------------------------------

_DESC = re.compile(r"^(?:gpt2:)?d(\d+)$|^gpt3:c(\d+)$")


def descriptor_names() -> list[str]:
    return [f"d{n}" for n in GPT2_DEPTHS] + [f"gpt3:c{c}" for c in GPT3_CHANNELS]


def from_descriptor(desc: str) -> GPTConfig:
    """llm.c's model descriptors: dN, gpt2:dN, gpt3:cC."""
    m = _DESC.match(desc.strip())
    if not m:
        raise ConfigError(
            f"unknown model descriptor {desc!r}; use one of {', '.join(descriptor_names())} "
            f"(gpt2:dN also works) or custom --layers/--channels/--heads flags"
        )
    if m.group(1) is not None:
        depth = int(m.group(1))
        if depth not in GPT2_DEPTHS:
            raise ConfigError(f"llm.c has no GPT-2 descriptor d{depth}; known depths: "
                              f"{sorted(GPT2_DEPTHS)}")
        C, NH = GPT2_DEPTHS[depth]
        return GPTConfig(depth, C, NH, LLMC_VOCAB, LLMC_PADDED_VOCAB, 1024, name=f"d{depth}")
    C = int(m.group(2))
    if C not in GPT3_CHANNELS:
        raise ConfigError(f"llm.c has no GPT-3 descriptor gpt3:c{C}; known channels: "
                          f"{sorted(GPT3_CHANNELS)}")
    depth, head_size = GPT3_CHANNELS[C]
    return GPTConfig(depth, C, C // head_size, LLMC_VOCAB, LLMC_PADDED_VOCAB, 2048,
                     name=f"gpt3:c{C}", allow_uneven_heads=(C % head_size != 0))


# ---- names in other implementations -----------------------------------------------------------

# llm.c name -> (state-dict key template, Hugging Face Conv1D transposes it)
# train_gpt2.py and nanoGPT use exactly Hugging Face's key names but nn.Linear (out, in) layout;
# Hugging Face's GPT2 uses Conv1D with (in, out) weights. Per-layer keys take {i}.
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
LAYOUTS = ("llmc", "nanogpt", "hf")


def state_dict_key(name: str, layer: int | None = None) -> str:
    template, _ = STATE_DICT_KEYS[name]
    if "{i}" in template:
        if layer is None:
            raise ValueError(f"{name} is per layer: pass layer=")
        return template.format(i=layer)
    return template


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
    if layout == "hf" and STATE_DICT_KEYS[name][1]:
        shape = tuple(reversed(shape))
    return tuple(shape)
