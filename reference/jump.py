"""Jump an mt19937 stream ahead by any number of draws without drawing them.

mt19937's state update is linear over GF(2): one draw maps the state s (the last 624 untempered
words x_k .. x_{k+623}, of which the first counts only by its top bit: 19937 bits) to T s.
With p(x) the characteristic polynomial of T (degree 19937) and g(x) = x^d mod p(x),
T^d s = g(T) s (Cayley-Hamilton), and g(T) s = XOR over the set coefficients c_i of g of
T^i s, i.e. of the windows x_i .. x_{i+623} of the untempered sequence that s itself starts:
19937 + 624 ordinary draws and one XOR of about 10,000 windows. This is the method of Haramoto,
Matsumoto, Nishimura, Panneton and L'Ecuyer, "Efficient jump ahead for F2-linear random number
generators" (INFORMS J. Computing 20(3), 2008); numpy's MT19937.jumped() is its fixed-distance
case (d = 2^128 with a precomputed polynomial), here d is arbitrary.

- p(x) is found once per process by Berlekamp-Massey on 2 x 19937 output bits (~0.1 s): its
  degree must come out as 19937 (mt19937's characteristic polynomial is primitive).
- x^d mod p by left-to-right squaring: squaring over GF(2) only spreads the bits, and p has
  135 terms, the largest below x^19937 being x^19314, so a reduction folds 623 bits per pass.
- Polynomials are Python ints (bit i = coefficient of x^i).

Measured on one core of the 2-core dev machine: x^d mod p 35-75 ms for d up to 2^37 (cached
per distance: a model's layers repeat one stride), applying it 6.5 ms; skipping draws costs
3.4 ns each, so jumps shorter than JUMP_MIN draws are skipped instead.
"""

from __future__ import annotations

import functools

import numpy as np

N = 624
DEGREE = 19937
JUMP_MIN = 1 << 24  # below this many draws (~57 ms of skipping) stepping is cheaper than a jump
JUMP_CACHED_MIN = 1 << 21  # the same for a distance whose polynomial is cached (~7 ms)

_SPREAD = np.array([sum(1 << (2 * i) for i in range(8) if b >> i & 1) for b in range(256)], dtype="<u2")


def _bits_of(seq: np.ndarray) -> list[int]:
    return (np.asarray(seq, dtype=np.uint32) & np.uint32(1)).tolist()


def berlekamp_massey(bits: list[int]) -> tuple[int, int]:
    """(C, L): the shortest LFSR s_n = sum_{i=1..L} c_i s_{n-i} generating `bits`, C as an int
    with bit i = c_i (c_0 = 1)."""
    c, b, length, m = 1, 1, 0, 1
    window = 0  # bit i = s_{n-i}
    for n, s in enumerate(bits):
        window = (window << 1) | s
        if (c & window).bit_count() & 1 == 0:
            m += 1
        elif 2 * length <= n:
            c, b = c ^ (b << m), c
            length, m = n + 1 - length, 1
        else:
            c ^= b << m
            m += 1
    return c, length


@functools.lru_cache(maxsize=1)
def char_poly() -> int:
    """mt19937's characteristic polynomial (bit i = coefficient of x^i)."""
    bg = np.random.MT19937(5489)
    c, length = berlekamp_massey(_bits_of(bg.random_raw(2 * DEGREE)))
    if length != DEGREE:
        raise AssertionError(f"Berlekamp-Massey found degree {length}, expected {DEGREE}")
    # the characteristic polynomial is the reciprocal of the connection polynomial
    return int(format(c, f"0{DEGREE + 1}b")[::-1], 2)


@functools.lru_cache(maxsize=1)
def _low_terms() -> tuple[int, ...]:
    r = char_poly() ^ (1 << DEGREE)
    return tuple(i for i in range(r.bit_length()) if r >> i & 1)


def _square(a: int) -> int:
    raw = np.frombuffer(a.to_bytes(max(1, (a.bit_length() + 7) // 8), "little"), dtype=np.uint8)
    return int.from_bytes(_SPREAD[raw].tobytes(), "little")


def _reduce(a: int) -> int:
    terms = _low_terms()
    while a.bit_length() > DEGREE:
        high = a >> DEGREE
        a ^= high << DEGREE
        for t in terms:  # x^19937 = sum of the lower terms (mod p, over GF(2))
            a ^= high << t
    return a


_POLYS: dict[int, int] = {}  # distance -> x^d mod p, the most recent _POLYS_MAX
_POLYS_MAX = 256


def jump_poly(d: int) -> int:
    """x^d mod p(x) (cached per distance)."""
    if d < 0:
        raise ValueError(f"jump distance must be >= 0, got {d}")
    g = _POLYS.get(d)
    if g is None:
        g = _xpow(d)
        if len(_POLYS) >= _POLYS_MAX:
            _POLYS.pop(next(iter(_POLYS)))
        _POLYS[d] = g
    return g


def jump_cost_draws(d: int) -> int:
    """Roughly how many skipped draws a jump of d costs (measured: applying a polynomial ~2M
    draws' worth, computing one ~2^24): skip when d is below this."""
    return JUMP_CACHED_MIN if d in _POLYS else JUMP_MIN


def _xpow(d: int) -> int:
    p = char_poly()
    g = 1
    for bit in bin(d)[2:]:
        g = _reduce(_square(g))
        if bit == "1":
            g <<= 1
            if g >> DEGREE & 1:
                g ^= p
    return g


def untemper(y: np.ndarray) -> np.ndarray:
    """Invert mt19937's output tempering (uint32 arrays)."""
    y = np.asarray(y, dtype=np.uint32)
    y = y ^ (y >> np.uint32(18))
    y = y ^ ((y << np.uint32(15)) & np.uint32(0xEFC60000))
    t = y
    for _ in range(5):  # y ^= (y << 7) & b, 7 bits recovered per round
        t = y ^ ((t << np.uint32(7)) & np.uint32(0x9D2C5680))
    y, t = t, t
    for _ in range(3):  # y ^= y >> 11
        t = y ^ (t >> np.uint32(11))
    return t


def _bit_generator(key: np.ndarray) -> np.random.MT19937:
    bg = np.random.MT19937()
    bg.state = {"bit_generator": "MT19937", "state": {"key": np.asarray(key, dtype=np.uint32), "pos": N}}
    return bg


def jump_key(key: np.ndarray, d: int) -> np.ndarray:
    """The key that numpy's MT19937 at pos 624 holds d draws after one holding `key` at pos 624."""
    if d < DEGREE:  # g = x^d: the window d draws on, read off directly
        x = np.empty(N + d, dtype=np.uint32)
        x[:N] = key
        x[N:] = untemper(_bit_generator(key).random_raw(d))
        return x[d:].copy()
    g = jump_poly(d)
    x = np.empty(DEGREE + N, dtype=np.uint32)  # x_0 .. x_{19937+623}, untempered
    x[:N] = key
    x[N:] = untemper(_bit_generator(key).random_raw(DEGREE))
    coeffs = np.unpackbits(np.frombuffer(g.to_bytes((DEGREE + 8) // 8, "little"), dtype=np.uint8),
                           bitorder="little")[:DEGREE]
    starts = np.flatnonzero(coeffs)
    windows = np.lib.stride_tricks.sliding_window_view(x, N)  # (19938, 624) view
    out = np.zeros(N, dtype=np.uint32)
    for lo in range(0, starts.size, 1024):  # bounded temporaries (1024 x 624 words)
        out ^= np.bitwise_xor.reduce(windows[starts[lo:lo + 1024]], axis=0)
    return out
