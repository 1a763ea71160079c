"""The reference init generated in shards by independent workers (processes or Ray tasks),
reassembled in file order: the same (spec, chunk) stream as reference.init.iter_params, so
`init` writes the same bytes and `checksum` gives the same SHA-256.

Each shard is a range [lo, hi) of the flat buffer that a worker generates from its stream
positions alone (reference.access): no worker generates what comes before its shard. The
caller hashes and writes in order, holding at most 2 x workers shards in flight.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import tempfile
from typing import Iterator

import numpy as np
from gpt2_verify.reference.access import Access, starts
from gpt2_verify.reference.config import GPTConfig, TensorSpec, parameter_table
from gpt2_verify.reference.schemes import SchemeInit

SHARD_VALUES = 1 << 24  # at most 64 MiB of float32 per shard: tasks of ~0.5 s to ~2 s per core
MIN_SHARD_VALUES = 1 << 12
SHARDS_PER_WORKER = 4  # at least: load balance when shards cost unequal amounts
EMIT_VALUES = 1 << 20  # chunks handed on to the hasher/writer


@dataclasses.dataclass(frozen=True)
class Shard:
    config: dict
    seed: int
    profile: str
    scheme: str
    overrides: tuple[str, ...]
    draw_starts: tuple  # ((key, Start), ...), from the parent: workers never walk the stream
    lo: int
    hi: int
    digest: bool = False  # also each chunk's moments and bf16 bits (verify.digest.Digested)
    spill: str | None = None  # a folder on this machine for the values (local processes): no pipe copy


@functools.lru_cache(maxsize=4)
def _access(config: tuple, seed: int, profile: str, scheme: str, overrides: tuple,
            draw_starts: tuple) -> Access:
    cfg = GPTConfig.from_dict(dict(config))
    return Access(cfg, seed, profile, scheme=scheme, overrides=overrides, draw_starts=dict(draw_starts))


def _fill(shard: Shard) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """The shard's values in one float32 array, and (tensor index, lo, hi) of each tensor's piece."""
    acc = _access(tuple(sorted(shard.config.items())), shard.seed, shard.profile, shard.scheme,
                  shard.overrides, shard.draw_starts)
    values = np.empty(shard.hi - shard.lo, dtype=np.float32)
    pieces: list[list[int]] = []
    pos = 0
    for spec, chunk in acc.iter_range(shard.lo, shard.hi):  # 64k-value chunks: cache-sized temporaries
        values[pos: pos + chunk.size] = chunk
        if not pieces or pieces[-1][0] != spec.index:
            pieces.append([spec.index, pos, pos])
        pos += chunk.size
        pieces[-1][2] = pos
    return values, [tuple(p) for p in pieces]


def generate(shard: Shard):
    """One shard: (tensor index, chunks) per tensor it spans, in file order; a chunk is float32
    values, or with shard.digest a verify.digest.Digested (the checksum's per-value work done
    here, in parallel, instead of in the process that hashes). With shard.spill (a folder, e.g.
    /dev/shm) the values and bf16 bits go to a file there instead of back through a pipe: the
    reply is then (path, pieces), read by _from_spill."""
    from .digest import Digested, chunk_moments

    values, pieces = _fill(shard)
    if shard.spill:
        from gpt2_verify.reference.bf16 import f32_to_bf16_bits

        fd, path = tempfile.mkstemp(dir=shard.spill, prefix="gpt2v-shard-", suffix=".bin")
        with os.fdopen(fd, "wb") as fh:
            fh.write(values.astype("<f4", copy=False).data)
            if shard.digest:
                fh.write(np.ascontiguousarray(f32_to_bf16_bits(values), dtype="<u2").data)
        moments = [[chunk_moments(values[a:b][lo: lo + EMIT_VALUES]) for lo in range(0, b - a, EMIT_VALUES)]
                   if shard.digest else None for _i, a, b in pieces]
        return path, [(i, a, b, m) for (i, a, b), m in zip(pieces, moments)]
    return [(i, [Digested.of(values[a:b][lo:lo + EMIT_VALUES]) if shard.digest
                 else values[a:b][lo:lo + EMIT_VALUES] for lo in range(0, b - a, EMIT_VALUES)])
            for i, a, b in pieces]


def _from_spill(reply, n: int, digest: bool) -> list[tuple[int, list]]:
    """generate()'s spilled reply as chunks viewing the mapped file, which is unlinked at once
    (the mapping lives as long as the views)."""
    from .digest import Digested

    path, pieces = reply
    try:
        raw = np.memmap(path, dtype=np.uint8, mode="r")
    finally:
        os.unlink(path)
    values = raw[: 4 * n].view("<f4")
    bf16 = raw[4 * n:].view("<u2") if digest else None
    out = []
    for i, a, b, moments in pieces:
        chunks = []
        for k, lo in enumerate(range(a, b, EMIT_VALUES)):
            hi = min(lo + EMIT_VALUES, b)
            chunks.append(Digested(values[lo:hi], bf16[lo:hi], moments[k]) if digest else values[lo:hi])
        out.append((i, chunks))
    return out


def shards(init: SchemeInit, seed: int, *, shard_values: int = SHARD_VALUES, digest: bool = False,
           spill: str | None = None) -> list[Shard]:
    cfg = init.cfg
    draw_starts = tuple(starts(init, seed=seed).items())
    total = cfg.num_params_padded
    overrides = tuple(o.text for o in init.overrides)
    return [Shard(cfg.as_dict(), seed, init.profile, init.scheme.name, overrides, draw_starts, lo,
                  min(lo + shard_values, total), digest, spill) for lo in range(0, total, shard_values)]


def iter_params_sharded(init: SchemeInit, seed: int, executor, *, shard_values: int | None = None,
                        digest: bool = False) -> Iterator[tuple[TensorSpec, "np.ndarray | object"]]:
    """(spec, chunk) pairs whose concatenation is the flat parameter buffer (chunks are
    verify.digest.Digested with digest=True, for digest_stream)."""
    specs = parameter_table(init.cfg)
    if shard_values is None:
        per = -(-init.cfg.num_params_padded // (SHARDS_PER_WORKER * executor.workers))
        shard_values = max(MIN_SHARD_VALUES, min(SHARD_VALUES, per))
    spill = tempfile.mkdtemp(prefix="gpt2v-shards-", dir=_memory_dir()) \
        if getattr(executor, "local_processes", False) else None
    try:
        plan = shards(init, seed, shard_values=shard_values, digest=digest, spill=spill)
        for shard, reply in zip(plan, executor.ordered(generate, plan)):
            result = _from_spill(reply, shard.hi - shard.lo, digest) if spill else reply
            for index, chunks in result:
                for chunk in chunks:
                    yield specs[index], chunk
    finally:
        if spill:  # shards finished but never read (an error, an interrupt)
            shutil.rmtree(spill, ignore_errors=True)


def _memory_dir() -> str | None:
    """/dev/shm (memory, not disk) where there is one."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
