"""Box-Muller lookup tables over the 2^24 possible 24-bit uniforms.

In the n >= 16 path each Box-Muller pair is a function of two 24-bit integers k1, k2:
    u1 = 1 - k1 * 2^-24          radius = sqrtf(-2 * logf(u1 [+ 1e-12f]))
    u2 = k2 * 2^-24              theta  = (float)(2.0 * M_PI * u2)   (double product)
    pair = (radius * cosf(theta) * std + mean, radius * sinf(theta) * std + mean)
so logf, cosf and sinf each see at most 2^24 distinct arguments. We evaluate glibc's exact
algorithms (reference.glibc_libm) once over all of them, and gather. Tables are float32,
64 MiB per function, and cached on disk (verified by SHA-256 on load) because building them costs
seconds; set GPT2_VERIFY_CACHE=off to disable the disk cache, or to a folder to move it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from . import glibc_libm, parallel

SIZE = 1 << 24
EPSILON = np.float32(1e-12)  # llm.c's EPSILONE
TWO_PI = 2.0 * 3.141592653589793  # 2.0 * M_PI, folded by the compiler (exact doubling)
_CHUNK = 1 << 16
_CACHE_VERSION = 1
_memory: dict[str, np.ndarray] = {}


def uniforms24() -> np.ndarray:
    """k * 2^-24 for every k, as float32 (exact)."""
    return np.arange(SIZE, dtype=np.uint32).astype(np.float32) * np.float32(2.0**-24)


def theta_of(u2: np.ndarray) -> np.ndarray:
    """(float)(2.0 * M_PI * u2): double product, then rounded to float."""
    return (TWO_PI * u2.astype(np.float64)).astype(np.float32)


def radius_of(u1: np.ndarray, epsilon: bool, variant: str = "fma") -> np.ndarray:
    """sqrtf(-2 * logf(u1 [+ 1e-12f])), all in float32 (sqrt is correctly rounded)."""
    x = u1 + EPSILON if epsilon else u1
    return np.sqrt(np.float32(-2.0) * glibc_libm.logf(x, variant))


def _build(name: str, variant: str) -> np.ndarray:
    u = uniforms24()
    shape = (SIZE, 2) if name == "sincos" else (SIZE,)
    out = np.empty(shape, dtype=np.float32)

    def fill(lo: int) -> None:
        part = u[lo:lo + _CHUNK]
        if name == "sincos":
            out[lo:lo + _CHUNK, 0], out[lo:lo + _CHUNK, 1] = glibc_libm.sincosf(
                theta_of(part), variant)
        else:
            out[lo:lo + _CHUNK] = radius_of(np.float32(1.0) - part, name == "radius_eps", variant)

    pool = parallel.pool()  # numpy releases the GIL: chunks build on every core
    if pool is None:
        for lo in range(0, SIZE, _CHUNK):
            fill(lo)
    else:
        list(pool.map(fill, range(0, SIZE, _CHUNK)))
    return out


def cache_dir() -> Path | None:
    env = os.environ.get("GPT2_VERIFY_CACHE")
    if env is not None:
        return None if env.lower() in ("", "0", "off", "no", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpt2-verify"


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).reshape(-1).view(np.uint8).data).hexdigest()


def _load(path: Path, name: str) -> np.ndarray | None:
    meta_path = path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
        # mapped, not read: processes generating shards in parallel share one copy
        a = np.memmap(path, dtype="<f4", mode="r")
    except (OSError, ValueError):
        return None
    width = 2 if name == "sincos" else 1
    if a.size != SIZE * width or meta.get("sha256") != _sha(a):
        return None  # stale or corrupt: rebuild
    return a.reshape((SIZE, 2) if width == 2 else (SIZE,))


def _save(path: Path, a: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for target, payload in ((path, np.ascontiguousarray(a, "<f4").reshape(-1).view(np.uint8)),
                                (path.with_suffix(".json"),
                                 json.dumps({"sha256": _sha(a)}).encode())):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{target.name}.")
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            os.replace(tmp, target)
    except OSError:
        pass  # a read-only cache is only slower


def table(name: str, variant: str = "fma") -> np.ndarray:
    """"radius_eps" (llm.c), "radius" (torch): float32[2^24]; "sincos": float32[2^24, 2]
    holding (sinf, cosf) side by side, so one gather fetches both."""
    if name not in ("radius_eps", "radius", "sincos"):
        raise ValueError(f"unknown table {name!r}")
    key = f"{name}-{variant}"
    if key in _memory:
        return _memory[key]
    folder = cache_dir()
    path = folder / f"boxmuller-v{_CACHE_VERSION}-{key}.f32" if folder else None
    a = _load(path, name) if path else None
    if a is None:
        a = _build(name, variant)
        if path:
            _save(path, a)
    a.flags.writeable = False
    _memory[key] = a
    return a
