"""llm.c token shards and tokenizer files.

Token shard (llm.c's dev/data scripts, read by llmc/dataloader.h):

    header  256 x int32: [0] 20240520 magic  [1] 1 version  [2] ntok  [3..255] 0
    body    ntok x uint16 tokens                      file size = 1024 + 2 ntok

Tokenizer (gpt2_tokenizer.bin, read by llmc/tokenizer.h `tokenizer_init`):

    header  256 x uint32: [0] 20240328 magic  [1] 2 version  [2] n tokens  [3] eot token id
    body    per token: uint8 length (> 0), then that many bytes; nothing after the last token

Version 1 has no eot slot: llm.c then requires n = 50257 and takes eot = 50256 (GPT-2's
<|endoftext|>). llm.c asserts length > 0 but never checks the end of the file; this reader does,
so a header that lies about n is caught.
"""

from __future__ import annotations

import os

import numpy as np

from ..atomic import atomic_output
from ..errors import InputError
from .llmc_header import HEADER_INTS, SHARD_MAGIC, TOKENIZER_MAGIC, read_header

SHARD_VERSION = 1
TOKENIZER_VERSION = 2


def write_shard(path: str | os.PathLike, tokens) -> None:
    t = np.asarray(tokens)
    if t.ndim != 1 or (t.size and (t.min() < 0 or t.max() > 65535)):
        raise ValueError("tokens must be a 1-D array of values in [0, 65535] (uint16)")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, t.size)
    with atomic_output(path) as fh:
        fh.write(header.tobytes())
        fh.write(t.astype("<u2").tobytes())


def read_shard(path: str | os.PathLike, *, vocab: int | None = None) -> np.ndarray:
    """The shard's tokens (uint16). With vocab, every token must be in [0, vocab): llm.c's
    dataloader does not check, and an out-of-range id reads past the end of wte."""
    header, size = read_header(path, magic=SHARD_MAGIC, versions={SHARD_VERSION: ""})
    n = int(header[2])
    if n < 0 or size != HEADER_INTS * 4 + 2 * n:
        raise InputError(path, f"header says {n} tokens (file of {HEADER_INTS * 4 + 2 * n} bytes) but the "
                               f"file is {size} bytes")
    tokens = np.fromfile(path, dtype="<u2", count=n, offset=HEADER_INTS * 4)
    if vocab is not None and n and int(tokens.max()) >= vocab:
        i = int(np.argmax(tokens >= vocab))
        raise InputError(path, f"token {i} = {int(tokens[i])} outside the model's vocab [0, {vocab})")
    return tokens


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


def read_tokenizer(path: str | os.PathLike) -> tuple[list[bytes], int]:
    """(token byte strings, eot id); InputError naming the file and the first problem."""
    header, size = read_header(path, magic=TOKENIZER_MAGIC, versions=None, dtype="<u4")
    version, n = int(header[1]), int(header[2])  # uint32 slots
    if version == 1:
        if n != 50257:
            raise InputError(path, f"version 1 tokenizer with {n} tokens: llm.c accepts version 1 only "
                                   f"for GPT-2's 50257 (write version 2 with an eot id)")
        eot = 50256
    elif version == TOKENIZER_VERSION:
        eot = int(header[3])
    else:
        raise InputError(path, f"tokenizer version {version}; llm.c knows versions 1 and 2")
    body_size = size - HEADER_INTS * 4
    if n > body_size // 2:  # each token takes at least 2 bytes: checked before reading the body
        raise InputError(path, f"header says {n} tokens but the body holds {body_size} bytes "
                               f"(at least 2 per token)")
    if eot >= n:
        raise InputError(path, f"eot id {eot} is not a token id in [0, {n})")
    with open(path, "rb") as fh:
        fh.seek(HEADER_INTS * 4)
        body = fh.read()
    pieces, pos = [], 0
    for i in range(n):
        if pos >= len(body):
            raise InputError(path, f"file ends at token {i} of {n}")
        length = body[pos]
        if length == 0:
            raise InputError(path, f"token {i} has length 0 (llm.c asserts length > 0)")
        if pos + 1 + length > len(body):
            raise InputError(path, f"token {i} needs {length} bytes but the file ends after "
                                   f"{len(body) - pos - 1}")
        pieces.append(body[pos + 1:pos + 1 + length])
        pos += 1 + length
    if pos != len(body):
        raise InputError(path, f"{len(body) - pos} bytes after the last of {n} tokens: the header's "
                               f"count is wrong or the file was appended to")
    return pieces, eot


def synthetic_pieces(vocab: int) -> list[bytes]:
    """Token i decodes to "<i>": readable, unique, any vocab size."""
    return [f"<{i}>".encode() for i in range(vocab)]
