"""llm.c debug-state files (gpt2_124M_debug_state.bin, what test_gpt2 reads): read, validate, write.

Layout (all little-endian):

    header  256 x int32 (1024 bytes): [0] 20240327 magic  [1] 2 version  [2] B  [3] T  [4..255] 0
    x       int32 (B, T)       input tokens
    y       int32 (B, T)       target tokens
    logits  float32 (B, T, V)  V, not Vp
    loss    float32            mean cross-entropy
    grads   float32 (N,)       all 16 parameter gradients in the checkpoint layout (wte over Vp
                               rows, the padded rows zero): N = num_params_padded

    file size = 1024 + 8 B T + 4 B T V + 4 + 4 N

V and N come from the model the state belongs to, so reading needs the config. The reader
checks the header and the exact size before reading anything, then the tokens' range.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from gpt2_verify.reference.config import GPTConfig

from ..atomic import atomic_output
from ..errors import InputError
from .llmc_header import DEBUG_STATE_MAGIC as MAGIC
from .llmc_header import HEADER_INTS, read_header

VERSION = 2


@dataclasses.dataclass
class DebugState:
    x: np.ndarray  # (B, T) int32
    y: np.ndarray  # (B, T) int32
    logits: np.ndarray  # (B, T, V) float32
    loss: float
    grads: np.ndarray  # (num_params_padded,) float32, checkpoint layout

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def seq(self) -> int:
        return self.x.shape[1]

    def grad_tensors(self, cfg: GPTConfig) -> dict[str, np.ndarray]:
        return {s.name: self.grads[s.offset:s.offset + s.numel].reshape(s.shape) for s in cfg.tensors()}


def expected_size(cfg: GPTConfig, B: int, T: int) -> int:
    return HEADER_INTS * 4 + 8 * B * T + 4 * B * T * cfg.vocab + 4 + 4 * cfg.num_params_padded


def read_debug_state(path: str | os.PathLike, cfg: GPTConfig, *, require_finite: bool = False) -> DebugState:
    """require_finite: reject NaN/inf in logits, loss and gradients (a debug state used as the
    expected values). Off by default: a candidate's NaN gradients are a finding to judge, not
    unreadable input."""
    header, size = read_header(path, magic=MAGIC, versions={VERSION: ""})
    B, T = int(header[2]), int(header[3])
    if B <= 0 or T <= 0:
        raise InputError(path, f"header says B={B}, T={T}: both must be positive")
    if T > cfg.max_seq_len:
        raise InputError(path, f"header says T={T}, more than the model's maxT={cfg.max_seq_len}")
    want = expected_size(cfg, B, T)
    if size != want:
        raise InputError(path, f"file is {size} bytes but B={B}, T={T} and the model ({cfg.describe()}) "
                               f"need exactly {want}")
    off = HEADER_INTS * 4
    x = np.fromfile(path, dtype="<i4", count=B * T, offset=off).reshape(B, T)
    y = np.fromfile(path, dtype="<i4", count=B * T, offset=off + 4 * B * T).reshape(B, T)
    for name, t in (("x", x), ("y", y)):
        bad = (t < 0) | (t >= cfg.vocab)
        if bad.any():
            i = np.unravel_index(int(np.argmax(bad)), t.shape)
            raise InputError(path, f"token {name}[{i[0]}, {i[1]}] = {int(t[i])} outside [0, {cfg.vocab})")
    off += 8 * B * T
    logits = np.fromfile(path, dtype="<f4", count=B * T * cfg.vocab, offset=off).reshape(B, T, cfg.vocab)
    off += 4 * B * T * cfg.vocab
    loss = float(np.fromfile(path, dtype="<f4", count=1, offset=off)[0])
    grads = np.fromfile(path, dtype="<f4", count=cfg.num_params_padded, offset=off + 4)
    if require_finite:
        if not np.isfinite(loss):
            raise InputError(path, f"loss is {loss}")
        for name, t in (("logits", logits), ("grads", grads)):
            bad = ~np.isfinite(t)
            if bad.any():
                i = np.unravel_index(int(np.argmax(bad)), t.shape)
                where = _grad_name(cfg, i[0]) if name == "grads" else str(list(map(int, i)))
                raise InputError(path, f"{name} {where} = {float(t[i])} ({int(bad.sum())} non-finite "
                                       f"value(s)): the expected values must be finite")
    return DebugState(x, y, logits, loss, grads)


def _grad_name(cfg: GPTConfig, flat_index: int) -> str:
    for s in cfg.tensors():
        if s.offset <= flat_index < s.offset + s.numel:
            idx = np.unravel_index(flat_index - s.offset, s.shape)
            return f"d{s.name}{list(map(int, idx))}"
    return f"[{flat_index}]"


def write_debug_state(path: str | os.PathLike, cfg: GPTConfig, x, y, logits, loss: float,
                      grads: dict[str, np.ndarray]) -> None:
    """Atomically; grads in llm.c shapes (wte over Vp rows)."""
    x = np.asarray(x, dtype="<i4")
    B, T = x.shape
    logits = np.asarray(logits, dtype="<f4")
    if logits.shape != (B, T, cfg.vocab):
        raise ValueError(f"logits must be (B, T, V) = {(B, T, cfg.vocab)}, got {logits.shape}")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:4] = (MAGIC, VERSION, B, T)
    with atomic_output(path) as fh:
        fh.write(header.tobytes())
        fh.write(x.tobytes())
        fh.write(np.asarray(y, dtype="<i4").reshape(B, T).tobytes())
        fh.write(logits.tobytes())
        fh.write(np.float32(loss).tobytes())
        for spec in cfg.tensors():
            g = np.asarray(grads[spec.name], dtype="<f4")
            if g.shape != spec.shape:
                raise ValueError(f"gradient {spec.name} must have shape {spec.shape}, got {g.shape}")
            fh.write(g.tobytes())
