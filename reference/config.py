"""GPT-2 configurations and the one parameter table every other module uses.

llm.c keeps all parameters in one flat float buffer split into 16 tensors (order below).
Everything about shapes, offsets, counts and the names other implementations use lives here,
so that the initializer, the checkpoint reader and the comparators can never disagree.
"""

from __future__ import annotations

import dataclasses
import math
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


def param_count(*, layers: int, channels: int, vocab_rows: int, max_seq_len: int) -> int:
    """The 16 tensors' total size (the parameter table's shapes summed): wte over `vocab_rows`
    rows, wpe, L x (qkvw 3C^2 + attprojw C^2 + fcw 4C^2 + fcprojw 4C^2 = 12 C^2, and 13 C of
    LayerNorm weights and biases and linear biases), lnfw and lnfb."""
    C = channels
    return vocab_rows * C + max_seq_len * C + layers * (12 * C * C + 13 * C) + 2 * C


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
        return param_count(layers=self.layers, channels=self.channels, vocab_rows=vocab_rows,
                           max_seq_len=self.max_seq_len)

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

    def as_dict(self) -> dict:
        """The config dict every JSON record of this tool writes (golden, stats, compare, ...)."""
        return {"layers": self.layers, "channels": self.channels, "heads": self.heads,
                "vocab": self.vocab, "padded_vocab": self.padded_vocab,
                "max_seq_len": self.max_seq_len, "descriptor": self.name}

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        """Inverse of as_dict (a descriptor name, when present, restores the descriptor)."""
        if d.get("descriptor"):
            return from_descriptor(d["descriptor"])
        return cls(d["layers"], d["channels"], d["heads"], d["vocab"], d["padded_vocab"],
                   d["max_seq_len"])

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
    per_layer: bool = False  # one slice per layer, stacked on a leading L axis

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


TENSOR_NAMES = (
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb",
)


def parameter_table(cfg: GPTConfig) -> list[TensorSpec]:
    L, C, Vp, T = cfg.layers, cfg.channels, cfg.padded_vocab, cfg.max_seq_len
    # name, shape, init, residual (std / sqrt(2L)), per layer (leading L axis)
    rows = [
        ("wte", (Vp, C), "normal", False, False),
        ("wpe", (T, C), "normal", False, False),
        ("ln1w", (L, C), "ones", False, True),
        ("ln1b", (L, C), "zeros", False, True),
        ("qkvw", (L, 3 * C, C), "normal", False, True),
        ("qkvb", (L, 3 * C), "zeros", False, True),
        ("attprojw", (L, C, C), "normal", True, True),
        ("attprojb", (L, C), "zeros", False, True),
        ("ln2w", (L, C), "ones", False, True),
        ("ln2b", (L, C), "zeros", False, True),
        ("fcw", (L, 4 * C, C), "normal", False, True),
        ("fcb", (L, 4 * C), "zeros", False, True),
        ("fcprojw", (L, C, 4 * C), "normal", True, True),
        ("fcprojb", (L, C), "zeros", False, True),
        ("lnfw", (C,), "ones", False, False),
        ("lnfb", (C,), "zeros", False, False),
    ]
    out, offset = [], 0
    for i, (name, shape, init, residual, per_layer) in enumerate(rows):
        spec = TensorSpec(i, name, shape, offset, init, residual, per_layer)
        out.append(spec)
        offset += spec.numel
    return out


# Tensor roles, derived once from the table above (the same for every config).
_ROLE_TABLE = parameter_table(GPTConfig(1, 1, 1, vocab=1, max_seq_len=1))
RANDOM_TENSORS = tuple(s.name for s in _ROLE_TABLE if s.init == "normal")  # drawn N(0, std)
RESIDUAL_TENSORS = tuple(s.name for s in _ROLE_TABLE if s.residual)  # std 0.02/sqrt(2L)
ONES_TENSORS = tuple(s.name for s in _ROLE_TABLE if s.init == "ones")  # LayerNorm weights
ZERO_TENSORS = tuple(s.name for s in _ROLE_TABLE if s.init == "zeros")  # biases
LAYER_WEIGHTS = tuple(s.name for s in _ROLE_TABLE if s.init == "normal" and s.per_layer)
PER_LAYER_TENSORS = tuple(s.name for s in _ROLE_TABLE if s.per_layer)  # (L, ...) stacks
GLOBAL_TENSORS = tuple(s.name for s in _ROLE_TABLE if not s.per_layer)  # wte, wpe, lnfw, lnfb
BASE_STD = 0.02  # GPT-2's init std (train_gpt2.py `_init_weights`, llm.c)


def nominal_std(cfg: GPTConfig, name: str) -> float:
    """The std a random tensor is drawn with, in exact real arithmetic (0.02, or
    0.02/sqrt(2L) for the residual projections). reference.normal.init_std gives the float
    each profile actually passes to normal_."""
    if name not in RANDOM_TENSORS:
        raise ValueError(f"{name} is not drawn at random; random tensors: {RANDOM_TENSORS}")
    return BASE_STD / math.sqrt(2 * cfg.layers) if name in RESIDUAL_TENSORS else BASE_STD


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
        for name in LAYER_WEIGHTS:
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
