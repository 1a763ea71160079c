"""compare(): grade a model file tensor by tensor, then trace what is not from the reference stream."""

from __future__ import annotations

import itertools

import numpy as np
from gpt2_verify.reference.config import GPTConfig, TensorSpec, parameter_table
from gpt2_verify.reference.init import iter_params
from gpt2_verify.reference.normal import check_profile
from gpt2_verify.reference.schemes import DEFAULT_SCHEME, SchemeInit, resolve

from ..formats.layouts import BIASES, transposed_in
from ..pipeline import background
from ..progress import Progress
from . import diagnose as dg
from .grade import (
    CHUNK,
    MIN_VALUES,
    RegionDiff,
    TensorGrade,
    diff_tensor,
    expected_shape,
    grade_tensor,
    law_groups,
    regions,
)
from .names import Names
from .report import Report, check_require, default_require
from .tolerance import describe as describe_tolerance

DEFAULT_FPR = 1e-9  # family-wise, for all distribution checks of one comparison together


def _config_problems(file_cfg: GPTConfig, cfg: GPTConfig) -> list[str]:
    """One line naming every field in which the file's config (from its shapes) differs from
    the config graded against (NH is not among them: no shape depends on it)."""
    diff = [f"{label}={getattr(file_cfg, field)} ({getattr(cfg, field)})"
            for field, label in (("layers", "L"), ("channels", "C"), ("vocab", "V"), ("max_seq_len", "maxT"))
            if getattr(file_cfg, field) != getattr(cfg, field)]
    if not diff:
        return []
    name = cfg.name or cfg.describe()
    return [f"the file's config differs from {name}: " + ", ".join(diff).replace(" (", f" ({name}: ")
            + "; grade it against its own config (leave out --against) or pass the matching descriptor"]


def _file_info(model) -> dict:
    return {"path": str(model.path), "format": model.format, "layout": model.layout,
            "dtype": model.dtype, "heads_assumed": bool(model.heads_assumed),
            "heads": None if model.heads_assumed else model.config.heads,
            "wte_rows": model.wte_rows, "lm_head": model.lm_head, "variant": model.variant or None,
            "biases": bool(model.biases)}


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


def compare(candidate, *, against=None, seed: int = 42, profile: str | None = None,
            scheme: "str | SchemeInit" = DEFAULT_SCHEME, overrides=(),
            fpr: float = DEFAULT_FPR, require: str | None = None, min_values: int = MIN_VALUES,
            progress: bool | None = None, tensor: str | None = None,
            layers: tuple[int, int] | None = None) -> Report:
    """Grade `candidate` (a verify.formats.model.ModelFile) against the reference init of
    `against` (a GPTConfig; None: the config inferred from the file) for (seed, profile), or
    against another ModelFile (no regeneration: e.g. the same model written by two builds).

    scheme, overrides: the init scheme (a name from reference.schemes.SCHEMES, e.g.
    "xavier-uniform", or a resolved SchemeInit) and its `--set` overrides ("wpe.std=0.01"): the
    reference bits and every expected law come from them. Bad names or overrides raise
    ValueError.

    require: the verdict needed to pass; None picks it from the file (report.default_require:
    close for an llm.c checkpoint or when `profile` is given, else distribution). profile None:
    llm.c's. min_values: the fewest values a law check runs on (fewer: untestable).

    tensor, layers: grade only that tensor (layers [a, b) of it): the reference is generated
    for that shard alone, from its stream position (reference.access), not from the start."""
    require, require_why = default_require(candidate.format, require=require, profile=profile)
    profile = profile or "llmc"
    check_profile(profile)
    check_require(require)
    if not isinstance(min_values, int) or min_values < 3:
        raise ValueError(f"min_values={min_values!r}: give an integer >= 3 (the law checks need 3 values)")
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
                    scheme=init.to_dict(), require_why=require_why, min_values=min_values,
                    heads_unknown=against is None and candidate.heads_assumed)
    if _config_problems(candidate.config, cfg):
        return report  # every shape differs: nothing to grade value by value

    names = Names(candidate.layout)
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
            if not candidate.biases and spec.name in BIASES:  # bias=False: nothing to grade
                if not file_mode:
                    next(reference)
                bar.update(spec.numel)
                continue
            if file_mode and spec.name not in against.sources:
                report.tensors.append(TensorGrade(spec.name, spec.shape, candidate.dtype, [], "mismatch",
                                                  f"{names.label(spec.name, all_layers=True)}: missing "
                                                  f"from the --against file", key=names.key(spec.name)))
                bar.update(spec.numel)
                continue
            if file_mode:
                ref_chunks = against.iter_chunks(spec.name, CHUNK)
            else:
                name, group = next(reference)
                assert name == spec.name, (name, spec.name)
                ref_chunks = (part for _spec, part in group)
            grade, diffs = _grade_one(candidate, cfg, spec, ref_chunks, per_check, init, min_values, names,
                                      layers=None if shard is None else shard[3])
            report.tensors.append(grade)
            if diffs:
                region_diffs[spec.name] = diffs
            bar.update(spec.numel)
        if candidate.lm_head == "separate" and tensor in (None, "wte"):
            ref_wte = (against.iter_chunks("wte", CHUNK) if file_mode else
                       (part for _s, part in iter_params(cfg, seed, profile, CHUNK, scheme=init)
                        if _s.name == "wte"))
            report.tensors.append(_grade_lm_head(candidate, cfg, ref_wte, per_check, init, min_values))
    _first_divergences(init, report, region_diffs, names)
    if not file_mode:
        why_not = dg.undiagnosable(init)
        if why_not:
            report.diagnosis = why_not
        else:
            _diagnose(candidate, init, seed, profile, report, region_diffs, progress, names)
    return report


def _grade_one(model, cfg: GPTConfig, spec: TensorSpec, ref_chunks, fpr: float, init: SchemeInit,
               min_values: int, names: Names, *, layers: tuple[int, int] | None = None
               ) -> tuple[TensorGrade, list[RegionDiff] | None]:
    name = spec.name
    source = list(model.sources.get(name, []))
    dtype = model.dtypes.get(name, model.dtype)
    key = names.key(name)
    if name in model.unusable:
        return TensorGrade(name, spec.shape, dtype, source, "mismatch", model.unusable[name], key=key), None
    if name not in model.sources:
        return TensorGrade(name, spec.shape, dtype, source, "mismatch",
                           f"{names.label(name, all_layers=True)}: missing from the file", key=key), None
    shape = tuple(model.shape(name))
    rows = shape[0] if name == "wte" and len(shape) == 2 else None
    if name == "wte" and rows not in (cfg.vocab, cfg.padded_vocab):
        rows = None
    want = expected_shape(cfg, spec, rows)
    if shape != want:
        text = f"{names.label(name, all_layers=True)}: shape {shape}, expected {want}"
        if sorted(shape) == sorted(want) and len(shape) == len(want):
            text += " (transposed)"
        return TensorGrade(name, shape, dtype, source, "mismatch", text, numel=int(np.prod(shape)),
                           key=key), None
    parts = regions(cfg, spec, rows, init=init)
    if layers is not None:  # one shard: its layers' regions, both streams from its first value
        parts = [r for r in parts if layers[0] <= r.layer < layers[1]]
    diffs = diff_tensor(model.iter_chunks(name, CHUNK, start=parts[0].lo), ref_chunks, parts, dtype=dtype)
    grade = grade_tensor(cfg, spec, diffs, shape=shape, dtype=dtype, source=source,
                         candidate_chunks=lambda start=0: model.iter_chunks(name, CHUNK, start=start),
                         fpr=fpr, init=init, min_values=min_values, names=names)
    return grade, diffs


def _grade_lm_head(model, cfg, ref, fpr, init: SchemeInit, min_values: int) -> TensorGrade:
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
                     candidate_chunks=lambda start=0: iter([arr.reshape(-1)[start:]]), fpr=fpr, init=init,
                     min_values=min_values, names=_LmHeadNames(model.layout))
    g.name, g.key = "lm_head", "lm_head.weight" if model.layout != "llmc" else "lm_head"
    g.reason = "untied, graded on its own under wte's laws: " + g.reason
    return g


class _LmHeadNames(Names):
    """An untied lm_head is graded with wte's laws but named as itself."""

    def key(self, name, layer=None):
        return super().key("lm_head" if name == "wte" else name, layer)

    def label(self, name, layers=None, *, all_layers=False):
        return super().label("lm_head" if name == "wte" else name, layers, all_layers=all_layers)

    def at(self, name, shape, flat):
        return super().at("lm_head" if name == "wte" else name, shape, flat)


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


def _first_divergences(init: SchemeInit, report: Report, region_diffs, names: Names) -> None:
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
                                   "key": names.key(*key), "at": names.at(key[0], g.shape, d.first_over),
                                   "candidate": d.first_values[0], "reference": d.first_values[1],
                                   "cause": None}
        return


def _stored_head(model, key, d: RegionDiff) -> np.ndarray:
    """The slice's first values in the order the file stores them, i.e. the order they were
    drawn in: a Hugging Face Conv1D weight is stored (in, out), llm.c's orientation transposed."""
    name, layer = key
    if layer is None or not transposed_in(name, model.layout) or d.region.lo % 1 or d.region.part:
        return d.head
    t = model.tensor(name)[layer]  # (out, in) per layer, as the comparator reads it
    return np.ascontiguousarray(t.T).reshape(-1)[:16]


def _one_stream(found, n_slices: int) -> dict | None:
    """When every random slice sits where one PyTorch init leaves its final values, with the
    expected std: that finding, in one line."""
    final = [d for d in found if d.model and d.location is not None and "(its final values" in d.cause]
    if not final or len(final) != len(found) or len(found) != n_slices:
        return None
    models = {d.model for d in final}
    seeds = {d.location.seed for d in final}
    if len(models) != 1 or len(seeds) != 1:
        return None
    (model,), (seed,) = models, seeds
    first = min(final, key=lambda d: d.location.position)
    last = max(final, key=lambda d: d.location.position)
    return {"seed": seed, "model": model,
            "text": f"torch.manual_seed({seed}) stream; constructor defaults drawn first, then "
                    f"re-initialised as {model} does: values at stream positions {first.location.position:,} "
                    f"to {last.location.position:,}, every random tensor where {model} draws its final "
                    f"values"}


def _diagnose(model, init: SchemeInit, seed, profile, report: Report, region_diffs, progress,
              names: Names) -> None:
    cfg = init.cfg
    slices = list(_slice_regions(init, region_diffs))
    # not from the reference's stream position (NaN/Inf alone is reported, not traced)
    bad = [key for key, d in slices if d.over > 0]
    if not bad:
        return
    heads = {key: _stored_head(model, key, d) for key, d in slices if d.head is not None}
    dtype = model.dtype
    where = {(d.name, d.layer): (d.start, d.count) for d in init.draws()}

    def candidate_slice(key):
        name, layer = key
        t = model.tensor(name)
        flat = (t if layer is None else t[layer]).reshape(-1)
        start, count = where[key]
        return np.asarray(flat[start:start + count], dtype=np.float32)

    found = dg.diagnose(cfg, seed=seed, profile=profile, heads=heads, bad=bad, dtype=dtype,
                        candidate_slice=candidate_slice, progress=progress, init=init, names=names,
                        torch_model=dg.TorchModel.of(model), wte_rows=model.wte_rows)
    report.causes = [{**d.to_dict(), "key": names.key(*d.key)} for d in found]
    report.stream = _one_stream(found, len(slices))
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
