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

import threading
from typing import Iterator, Sequence

import numpy as np

from .config import GPTConfig, TensorSpec, parameter_table
from .mt19937 import MT19937, init_genrand
from .normal import DEFAULT_CHUNK, advance, box_muller16, check_profile, normal_
from .schemes import DEFAULT_SCHEME, Law, SchemeInit, resolve, rows_of


class Plan:
    """Generator snapshots at the start of every draw call, keyed by (name, layer, part).

    The walk (mostly skipping draws, which releases the GIL) runs in a background thread
    while the caller already consumes the first tensors; stream_at waits for its snapshot.
    `scheme` (a name or a resolved reference.schemes.SchemeInit) says which laws are drawn;
    the default, gpt2, is llm.c's init.
    """

    def __init__(self, cfg: GPTConfig, seed: int = 42, profile: str = "llmc", *,
                 scheme: "str | SchemeInit" = DEFAULT_SCHEME, overrides: Sequence[str] = ()):
        check_profile(profile)
        init_genrand(seed)  # a bad seed raises here, in the caller, not in the walk thread
        self.cfg, self.seed, self.profile = cfg, seed, profile
        self.init = resolve(scheme, cfg, profile=profile, overrides=overrides)
        self.snapshots: dict[tuple[str, int | None, int], tuple] = {}
        self._error: BaseException | None = None
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._walk, name="gpt2v-plan", daemon=True)
        self._thread.start()

    def _walk(self) -> None:
        try:
            stream = MT19937(self.seed)
            for d in self.init.draws():
                with self._ready:
                    self.snapshots[(d.name, d.layer, d.index)] = stream.snapshot()
                    self._ready.notify_all()
                law = d.law
                if law.kind == "normal":
                    advance(stream, d.count, std_arg(law, self.profile), profile=self.profile)
                elif law.kind == "uniform":
                    stream.skip(d.count)
                else:  # truncnormal: how many blocks it takes depends on the values
                    for _ in _truncnormal(stream, d.count, law.std, law.k, DEFAULT_CHUNK):
                        pass
        except BaseException as e:  # surfaced to the consumer by stream_at
            self._error = e
        finally:
            with self._ready:
                self._ready.notify_all()

    def stream_at(self, name: str, layer: int | None, part: int = 0) -> MT19937:
        key = (name, layer, part)
        with self._ready:
            self._ready.wait_for(lambda: key in self.snapshots or self._error is not None
                                 or not self._thread.is_alive())
            if key not in self.snapshots:
                raise RuntimeError(f"plan walk failed before {key}") from self._error
            snap = self.snapshots[key]
        stream = MT19937(self.seed)
        stream.restore(snap)
        return stream


def std_arg(law: Law, profile: str):
    # what normal_ is handed: llm.c passes a float, PyTorch a double (see normal_)
    return np.float32(law.std) if profile == "llmc" else float(law.std)


def _constant(value: float, n: int, chunk: int) -> Iterator[np.ndarray]:
    block = np.full(min(n, chunk), value, dtype=np.float32)
    for lo in range(0, n, chunk):
        yield block[: min(chunk, n - lo)]


_U24_CENTRE = 1 << 23
_TWO_M23 = np.float32(2.0 ** -23)
_TWO_M24 = np.float32(2.0 ** -24)


def _uniform(stream: MT19937, n: int, bound: float, chunk: int, profile: str = "llmc"
             ) -> Iterator[np.ndarray]:
    """U(-bound, bound) from the low 24 bits k of each word, with a32 = float32(bound):
    llmc:  RN32(a32 (k - 2^23) / 2^23), one rounding ((k - 2^23) / 2^23 is exact in float32);
           PyTorch's CPU uniform_ gives these bits with its AVX2 / AVX512 kernels.
    torch: PyTorch's scalar kernel (ATEN_CPU_CAPABILITY=default), uniform_real_distribution in
           float: RN32(RN32(k 2^-24 * (a32 + a32)) + (-a32)), two roundings."""
    check_profile(profile)
    a32 = np.float32(bound)
    for lo in range(0, n, chunk):
        k = stream.u24(min(chunk, n - lo))
        if profile == "llmc":
            yield ((k.astype(np.int64) - _U24_CENTRE).astype(np.float32) * _TWO_M23) * a32
        else:
            yield (k.astype(np.float32) * _TWO_M24) * (a32 + a32) + (-a32)


def _truncnormal(stream: MT19937, n: int, std: float, k: float, chunk: int) -> Iterator[np.ndarray]:
    """N(0, std) cut at +-k std by rejection: standard normals from whole blocks of 16 words
    (box_muller16), |z| <= k kept in order, value RN32(z * float32(std)); the stream ends after
    the block that holds the n-th kept value."""
    std32 = np.float32(std)
    done = 0
    while done < n:
        need = n - done
        blocks = max(1, min(max(1, chunk // 16), -(-need * 1_004 // 16_000) + 1))
        snap = stream.snapshot()
        z = box_muller16(stream.u24(16 * blocks)).reshape(blocks, 16)
        keep = np.abs(z.astype(np.float64)) <= k
        kept = np.cumsum(keep.sum(axis=1))
        if kept[-1] > need:  # give back the blocks after the one holding the need-th value
            used = int(np.searchsorted(kept, need)) + 1
            stream.restore(snap)
            stream.skip(16 * used)
            z, keep = z[:used], keep[:used]
        vals = z[keep][:need] * std32
        vals += np.float32(0.0)  # + mean 0 as normal_ does (-0.0 becomes +0.0)
        done += vals.size
        if vals.size:
            yield vals


def _draw(stream: MT19937, law: Law, n: int, profile: str, chunk: int) -> Iterator[np.ndarray]:
    if law.kind == "normal":
        return normal_(stream, n, std_arg(law, profile), profile=profile, chunk=chunk)
    if law.kind == "uniform":
        return _uniform(stream, n, law.bound, chunk, profile)
    return _truncnormal(stream, n, law.std, law.k, chunk)


def iter_tensor_chunks(cfg: GPTConfig, spec: TensorSpec, plan: Plan,
                       chunk: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
    """The values of one tensor in checkpoint (row-major) order, as float32 chunks."""
    _, per_row = rows_of(cfg, spec.name)
    for layer in (range(cfg.layers) if spec.per_layer else (None,)):
        for i, part in enumerate(plan.init.parts(spec.name, layer)):
            n = (part.hi - part.lo) * per_row
            if part.law.random:
                yield from _draw(plan.stream_at(spec.name, layer, i), part.law, n, plan.profile, chunk)
            else:
                yield from _constant(part.law.value, n, chunk)


def iter_params(cfg: GPTConfig, seed: int = 42, profile: str = "llmc", chunk: int = DEFAULT_CHUNK, *,
                scheme: "str | SchemeInit" = DEFAULT_SCHEME, overrides: Sequence[str] = ()
                ) -> Iterator[tuple[TensorSpec, np.ndarray]]:
    """(spec, float32 chunk) pairs whose concatenation is llm.c's flat parameter buffer."""
    plan = Plan(cfg, seed, profile, scheme=scheme, overrides=overrides)
    for spec in parameter_table(cfg):
        for part in iter_tensor_chunks(cfg, spec, plan, chunk):
            yield spec, part


def init_params(cfg: GPTConfig, seed: int = 42, profile: str = "llmc", *,
                scheme: "str | SchemeInit" = DEFAULT_SCHEME, overrides: Sequence[str] = ()) -> np.ndarray:
    """The whole flat float32 buffer in memory (small models and tests)."""
    out = np.empty(cfg.num_params_padded, dtype=np.float32)
    pos = 0
    for _spec, part in iter_params(cfg, seed, profile, scheme=scheme, overrides=overrides):
        out[pos: pos + part.size] = part
        pos += part.size
    assert pos == out.size, f"generated {pos} values, expected {out.size}"
    return out


def init_tensors(cfg: GPTConfig, seed: int = 42, profile: str = "llmc", *,
                 scheme: "str | SchemeInit" = DEFAULT_SCHEME, overrides: Sequence[str] = ()
                 ) -> dict[str, np.ndarray]:
    """name -> array in checkpoint shape (views into one flat buffer)."""
    flat = init_params(cfg, seed, profile, scheme=scheme, overrides=overrides)
    return {s.name: flat[s.offset: s.offset + s.numel].reshape(s.shape)
            for s in parameter_table(cfg)}
