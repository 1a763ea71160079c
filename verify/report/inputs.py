"""What each report input is: a JSON record (by its "schema", typed by verify.records), an
ablation run directory (by its summary.json) or a model file (anything
verify.formats.model.open_model reads)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .. import records as R
from ..errors import InputError

# section order in the report: model files first, then each record kind (Record.KIND)
KINDS = ("init", "stats", "checksum", "compare", "fuzz", "gradflow", "llmc", "module", "ablation",
         "ablate-run", "bench")
JSON_SNIFF = 64


@dataclasses.dataclass
class Input:
    path: str
    kind: str  # one of KINDS
    record: R.Record | None = None  # JSON inputs, typed
    model: object = None  # verify.formats.model.ModelFile for "init"


def _readable() -> tuple[type[R.Record], ...]:
    """The record types the report has a section for."""
    return tuple(c for c in R.RECORDS.values() if c.KIND in KINDS)


def _looks_like_json(path: Path) -> bool:
    if path.suffix.lower() == ".json":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(JSON_SNIFF)
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from None
    return head.lstrip()[:1] in (b"{", b"[")


def detect(path: str | os.PathLike) -> Input:
    """Classify and load one input (a JSON record is parsed and validated; a model file is
    opened, not read)."""
    p = Path(path)
    if not p.exists():
        raise InputError(path, "no such file or directory")
    if p.is_dir():
        summary = p / "summary.json"
        if summary.exists():
            rec = R.read(summary, expect=(R.AblateSummary,))
            return Input(str(p), rec.KIND, record=rec)
    elif _looks_like_json(p):
        rec = R.read(p, expect=_readable())
        return Input(str(p), rec.KIND, record=rec)
    from ..formats.model import open_model

    return Input(str(p), "init", model=open_model(p))
