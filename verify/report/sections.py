"""The report's sections, one function per input kind, and `build_report` that assembles them.

Every section but the init state reads only its JSON record; the init state streams the model
file once (verify.report.stream.scan_model).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

from gpt2_verify.reference.config import PER_LAYER_TENSORS

from ..atomic import atomic_output, write_text_atomic
from ..compare import law_graders, model_verdict
from ..errors import InputError
from ..progress import Progress
from . import figures as F
from .document import Document, bar, esc, num, slug, table
from .inputs import KINDS, Input, detect
from .stream import TensorStats, scan_model

MAX_ROWCOL_FIGURES = 4  # mismatching tensors drawn per compare record


def expected_laws(cfg, *, scheme: str = "gpt2", overrides: Sequence[str] = ()):
    """The law of every tensor, layer and row range (reference.schemes.SchemeInit: .parts(name,
    layer) -> [Part(lo, hi, law)]). The one place the report takes expected laws from."""
    from gpt2_verify.reference.schemes import resolve

    try:
        return resolve(scheme, cfg, overrides=overrides)
    except ValueError as e:
        raise InputError(None, str(e)) from None


@dataclasses.dataclass
class ReportResult:
    html: str
    figures: list  # verify.report.document.Figure, in order
    sections: list[tuple[str, str]]  # (kind, path)
    verdicts: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # model files: (path,
    # verdict "distribution" | "mismatch", the line the report states)


def _verdict_html(verdict: str | None, passed: bool | None = None) -> str:
    if verdict is None:
        return "-"
    bad = passed is False or verdict in ("fail", "mismatch")
    return f'<span class="{"fail" if bad else "pass"}">{esc(verdict)}</span>'


def _name_of(inp: Input) -> str:
    p = Path(inp.path)
    return p.name if p.is_dir() else p.stem


# ---- init state -------------------------------------------------------------------------------


def _law_text(t: TensorStats) -> str:
    if not t.laws:
        return "constant"
    if len(t.laws) == 1:
        return t.laws[0][0].describe()
    return f"{len(t.laws)} laws, {t.laws[0][0].describe()} .. {t.laws[-1][0].describe()}"


MARKS = {"mismatch": "\u2717 MISMATCH", "distribution": "\u2713 right law"}  # text, not colour alone


def _mark(verdict: str) -> str:
    """A tensor's or file's law verdict as a symbol and a word (bold and underlined when bad)."""
    cls = "fail" if verdict == "mismatch" else "pass"
    return f'<span class="{cls}">{esc(MARKS.get(verdict, verdict))}</span>'


def model_verdict_html(name: str, verdict: str, text: str) -> str:
    """A file's verdict line: a symbol, then the text ("correct init: ..." or "mismatch: ...")."""
    cls = "fail" if verdict == "mismatch" else "pass"
    symbol = "\u2717" if verdict == "mismatch" else "\u2713"
    return f'<p class="verdict"><b>{esc(name)}</b>: <span class="{cls}">{symbol} {esc(text)}</span></p>'


def init_section(doc: Document, inp: Input, stats: dict[str, TensorStats], init, grades: dict,
                 verdict: tuple[str, str]) -> None:
    """A model file's init state: its verdict against the scheme's laws (verify.compare's law
    grading, `grades`: name -> TensorGrade, fed from the same streamed pass as `stats`), the
    random tensors' figures and moments, and the constant parts."""
    model = inp.model
    cfg = model.config
    name = _name_of(inp)
    doc.add(f'<h2 id="sec-init-{esc(slug(name))}">Init state: {esc(inp.path)}</h2>')
    doc.add(model_verdict_html(inp.path, *verdict))
    doc.add(
        f"<p>{esc(model.format)} file, layout {esc(model.layout)}, {esc(model.dtype)}; config "
        f"{esc(cfg.describe())}; expected laws: scheme <code>{esc(init.label)}</code> "
        f"({esc(init.scheme.formula)}). Statistics and law checks streamed in one pass, chunk by "
        "chunk; each tensor graded as `gpt2-verify compare` grades a tensor that is not from the "
        "reference's stream (one law check per distinct law, constants exact).</p>"
    )
    bad = [g for g in grades.values() if g.verdict == "mismatch"]
    if bad:
        doc.add("<p>Tensors that do not follow their expected law:</p><ul>"
                + "".join(f"<li>{_mark(g.verdict)} <b>{esc(g.name)}</b>: {esc(g.reason)}</li>" for g in bad)
                + "</ul>")
    rnd = [t for t in stats.values() if t.random]
    rows = []
    for t in stats.values():
        if not t.random:
            continue
        m = t.moments
        ratio = m.std / m.expected_std if m.n and m.expected_std else None
        h = t.hist
        rows.append(
            [
                esc(t.name),
                esc("x".join(map(str, t.shape))),
                esc(_law_text(t)),
                _mark(grades[t.name].verdict),
                num(m.n),
                num(m.mean, ".3g"),
                num(m.std, ".5g"),
                num(m.expected_std, ".5g"),
                num(ratio, ".4f"),
                num(m.lo, ".4g"),
                num(m.hi, ".4g"),
                f"{h.under:,} / {h.over:,}",
                num(t.nonfinite),
            ]
        )
    figs = []
    if rnd:
        figs.append(
            doc.figure(
                f"init-{name}-histograms",
                F.init_histograms(rnd),
                f"{name}: histogram of each random tensor (streamed, fixed bins from the "
                "expected law) with the expected counts per bin dashed; log scale.",
            )
        )
        figs.append(
            doc.figure(
                f"init-{name}-qq",
                F.init_qq(rnd),
                f"{name}: quantiles of each random tensor (from its histogram) against the "
                "expected law's; on the dashed line when the law is right.",
            )
        )
    layered = [t for t in rnd if t.per_layer and any(k is not None for k in t.layers)]
    if layered:
        figs.append(
            doc.figure(
                f"init-{name}-layers",
                F.init_layers(layered),
                f"{name}: std (top) and mean (bottom) of each per-layer random tensor across "
                "depth; dashed: the expected std and 0, hatched: the +-6.1 standard-error "
                "band of the mean under the expected law (two-sided 1e-9).",
            )
        )
    if figs:
        doc.add("<p>Random tensors: " + ", ".join(doc.ref(f) for f in figs) + ".</p>")
    doc.add(
        table(
            [
                "tensor",
                "shape",
                "expected law",
                "verdict",
                "values",
                "mean",
                "std",
                "expected std",
                "std / expected",
                "min",
                "max",
                "under / overflow",
                "non-finite",
            ],
            rows,
            numeric={4, 5, 6, 7, 8, 9, 10, 11, 12},
            raw={0, 1, 2, 3},
        )
    )
    crow = []
    for t in stats.values():
        for c in t.constants:
            what = (
                "padded rows V..Vp"
                if c.padded
                else (f"rows {c.rows[0]}..{c.rows[1]}" if t.random else "whole tensor")
            )
            if c.n == 0:
                status = "absent from the file"
            elif c.exact:
                status = "exact"
            else:
                status = (
                    f'<span class="fail">NOT exact</span>: {c.differing:,} of {c.n:,} differ, max |diff| '
                    f"{c.max_abs_diff:.3g}, first at flat index {c.first_index:,}"
                )
            crow.append([t.name, esc(what), num(c.value, "g"), num(c.n), status])
    if crow:
        doc.add("<p>Constant tensors and parts, each value compared exactly:</p>")
        doc.add(
            table(["tensor", "part", "expected value", "values", "verdict"], crow, numeric={2, 3}, raw={1, 4})
        )
    for f in figs:
        doc.place(f)


# ---- compare ----------------------------------------------------------------------------------


def stats_section(doc: Document, inp: Input, init) -> None:
    """`gpt2-verify stats --json`: per-tensor figures of a checkpoint against the whole-tensor
    mean and std its expected laws give (reference.schemes.SchemeInit.moments)."""
    r = inp.record
    name = _name_of(inp)
    doc.add(f'<h2 id="sec-stats-{esc(slug(name))}">Checkpoint statistics: {esc(r.file)}</h2>')
    doc.add(f"<p>Config {esc(r.config.describe())}; {esc(r.dtype)}; expected under "
            f"{esc(init.label)} (whole tensors: padded rows and constant parts included).</p>")
    _digest_table(doc, r.tensors, init)


def _digest_table(doc: Document, tensors: dict, init) -> None:
    """Per-tensor statistics (verify.records.TensorDigest) against the whole-tensor mean and std
    the expected laws give (reference.schemes.SchemeInit.moments)."""
    rows = []
    for tname, t in tensors.items():
        mean, std = init.moments(tname)
        ratio = t.std / std if std else None
        rows.append([esc(tname), esc("x".join(map(str, t.shape))), num(t.numel),
                     num(t.mean, ".4g"), num(mean, ".4g"), num(t.std, ".4g"), num(std, ".4g"),
                     num(ratio, ".4g"), num(t.min, ".4g"), num(t.max, ".4g"),
                     num(t.nonfinite)])
    doc.add(table(["tensor", "shape", "numel", "mean", "expected mean", "std", "expected std", "std ratio",
                   "min", "max", "NaN/Inf"], rows, numeric=set(range(2, 11)), raw={0, 1}))


def compare_section(doc: Document, inp: Input, rowcol: dict[str, object] | None) -> None:
    r = inp.record
    name = _name_of(inp)
    doc.add(f'<h2 id="sec-compare-{esc(slug(name))}">Comparison: {esc(inp.path)}</h2>')
    _compare_body(doc, r, name, rowcol)


def _compare_body(doc: Document, r, name: str, rowcol: dict[str, object] | None) -> None:
    """A compare record (verify.records.CompareRecord): its verdict, tensor table, figures and
    where the stream diverged. Also the failing example of a fuzz record."""
    f, against = r.file, r.against
    where = (
        f"reference init, seed {against.seed}, profile {against.profile}"
        if against.kind == "reference"
        else f"file {against.path}"
    )
    scheme = r.scheme.label if r.scheme else against.scheme or "gpt2"
    doc.add(
        f"<p>Candidate {esc(f.path)} ({esc(f.format)}, layout {esc(f.layout)}, "
        f"{esc(f.dtype)}); config {esc(r.config.describe())}; against {esc(where)}, scheme "
        f"<code>{esc(scheme)}</code>. Verdict {_verdict_html(r.verdict, r.passed)} "
        f"(require {esc(r.require)}: {'pass' if r.passed else 'FAIL'}).</p>"
    )
    tensors = r.tensors
    rows = []
    for t in tensors:
        rows.append(
            [
                esc(t.name),
                esc("x".join(map(str, t.shape))),
                _verdict_html(t.verdict),
                num(t.differing),
                num(t.mismatched),
                num(t.max_abs_diff, ".3g"),
                num(t.std, ".5g"),
                num(t.expected_std, ".5g"),
                num(t.std_ratio, ".4g"),
                esc(t.reason),
            ]
        )
    figs = []
    if any(t.std_ratio is not None for t in tensors):
        figs.append(
            doc.figure(
                f"compare-{name}-std-ratio",
                F.compare_std_ratios(tensors),
                f"{name}: std over the expected std per random tensor (bars hatched by "
                "verdict) and per layer for the tensors that are not exact or close; dashed: 1.",
            )
        )
    for tname, rc in (rowcol or {}).items():
        per_layer = tname in PER_LAYER_TENSORS
        figs.append(
            doc.figure(
                f"compare-{name}-{tname}-rows-cols",
                F.rowcol_std(rc, layers=r.config.layers if per_layer else 1),
                f"{name}: where {tname} differs: std of each row and each column (streamed from "
                f"the model file), dashed: the expected std.",
            )
        )
    if figs:
        doc.add("<p>Where the tensors differ: " + ", ".join(doc.ref(x) for x in figs) + ".</p>")
    doc.add(
        table(
            [
                "tensor",
                "shape",
                "verdict",
                "differing",
                "mismatched",
                "max |diff|",
                "std",
                "expected std",
                "std ratio",
                "reason",
            ],
            rows,
            numeric={3, 4, 5, 6, 7, 8},
            raw={0, 1, 2, 9},
        )
    )
    for p in r.problems:
        doc.add(f'<p class="fail">problem: {esc(p)}</p>')
    d = r.first_divergence
    if d:
        at = ", ".join(map(str, d.index))
        layer = f" (layer {d.layer})" if d.layer is not None else ""
        doc.add(
            f"<p><b>First divergence</b> (llm.c's draw order): "
            f"{esc(d.tensor)}[{esc(at)}]{esc(layer)}: "
            f"{num(d.candidate, '.6g')} vs reference {num(d.reference, '.6g')}"
            + (f"; {esc(d.cause)}" if d.cause else "")
            + "</p>"
        )
    if r.causes:
        doc.add(
            "<p><b>Stream diagnosis</b>:</p><ul>"
            + "".join(f"<li>{esc(c.cause)}</li>" for c in r.causes)
            + "</ul>"
        )
    if r.diagnosis:
        doc.add(f'<p class="note">{esc(r.diagnosis)}</p>')
    for x in figs:
        doc.place(x)


def mismatching_tensors(record) -> list[str]:
    """Random tensors a compare record (verify.records.CompareRecord) grades distribution or
    mismatch, worst first."""
    order = {"mismatch": 0, "distribution": 1}
    bad = [t for t in record.tensors if t.verdict in order and t.std_ratio is not None and len(t.shape) >= 2]
    bad.sort(key=lambda t: order[t.verdict])
    return [t.name for t in bad][:MAX_ROWCOL_FIGURES]


# ---- gradient flow ----------------------------------------------------------------------------


def gradflow_section(doc: Document, inp: Input) -> None:
    r = inp.record
    name = _name_of(inp)
    g, acts, tok = r.gradients, r.activations, r.tokens
    doc.add(f'<h2 id="sec-gradflow-{esc(slug(name))}">Gradient flow: {esc(inp.path)}</h2>')
    lb = g.loss_bound
    bound = f"; random-init bound [{num(lb.lo)}, {num(lb.hi)}]" if lb else ""
    doc.add(
        f"<p>Config {esc(r.config.describe())}; model {esc(r.model.source)}; "
        f"tokens B={esc(tok.batch)} T={esc(tok.seq)}; gradients {esc(g.source)}; "
        f"loss {num(r.loss, '.6f')}{esc(bound)}. Verdict {_verdict_html(r.verdict)}.</p>"
    )
    figs = [
        doc.figure(
            f"gradflow-{name}-norms-scales",
            F.gradflow_bars(g.rows, acts.blocks, acts.embed, acts.expected_last_over_embed),
            f"{name}: gradient norm per layer and tensor (bars, log scale) and mean |x| of the "
            "residual stream after the embedding and each block; dashed: the level GPT-2's "
            "1/sqrt(2L) scaling predicts after the last block.",
        )
    ]
    sweep = r.width_sweep
    if sweep and sweep.scales:
        figs.append(
            doc.figure(
                f"gradflow-{name}-width-sweep",
                F.width_sweep(sweep),
                f"{name}: coordinate check: mean |x| of each quantity against the width (log-log), "
                f"init {sweep.init}, at init and after each AdamW step; flat lines mean "
                "width-independent coordinates.",
            )
        )
    doc.add("<p>" + ", ".join(doc.ref(x) for x in figs) + ".</p>")
    rows = [
        [
            esc(t.tensor),
            num(t.grad_norm, ".4g"),
            num(t.update_ratio, ".3g"),
            num(t.norm_spread, ".3g"),
            num(t.ratio_spread, ".3g"),
            esc(t.min_layer),
            esc(t.max_layer),
        ]
        for t in g.tensors
    ]
    doc.add(
        table(
            [
                "tensor",
                "grad norm",
                "update / param",
                "norm spread",
                "ratio spread",
                "min layer",
                "max layer",
            ],
            rows,
            numeric={1, 2, 3, 4},
            raw={0, 5, 6},
        )
    )
    if sweep and sweep.slopes:
        srows = [[esc(q), *[num(x, ".3f") for x in v]] for q, v in sweep.slopes.items()]
        steps = len(next(iter(sweep.slopes.values()), []))
        doc.add(
            f"<p>Width sweep slopes (d log mean|x| / d log width; flagged above "
            f"{num(sweep.slope_limit, 'g')}):</p>"
        )
        doc.add(
            table(
                ["quantity"] + ["init" if s == 0 else f"step {s}" for s in range(steps)],
                srows,
                numeric=set(range(1, steps + 1)),
                raw={0},
            )
        )
    numerics = r.numerics
    if numerics:
        nrows = [
            [
                esc(x.quantity),
                num(x.max_abs, ".3g"),
                num(x.max_rel, ".3g"),
                num(x.mismatched),
                bar(x.used_percent),
                num(x.used_percent, ".1f"),
                _verdict_html("pass" if x.passed else "fail"),
            ]
            for x in numerics.results
        ]
        table_name = numerics.table.get("name")
        doc.add(
            f"<p>Candidate gradients against the float64 reference, tolerance table {esc(table_name)}:</p>"
        )
        doc.add(
            table(
                ["quantity", "max abs", "max rel", "mismatched", "tolerance used", "%", "verdict"],
                nrows,
                numeric={1, 2, 3, 5},
                raw={0, 4, 6},
            )
        )
    _findings(doc, r.findings)
    for x in figs:
        doc.place(x)


def _findings(doc: Document, findings: list) -> None:
    if not findings:
        doc.add("<p>No findings.</p>")
        return
    rows = [
        [
            _verdict_html("fail" if f.severity == "fail" else "warn"),
            esc(f.section),
            esc(f.check),
            esc(f.reason),
        ]
        for f in findings
    ]
    doc.add(table(["severity", "section", "check", "reason"], rows, raw={0, 1, 2, 3}))


# ---- llm.c harness ----------------------------------------------------------------------------


def llmc_section(doc: Document, inp: Input) -> None:
    r = inp.record
    name = _name_of(inp)
    checks = r.checks
    failed = [c for c in checks if not c.passed]
    doc.add(f'<h2 id="sec-llmc-{esc(slug(name))}">llm.c harness: {esc(inp.path)}</h2>')
    doc.add(
        f"<p>Config {esc(r.config.describe())}; seed {esc(r.seed)}; weights "
        f"{esc(r.weights)}. Verdict {_verdict_html(r.verdict)}: {len(failed)} of {len(checks)} "
        "checks failed. The bar shows the share of the tolerance used (striped: over 100 %).</p>"
    )
    rows = [
        [
            esc(c.binary),
            esc(c.check),
            num(c.value, ".3g"),
            num(c.tolerance, ".3g"),
            bar(c.used),
            num(c.used, ".1f"),
            _verdict_html("ok" if c.passed else "FAIL", c.passed),
            esc(c.llmc_says),
            esc(c.detail),
        ]
        for c in checks
    ]
    doc.add(
        table(
            ["binary", "check", "value", "tolerance", "tolerance used", "%", "ours", "llm.c says", "detail"],
            rows,
            numeric={2, 3, 5},
            raw=set(range(9)),
        )
    )
    notes = r.builds_compared
    if notes:
        doc.add("<p>Builds compared:</p><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")


# ---- ablation ---------------------------------------------------------------------------------


def _interval(s) -> str:
    """An interval over seeds (verify.records.Interval) as 'mean [lo, hi] (n=N)'."""
    if s is None or s.mean is None:
        return "-"
    return f"{num(s.mean)} [{num(s.lo)}, {num(s.hi)}] (n={s.n})"


def ablation_section(doc: Document, inp: Input) -> None:
    r = inp.record
    name = _name_of(inp)
    data = r.data
    schemes = r.schemes
    doc.add(f'<h2 id="sec-ablation-{esc(slug(name))}">Ablation: {esc(inp.path)}</h2>')
    doc.add(
        f"<p>Config {esc(r.config.describe())}; data {esc(data.kind)}: "
        f"{esc(data.description)}"
        + (
            f" (entropy rate {num(data.entropy_rate)} nats/token)"
            if data.entropy_rate is not None
            else ""
        )
        + f"; {esc(r.steps)} steps, seeds {esc(r.seeds)}, B={esc(r.batch)} "
        f"T={esc(r.seq)}, lr {esc(r.lr)}"
        + (f", target loss {num(r.target_loss)}" if r.target_loss is not None else "")
        + ".</p>"
    )
    figs = [
        doc.figure(
            f"ablation-{name}-loss-curves",
            F.ablation_curves(
                schemes, entropy_rate=data.entropy_rate, target_loss=r.target_loss
            ),
            f"{name}: training loss per scheme (mean over seeds, hatched band lo..hi), validation "
            "loss dotted.",
        ),
        doc.figure(
            f"ablation-{name}-final-loss",
            F.ablation_final(schemes),
            f"{name}: final loss per scheme: mean with its interval and each seed's value.",
        ),
    ]
    if any(s.grad_norm_profile is not None and s.grad_norm_profile.layer for s in schemes):
        figs.append(
            doc.figure(
                f"ablation-{name}-grad-norms",
                F.grad_norm_profiles(schemes),
                f"{name}: gradient norm per layer per scheme (mean over seeds, band lo..hi).",
            )
        )
    doc.add("<p>" + ", ".join(doc.ref(x) for x in figs) + ".</p>")
    rows = [
        [
            esc(s.name),
            esc(s.scheme),
            esc(" ".join(s.overrides)),
            esc(_interval(s.final_loss)),
            esc(_interval(s.best_loss)),
            esc(_interval(s.steps_to_target)),
            esc(", ".join(map(str, s.diverged)) or "none"),
        ]
        for s in schemes
    ]
    doc.add(
        table(
            [
                "scheme",
                "base",
                "overrides",
                "final loss mean [lo, hi]",
                "best loss",
                "steps to target",
                "diverged seeds",
            ],
            rows,
            raw=set(range(7)),
        )
    )
    for x in figs:
        doc.place(x)


# ---- bench ------------------------------------------------------------------------------------


def _bench_label(row) -> str:
    """One row (verify.records.BenchRow): 'reference d12 B4 T64 fp32 | AMD EPYC'."""
    what = row.descriptor or f"L{row.config.layers} C{row.config.channels}"
    return (
        f"{row.impl} {what} B{row.batch} T{row.seq} {row.dtype}"
        + (" compiled" if row.compile else "")
        + f" | {row.device.label()}"
    )


def bench_section(doc: Document, inp: Input) -> None:
    r = inp.record
    name = _name_of(inp)
    rows = r.rows
    doc.add(f'<h2 id="sec-bench-{esc(slug(name))}">Benchmark: {esc(inp.path)}</h2>')
    labels = [_bench_label(x) for x in rows]
    figs = []
    if rows:
        figs.append(
            doc.figure(
                f"bench-{name}-throughput-mfu",
                F.bench_bars(labels, [x.tokens_per_s for x in rows], [x.mfu for x in rows]),
                f"{name}: training throughput (tokens/s, log scale) and model FLOPs utilisation "
                "per configuration and device.",
            )
        )
        doc.add(
            "<p>" + ", ".join(doc.ref(x) for x in figs) + f"; tool version {esc(r.tool_version)}.</p>"
        )
    trows = []
    for x in rows:
        st = x.step_s
        mem = x.peak_memory_bytes
        trows.append(
            [
                esc(_bench_label(x)),
                num(st.median, ".4g"),
                f"{num(st.q1, '.4g')} .. {num(st.q3, '.4g')}",
                num(x.tokens_per_s, ",.0f"),
                num(x.achieved_tflops, ".3g"),
                num(x.peak_tflops, ".4g"),
                num(None if x.mfu is None else 100 * x.mfu, ".2f"),
                esc(x.peak_source),
                num(None if mem is None else mem / 2**20, ",.0f"),
            ]
        )
    doc.add(
        table(
            [
                "configuration | device",
                "step s (median)",
                "step s q1 .. q3",
                "tokens/s",
                "achieved TFLOP/s",
                "peak TFLOP/s",
                "MFU %",
                "peak source",
                "peak memory MiB",
            ],
            trows,
            numeric={1, 2, 3, 4, 5, 6, 8},
            raw={0, 7},
        )
    )
    for x in figs:
        doc.place(x)


# ---- checksum, fuzz, ablation run --------------------------------------------------------------


def checksum_section(doc: Document, inp: Input, init) -> None:
    """`gpt2-verify checksum --json`: the reference init's digests and per-tensor statistics,
    against the whole-tensor moments of the scheme it was drawn under."""
    r = inp.record
    name = _name_of(inp)
    doc.add(f'<h2 id="sec-checksum-{esc(slug(name))}">Reference checksum: {esc(inp.path)}</h2>')
    doc.add(
        f"<p>Config {esc(r.config.describe())}; seed {esc(r.seed)}, profile {esc(r.profile)}, scheme "
        f"<code>{esc(r.scheme.label)}</code>; {num(r.numel)} values. SHA-256 of the float32 stream "
        f"<code>{esc(r.sha256_fp32)}</code>, of the bf16 stream <code>{esc(r.sha256_bf16)}</code>: a "
        "file written by `gpt2-verify init` with these settings has the first as its body's hash.</p>"
    )
    _digest_table(doc, r.tensors, init)
    doc.add(table(["tensor", "sha256 of its float32 values"],
                  [[esc(k), f"<code>{esc(t.sha256_fp32)}</code>"] for k, t in r.tensors.items()],
                  raw={0, 1}))


def fuzz_section(doc: Document, inp: Input) -> None:
    """`gpt2-verify fuzz --json`: how many examples ran and, on failure, the smallest failing
    config with its comparison."""
    r = inp.record
    name = _name_of(inp)
    doc.add(f'<h2 id="sec-fuzz-{esc(slug(name))}">Fuzz: {esc(inp.path)}</h2>')
    found = r.examples_run - r.shrink_runs
    doc.add(
        f"<p>Candidate <code>{esc(r.candidate)}</code>, scheme <code>{esc(r.scheme)}</code>, profile "
        f"{esc(r.profile)}, every example required at least {esc(r.require)}, configs up to "
        f"{num(r.max_params)} parameters, Hypothesis seed {esc(r.hypothesis_seed)}. Verdict "
        f"{_verdict_html(r.verdict)}: "
        + (f"{r.examples_run} examples passed." if r.failure is None else
           f"failed at example {found}, shrunk in {r.shrink_runs} more runs.")
        + "</p>"
    )
    if r.note:
        doc.add(f'<p class="note">note: {esc(r.note)}</p>')
    f = r.failure
    if f is None:
        return
    doc.add(
        f"<p><b>Smallest failing config</b>: {esc(f.config.describe())}, seed {esc(f.seed)}; reproduce "
        f"with <code>{esc(f.command)}</code>.</p>"
    )
    if f.error:
        doc.add(f'<p class="fail">candidate failed: {esc(f.error)}</p>')
        if f.output_tail:
            doc.add(f"<pre>{esc(f.output_tail)}</pre>")
    if f.report is not None:
        _compare_body(doc, f.report, f"{name}-failure", None)


def ablate_run_section(doc: Document, inp: Input) -> None:
    """One run of an ablation (DIR/runs/*.json): its settings and losses."""
    r = inp.record
    name = _name_of(inp)
    doc.add(f'<h2 id="sec-ablate-run-{esc(slug(name))}">Ablation run: {esc(inp.path)}</h2>')
    losses = [x for x in r.train_loss if x is not None]
    status = (f"diverged at step {r.diverged_at}" if r.diverged else
              f"final train loss {num(losses[-1] if losses else None)}")
    doc.add(
        f"<p>{esc(r.label)} (scheme {esc(r.scheme)}, overrides {esc(' '.join(r.overrides) or 'none')}), "
        f"seed {esc(r.seed)}: {len(r.train_loss)} steps in {num(r.wall_s, '.3g')} s, {esc(status)}. "
        "The run directory's summary.json (give the directory) holds every run with intervals.</p>"
    )
    rows = [[num(st), num(v, ".5g")] for st, v in r.val_loss]
    if rows:
        doc.add(table(["step", "validation loss"], rows, numeric={0, 1}))


# ---- a PyTorch module -------------------------------------------------------------------------


CHECK_MARKS = {True: "\u2713 ok", False: "\u2717 FAIL"}  # text, not colour alone


def module_section(doc: Document, inp: Input) -> None:
    """`gpt2-verify module --json`: the verdict first, then every check with the share of its
    tolerance used (failing ones marked and their message shown), findings and the cause named."""
    r = inp.record
    name = _name_of(inp)
    checks = r.all_checks()
    failed = [c for c in checks if not c.passed]
    doc.add(f'<h2 id="sec-module-{esc(slug(name))}">PyTorch module: {esc(inp.path)}</h2>')
    verdict = (f"\u2713 PASS: all {len(checks)} checks within {r.tolerance.key}'s tolerance"
               if r.verdict == "pass" else f"\u2717 FAIL: {len(failed)} of {len(checks)} checks failed"
               + (f", {len(r.findings)} structural failure(s)" if r.findings else ""))
    doc.add(f'<p class="verdict"><b>{esc(r.source)}</b>: '
            f'<span class="{r.verdict}">{esc(verdict)}</span></p>')
    if r.cause is not None:
        doc.add(f"<p><b>Cause</b>: {esc(r.cause.text)}</p>")
    for f in r.findings:
        doc.add(f'<p class="fail">\u2717 {esc(f)}</p>')
    tol = r.tolerance
    doc.add(
        f"<p>Config {esc(r.config.describe())}; layout {esc(r.layout)}, call {esc(r.convention)}, "
        f"{'tied' if r.tied else 'UNTIED'} lm_head; probe weights seed {esc(r.tokens.seed)}, tokens "
        f"B={esc(r.tokens.batch)} T={esc(r.tokens.seq)}; {esc(r.device)} {esc(r.precision)} (table "
        f"{esc(tol.key)}: {'derived' if tol.derived else 'measured'}). The bar shows the share of the "
        "tolerance used (striped: over 100 %).</p>"
    )
    rows = [
        [
            esc(c.quantity),
            num(c.error, ".3g"),
            num(c.limit, ".2g"),
            bar(c.used_percent if c.error is not None else 1e9),
            "NaN/Inf" if c.error is None else num(c.used_percent, ".3g"),
            _verdict_html(CHECK_MARKS[c.passed], c.passed),
            esc("" if c.passed else c.message),
        ]
        for c in checks
    ]
    doc.add(table(["quantity", "error", "limit", "tolerance used", "%", "result", "message"], rows,
                  numeric={1, 2, 4}, raw=set(range(7))))
    if r.margins:
        doc.add("<p>Probe margins (each variant's distance from GPT-2 in tolerances): "
                + esc(", ".join(f"{k} {num(v, '.3g')}" for k, v in r.margins.items())) + "</p>")


# sections that read only their record; init, stats and checksum need the expected laws, and
# compare the row/column sums of a model file in the same report (build_report calls them)
SECTIONS = {
    "fuzz": fuzz_section,
    "gradflow": gradflow_section,
    "llmc": llmc_section,
    "module": module_section,
    "ablation": ablation_section,
    "ablate-run": ablate_run_section,
    "bench": bench_section,
}


# ---- assembly ---------------------------------------------------------------------------------


def _same_file(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inputs_table(loaded: list[Input], order: list[int], model_verdicts: dict[int, tuple[str, str]]) -> str:
    """The verdict of every model file (graded against the laws) on top, then every input with
    its verdict and a link to its section."""
    top = "".join(model_verdict_html(loaded[i].path, *model_verdicts[i])
                  for i in order if i in model_verdicts)
    rows = []
    for i in order:
        inp = loaded[i]
        if inp.kind == "init":  # a file: "correct init" (every law right) or a mismatch
            v = model_verdicts[i][0]
            verdict = '<span class="pass">\u2713 correct init</span>' if v == "distribution" else _mark(v)
        else:
            verdict = _verdict_html(getattr(inp.record, "verdict", None), getattr(inp.record, "passed", None))
        rows.append([esc(inp.path), esc(inp.kind), verdict,
                     f'<a href="#sec-{esc(inp.kind)}-{esc(slug(_name_of(inp)))}">section</a>'])
    return top + "<h2>Inputs</h2>" + table(["input", "kind", "verdict", ""], rows, raw={0, 1, 2, 3})


def _rowcol_wanted(loaded: list[Input]) -> dict[int, dict[str, int]]:
    """Model inputs that a compare record in the same report grades: model index -> {tensor:
    compare index} for the tensors to take row/column sums of in the one streamed pass."""
    wanted: dict[int, dict[str, int]] = {}
    for ci, c in enumerate(loaded):
        if c.kind != "compare":
            continue
        for mi, m in enumerate(loaded):
            if m.kind == "init" and _same_file(m.path, c.record.file.path):
                wanted.setdefault(mi, {}).update({t: ci for t in mismatching_tensors(c.record)})
    return wanted


def build_report(
    inputs: Sequence[str | os.PathLike],
    *,
    output: str | os.PathLike | None = None,
    png_dir: str | os.PathLike | None = None,
    scheme: str = "gpt2",
    overrides: Sequence[str] = (),
    title: str = "gpt2-verify report",
    progress: bool | None = None,
) -> ReportResult:
    """Build the HTML report of `inputs` (model files, JSON records, ablation run directories).

    output: where to write the HTML (atomically); png_dir: also write every figure there as
    NAME.png. scheme/overrides: the init scheme the model files are checked against (as
    `gpt2-verify init --scheme S --set T.F=V`). progress: a bar on stderr while reading models
    (None: when stderr is a terminal). Raises verify.errors.InputError on bad input (a record
    that breaks its contract is found when it is read, by verify.records) and
    verify.report.figures.MatplotlibMissing without matplotlib."""
    if not inputs:
        raise InputError(
            None, "report: give at least one input (model file, JSON record or ablation directory)"
        )
    F.require_matplotlib()
    loaded = [detect(p) for p in inputs]
    try:
        doc = Document(title)
        order = sorted(range(len(loaded)), key=lambda i: (KINDS.index(loaded[i].kind), i))
        doc.add("")  # the verdicts and the inputs table, filled in once the model files are graded
        wanted = _rowcol_wanted(loaded)
        rowcols: dict[int, dict] = {}
        model_verdicts: dict[int, tuple[str, str]] = {}
        for i in order:
            inp = loaded[i]
            if inp.kind == "init":
                init = expected_laws(inp.model.config, scheme=scheme, overrides=overrides)
                total = sum(int(_numel(inp.model.shape(s.name))) for s in inp.model.config.tensors())
                graders = law_graders(inp.model, init)
                with Progress(total, f"report {_name_of(inp)}", enabled=progress) as bar_:
                    stats = scan_model(inp.model, init, rowcol=tuple(wanted.get(i, {})), progress=bar_,
                                       graders=graders)
                for t, ci in wanted.get(i, {}).items():
                    if stats[t].rowcol is not None:
                        rowcols.setdefault(ci, {})[t] = stats[t].rowcol
                grades = {name: g.grade() for name, g in graders.items()}
                model_verdicts[i] = model_verdict(grades, init)
                init_section(doc, inp, stats, init, grades, model_verdicts[i])
            elif inp.kind == "stats":
                stats_section(doc, inp, expected_laws(inp.record.config.gpt(), scheme=scheme,
                                                      overrides=overrides))
            elif inp.kind == "checksum":
                s = inp.record.scheme
                checksum_section(doc, inp, expected_laws(inp.record.config.gpt(), scheme=s.scheme,
                                                         overrides=s.overrides))
            elif inp.kind == "compare":
                compare_section(doc, inp, rowcols.get(i))
            else:
                SECTIONS[inp.kind](doc, inp)
        doc.parts[0] = _inputs_table(loaded, order, model_verdicts)
    finally:
        for inp in loaded:
            if inp.model is not None:
                inp.model.close()
    text = doc.render()
    if output is not None:
        try:
            write_text_atomic(output, text)
        except OSError as e:
            raise InputError(output, f"cannot write: {e.strerror or e}") from None
    if png_dir is not None:
        write_pngs(doc.figures, png_dir)
    return ReportResult(text, doc.figures, [(loaded[i].kind, loaded[i].path) for i in order],
                        [(loaded[i].path, *model_verdicts[i]) for i in order if i in model_verdicts])


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def write_pngs(figures, png_dir: str | os.PathLike) -> list[Path]:
    d = Path(png_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(png_dir, f"cannot create the directory: {e.strerror or e}") from None
    out = []
    for fig in figures:
        path = d / f"{fig.name}.png"
        try:
            with atomic_output(path) as fh:
                fh.write(fig.png)
        except OSError as e:
            raise InputError(path, f"cannot write: {e.strerror or e}") from None
        out.append(path)
    return out
