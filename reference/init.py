"""The reference GPT-2 initializer: llm.c's gpt_build_from_descriptor, streamed.

llm.c zeroes the flat buffer, sets ln1w/ln2w/lnfw to 1, then draws (one normal_ call each,
layer loop outside): wte over V*C values (padded rows stay 0), wpe, and for each layer l
qkvw[l], attprojw[l], fcw[l], fcprojw[l]. That draw order is not the checkpoint order
(all of qkvw precedes all of attprojw in the file), so we first walk the draw order once,
skipping draws and snapshotting the generator at each call (624 words each), then emit the
checkpoint in file order by restoring the snapshot of each slice: memory stays bounded by
one chunk however large the model.
"""

from __future__ import annotations

import math
import threading
from typing import Iterator

import numpy as np

from .config import GPTConfig, TensorSpec, draw_order, parameter_table
from .mt19937 import MT19937, init_genrand
from .normal import DEFAULT_CHUNK, advance, check_profile, normal_


def init_std(cfg: GPTConfig, spec: TensorSpec, profile: str):
    """The std each profile passes to normal_ for a weight tensor.

    llmc:  0.02f * (1.0f / sqrtf(2.0f * L)), all float32 (train_gpt2.cu).
    torch: 0.02 / math.sqrt(2 * L) in double (train_gpt2.py); torch rounds it to float32
           once inside the n >= 16 kernel. For some L (e.g. 6, 24) the two differ by 1 ulp
           (by 2 ulps for some L >= 245).
    """
    check_profile(profile)
    if profile == "llmc":
        if not spec.residual:
            return np.float32(0.02)
        scale = np.float32(1.0) / np.sqrt(np.float32(2.0) * np.float32(cfg.layers))
        return np.float32(np.float32(0.02) * scale)
    return 0.02 / math.sqrt(2 * cfg.layers) if spec.residual else 0.02


class Plan:
    """Generator snapshots at the start of every normal_ call, keyed by (name, layer).

    The walk (mostly skipping draws, which releases the GIL) runs in a background thread
    while the caller already consumes the first tensors; stream_at waits for its snapshot.
    """

    def __init__(self, cfg: GPTConfig, seed: int = 42, profile: str = "llmc"):
        check_profile(profile)
        init_genrand(seed)  # a bad seed raises here, in the caller, not in the walk thread
        self.cfg, self.seed, self.profile = cfg, seed, profile
        self.snapshots: dict[tuple[str, int | None], tuple] = {}
        self._error: BaseException | None = None
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._walk, name="gpt2v-plan", daemon=True)
        self._thread.start()

    def _walk(self) -> None:
        try:
            stream = MT19937(self.seed)
            for spec, layer, _start, count in draw_order(self.cfg):
                with self._ready:
                    self.snapshots[(spec.name, layer)] = stream.snapshot()
                    self._ready.notify_all()
                advance(stream, count, init_std(self.cfg, spec, self.profile),
                        profile=self.profile)
        except BaseException as e:  # surfaced to the consumer by stream_at
            self._error = e
        finally:
            with self._ready:
                self._ready.notify_all()

    def stream_at(self, name: str, layer: int | None) -> MT19937:
        key = (name, layer)
        with self._ready:
            self._ready.wait_for(lambda: key in self.snapshots or self._error is not None
                                 or not self._thread.is_alive())
            if key not in self.snapshots:
                raise RuntimeError(f"plan walk failed before {key}") from self._error
            snap = self.snapshots[key]
        stream = MT19937(self.seed)
        stream.restore(snap)
        return stream


def _constant(value: float, n: int, chunk: int) -> Iterator[np.ndarray]:
    block = np.full(min(n, chunk), value, dtype=np.float32)
    for lo in range(0, n, chunk):
        yield block[: min(chunk, n - lo)]


def iter_tensor_chunks(cfg: GPTConfig, spec: TensorSpec, plan: Plan,
                       chunk: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
    """The values of one tensor in checkpoint (row-major) order, as float32 chunks."""
    if spec.init != "normal":
        yield from _constant(1.0 if spec.init == "ones" else 0.0, spec.numel, chunk)
        return
    std = init_std(cfg, spec, plan.profile)
    if spec.name in ("wte", "wpe"):
        n = (cfg.vocab if spec.name == "wte" else cfg.max_seq_len) * cfg.channels
        stream = plan.stream_at(spec.name, None)
        yield from normal_(stream, n, std, profile=plan.profile, chunk=chunk)
        yield from _constant(0.0, spec.numel - n, chunk)  # wte rows V..Vp-1
        return
    per_layer = spec.numel // cfg.layers
    for layer in range(cfg.layers):
        stream = plan.stream_at(spec.name, layer)
        yield from normal_(stream, per_layer, std, profile=plan.profile, chunk=chunk)


def iter_params(cfg: GPTConfig, seed: int = 42, profile: str = "llmc",
                chunk: int = DEFAULT_CHUNK) -> Iterator[tuple[TensorSpec, np.ndarray]]:
    """(spec, float32 chunk) pairs whose concatenation is llm.c's flat parameter buffer."""
    plan = Plan(cfg, seed, profile)
    for spec in parameter_table(cfg):
        for part in iter_tensor_chunks(cfg, spec, plan, chunk):
            yield spec, part


def init_params(cfg: GPTConfig, seed: int = 42, profile: str = "llmc") -> np.ndarray:
    """The whole flat float32 buffer in memory (small models and tests)."""
    out = np.empty(cfg.num_params_padded, dtype=np.float32)
    pos = 0
    for _spec, part in iter_params(cfg, seed, profile):
        out[pos: pos + part.size] = part
        pos += part.size
    assert pos == out.size, f"generated {pos} values, expected {out.size}"
    return out


def init_tensors(cfg: GPTConfig, seed: int = 42, profile: str = "llmc") -> dict[str, np.ndarray]:
    """name -> array in checkpoint shape (views into one flat buffer)."""
    flat = init_params(cfg, seed, profile)
    return {s.name: flat[s.offset: s.offset + s.numel].reshape(s.shape)
            for s in parameter_table(cfg)}
