"""Bench rows and records: build a row, validate, merge and render records.

JSON (schema "gpt2-verify/bench/1"): {"schema", "tool_version", "rows": [row, ...]}, the row
fields typed in verify.records.BenchRow (extra keys allowed); `merge` validates records and
concatenates their rows; `render` prints one table grouped by config.

"""

from __future__ import annotations

import datetime
import json
import os
from typing import Sequence

from gpt2_verify.reference.config import GPTConfig

from ..errors import InputError
from ..records import BenchRecord, load_json, parse
from .flops import PeakLookup, flops_per_token, mfu

SCHEMA = BenchRecord.SCHEMA


def make_row(*, device: dict, impl: str, cfg: GPTConfig, batch: int, seq: int, dtype: str, compile: bool,
             fwd, bwd, opt, step: dict, peak: PeakLookup, peak_memory: int | None, extra: dict) -> dict:
    """One row (verify.records.BenchRow): the timings with tokens/s, FLOPs, MFU and the device."""
    fpt = float(flops_per_token(cfg, seq=seq))
    tps = batch * seq / step["median"]
    achieved = fpt * tps / 1e12
    row = {"device": device, "impl": impl, "config": cfg.as_dict(), "descriptor": cfg.name,
           "batch": batch, "seq": seq, "dtype": dtype, "compile": compile, "fwd_s": fwd, "bwd_s": bwd,
           "opt_s": opt, "step_s": step, "tokens_per_s": tps, "flops_per_token": fpt,
           "achieved_tflops": achieved, "peak_tflops": None if peak.tflops is None else float(peak.tflops),
           "peak_source": peak.source, "mfu": mfu(achieved, peak), "peak_memory_bytes": peak_memory,
           "peak_reason": peak.reason,
           "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    row.update(extra)
    return row


def record(rows: list[dict]) -> dict:
    """The JSON record of `rows` (verify.records.BenchRecord), validated."""
    return BenchRecord.make(rows=rows).to_dict()


def validate_record(obj, source: str) -> list[dict]:
    """The rows of a bench record (verify.records.BenchRecord), extra keys kept; InputError
    naming `source`, the row and the field otherwise."""
    if not isinstance(obj, dict):
        raise InputError(source, "not a bench record (a JSON object expected)")
    rec = parse(obj, source, expect=(BenchRecord,))
    return [row.to_dict() for row in rec.rows]


def load_record(path: str) -> list[dict]:
    return validate_record(load_json(path), path)


def merge(paths: Sequence[str]) -> dict:
    """One record holding the rows of every file, in order (each file validated). The same
    file twice, or a row that is in two files (the same measurement copied), is refused: the
    table would count it twice."""
    rows: list[dict] = []
    seen: dict[str, tuple[str, int]] = {}  # a row's canonical JSON -> (file, row index)
    for p in paths:
        for i, row in enumerate(load_record(p)):
            key = json.dumps(row, sort_keys=True)
            if key in seen:
                q, j = seen[key]
                same = "the same file given twice" if _same_file(p, q) else "a row copied between files"
                raise InputError(p, f"row {i} is row {j} of {q} ({same}); merge each measurement once")
            seen[key] = (p, i)
            rows.append(row)
    out = record(rows)
    out["merged_from"] = list(paths)
    return out


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _config_label(cfg: dict) -> str:
    c = GPTConfig.from_dict(cfg)
    return c.describe()


def _device_label(d: dict) -> str:
    if d["kind"] == "cuda":
        return f"{d['gpu_name']} ({d['host']})"
    return f"{d['cpu_model']} x{d['threads']} thr ({d['host']})"


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:,.0f} MiB"


def render(rows: Sequence[dict]) -> str:
    """One table, rows grouped by config (in first-seen order), then by B x T."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(_config_label(r["config"]), []).append(r)
    head = ("device", "impl", "dtype", "B x T", "tokens/s", "TFLOP/s", "MFU", "peak mem")
    lines = []
    for label, rs in groups.items():
        rs = sorted(rs, key=lambda r: (r["batch"] * r["seq"], r["batch"]))
        cells = [head]
        for r in rs:
            impl = r["impl"] + ("+compile" if r["compile"] else "")
            mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.3g}%"
            cells.append((_device_label(r["device"]), impl, r["dtype"], f"{r['batch']} x {r['seq']}",
                          f"{r['tokens_per_s']:,.0f}", f"{r['achieved_tflops']:.4g}", mfu,
                          _fmt_bytes(r["peak_memory_bytes"])))
        w = [max(len(c[i]) for c in cells) for i in range(len(head))]
        lines.append(f"config {label}")
        for c in cells:
            lines.append("  " + "  ".join(s.ljust(w[i]) if i < 3 else s.rjust(w[i]) for i, s in enumerate(c)))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
