"""The 256 x int32 header every llm.c file starts with: its magic numbers, read and checked once.

Magics as llm.c's readers check them (karpathy/llm.c): model 20240326 (train_gpt2.c
gpt2_build_from_checkpoint), debug state 20240327 (test_gpt2.c), tokenizer 20240328
(llmc/tokenizer.h tokenizer_init), token shard 20240520 and eval file 20240522 (llmc/dataloader.h),
optimizer state 20240527 (train_gpt2.cu save_state / load_state).
"""

from __future__ import annotations

import os
import stat
from typing import Mapping

import numpy as np

from ..errors import InputError

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4

MODEL_MAGIC = 20240326
DEBUG_STATE_MAGIC = 20240327
TOKENIZER_MAGIC = 20240328
SHARD_MAGIC = 20240520
EVAL_MAGIC = 20240522
OPTIMIZER_STATE_MAGIC = 20240527
MAGICS = {
    MODEL_MAGIC: "an llm.c model file",
    DEBUG_STATE_MAGIC: "an llm.c debug state file",
    TOKENIZER_MAGIC: "an llm.c tokenizer file",
    SHARD_MAGIC: "an llm.c token shard",
    EVAL_MAGIC: "an llm.c eval file",
    OPTIMIZER_STATE_MAGIC: "an llm.c optimizer state file (train_gpt2.cu state_*.bin: AdamW m and v; "
                           "llm.mojo's llmm/checkpointing.mojo writes the same magic and layout)",
}


def read_header(path: str | os.PathLike, *, magic: int | None, versions: Mapping[int, str] | None,
                dtype: str = "<i4") -> tuple[np.ndarray, int]:
    """(the 256 header ints, the file size), never reading the body; InputError naming the file
    for anything wrong. versions: the known versions (version -> what it means, "" for nothing to
    say); None: the caller checks the version (formats whose versions change the layout).
    magic None: the caller checks the magic too (a model file may carry llm.mojo's)."""
    what = MAGICS[magic] if magic is not None else MAGICS[MODEL_MAGIC]
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(path, "cannot read: no such file") from None
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(path, f"cannot read: is a directory, not {what}")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(path, "cannot read: not a regular file")
    size = st.st_size
    if size == 0:
        raise InputError(path, "file is empty")
    if size < HEADER_BYTES:
        raise InputError(path, f"file is {size} bytes: too short for the {HEADER_BYTES}-byte header")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(HEADER_BYTES)
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from None
    if len(raw) != HEADER_BYTES:
        raise InputError(path, f"file shrank while reading: got {len(raw)} header bytes")
    header = np.frombuffer(raw, dtype=dtype).copy()  # (256,)
    found = int(header[0])
    if magic is not None and found != magic:
        hint = f"this is {MAGICS[found]}" if found in MAGICS else f"not {what}"
        raise InputError(path, f"bad magic {found} (expected {magic}): {hint}")
    if versions is not None and int(header[1]) not in versions:
        known = ", ".join(f"{v} ({d})" if d else str(v) for v, d in versions.items())
        raise InputError(path, f"{what}: unknown version {int(header[1])}; known: {known}")
    return header, size
