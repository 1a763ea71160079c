"""normal_(data, n, mean, std): llm.c's and PyTorch's CPU normal draws, streamed in chunks.

Two profiles (see README "Profiles"):
- `llmc`: llmc/rand.h exactly. n >= 16: n uniforms, Box-Muller over blocks of 16 (pair t
  with t + 8) using logf(u1 + 1e-12f); if n % 16 != 0, 16 NEW uniforms are drawn into the
  last 16 slots and transformed again. n < 16: pairs from two 53-bit doubles rounded to
  float (u1 -> theta, u2 -> radius), float math, the spare of the last pair is discarded.
- `torch`: PyTorch's scalar CPU kernel (ATEN_CPU_CAPABILITY=default): the same n >= 16
  path without the 1e-12 term; n < 16 goes through at::normal_distribution<double>
  (log1p/sin/cos in double) and the spare normal stays in the generator for the next call.

The n >= 16 path is exact and machine-independent (table lookups of emulated glibc
functions). The torch n < 16 path calls Python's math module, i.e. the platform's double
libm, as torch does; it only matters for tensors of fewer than 16 values.
"""

from __future__ import annotations

import collections
import math
from typing import Iterator

import numpy as np

from . import boxmuller_tables as tables
from . import parallel
from .config import GPTConfig, TensorSpec
from .glibc_libm import logf, sincosf
from .mt19937 import MT19937

PROFILES = ("llmc", "torch")
DEFAULT_CHUNK = 1 << 16  # values per yielded chunk (256 KiB of float32)


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; use one of {PROFILES}")


def draws_needed(n: int) -> int:
    """u32 draws one n >= 16 normal_ call consumes (both profiles)."""
    return n + (16 if n % 16 else 0)


def _transform(k: np.ndarray, std: np.float32, mean: np.float32,
               radius: np.ndarray, sincos64: np.ndarray) -> np.ndarray:
    """Box-Muller over blocks of 16 24-bit uniforms k (B, 16) -> float32[16 * B].

    Pure function of k (the draws are taken before), so blocks transform in parallel.
    """
    k = k.reshape(-1, 2, 8)  # (B, [u1 | u2], 8)
    nblocks = k.shape[0]
    r = radius.take(k[:, 0, :])  # (B, 8)
    sc = sincos64.take(k[:, 1, :]).view(np.float32).reshape(nblocks, 8, 2)  # (B, 8, [sin|cos])
    out = np.empty((nblocks, 2, 8), dtype=np.float32)
    np.multiply(r, sc[:, :, 1], out=out[:, 0, :])  # slots t: radius * cosf(theta)
    np.multiply(r, sc[:, :, 0], out=out[:, 1, :])  # slots t + 8: radius * sinf(theta)
    out *= std
    out += mean  # -0.0 + 0.0 = +0.0, as in C
    return out.reshape(-1)


def box_muller16(k: np.ndarray, *, profile: str = "llmc") -> np.ndarray:
    """Standard normals (float32) from blocks of 16 24-bit uniforms k (16 B values -> 16 B values):
    the profile's n >= 16 transform at std 1, mean 0 (the truncated-normal law's source)."""
    check_profile(profile)
    radius = tables.table("radius_eps" if profile == "llmc" else "radius")
    sincos64 = tables.table("sincos").view(np.uint64).reshape(-1)
    return _transform(np.asarray(k).reshape(-1, 16), np.float32(1.0), np.float32(0.0), radius, sincos64)


def _normal_fill(stream: MT19937, n: int, std: np.float32, mean: np.float32, profile: str,
                 chunk: int) -> Iterator[np.ndarray]:
    radius = tables.table("radius_eps" if profile == "llmc" else "radius")
    sincos64 = tables.table("sincos").view(np.uint64).reshape(-1)  # one 8-byte gather per pair
    nfull, tail = divmod(n, 16)
    # with a tail, the last 16 values come from the redrawn block
    emit = n - 16 if tail else n
    per_chunk = max(1, chunk // 16)
    pool = parallel.pool()
    pending: collections.deque = collections.deque()
    done = 0

    def transform(k):
        return _transform(k, std, mean, radius, sincos64)

    def submit(k):
        pending.append(pool.submit(transform, k) if pool else _Ready(transform(k)))

    def drain(limit):
        nonlocal done
        while len(pending) > limit:
            vals = pending.popleft().result()
            keep = min(vals.size, emit - done)
            if keep > 0:
                done += keep
                yield vals[:keep]

    for b0 in range(0, nfull, per_chunk):
        nb = min(per_chunk, nfull - b0)
        submit(stream.u24(16 * nb))  # draws stay sequential; transforms overlap
        yield from drain(parallel.LOOKAHEAD)
    if tail:
        stream.skip(tail)  # drawn by the first fill pass, then overwritten
        tail_k = stream.u24(16)
    yield from drain(0)
    if tail:
        yield transform(tail_k)


class _Ready:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _small_llmc(stream: MT19937, n: int, std: np.float32, mean: np.float32) -> np.ndarray:
    pairs = (n + 1) // 2
    u = stream.randfloat64(2 * pairs).astype(np.float32).reshape(pairs, 2)
    u1, u2 = u[:, 0], u[:, 1]
    x = (np.float32(1.0) - u2) + tables.EPSILON
    radius = np.sqrt(np.float32(-2.0) * logf(x))
    s, c = sincosf(tables.theta_of(u1))
    first = radius * c * std + mean
    spare = (radius * s).astype(np.float64)  # float product, stored in a double
    second = (spare * np.float64(std) + np.float64(mean)).astype(np.float32)
    return np.stack([first, second], axis=1).reshape(-1)[:n]


def torch_pair(stream: MT19937) -> tuple[float, float]:
    """One at::normal_distribution<double> pair from two doubles (four draws): (value, spare)."""
    u1, u2 = stream.randfloat64(2)
    r = math.sqrt(-2.0 * math.log1p(-float(u2)))
    theta = 2.0 * math.pi * float(u1)
    return r * math.cos(theta), r * math.sin(theta)


def _small_torch(stream: MT19937, n: int, std: float, mean: float) -> np.ndarray:
    out = np.empty(n, dtype=np.float32)
    for t in range(n):
        if stream.spare is not None:
            z, stream.spare = stream.spare, None
        else:
            z, stream.spare = torch_pair(stream)
        out[t] = np.float32(z * std + mean)
    return out


def normal_(stream: MT19937, n: int, std: float | np.float32, mean: float = 0.0, *,
            profile: str = "llmc", chunk: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
    """Yield the n values of one normal_ call as float32 chunks (at most ~chunk each).

    `std` is what the caller passes: for `llmc` a float32 (llm.c's float argument), for
    `torch` a Python float (a double, rounded to float32 by the n >= 16 kernel only).
    """
    check_profile(profile)
    if n <= 0:
        return
    if n >= 16:
        yield from _normal_fill(stream, n, np.float32(std), np.float32(mean), profile, chunk)
    elif profile == "llmc":
        yield _small_llmc(stream, n, np.float32(std), np.float32(mean))
    else:
        yield _small_torch(stream, n, float(std), float(mean))


def normal_array(stream: MT19937, n: int, std, mean: float = 0.0, *,
                 profile: str = "llmc") -> np.ndarray:
    parts = list(normal_(stream, n, std, mean, profile=profile))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float32)


def advance(stream: MT19937, n: int, std, mean: float = 0.0, *, profile: str = "llmc") -> None:
    """Move the stream past one normal_ call without computing its values (when possible)."""
    if n >= 16:
        stream.skip(draws_needed(n))
    elif profile == "llmc":
        stream.skip(4 * ((n + 1) // 2))
    else:  # the torch spare depends on the values: compute them (n < 16, cheap)
        _small_torch(stream, n, float(std), float(mean))


def normal_range(stream: MT19937, n: int, std, mean: float = 0.0, *, lo: int, hi: int,
                 profile: str = "llmc", chunk: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
    """Values [lo, hi) of one normal_ call of n values, `stream` at the call's first draw: only
    the draws those values come from are made (n >= 16: their blocks of 16, and the redrawn
    last block when n % 16 != 0; the stream jumps over the rest). Equal to
    normal_array(stream, n, ...)[lo:hi]. n < 16 computes the whole (small) call."""
    check_profile(profile)
    if not 0 <= lo <= hi <= n:
        raise ValueError(f"normal_range: need 0 <= lo <= hi <= n, got lo={lo} hi={hi} n={n}")
    if lo == hi:
        return
    if n < 16:
        yield normal_array(stream, n, std, mean, profile=profile)[lo:hi]
        return
    radius = tables.table("radius_eps" if profile == "llmc" else "radius")
    sincos64 = tables.table("sincos").view(np.uint64).reshape(-1)
    std32, mean32 = np.float32(std), np.float32(mean)
    start = stream.position
    emit = n - 16 if n % 16 else n  # values before `emit` come from the first pass's blocks
    if lo < min(hi, emit):
        b0, b1 = lo // 16, -(-min(hi, emit) // 16)
        stream.jump(start + 16 * b0 - stream.position)
        per_chunk = max(1, chunk // 16)
        for blo in range(b0, b1, per_chunk):
            nb = min(per_chunk, b1 - blo)
            vals = _transform(stream.u24(16 * nb), std32, mean32, radius, sincos64)
            first = 16 * blo
            yield vals[max(lo, first) - first: min(hi, emit, first + 16 * nb) - first]
    if hi > emit:  # the redrawn last block: draws n .. n + 15 of the call
        stream.jump(start + n - stream.position)
        vals = _transform(stream.u24(16), std32, mean32, radius, sincos64)
        yield vals[max(lo, emit) - emit: hi - emit]


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
