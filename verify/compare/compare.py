"""compare(): grade a model file tensor by tensor, then trace what is not from the reference stream."""

from __future__ import annotations

import itertools

import numpy as np
from gpt2_verify.reference.config import GPTConfig, TensorSpec, parameter_table
from gpt2_verify.reference.init import iter_params
from gpt2_verify.reference.normal import check_profile
from gpt2_verify.reference.schemes import DEFAULT_SCHEME, SchemeInit, resolve

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
    law_groups,
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
            "wte_rows": model.wte_rows, "lm_head": model.lm_head, "variant": model.variant or None}


def _resolve_scheme(scheme, overrides, cfg: GPTConfig, profile: str) -> SchemeInit:
    if isinstance(scheme, SchemeInit):
        if overrides:
            raise ValueError("compare: give overrides= with a scheme name, not with a resolved SchemeInit "
                             "(resolve it with the overrides instead)")
        if scheme.cfg != cfg or scheme.profile != profile:
            raise ValueError(f"compare: the scheme was resolved for {scheme.cfg.describe()} profile "
                             f"{scheme.profile}, but the comparison is for {cfg.describe()} profile "
                             f"{profile}; pass the scheme's name instead")
        return scheme
    return resolve(scheme, cfg, profile=profile, overrides=tuple(overrides))


def compare(candidate, *, against=None, seed: int = 42, profile: str = "llmc",
            scheme: "str | SchemeInit" = DEFAULT_SCHEME, overrides=(),
            fpr: float = DEFAULT_FPR, require: str = "close", progress: bool | None = None,
            tensor: str | None = None, layers: tuple[int, int] | None = None) -> Report:
    """Grade `candidate` (a verify.formats.model.ModelFile) against the reference init of
    `against` (a GPTConfig; None: the config inferred from the file) for (seed, profile), or
    against another ModelFile (no regeneration: e.g. the same model written by two builds).

    scheme, overrides: the init scheme (a name from reference.schemes.SCHEMES, e.g.
    "xavier-uniform", or a resolved SchemeInit) and its `--set` overrides ("wpe.std=0.01"): the
    reference bits and every expected law come from them. Bad names or overrides raise
    ValueError.

    tensor, layers: grade only that tensor (layers [a, b) of it): the reference is generated
    for that shard alone, from its stream position (reference.access), not from the start."""
    check_profile(profile)
    check_require(require)
    file_mode = against is not None and not isinstance(against, GPTConfig)
    if file_mode:
        cfg = against.config
        against_info = {"kind": "file", **_file_info(against)}
    else:
        cfg = candidate.config if against is None else against
        against_info = {"kind": "reference", "seed": seed, "profile": profile}
    init = _resolve_scheme(scheme, overrides, cfg, profile)
    against_info["scheme"] = init.label
    problems = list(candidate.shape_problems) + _config_problems(candidate.config, cfg)
    problems += [f"missing from the file: {k}" for k in candidate.missing]
    problems += [f"extra tensor in the file: {k}" for k in candidate.extra]
    report = Report(file=_file_info(candidate), config=cfg.as_dict(), against=against_info,
                    profile=None if file_mode else profile, seed=None if file_mode else seed,
                    tolerance=describe_tolerance(), tensors=[], problems=problems, require=require,
                    scheme=init.to_dict())
    if _config_problems(candidate.config, cfg):
        return report  # every shape differs: nothing to grade value by value

    specs = parameter_table(cfg)
    shard = None
    if tensor is not None:
        from gpt2_verify.reference.access import Access

        access = Access(cfg, seed, profile, scheme=init)
        lo, hi = access.tensor_range(tensor, layers)  # ValueError names a bad tensor or range
        specs = [s for s in specs if s.name == tensor]
        shard = (access, lo, hi, layers)
    elif layers is not None:
        raise ValueError("compare: layers= needs tensor=")
    # one law check per distinct random law of each tensor (lm_head: wte's): the family-wise
    # false-positive rate fpr is split evenly over them (Bonferroni)
    n_checks = sum(len(law_groups(init, s)) for s in specs)
    wte = next((s for s in specs if s.name == "wte"), None)
    n_checks += len(law_groups(init, wte)) * (candidate.lm_head == "separate") if wte else 0
    per_check = fpr / max(n_checks, 1)
    # the reference, generated in a background thread (both cores), grouped by tensor
    stream = (iter_params(cfg, seed, profile, CHUNK, scheme=init) if shard is None else
              shard[0].iter_range(shard[1], shard[2], CHUNK))
    reference = None if file_mode else itertools.groupby(background(stream), key=lambda pair: pair[0].name)
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
            grade, diffs = _grade_one(candidate, cfg, spec, ref_chunks, per_check, init,
                                      layers=None if shard is None else shard[3])
            report.tensors.append(grade)
            if diffs:
                region_diffs[spec.name] = diffs
            bar.update(spec.numel)
        if candidate.lm_head == "separate" and tensor in (None, "wte"):
            ref_wte = (against.iter_chunks("wte", CHUNK) if file_mode else
                       (part for _s, part in iter_params(cfg, seed, profile, CHUNK, scheme=init)
                        if _s.name == "wte"))
            report.tensors.append(_grade_lm_head(candidate, cfg, ref_wte, per_check, init))
    _first_divergences(init, report, region_diffs)
    if not file_mode:
        why_not = dg.undiagnosable(init)
        if why_not:
            report.diagnosis = why_not
        else:
            _diagnose(candidate, init, seed, profile, report, region_diffs, progress)
    return report


def _grade_one(model, cfg: GPTConfig, spec: TensorSpec, ref_chunks, fpr: float, init: SchemeInit, *,
               layers: tuple[int, int] | None = None) -> tuple[TensorGrade, list[RegionDiff] | None]:
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
    parts = regions(cfg, spec, rows, init=init)
    if layers is not None:  # one shard: its layers' regions, both streams from its first value
        parts = [r for r in parts if layers[0] <= r.layer < layers[1]]
    diffs = diff_tensor(model.iter_chunks(name, CHUNK, start=parts[0].lo), ref_chunks, parts, dtype=dtype)
    grade = grade_tensor(cfg, spec, diffs, shape=shape, dtype=dtype, source=source,
                         candidate_chunks=lambda start=0: model.iter_chunks(name, CHUNK, start=start),
                         fpr=fpr, init=init)
    return grade, diffs


def _grade_lm_head(model, cfg, ref, fpr, init: SchemeInit) -> TensorGrade:
    """A separate (untied) lm_head: graded like wte's drawn rows (llm.c ties it to wte)."""
    arr = np.asarray(model.lm_head_tensor(), dtype=np.float32)
    rows = arr.shape[0] if arr.ndim == 2 else 0
    spec = next(s for s in parameter_table(cfg) if s.name == "wte")
    source = ["lm_head.weight"]
    if arr.ndim != 2 or arr.shape[1] != cfg.channels or rows not in (cfg.vocab, cfg.padded_vocab):
        g = TensorGrade("lm_head", tuple(arr.shape), model.dtype, source, "mismatch",
                        f"lm_head: shape {arr.shape}, expected ({cfg.vocab}, {cfg.channels})")
        return g
    diffs = diff_tensor(iter([arr.reshape(-1)]), ref, regions(cfg, spec, rows, init=init), dtype=model.dtype)
    g = grade_tensor(cfg, spec, diffs, shape=arr.shape, dtype=model.dtype, source=source,
                     candidate_chunks=lambda start=0: iter([arr.reshape(-1)[start:]]), fpr=fpr, init=init)
    g.name = "lm_head"
    g.reason = "lm_head (not tied to wte) " + g.reason.replace("wte", "lm_head", 1)
    return g


def _slice_regions(init: SchemeInit, region_diffs):
    """((name, layer), RegionDiff) for every random part, in the scheme's draw order
    (reference.schemes.SchemeInit.draws: llm.c's order under gpt2)."""
    by = {}
    for name, diffs in region_diffs.items():
        for d in diffs:
            if d.region.random:
                by[(name, d.region.layer, d.region.part)] = d
    for draw in init.draws():
        key = (draw.name, draw.layer, draw.index)
        if key in by:
            yield (draw.name, draw.layer), by[key]


def _first_divergences(init: SchemeInit, report: Report, region_diffs) -> None:
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
    for key, d in _slice_regions(init, region_diffs):
        if d.verdict in ("exact", "close") or d.first_over is None:
            continue
        g = grades[key[0]]
        index = [int(i) for i in np.unravel_index(d.first_over, g.shape)]
        report.first_divergence = {"tensor": key[0], "layer": key[1], "index": index,
                                   "candidate": d.first_values[0], "reference": d.first_values[1],
                                   "cause": None}
        return


def _diagnose(model, init: SchemeInit, seed, profile, report: Report, region_diffs, progress) -> None:
    cfg = init.cfg
    slices = list(_slice_regions(init, region_diffs))
    # not from the reference's stream position (NaN/Inf alone is reported, not traced)
    bad = [key for key, d in slices if d.over > 0]
    if not bad:
        return
    heads = {key: d.head for key, d in slices if d.head is not None}
    dtype = model.dtype
    where = {(d.name, d.layer): (d.start, d.count) for d in init.draws()}

    def candidate_slice(key):
        name, layer = key
        t = model.tensor(name)
        flat = (t if layer is None else t[layer]).reshape(-1)
        start, count = where[key]
        return np.asarray(flat[start:start + count], dtype=np.float32)

    found = dg.diagnose(cfg, seed=seed, profile=profile, heads=heads, bad=bad, dtype=dtype,
                        candidate_slice=candidate_slice, progress=progress, init=init)
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
