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


@functools.lru_cache(maxsize=4)
def _access(config: tuple, seed: int, profile: str, scheme: str, overrides: tuple,
            draw_starts: tuple) -> Access:
    cfg = GPTConfig.from_dict(dict(config))
    return Access(cfg, seed, profile, scheme=scheme, overrides=overrides, draw_starts=dict(draw_starts))


def generate(shard: Shard) -> list[tuple[int, list]]:
    """One shard: (tensor index, chunks) per tensor it spans, in file order; a chunk is float32
    values, or with shard.digest a verify.digest.Digested (the checksum's per-value work done
    here, in parallel, instead of in the process that hashes)."""
    from .digest import Digested

    acc = _access(tuple(sorted(shard.config.items())), shard.seed, shard.profile, shard.scheme,
                  shard.overrides, shard.draw_starts)
    out: list[tuple[int, list]] = []
    for spec, chunk in acc.iter_range(shard.lo, shard.hi, chunk=EMIT_VALUES):
        if not out or out[-1][0] != spec.index:
            out.append((spec.index, []))
        out[-1][1].append(chunk)
    merged = [(i, np.concatenate(parts)) for i, parts in out]
    return [(i, [Digested.of(v[lo:lo + EMIT_VALUES]) if shard.digest else v[lo:lo + EMIT_VALUES]
                 for lo in range(0, v.size, EMIT_VALUES)]) for i, v in merged]


def shards(init: SchemeInit, seed: int, *, shard_values: int = SHARD_VALUES, digest: bool = False
           ) -> list[Shard]:
    cfg = init.cfg
    draw_starts = tuple(starts(init, seed=seed).items())
    total = cfg.num_params_padded
    overrides = tuple(o.text for o in init.overrides)
    return [Shard(cfg.as_dict(), seed, init.profile, init.scheme.name, overrides, draw_starts, lo,
                  min(lo + shard_values, total), digest) for lo in range(0, total, shard_values)]


def iter_params_sharded(init: SchemeInit, seed: int, executor, *, shard_values: int | None = None,
                        digest: bool = False) -> Iterator[tuple[TensorSpec, "np.ndarray | object"]]:
    """(spec, chunk) pairs whose concatenation is the flat parameter buffer (chunks are
    verify.digest.Digested with digest=True, for digest_stream)."""
    specs = parameter_table(init.cfg)
    if shard_values is None:
        per = -(-init.cfg.num_params_padded // (SHARDS_PER_WORKER * executor.workers))
        shard_values = max(MIN_SHARD_VALUES, min(SHARD_VALUES, per))
    for result in executor.ordered(generate, shards(init, seed, shard_values=shard_values, digest=digest)):
        for index, chunks in result:
            for chunk in chunks:
                yield specs[index], chunk
