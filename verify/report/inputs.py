"""What each report input is: a JSON record (by its "schema"), an ablation run directory (by its
summary.json) or a model file (anything verify.formats.model.open_model reads)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..bench import SCHEMA as BENCH_SCHEMA
from ..compare.report import SCHEMA as COMPARE_SCHEMA
from ..digest import STATS_SCHEMA
from ..errors import InputError
from ..experiments.study import SCHEMA as ABLATE_SCHEMA
from ..llmc.harness import SCHEMA as LLMC_SCHEMA
from ..numerics.gradflow import SCHEMA as GRADFLOW_SCHEMA
from ..records import load_json

SCHEMAS = {
    STATS_SCHEMA: "stats",
    COMPARE_SCHEMA: "compare",
    GRADFLOW_SCHEMA: "gradflow",
    LLMC_SCHEMA: "llmc",
    ABLATE_SCHEMA: "ablation",
    BENCH_SCHEMA: "bench",
}
KINDS = ("init", "stats", "compare", "gradflow", "llmc", "ablation", "bench")  # section order in the report
JSON_SNIFF = 64


@dataclasses.dataclass
class Input:
    path: str
    kind: str  # one of KINDS
    record: dict | None = None  # JSON inputs
    model: object = None  # verify.formats.model.ModelFile for "init"


def _record_kind(path, obj: dict) -> str:
    schema = obj.get("schema")
    if schema is None:
        raise InputError(
            path,
            'JSON without a "schema" field: not a gpt2-verify record; give the --json '
            "output of compare, gradflow, llmc, ablate or bench",
        )
    if schema not in SCHEMAS:
        raise InputError(path, f"unknown schema {schema!r}; the report reads {', '.join(SCHEMAS)}")
    return SCHEMAS[schema]


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
    """Classify and load one input (a model file is opened, not read)."""
    p = Path(path)
    if not p.exists():
        raise InputError(path, "no such file or directory")
    if p.is_dir():
        summary = p / "summary.json"
        if summary.exists():
            obj = load_json(summary)
            kind = _record_kind(summary, obj)
            if kind != "ablation":
                raise InputError(
                    summary,
                    f"schema {obj.get('schema')!r}: an ablation run directory's "
                    f"summary.json has schema {ABLATE_SCHEMA!r}",
                )
            return Input(str(p), kind, record=obj)
    elif _looks_like_json(p):
        obj = load_json(p)
        return Input(str(p), _record_kind(p, obj), record=obj)
    from ..formats.model import open_model

    return Input(str(p), "init", model=open_model(p))
