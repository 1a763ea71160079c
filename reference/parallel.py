"""One shared thread pool for the gather-bound Box-Muller transforms.

numpy's take and arithmetic release the GIL, so threads overlap the (random-access, memory
latency bound) table lookups with each other and with the caller's writing and hashing.
Results do not depend on the thread count: each chunk is a pure function of its draws, and
chunks are consumed in order. GPT2_VERIFY_THREADS=1 runs everything in the calling thread.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

LOOKAHEAD = 2  # chunks in flight per stream (bounds memory: a few MiB each)
_pool: ThreadPoolExecutor | None = None
_size: int | None = None


def threads() -> int:
    env = os.environ.get("GPT2_VERIFY_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"GPT2_VERIFY_THREADS={env!r} is not an integer; unset it or give "
                             f"a thread count like 2") from None
    return max(1, min(4, os.cpu_count() or 1))


def pool() -> ThreadPoolExecutor | None:
    """The shared pool, or None when running single-threaded."""
    global _pool, _size
    n = threads()
    if n == 1:
        return None
    if _pool is None or _size != n:
        _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="gpt2v")
        _size = n
    return _pool
