"""Hypothesis strategies for GPT-2 configurations, seeds and profiles.

In the style of :mod:`hypothesis.extra.numpy`: every function takes keyword-only arguments,
validates them eagerly (raising :class:`hypothesis.errors.InvalidArgument` with a message that
says how to fix the call) and returns a :class:`~hypothesis.strategies.SearchStrategy`.

    from hypothesis import given
    from gpt2_verify.verify.strategies import gpt2_configs, seeds, profiles

    @given(cfg=gpt2_configs(), seed=seeds(), profile=profiles())
    def test_something(cfg, seed, profile):
        ...

Every generated :class:`~reference.config.GPTConfig` is valid (channels divisible by heads,
padded_vocab >= vocab) and small (``max_params``), and the strategies deliberately reach the
corners that break implementations: tensors of fewer than 16 values (llm.c's other normal_
path), odd sizes, C = 1 or 2, NH = C and NH = 1, L = 1, maxT = 1, V = 1, V already a
multiple of 128, and padded_vocab == vocab.

This module needs hypothesis (a test dependency); nothing else in ``verify`` imports it.
"""

from __future__ import annotations

import math

from gpt2_verify.reference.config import GPT2_DEPTHS, GPTConfig, descriptor_names, param_count, round_up
from gpt2_verify.reference.mt19937 import MAX_SEED
from gpt2_verify.reference.normal import PROFILES
from hypothesis import reject
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.strategies import SearchStrategy

__all__ = [
    "DEFAULT_MAX_PARAMS",
    "SEED_CORNERS",
    "gpt2_configs",
    "llmc_descriptors",
    "profiles",
    "seeds",
]

DEFAULT_MAX_PARAMS = 200_000
DEFAULT_MAX_VOCAB = 300
DEFAULT_MAX_SEQ_LEN = 64
MAX_EXTRA_PADDING = 256  # padded=True: Vp - V is drawn from 0..this
SEED_CORNERS = (0, 42, 1337, MAX_SEED)

# Sizes that sit on an edge of llm.c's normal_ (n < 16 vs n >= 16, n % 16) or of the
# default padding (multiples of 128).
_VOCAB_CORNERS = (1, 2, 3, 15, 16, 17, 127, 128, 129, 255, 256)
_CHANNEL_CORNERS = (1, 2, 3, 4, 5, 7, 8, 16, 64)
_SEQ_CORNERS = (1, 2, 3, 15, 16, 17)


# ---- argument validation ----------------------------------------------------------------------

def _check_int(name: str, value, *, minimum: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "an integer or None" if optional else "an integer"
        raise InvalidArgument(f"{name}={value!r} must be {kind} (got {type(value).__name__})")
    if value < minimum:
        raise InvalidArgument(f"{name}={value} must be at least {minimum}; pass {name}={minimum} "
                              f"or more")


def _check_order(lo_name: str, lo: int, hi_name: str, hi: int) -> None:
    if lo > hi:
        raise InvalidArgument(f"{lo_name}={lo} is greater than {hi_name}={hi}; pass "
                              f"{hi_name}>={lo} or lower {lo_name}")


def _min_rows(min_draw: int, channels: int) -> int:
    """Smallest row count r with r * channels >= min_draw (at least 1)."""
    return max(1, -(-min_draw // channels))


def _min_channels_for_draw(min_draw: int) -> int:
    """Smallest C whose per-layer attprojw slice (C*C values) has >= min_draw values."""
    c = max(1, math.isqrt(min_draw))
    while c * c < min_draw:
        c += 1
    return c


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _with_corners(lo: int, hi: int, corners) -> SearchStrategy[int]:
    """integers(lo, hi), plus an explicit chance of each corner inside [lo, hi]."""
    inside = sorted({c for c in (*corners, lo, hi) if lo <= c <= hi})
    return st.one_of(st.integers(lo, hi), st.sampled_from(inside))


# ---- public strategies ------------------------------------------------------------------------

def gpt2_configs(
    *,
    min_layers: int = 1,
    max_layers: int = 4,
    min_channels: int = 1,
    max_channels: int = 64,
    vocab_sizes: SearchStrategy[int] | None = None,
    max_seq_len: int | None = None,
    padded: bool | None = None,
    max_params: int = DEFAULT_MAX_PARAMS,
    min_draw: int = 1,
) -> SearchStrategy[GPTConfig]:
    """Return a strategy for valid, small :class:`~reference.config.GPTConfig` objects.

    * ``min_layers``, ``max_layers``: bounds on L (inclusive).
    * ``min_channels``, ``max_channels``: bounds on C (inclusive). Heads are drawn from the
      divisors of C, so NH = 1 and NH = C (head size 1) both occur.
    * ``vocab_sizes``: a strategy for V (integers >= 1). None draws from 1..300 with extra
      weight on the corners 1, 2, 15, 16, 17, 127, 128, 129, 255, 256. A vocab size that
      cannot fit ``max_params`` with the smallest other choices is rejected (so a strategy
      of mostly huge vocab sizes makes generation slow; raise ``max_params`` instead).
    * ``max_seq_len``: upper bound on maxT (>= 1); None means 64.
    * ``padded``: None draws either llm.c's default padding (V rounded up to a multiple of
      128) or an arbitrary Vp >= V; False always uses the default; True always draws Vp
      explicitly from V..V+256 (Vp == V included).
    * ``max_params``: cap on the parameter count with wte over Vp rows (default 200,000, a
      few milliseconds to initialize). Smaller draws for C, L and maxT are preferred as the
      budget runs out; nothing generated ever exceeds it.
    * ``min_draw``: every normal_ call of the model (wte's V*C values, wpe's maxT*C, and the
      per-layer slices qkvw 3C^2, attprojw C^2, fcw 4C^2, fcprojw 4C^2) draws at least this
      many values. ``min_draw=16`` keeps every tensor on llm.c's n >= 16 Box-Muller path;
      the default 1 allows the n < 16 path.

    Shrinks towards L = min_layers, C = min_channels, NH = 1, small V and maxT.
    """
    _check_int("min_layers", min_layers, minimum=1)
    _check_int("max_layers", max_layers, minimum=1)
    _check_order("min_layers", min_layers, "max_layers", max_layers)
    _check_int("min_channels", min_channels, minimum=1)
    _check_int("max_channels", max_channels, minimum=1)
    _check_order("min_channels", min_channels, "max_channels", max_channels)
    _check_int("max_seq_len", max_seq_len, minimum=1, optional=True)
    _check_int("max_params", max_params, minimum=1)
    _check_int("min_draw", min_draw, minimum=1)
    if vocab_sizes is not None and not isinstance(vocab_sizes, SearchStrategy):
        raise InvalidArgument(
            f"vocab_sizes={vocab_sizes!r} must be a strategy or None; to fix V, pass "
            f"vocab_sizes=st.just({vocab_sizes!r})"
        )
    if padded not in (None, True, False):
        raise InvalidArgument(f"padded={padded!r} must be None (either), True (arbitrary "
                              f"Vp >= V) or False (V rounded up to a multiple of 128)")
    seq_hi = DEFAULT_MAX_SEQ_LEN if max_seq_len is None else max_seq_len
    c_lo = max(min_channels, _min_channels_for_draw(min_draw))
    if c_lo > max_channels:
        raise InvalidArgument(
            f"min_draw={min_draw} needs C*C >= {min_draw}, i.e. C >= {c_lo}, but "
            f"max_channels={max_channels}; raise max_channels to {c_lo} or lower min_draw"
        )
    t_lo = _min_rows(min_draw, c_lo)
    if t_lo > seq_hi:
        raise InvalidArgument(
            f"min_draw={min_draw} needs maxT*C >= {min_draw}, i.e. maxT >= {t_lo} at "
            f"C={c_lo}, but max_seq_len={seq_hi}; raise max_seq_len or lower min_draw"
        )
    v_lo = _min_rows(min_draw, c_lo)
    smallest = param_count(layers=min_layers, channels=c_lo,
                           vocab_rows=v_lo if padded else round_up(v_lo, 128),
                           max_seq_len=t_lo)
    if smallest > max_params:
        raise InvalidArgument(
            f"max_params={max_params} is below the smallest model these arguments allow "
            f"({smallest} parameters at L={min_layers}, C={c_lo}, V={v_lo}, maxT={t_lo}); "
            f"raise max_params to at least {smallest} or lower min_layers/min_channels/min_draw"
        )

    return _configs(min_layers, max_layers, c_lo, max_channels, vocab_sizes, seq_hi, padded,
                    max_params, min_draw)


@st.composite
def _configs(draw, min_layers, max_layers, c_lo, c_hi, vocab_sizes, seq_hi, padded,
             max_params, min_draw) -> GPTConfig:
    # 1. vocab and padding first, so a user vocab strategy never has to be bounded.
    if vocab_sizes is None:
        v_hi = DEFAULT_MAX_VOCAB
        # the smallest model must still fit: bound V by the budget at C = c_lo
        fixed = param_count(layers=min_layers, channels=c_lo, vocab_rows=0,
                            max_seq_len=_min_rows(min_draw, c_lo))
        v_hi = min(v_hi, max(1, (max_params - fixed) // c_lo - MAX_EXTRA_PADDING - 127))
        v_lo = min(_min_rows(min_draw, c_lo), v_hi)
        vocab = draw(_with_corners(v_lo, v_hi, _VOCAB_CORNERS), label="vocab")
    else:
        vocab = draw(vocab_sizes, label="vocab")
        if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
            raise InvalidArgument(f"vocab_sizes generated {vocab!r}; it must generate "
                                  f"integers >= 1 (e.g. st.integers(1, 1000))")
    explicit = draw(st.booleans(), label="explicit padding") if padded is None else padded
    if explicit:
        default_extra = round_up(vocab, 128) - vocab
        extra = draw(_with_corners(0, MAX_EXTRA_PADDING, (0, 1, default_extra)),
                     label="Vp - V")
        padded_vocab = vocab + extra
    else:
        padded_vocab = round_up(vocab, 128)

    def fits(layers, channels, seq):
        return param_count(layers=layers, channels=channels, vocab_rows=padded_vocab,
                           max_seq_len=seq) <= max_params

    # 2. channels: the largest C for which the smallest model still fits the budget.
    def c_ok(c):
        return (vocab * c >= min_draw
                and fits(min_layers, c, _min_rows(min_draw, c)))

    lo = next((c for c in range(c_lo, c_hi + 1) if c_ok(c)), None)
    if lo is None:  # only with a user vocab strategy: V too large for the budget
        reject()
    hi = lo
    while hi < c_hi and c_ok(hi + 1):
        hi += 1
    channels = draw(_with_corners(lo, hi, _CHANNEL_CORNERS), label="channels")
    heads = draw(st.sampled_from(_divisors(channels)), label="heads")

    # 3. layers within what is left at the smallest maxT, then maxT within the rest.
    t_lo = _min_rows(min_draw, channels)
    l_hi = min_layers
    while l_hi < max_layers and fits(l_hi + 1, channels, t_lo):
        l_hi += 1
    layers = draw(_with_corners(min_layers, l_hi, (1, 2, l_hi)), label="layers")
    spare = max_params - param_count(layers=layers, channels=channels,
                                     vocab_rows=padded_vocab, max_seq_len=0)
    t_hi = max(t_lo, min(seq_hi, spare // channels))
    seq = draw(_with_corners(t_lo, t_hi, _SEQ_CORNERS), label="max_seq_len")

    cfg = GPTConfig(layers, channels, heads, vocab, padded_vocab, seq)
    assert cfg.num_params_padded <= max_params, (cfg, max_params)
    return cfg


def llmc_descriptors() -> SearchStrategy[str]:
    """Return a strategy for llm.c's model descriptors: dN, gpt2:dN and gpt3:cC.

    These are full-size models (d6 has 30M parameters): use them for header, shape and
    count properties, not for initializing values in a fast test.
    """
    names = descriptor_names() + [f"gpt2:d{n}" for n in GPT2_DEPTHS]
    return st.sampled_from(names)


def seeds() -> SearchStrategy[int]:
    """Return a strategy for mt19937 seeds: uint32 values, with extra weight on the corners
    0, 42 (llm.c's), 1337 (nanoGPT's) and 2**32 - 1. Shrinks towards 0."""
    return st.one_of(st.integers(0, MAX_SEED), st.sampled_from(SEED_CORNERS))


def profiles() -> SearchStrategy[str]:
    """Return a strategy for the reference initializer's profiles: "llmc" and "torch"."""
    return st.sampled_from(PROFILES)
