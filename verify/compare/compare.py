"""compare(): grade a model file tensor by tensor, then trace what is not from the reference stream."""

from __future__ import annotations

import itertools

import numpy as np

from reference.config import (
    RANDOM_TENSORS,
    GPTConfig,
    TensorSpec,
    draw_order,
    nominal_std,
    parameter_table,
)
from reference.init import iter_params
from reference.normal import check_profile

from ..pipeline import background
from ..progress import Progress
from . import diagnose as dg
from .grade import (
    CHUNK,
    RegionDiff,
    TensorGrade,
    diff_tensor,
    expected_shape,
    grade_tensor,
    regions,
)
from .report import Report, check_require
from .tolerance import describe as describe_tolerance

DEFAULT_FPR = 1e-9  # family-wise, for all distribution checks of one comparison together


def _config_problems(file_cfg: GPTConfig, cfg: GPTConfig) -> list[str]:
    out = []
    for field, label in (("layers", "L"), ("channels", "C"), ("vocab", "V"), ("max_seq_len", "maxT")):
        a, b = getattr(file_cfg, field), getattr(cfg, field)
        if a != b:
            out.append(f"config differs: the file has {label}={a}, the reference {label}={b}")
    return out


def _file_info(model) -> dict:
    return {"path": str(model.path), "format": model.format, "layout": model.layout,
            "dtype": model.dtype, "heads_assumed": bool(model.heads_assumed),
            "wte_rows": model.wte_rows, "lm_head": model.lm_head}


def compare(candidate, *, against=None, seed: int = 42, profile: str = "llmc",
            fpr: float = DEFAULT_FPR, require: str = "close", progress: bool | None = None) -> Report:
    """Grade `candidate` (a verify.formats.model.ModelFile) against the reference init of
    `against` (a GPTConfig; None: the config inferred from the file) for (seed, profile), or
    against another ModelFile (no regeneration: e.g. the same model written by two builds)."""
    check_profile(profile)
    check_require(require)
    file_mode = against is not None and not isinstance(against, GPTConfig)
    if file_mode:
        cfg = against.config
        against_info = {"kind": "file", **_file_info(against)}
    else:
        cfg = candidate.config if against is None else against
        against_info = {"kind": "reference", "seed": seed, "profile": profile}
    problems = list(candidate.shape_problems) + _config_problems(candidate.config, cfg)
    problems += [f"missing from the file: {k}" for k in candidate.missing]
    problems += [f"extra tensor in the file: {k}" for k in candidate.extra]
    report = Report(file=_file_info(candidate), config=cfg.as_dict(), against=against_info,
                    profile=None if file_mode else profile, seed=None if file_mode else seed,
                    tolerance=describe_tolerance(), tensors=[], problems=problems, require=require)
    if _config_problems(candidate.config, cfg):
        return report  # every shape differs: nothing to grade value by value

    specs = parameter_table(cfg)
    n_random = sum(s.name in RANDOM_TENSORS for s in specs) + (candidate.lm_head == "separate")
    per_check = fpr / n_random
    # the reference, generated in a background thread (both cores), grouped by tensor
    reference = None if file_mode else itertools.groupby(
        background(iter_params(cfg, seed, profile, CHUNK)), key=lambda pair: pair[0].name)
    region_diffs: dict[str, list[RegionDiff]] = {}
    total = sum(s.numel for s in specs)
    with Progress(total, "compare", enabled=progress) as bar:
        for spec in specs:
            if file_mode and spec.name not in against.sources:
                report.tensors.append(TensorGrade(spec.name, spec.shape, candidate.dtype, [], "mismatch",
                                                  f"{spec.name}: missing from the --against file"))
                bar.update(spec.numel)
                continue
            if file_mode:
                ref_chunks = against.iter_chunks(spec.name, CHUNK)
            else:
                name, group = next(reference)
                assert name == spec.name, (name, spec.name)
                ref_chunks = (part for _spec, part in group)
            grade, diffs = _grade_one(candidate, cfg, spec, ref_chunks, per_check)
            report.tensors.append(grade)
            if diffs:
                region_diffs[spec.name] = diffs
            bar.update(spec.numel)
        if candidate.lm_head == "separate":
            ref_wte = (against.iter_chunks("wte", CHUNK) if file_mode else
                       (part for _s, part in iter_params(cfg, seed, profile, CHUNK) if _s.name == "wte"))
            report.tensors.append(_grade_lm_head(candidate, cfg, ref_wte, per_check))
    _first_divergences(cfg, report, region_diffs)
    if not file_mode:
        _diagnose(candidate, cfg, seed, profile, report, region_diffs, progress)
    return report


def _grade_one(model, cfg: GPTConfig, spec: TensorSpec, ref_chunks, fpr: float
               ) -> tuple[TensorGrade, list[RegionDiff] | None]:
    name = spec.name
    source = list(model.sources.get(name, []))
    dtype = model.dtypes.get(name, model.dtype)
    if name in model.unusable:
        return TensorGrade(name, spec.shape, dtype, source, "mismatch", model.unusable[name]), None
    if name not in model.sources:
        return TensorGrade(name, spec.shape, dtype, source, "mismatch",
                           f"{name}: missing from the file"), None
    shape = tuple(model.shape(name))
    rows = shape[0] if name == "wte" and len(shape) == 2 else None
    if name == "wte" and rows not in (cfg.vocab, cfg.padded_vocab):
        rows = None
    want = expected_shape(cfg, spec, rows)
    if shape != want:
        text = f"{name}: shape {shape}, expected {want}"
        if sorted(shape) == sorted(want) and len(shape) == len(want):
            text += " (transposed)"
        return TensorGrade(name, shape, dtype, source, "mismatch", text, numel=int(np.prod(shape))), None
    parts = regions(cfg, spec, rows)
    std = nominal_std(cfg, name) if name in RANDOM_TENSORS else 1.0
    diffs = diff_tensor(model.iter_chunks(name, CHUNK), ref_chunks, parts, std=std, dtype=dtype)
    grade = grade_tensor(cfg, spec, diffs, shape=shape, dtype=dtype, source=source,
                         candidate_chunks=lambda: model.iter_chunks(name, CHUNK), fpr=fpr)
    return grade, diffs


def _grade_lm_head(model, cfg, ref, fpr) -> TensorGrade:
    """A separate (untied) lm_head: graded like wte's drawn rows (llm.c ties it to wte)."""
    arr = np.asarray(model.lm_head_tensor(), dtype=np.float32)
    rows = arr.shape[0] if arr.ndim == 2 else 0
    spec = next(s for s in parameter_table(cfg) if s.name == "wte")
    source = ["lm_head.weight"]
    if arr.ndim != 2 or arr.shape[1] != cfg.channels or rows not in (cfg.vocab, cfg.padded_vocab):
        g = TensorGrade("lm_head", tuple(arr.shape), model.dtype, source, "mismatch",
                        f"lm_head: shape {arr.shape}, expected ({cfg.vocab}, {cfg.channels})")
        return g
    diffs = diff_tensor(iter([arr.reshape(-1)]), ref, regions(cfg, spec, rows),
                        std=nominal_std(cfg, "wte"), dtype=model.dtype)
    g = grade_tensor(cfg, spec, diffs, shape=arr.shape, dtype=model.dtype, source=source,
                     candidate_chunks=lambda: iter([arr.reshape(-1)]), fpr=fpr)
    g.name = "lm_head"
    g.reason = "lm_head (not tied to wte) " + g.reason.replace("wte", "lm_head", 1)
    return g


def _slice_regions(cfg, region_diffs):
    """(key, RegionDiff) for every drawn slice, in llm.c's draw order."""
    by = {}
    for name, diffs in region_diffs.items():
        for d in diffs:
            if d.region.kind == "normal":
                by[(name, d.region.layer)] = d
    for spec, layer, _start, _count in draw_order(cfg):
        key = (spec.name, layer)
        if key in by:
            yield key, by[key]


def _first_divergences(cfg, report: Report, region_diffs) -> None:
    grades = {t.name: t for t in report.tensors}
    for name, diffs in region_diffs.items():
        g = grades[name]
        if g.verdict in ("exact", "close"):
            continue
        firsts = [d for d in diffs if d.first_over is not None]
        if firsts:
            d = min(firsts, key=lambda d: d.first_over)
            g.first_divergence = {"index": list(np.unravel_index(d.first_over, g.shape)),
                                  "candidate": d.first_values[0], "reference": d.first_values[1]}
            g.first_divergence["index"] = [int(i) for i in g.first_divergence["index"]]
    for key, d in _slice_regions(cfg, region_diffs):
        if d.verdict in ("exact", "close") or d.first_over is None:
            continue
        g = grades[key[0]]
        index = [int(i) for i in np.unravel_index(d.first_over, g.shape)]
        report.first_divergence = {"tensor": key[0], "layer": key[1], "index": index,
                                   "candidate": d.first_values[0], "reference": d.first_values[1],
                                   "cause": None}
        return


def _diagnose(model, cfg, seed, profile, report: Report, region_diffs, progress) -> None:
    slices = list(_slice_regions(cfg, region_diffs))
    # not from the reference's stream position (NaN/Inf alone is reported, not traced)
    bad = [key for key, d in slices if d.over > 0]
    if not bad:
        return
    heads = {key: d.head for key, d in slices if d.head is not None}
    dtype = model.dtype

    def candidate_slice(key):
        name, layer = key
        t = model.tensor(name)
        flat = (t if layer is None else t[layer]).reshape(-1)
        count = next(c for s, ly, _st, c in draw_order(cfg) if (s.name, ly) == key)
        return np.asarray(flat[:count], dtype=np.float32)

    found = dg.diagnose(cfg, seed=seed, profile=profile, heads=heads, bad=bad, dtype=dtype,
                        candidate_slice=candidate_slice, progress=progress)
    report.causes = [d.to_dict() for d in found]
    grades = {t.name: t for t in report.tensors}
    by_tensor: dict[str, list] = {}
    for d in found:
        by_tensor.setdefault(d.key[0], []).append(d)
        g = grades[d.key[0]]
        if d.key[1] is not None:
            for layer in g.layers:
                if layer["layer"] == d.key[1]:
                    layer["cause"] = d.cause
    for name, ds in by_tensor.items():
        g = grades[name]
        g.cause = ds[0].cause + (f" (and {len(ds) - 1} more layers)" if len(ds) > 1 else "")
    if report.first_divergence is not None:
        key = (report.first_divergence["tensor"], report.first_divergence["layer"])
        for d in found:
            if d.key == key:
                report.first_divergence["cause"] = d.cause
