"""The mt19937 stream shared by llm.c (llmc/rand.h) and PyTorch's CPU generator.

Both seed with the classic init_genrand recurrence (state[j] = 1812433253 * (state[j-1] ^
(state[j-1] >> 30)) + j) and temper the standard way, so `manual_seed(42)` gives the same u32
sequence in both. We compute the seeded state ourselves and hand it to numpy's MT19937 bit
generator, which only does the (bit-exact, CPU-independent) state update and tempering.

Uniforms, as both projects define them:
- randfloat32: (u32 & 0xFFFFFF) * 2^-24, a 24-bit value (one draw).
- randfloat64: (((hi << 32) | lo) & (2^53 - 1)) * 2^-53, two draws, the first is the high word.
"""

from __future__ import annotations

import numpy as np

N = 624
MAX_SEED = 2**32 - 1
_F24 = np.float32(2.0**-24)
_F53 = 2.0**-53


def init_genrand(seed: int) -> np.ndarray:
    """The 624-word state after llm.c's manual_seed / torch's mt19937(seed)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed={seed} out of range; llm.c and torch seed mt19937 with a "
                         f"uint32, use 0 <= seed <= {MAX_SEED}")
    state = [0] * N
    state[0] = seed
    for j in range(1, N):
        prev = state[j - 1]
        state[j] = (1812433253 * (prev ^ (prev >> 30)) + j) & 0xFFFFFFFF
    return np.array(state, dtype=np.uint32)


class MT19937:
    """A u32 stream, seeded like llm.c's manual_seed; snapshot/restore for random access.

    `spare` holds PyTorch's cached second Box-Muller normal (double) between normal_ calls
    (the `torch` profile keeps it in the generator, llm.c discards it).
    """

    def __init__(self, seed: int = 42):
        self.seed = seed
        self._bg = np.random.MT19937()
        # pos = N: the first draw regenerates the whole state block, as in init_genrand's
        # "left = 1" convention of both llm.c and torch.
        self._bg.state = {"bit_generator": "MT19937",
                          "state": {"key": init_genrand(seed), "pos": N}}
        self.spare: float | None = None
        self.position = 0  # u32 draws consumed so far

    # ---- raw draws ---------------------------------------------------------------------------
    def u32(self, n: int) -> np.ndarray:
        """The next n 32-bit outputs as uint32."""
        self.position += n
        return self._bg.random_raw(n).astype(np.uint32)

    def skip(self, n: int) -> None:
        """Advance n draws without materialising them."""
        if n > 0:
            self._bg.random_raw(n, output=False)
            self.position += n

    def jump(self, n: int) -> None:
        """Advance n draws: a GF(2) polynomial jump (reference.jump) when n is large, else skip."""
        from . import jump

        st = self._bg.state["state"]
        # at pos p the key is the window the stream reaches after N - p more draws
        rest = N - int(st["pos"])
        if n < max(jump.jump_cost_draws(n - rest), rest):
            self.skip(n)
            return
        key = jump.jump_key(st["key"], n - rest)
        self._bg.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": N}}
        self.position += n

    @classmethod
    def at(cls, seed: int, position: int) -> "MT19937":
        """The stream of `seed` after `position` draws."""
        stream = cls(seed)
        stream.jump(position)
        return stream

    # ---- uniforms ----------------------------------------------------------------------------
    def u24(self, n: int) -> np.ndarray:
        """The 24-bit integers k behind randfloat32 = k * 2^-24 (uint32)."""
        return self.u32(n) & np.uint32(0xFFFFFF)

    def randfloat32(self, n: int) -> np.ndarray:
        return self.u24(n).astype(np.float32) * _F24

    def randfloat64(self, n: int) -> np.ndarray:
        raw = self.u32(2 * n).astype(np.uint64).reshape(n, 2)
        bits = ((raw[:, 0] << np.uint64(32)) | raw[:, 1]) & np.uint64((1 << 53) - 1)
        return bits.astype(np.float64) * _F53

    # ---- random access -----------------------------------------------------------------------
    def snapshot(self) -> tuple:
        st = self._bg.state["state"]
        return (st["key"].copy(), int(st["pos"]), self.spare, self.position)

    def restore(self, snap: tuple) -> None:
        key, pos, spare, position = snap
        self._bg.state = {"bit_generator": "MT19937", "state": {"key": key.copy(), "pos": pos}}
        self.spare = spare
        self.position = position
