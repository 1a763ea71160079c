"""Random access into the init stream: any tensor, layer or slice of the flat parameter buffer,
generated from its position in the mt19937 stream without generating what comes before.

Where each draw call starts follows from the draw rules (reference.normal, reference.init):
- normal, n >= 16: n draws, plus 16 when n % 16 != 0 (the last block is redrawn);
- normal, n < 16: llmc 4 draws per pair of values (two 53-bit doubles each); torch the same,
  except that a value left over from the previous small call (PyTorch keeps the second normal
  of a pair in the generator) is used first, so the start also records where that pair was;
- uniform: one draw per value;
- truncnormal (by rejection): how many blocks it takes depends on the values drawn, so the
  draws after one are not position-predictable. starts(..., seed=) then generates the
  truncated draws themselves (only those, jumping over the rest) to find where the stream goes
  on; without a seed it raises NotPredictable.
So every scheme built from normal, uniform and constant laws (gpt2, torch-default, xavier-*,
kaiming-*, small-init, mup, and their overrides) is position-predictable; olmo-mitchell and
any `k=` override (truncated normals) need the truncated draws generated.

Within a call, a slice [lo, hi) of a normal draw needs only the blocks of 16 it falls in
(reference.normal.normal_range), of a uniform draw only its own words.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from .config import GPTConfig, TensorSpec, parameter_table
from .init import _constant, _truncnormal, _uniform, std_arg
from .mt19937 import MT19937
from .normal import DEFAULT_CHUNK, draws_needed, normal_range, torch_pair
from .schemes import DEFAULT_SCHEME, Draw, Part, SchemeInit, resolve, rows_of


class NotPredictable(ValueError):
    """A draw's start depends on the values of an earlier (truncated-normal) draw."""


@dataclasses.dataclass(frozen=True)
class Start:
    """Where one draw call starts: `position` draws into the stream; for the torch profile,
    `spare_at` is the position of the pair whose second normal is cached (None: nothing cached)."""

    position: int
    spare_at: int | None = None


def _small_torch_draws(n: int, pos: int, spare_at: int | None) -> tuple[int, int | None]:
    """(position after, spare pair position after) of a torch normal_ call with n < 16."""
    left = n - (1 if spare_at is not None else 0)
    pairs = (left + 1) // 2
    pos += 4 * pairs
    return pos, (pos - 4 if left % 2 else None)


def _after(d: Draw, start: Start, profile: str, live: "_Live | None") -> Start:
    n, law = d.count, d.law
    if law.kind == "uniform" or (law.kind == "normal" and n >= 16):
        return Start(start.position + (n if law.kind == "uniform" else draws_needed(n)), start.spare_at)
    if law.kind == "normal":
        if profile == "llmc":
            return Start(start.position + 4 * ((n + 1) // 2))
        return Start(*_small_torch_draws(n, start.position, start.spare_at))
    if live is None:
        raise NotPredictable(f"{d.name}{'' if d.layer is None else f'[{d.layer}]'} draws "
                             f"{law.describe()} by rejection: where the draws after it start depends on "
                             "its values; give the seed to generate the truncated draws")
    stream = live.at(start)
    for _ in _truncnormal(stream, n, law.std, law.k, DEFAULT_CHUNK):
        pass
    return Start(stream.position, start.spare_at)


class _Live:
    """One stream carried forward through the truncated draws (each starts where it is, or
    further on)."""

    def __init__(self, seed: int):
        self.seed, self.stream = seed, None

    def at(self, start: Start) -> MT19937:
        s = self.stream
        if s is None or start.spare_at is not None or s.position > start.position:
            s = stream_at(self.seed, start)
        else:
            s.jump(start.position - s.position)
        self.stream = s
        return s


def starts(init: SchemeInit, *, seed: int | None = None) -> dict[tuple[str, int | None, int], Start]:
    """The start of every draw call, keyed (name, layer, part index) as SchemeInit.draws().
    Truncated-normal draws are generated (from `seed`) to find where the stream goes on."""
    out: dict[tuple[str, int | None, int], Start] = {}
    here = Start(0)
    live = None if seed is None else _Live(seed)
    for d in init.draws():
        out[(d.name, d.layer, d.index)] = here
        here = _after(d, here, init.profile, live)
    return out


def stream_at(seed: int, start: Start) -> MT19937:
    """The generator as it is when the draw call at `start` begins."""
    if start.spare_at is None:
        return MT19937.at(seed, start.position)
    stream = MT19937.at(seed, start.spare_at)
    _, stream.spare = torch_pair(stream)
    stream.jump(start.position - stream.position)
    return stream


class _Cursor:
    """Streams at successive starts: each jump goes from the previous start, so a model's layers
    (one stride apart) reuse one cached jump polynomial."""

    def __init__(self, seed: int):
        self.seed = seed
        self._last: MT19937 | None = None

    def at(self, start: Start) -> MT19937:
        if start.spare_at is not None:
            return stream_at(self.seed, start)
        last = self._last
        if last is None or last.position > start.position:
            stream = MT19937.at(self.seed, start.position)
        else:
            stream = MT19937(self.seed)
            stream.restore(last.snapshot())
            stream.jump(start.position - stream.position)
        self._last = MT19937(self.seed)
        self._last.restore(stream.snapshot())
        return stream


def _part_range(stream: MT19937, part: Part, n: int, lo: int, hi: int, profile: str,
                chunk: int) -> Iterator[np.ndarray]:
    """Values [lo, hi) of one random part of n values, `stream` at its draw's start."""
    law = part.law
    if law.kind == "normal":
        yield from normal_range(stream, n, std_arg(law, profile), lo=lo, hi=hi, profile=profile, chunk=chunk)
    elif law.kind == "uniform":
        stream.jump(lo)
        yield from _uniform(stream, hi - lo, law.bound, chunk, profile)
    else:  # truncated: the values before lo decide which draws the slice uses
        seen = 0
        for vals in _truncnormal(stream, hi, law.std, law.k, chunk):
            a, b = max(lo - seen, 0), vals.size
            seen += vals.size
            if a < b:
                yield vals[a:b]


def segments(init: SchemeInit) -> Iterator[tuple[TensorSpec, int | None, int, Part, int, int]]:
    """(spec, layer, part index, part, flat offset, values) of every part, in file order."""
    cfg = init.cfg
    for spec in parameter_table(cfg):
        _, per_row = rows_of(cfg, spec.name)
        layers = range(cfg.layers) if spec.per_layer else (None,)
        per = spec.numel // len(layers)
        for li, layer in enumerate(layers):
            for i, part in enumerate(init.parts(spec.name, layer)):
                yield spec, layer, i, part, spec.offset + li * per + part.lo * per_row, \
                    (part.hi - part.lo) * per_row


class Access:
    """Random access to one init (config, seed, profile, scheme with overrides)."""

    def __init__(self, cfg: GPTConfig, seed: int = 42, profile: str = "llmc", *,
                 scheme: "str | SchemeInit" = DEFAULT_SCHEME, overrides: Sequence[str] = (),
                 draw_starts: dict | None = None):
        self.cfg, self.seed, self.profile = cfg, seed, profile
        self.init = resolve(scheme, cfg, profile=profile, overrides=overrides)
        MT19937(seed)  # a bad seed fails here
        self.starts = draw_starts if draw_starts is not None else starts(self.init, seed=seed)

    def iter_range(self, lo: int, hi: int, chunk: int = DEFAULT_CHUNK
                   ) -> Iterator[tuple[TensorSpec, np.ndarray]]:
        """(spec, float32 chunk) pairs of the flat buffer's values [lo, hi): the same values as
        reference.init.iter_params over that range."""
        total = self.cfg.num_params_padded
        if not 0 <= lo <= hi <= total:
            raise ValueError(f"range [{lo}, {hi}) is outside the flat buffer [0, {total})")
        cursor = _Cursor(self.seed)
        for spec, layer, i, part, flat, n in segments(self.init):
            a, b = max(lo, flat), min(hi, flat + n)
            if a >= b:
                continue
            if not part.law.random:
                for block in _constant(part.law.value, b - a, chunk):
                    yield spec, block
                continue
            stream = cursor.at(self.starts[(spec.name, layer, i)])
            for vals in _part_range(stream, part, n, a - flat, b - flat, self.profile, chunk):
                yield spec, vals

    def tensor_range(self, name: str, layers: tuple[int, int] | None = None) -> tuple[int, int]:
        """The flat range [lo, hi) of tensor `name` (layers [a, b) of a per-layer tensor)."""
        spec = {s.name: s for s in parameter_table(self.cfg)}.get(name)
        if spec is None:
            raise ValueError(f"unknown tensor {name!r}")
        if layers is None:
            return spec.offset, spec.offset + spec.numel
        if not spec.per_layer:
            raise ValueError(f"{name} has no layers; drop the layer range")
        a, b = layers
        if not 0 <= a < b <= self.cfg.layers:
            raise ValueError(f"layers {a}:{b} outside 0:{self.cfg.layers}")
        per = spec.numel // self.cfg.layers
        return spec.offset + a * per, spec.offset + b * per

    def array(self, lo: int, hi: int) -> np.ndarray:
        out = np.empty(hi - lo, dtype=np.float32)
        pos = 0
        for _spec, part in self.iter_range(lo, hi):
            out[pos: pos + part.size] = part
            pos += part.size
        return out
