"""Token sources for ablations: a Markov chain with a known entropy rate, llm.c token shards,
bytes of a text file; and the fixed batch order every run of an ablation trains on.

The Markov source is the default because its entropy rate H is the lowest loss any model can
reach on it (cross-entropy of a stationary source is at least its entropy rate; an order-1
chain's is H = -sum_i pi_i sum_j P_ij ln P_ij with pi the stationary distribution), so a report
can say how far each run is from the achievable loss, not only from the other runs.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from ..errors import InputError

HELD_OUT_FRACTION = 0.1


@dataclasses.dataclass
class Tokens:
    """Train and held-out token arrays (int32) over a vocabulary of `vocab` tokens."""

    kind: str  # "markov" | "tokens" | "text"
    description: str
    vocab: int
    train: np.ndarray
    val: np.ndarray
    entropy_rate: float | None = None  # nats per token, when known
    facts: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "description": self.description, "vocab": self.vocab,
                "train_tokens": int(self.train.size), "val_tokens": int(self.val.size),
                "entropy_rate": self.entropy_rate, **self.facts}


# ---- a random order-1 Markov chain --------------------------------------------------------------

def markov_chain(vocab: int, *, alpha: float, seed: int) -> np.ndarray:
    """Transition matrix P (V, V), rows drawn from a symmetric Dirichlet(alpha) with numpy's
    Generator(PCG64(seed)): small alpha gives peaked rows (low entropy), large alpha uniform."""
    if vocab < 2:
        raise ValueError(f"a Markov source needs vocab >= 2, got {vocab}")
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    rng = np.random.Generator(np.random.PCG64(seed))
    return rng.dirichlet(np.full(vocab, float(alpha)), size=vocab)  # (V, V), rows sum to 1


def stationary(P: np.ndarray) -> np.ndarray:
    """pi with pi P = pi and sum(pi) = 1 (float64), by a linear solve: (P^T - I) pi = 0 with one
    equation replaced by the normalisation. Exact for an irreducible chain (a Dirichlet row draw
    has every entry > 0 with probability 1), periodic or not, where power iteration need not
    converge."""
    P = np.asarray(P, dtype=np.float64)
    A = P.T - np.eye(P.shape[0])
    A[-1] = 1.0
    rhs = np.zeros(P.shape[0])
    rhs[-1] = 1.0
    try:
        pi = np.linalg.solve(A, rhs)
    except np.linalg.LinAlgError:
        raise ValueError("the chain has no unique stationary distribution (it is reducible)") from None
    return pi


def entropy_rate(P: np.ndarray) -> float:
    """H = -sum_i pi_i sum_j P_ij ln P_ij (nats per token) of the stationary chain."""
    pi = stationary(P)
    with np.errstate(divide="ignore", invalid="ignore"):
        row_h = -np.where(P > 0, P * np.log(P), 0.0).sum(axis=1)
    return float(pi @ row_h)


def sample_chain(P: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """n tokens (int32): the first from the stationary distribution, each next one from its row,
    by inverse CDF of Generator(PCG64(seed)).random() (the same tokens on every machine)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    cdf = np.cumsum(P, axis=1)
    cdf[:, -1] = 1.0
    u = rng.random(n)
    out = np.empty(n, dtype=np.int32)
    state = int(np.searchsorted(np.cumsum(stationary(P)), u[0], side="right"))
    state = min(state, P.shape[0] - 1)
    out[0] = state
    for t in range(1, n):
        state = min(int(np.searchsorted(cdf[state], u[t], side="right")), P.shape[0] - 1)
        out[t] = state
    return out


def markov_tokens(*, vocab: int = 64, alpha: float = 0.1, seed: int = 0, train_tokens: int = 400_000,
                  val_tokens: int = 20_000) -> Tokens:
    P = markov_chain(vocab, alpha=alpha, seed=seed)
    h = entropy_rate(P)
    train = sample_chain(P, train_tokens, seed=seed + 1)
    val = sample_chain(P, val_tokens, seed=seed + 2)
    return Tokens("markov", f"order-1 Markov chain over {vocab} tokens, rows ~ Dirichlet({alpha:g}), "
                            f"data seed {seed}; entropy rate {h:.4f} nats/token "
                            f"(uniform: {math.log(vocab):.4f})",
                  vocab, train, val, h, {"order": 1, "alpha": alpha, "data_seed": seed})


# ---- files ------------------------------------------------------------------------------------

def _split(tokens: np.ndarray, path, val: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if val is not None:
        return tokens, val
    cut = int(tokens.size * (1 - HELD_OUT_FRACTION))
    if cut < 2 or tokens.size - cut < 2:
        raise InputError(path, f"{tokens.size} tokens: too few to hold out {HELD_OUT_FRACTION:.0%}")
    return tokens[:cut], tokens[cut:]


def shard_tokens(path: str | os.PathLike, *, vocab: int = 50257, val_path: str | os.PathLike | None = None
                 ) -> Tokens:
    """llm.c token shards (dev/data/*.bin, header magic 20240520); the last 10% held out unless a
    val shard is given."""
    from ..formats.tokens import read_shard

    train = np.asarray(read_shard(path, vocab=vocab), dtype=np.int32)
    val = None if val_path is None else np.asarray(read_shard(val_path, vocab=vocab), dtype=np.int32)
    train, val = _split(train, path, val)
    return Tokens("tokens", f"llm.c token shard {os.fspath(path)}"
                            + (f" (held out: {os.fspath(val_path)})" if val_path else " (last 10% held out)"),
                  vocab, train, val)


def text_tokens(path: str | os.PathLike) -> Tokens:
    """The bytes of any file as tokens (V = 256); the last 10% held out."""
    try:
        data = np.fromfile(os.fspath(path), dtype=np.uint8)
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from None
    train, val = _split(data.astype(np.int32), path, None)
    return Tokens("text", f"bytes of {os.fspath(path)} ({data.size:,} bytes, last 10% held out)", 256,
                  train, val)


# ---- the fixed batch order --------------------------------------------------------------------

def batch(tokens: np.ndarray, index: int, *, batch_size: int, seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch `index`: B consecutive windows of T+1 tokens, window k of batch i starting at
    ((i B + k) T) mod (n - T - 1). The same for every run of an ablation, whatever its scheme or
    init seed. x, y int32 (B, T)."""
    span = tokens.size - seq - 1
    if span < 1:
        raise ValueError(f"{tokens.size} tokens: too few for windows of {seq + 1}")
    starts = ((index * batch_size + np.arange(batch_size, dtype=np.int64)) * seq) % span
    win = tokens[starts[:, None] + np.arange(seq + 1)]  # (B, T+1)
    return np.ascontiguousarray(win[:, :-1]), np.ascontiguousarray(win[:, 1:])
