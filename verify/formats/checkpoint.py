"""llm.c model checkpoints (gpt2_124M.bin, model_%08d.bin): read, validate, write.

Layout (all little-endian):

    header  256 x int32 (1024 bytes)
            [0] 20240326 magic   [1] version   [2] maxT   [3] V   [4] L   [5] NH   [6] C
            [7] Vp               [8..255] zero
    body    the 16 tensors of reference.config.parameter_table(cfg), back to back, row-major,
            no padding: wte (Vp, C), wpe (maxT, C), ln1w (L, C), ..., lnfw (C,), lnfb (C,)
            version 3: every value float32           (4 bytes each)
            version 5: every value bf16, kept here as its uint16 bit pattern (2 bytes each)
            version 1: llm.c's first format (April 2024), still what joshcarp/llm.go writes and
                       reads and nietras/Llm.cs reads: float32, [7] zero, wte (V, C) unpadded
                       (read as Vp = V)

    file size = 1024 + num_params_padded * (4 or 2)

Variants from llm.c's ports (read, and named in CheckpointHeader.describe): ulmentflam/llm.mojo
writes this layout under magic 20240520 (MOJO_MAGIC; llm.c's token-shard number, told apart by
version and size); its float16 runs also write version 5, which no header field can tell from
bf16.

The reader validates the header and the file size without touching the body, then memory-maps
the body, so a corrupt or lying file fails fast and a big one costs no RAM until read.
Every problem with a file is an InputError(path, one line).
"""

from __future__ import annotations

import dataclasses
import os
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from gpt2_verify.reference.bf16 import bf16_bits_to_f32, f32_to_bf16_bits
from gpt2_verify.reference.config import GPT3_CHANNELS, ConfigError, GPTConfig, TensorSpec, parameter_table

from ..atomic import atomic_output
from ..errors import InputError
from .llmc_header import HEADER_BYTES, HEADER_INTS, MAGICS, MODEL_MAGIC, SHARD_MAGIC
from .llmc_header import read_header as read_llmc_header

MAGIC = MODEL_MAGIC
# ulmentflam/llm.mojo (llmm/checkpointing.mojo MODEL_MAGIC) writes llm.c's model layout under the
# number llm.c gives its token shards; told apart by the version (3/5 here, 1 for a shard) and
# the size (a shard is 1024 + 2 * ntok bytes).
MOJO_MAGIC = SHARD_MAGIC
VARIANTS = {MAGIC: "llm.c", MOJO_MAGIC: "llm.mojo"}
VERSION_DTYPE = {3: "fp32", 5: "bf16"}
DTYPE_VERSION = {d: v for v, d in VERSION_DTYPE.items()}
LEGACY_VERSION = 1  # float32, vocab unpadded, header slot 7 zero: read, never written
NP_DTYPE = {"fp32": np.dtype("<f4"), "bf16": np.dtype("<u2")}
CHUNK = 1 << 20  # elements per step when scanning or converting

# llm.c's other files, to say what a misplaced file probably is
OTHER_MAGICS = {m: what for m, what in MAGICS.items() if m != MAGIC}
FIELDS = ("maxT", "V", "L", "NH", "C", "Vp")  # header slots 2..7


@dataclasses.dataclass(frozen=True)
class CheckpointHeader:
    version: int  # 3 or 5 (1: llm.c's first format, read only)
    dtype: str  # "fp32" or "bf16"
    config: GPTConfig
    nbytes_expected: int  # HEADER_BYTES + num_params_padded * itemsize
    variant: str = "llm.c"  # VARIANTS: whose magic the file carries

    def describe(self) -> str:
        magic = MAGIC if self.variant == "llm.c" else MOJO_MAGIC
        legacy = ", vocab unpadded" if self.version == LEGACY_VERSION else ""
        return f"{self.variant} checkpoint (magic {magic}, version {self.version}, {self.dtype}{legacy})"

    @property
    def np_dtype(self) -> np.dtype:
        return NP_DTYPE[self.dtype]


def _check_dtype(dtype: str) -> None:
    if dtype not in NP_DTYPE:
        raise ValueError(f"unknown checkpoint dtype {dtype!r}; use 'fp32' or 'bf16'")


def expected_size(cfg: GPTConfig, dtype: str) -> int:
    _check_dtype(dtype)
    return HEADER_BYTES + cfg.num_params_padded * NP_DTYPE[dtype].itemsize


def _config_from_header(path, fields: dict[str, int]) -> GPTConfig:
    C, NH = fields["C"], fields["NH"]
    # llm.c's gpt3:c5140 has 40 heads of 128 although 5140 % 40 != 0; accept exactly that.
    uneven = C % NH != 0 and C in GPT3_CHANNELS and C // GPT3_CHANNELS[C][1] == NH
    try:
        return GPTConfig(layers=fields["L"], channels=C, heads=NH, vocab=fields["V"],
                         padded_vocab=fields["Vp"], max_seq_len=fields["maxT"],
                         allow_uneven_heads=uneven)
    except ConfigError as e:
        shown = " ".join(f"{k}={v}" for k, v in fields.items())
        problem = " ".join(str(e).split())  # keep it on one line
        raise InputError(path, f"header describes an invalid model ({shown}): {problem}") from None


def read_header(path: str | os.PathLike) -> CheckpointHeader:
    """Validate an llm.c model file's header and size (never reads the body)."""
    header, size = read_llmc_header(path, magic=None, versions=None)
    h = [int(x) for x in header]  # (256,)

    if h[0] == MOJO_MAGIC:
        check_not_a_shard(path, h, size)
    elif h[0] != MAGIC:
        hint = OTHER_MAGICS.get(h[0], "not an llm.c model file")
        raise InputError(path, f"bad magic {h[0]} (expected {MAGIC}): {hint}")
    version = h[1]
    if version not in VERSION_DTYPE and not (version == LEGACY_VERSION and h[0] == MAGIC):
        known = ", ".join(f"{v} ({d})" for v, d in VERSION_DTYPE.items())
        raise InputError(path, f"unknown checkpoint version {version}; known versions: {known}, "
                               f"{LEGACY_VERSION} (fp32, unpadded vocab)")
    if version == LEGACY_VERSION:
        if h[7] != 0:
            raise InputError(path, f"version 1 has no padded vocab, but header slot 7 is {h[7]}")
        h[7] = h[3]  # Vp = V
    fields = dict(zip(FIELDS, h[2:8], strict=True))
    for name, value in fields.items():
        if value <= 0:
            raise InputError(path, f"header field {name} is {value}, must be positive")
    cfg = _config_from_header(path, fields)
    for slot in range(8, HEADER_INTS):
        if h[slot] != 0:
            raise InputError(path, f"header slot {slot} is nonzero ({h[slot]}): not an llm.c "
                                   f"model file or a newer version")

    dtype = VERSION_DTYPE.get(version, "fp32")
    expected = expected_size(cfg, dtype)
    if size != expected:
        what = (f"truncated ({expected - size} bytes missing)" if size < expected
                else f"trailing bytes ({size - expected} extra)")
        raise InputError(path, f"file is {size} bytes but its header ({cfg.describe()}, {dtype}) "
                               f"needs exactly {expected}: {what}")
    return CheckpointHeader(version, dtype, cfg, expected, VARIANTS[h[0]])


def check_not_a_shard(path, h: list[int], size: int) -> None:
    """Magic 20240520: an llm.mojo model checkpoint (version 3 or 5, returns) or an llm.c token
    shard (version 1, size 1024 + 2 ntok: InputError saying so), else InputError."""
    if h[1] in VERSION_DTYPE:
        return
    if h[1] == 1:
        if h[2] > 0 and size == HEADER_BYTES + 2 * h[2]:
            raise InputError(path, f"this is an llm.c token shard ({h[2]} tokens: magic {MOJO_MAGIC}, "
                                   f"version 1, 1024 + 2 * {h[2]} bytes), not a model checkpoint")
        raise InputError(path, f"magic {MOJO_MAGIC} version 1 is an llm.c token shard's header, but the "
                               f"file is {size} bytes where {h[2]} tokens need "
                               f"{HEADER_BYTES + 2 * max(h[2], 0)}: "
                               f"a damaged shard, not a model checkpoint")
    raise InputError(path, f"magic {MOJO_MAGIC} with version {h[1]}: neither an llm.c token shard "
                           f"(version 1) nor an llm.mojo model checkpoint (version 3 fp32 / 5 bf16)")


class Checkpoint:
    """A validated, memory-mapped (read-only) llm.c model file."""

    def __init__(self, path: str | os.PathLike, header: CheckpointHeader, flat: np.ndarray):
        self.path = Path(path)
        self.header = header
        self._flat: np.ndarray | None = flat  # (num_params_padded,) '<f4' or '<u2'
        self._specs = parameter_table(header.config)
        self._by_name = {s.name: s for s in self._specs}

    @property
    def config(self) -> GPTConfig:
        return self.header.config

    @property
    def dtype(self) -> str:
        return self.header.dtype

    @property
    def specs(self) -> list[TensorSpec]:
        return list(self._specs)

    @property
    def flat(self) -> np.ndarray:
        """The whole body, (num_params_padded,), in file order."""
        if self._flat is None:
            raise ValueError(f"checkpoint {self.path} is closed")
        return self._flat

    def tensor(self, name: str) -> np.ndarray:
        """Raw view with the spec's shape: float32, or uint16 bit patterns for bf16."""
        spec = self._by_name.get(name)
        if spec is None:
            raise KeyError(f"no tensor {name!r}; names: {', '.join(self._by_name)}")
        return self.flat[spec.offset:spec.offset + spec.numel].reshape(spec.shape)

    def tensor_f32(self, name: str) -> np.ndarray:
        """float32 values: the view itself for fp32, an exact converted copy for bf16."""
        raw = self.tensor(name)
        return bf16_bits_to_f32(raw) if self.dtype == "bf16" else raw

    def tensors(self) -> Iterator[tuple[TensorSpec, np.ndarray]]:
        for spec in self._specs:
            yield spec, self.tensor(spec.name)

    def close(self) -> None:
        """Drop our map; views already handed out stay valid until they are released."""
        self._flat = None

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    header = read_header(path)
    n = header.config.num_params_padded
    try:
        flat = np.memmap(path, dtype=header.np_dtype, mode="r", offset=HEADER_BYTES, shape=(n,))
    except (OSError, ValueError) as e:  # e.g. the file changed since read_header
        raise InputError(path, f"cannot map the body: {' '.join(str(e).split())}") from None
    return Checkpoint(path, header, flat)


def check_finite(path: str | os.PathLike) -> None:
    """Scan the body in chunks; InputError naming the first NaN/Inf's tensor and index."""
    with open_checkpoint(path) as ckpt:
        flat = ckpt.flat
        for start in range(0, flat.size, CHUNK):
            chunk = flat[start:start + CHUNK]
            if ckpt.dtype == "bf16":
                bad = (chunk & 0x7F80) == 0x7F80  # exponent all ones: inf or NaN
            else:
                bad = ~np.isfinite(chunk)
            if not bad.any():
                continue
            i = start + int(np.argmax(bad))
            specs = ckpt.specs
            spec = specs[bisect_right([s.offset for s in specs], i) - 1]
            index = np.unravel_index(i - spec.offset, spec.shape)
            where = ", ".join(str(int(k)) for k in index)
            value = ckpt.tensor_f32(spec.name)[index]
            raise InputError(path, f"non-finite value {value} in {spec.name}[{where}] "
                                   f"(flat element {i})")


# ---- writing ----------------------------------------------------------------------------------

def header_bytes(cfg: GPTConfig, dtype: str = "fp32") -> bytes:
    _check_dtype(dtype)
    h = np.zeros(HEADER_INTS, dtype="<i4")
    h[:8] = [MAGIC, DTYPE_VERSION[dtype], cfg.max_seq_len, cfg.vocab, cfg.layers, cfg.heads,
             cfg.channels, cfg.padded_vocab]
    return h.tobytes()


def _encode(chunk: np.ndarray, dtype: str) -> Iterator[np.ndarray]:
    """One caller chunk -> contiguous little-endian pieces of at most CHUNK elements."""
    a = np.asarray(chunk)
    if dtype == "fp32" and a.dtype != np.float32:
        raise TypeError(f"fp32 checkpoint chunks must be float32, got {a.dtype}")
    if dtype == "bf16" and a.dtype not in (np.float32, np.uint16):
        raise TypeError(f"bf16 checkpoint chunks must be float32 or uint16 bits, got {a.dtype}")
    a = a.reshape(-1)
    for start in range(0, a.size, CHUNK):
        piece = a[start:start + CHUNK]
        if dtype == "bf16" and piece.dtype == np.float32:
            piece = f32_to_bf16_bits(piece)
        yield np.ascontiguousarray(piece, dtype=NP_DTYPE[dtype])


def write_checkpoint(path: str | os.PathLike, cfg: GPTConfig, chunks: Iterable[np.ndarray],
                     dtype: str = "fp32") -> None:
    """Stream the flat buffer (in file order, any chunking) into an llm.c model file.

    ValueError if the chunks do not hold exactly num_params_padded values; then, as on any
    error, nothing is written (an existing file at `path` stays as it was).
    """
    _check_dtype(dtype)
    n = cfg.num_params_padded
    written = 0
    with atomic_output(path) as fh:
        fh.write(header_bytes(cfg, dtype))
        for chunk in chunks:
            for piece in _encode(chunk, dtype):
                written += piece.size
                if written > n:
                    raise ValueError(f"too many values for {cfg.describe()}: it has {n} "
                                     f"parameters, got at least {written}")
                fh.write(piece.data)
        if written != n:
            raise ValueError(f"too few values for {cfg.describe()}: it has {n} parameters, "
                             f"got {written}")


def write_checkpoint_array(path: str | os.PathLike, cfg: GPTConfig, flat_array: np.ndarray,
                           dtype: str = "fp32") -> None:
    """write_checkpoint for one array holding the whole flat buffer (any shape, C order)."""
    write_checkpoint(path, cfg, [flat_array], dtype)
