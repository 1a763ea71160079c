"""llm.c token shards and tokenizer files.

Token shard (llm.c's dev/data scripts, read by llmc/dataloader.h):

    header  256 x int32: [0] 20240520 magic  [1] 1 version  [2] ntok  [3..255] 0
    body    ntok x uint16 tokens                      file size = 1024 + 2 ntok

Tokenizer (gpt2_tokenizer.bin, read by llmc/tokenizer.h):

    header  256 x uint32: [0] 20240328 magic  [1] 2 version  [2] n tokens  [3] eot token id
    body    per token: uint8 length (> 0), then that many bytes
"""

from __future__ import annotations

import os

import numpy as np

from ..atomic import atomic_output
from ..errors import InputError
from .llmc_header import HEADER_INTS, read_header

SHARD_MAGIC, SHARD_VERSION = 20240520, 1
TOKENIZER_MAGIC, TOKENIZER_VERSION = 20240328, 2


def write_shard(path: str | os.PathLike, tokens) -> None:
    t = np.asarray(tokens)
    if t.ndim != 1 or (t.size and (t.min() < 0 or t.max() > 65535)):
        raise ValueError("tokens must be a 1-D array of values in [0, 65535] (uint16)")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, t.size)
    with atomic_output(path) as fh:
        fh.write(header.tobytes())
        fh.write(t.astype("<u2").tobytes())


def read_shard(path: str | os.PathLike) -> np.ndarray:
    header, size = read_header(path, magic=SHARD_MAGIC, version=SHARD_VERSION, what="an llm.c token shard")
    n = int(header[2])
    if n < 0 or size != HEADER_INTS * 4 + 2 * n:
        raise InputError(path, f"header says {n} tokens (file of {HEADER_INTS * 4 + 2 * n} bytes) but the "
                               f"file is {size} bytes")
    return np.fromfile(path, dtype="<u2", count=n, offset=HEADER_INTS * 4)


def write_tokenizer(path: str | os.PathLike, pieces: list[bytes], eot: int) -> None:
    if not 0 <= eot < len(pieces):
        raise ValueError(f"eot={eot} must be a token id in [0, {len(pieces)})")
    header = np.zeros(HEADER_INTS, dtype="<u4")
    header[:4] = (TOKENIZER_MAGIC, TOKENIZER_VERSION, len(pieces), eot)
    with atomic_output(path) as fh:
        fh.write(header.tobytes())
        for p in pieces:
            if not 0 < len(p) < 256:
                raise ValueError(f"token bytes must have length 1..255, got {len(p)}")
            fh.write(bytes([len(p)]) + p)


def synthetic_pieces(vocab: int) -> list[bytes]:
    """Token i decodes to "<i>": readable, unique, any vocab size."""
    return [f"<{i}>".encode() for i in range(vocab)]
