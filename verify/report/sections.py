"""The report's sections, one function per input kind, and `build_report` that assembles them.

Every section but the init state reads only its JSON record; the init state streams the model
file once (verify.report.stream.scan_model).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

from gpt2_verify.reference.config import GPTConfig

from ..atomic import atomic_output, write_text_atomic
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


def _verdict_html(verdict: str | None, passed: bool | None = None) -> str:
    if verdict is None:
        return "-"
    bad = passed is False or verdict in ("fail", "mismatch")
    return f'<span class="{"fail" if bad else "pass"}">{esc(verdict)}</span>'


def _cfg_text(cfg: dict | None) -> str:
    if not isinstance(cfg, dict):
        return "-"
    tag = f"{cfg['descriptor']}: " if cfg.get("descriptor") else ""
    return (
        f"{tag}L={cfg.get('layers')} C={cfg.get('channels')} NH={cfg.get('heads')} V={cfg.get('vocab')} "
        f"Vp={cfg.get('padded_vocab')} maxT={cfg.get('max_seq_len')}"
    )


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


def init_section(doc: Document, inp: Input, stats: dict[str, TensorStats], init) -> None:
    model = inp.model
    cfg = model.config
    name = _name_of(inp)
    doc.add(f'<h2 id="sec-init-{esc(slug(name))}">Init state: {esc(inp.path)}</h2>')
    doc.add(
        f"<p>{esc(model.format)} file, layout {esc(model.layout)}, {esc(model.dtype)}; config "
        f"{esc(cfg.describe())}; expected laws: scheme <code>{esc(init.label)}</code> "
        f"({esc(init.scheme.formula)}). Statistics streamed in one pass, chunk by chunk.</p>"
    )
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
                t.name,
                "x".join(map(str, t.shape)),
                _law_text(t),
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
            numeric={3, 4, 5, 6, 7, 8, 9, 10, 11},
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
    doc.add(f'<h2 id="sec-stats-{esc(slug(name))}">Checkpoint statistics: {esc(r.get("file"))}</h2>')
    doc.add(f"<p>Config {esc(_cfg_text(r.get('config')))}; {esc(r.get('dtype'))}; expected under "
            f"{esc(init.label)} (whole tensors: padded rows and constant parts included).</p>")
    rows = []
    for tname, t in (r.get("tensors") or {}).items():
        mean, std = init.moments(tname)
        ratio = t["std"] / std if std else None
        rows.append([esc(tname), esc("x".join(map(str, t.get("shape") or []))), num(t.get("numel")),
                     num(t.get("mean"), ".4g"), num(mean, ".4g"), num(t.get("std"), ".4g"), num(std, ".4g"),
                     num(ratio, ".4g"), num(t.get("min"), ".4g"), num(t.get("max"), ".4g"),
                     num(t.get("nonfinite"))])
    doc.add(table(["tensor", "shape", "numel", "mean", "expected mean", "std", "expected std", "std ratio",
                   "min", "max", "NaN/Inf"], rows, numeric=set(range(2, 11)), raw={0, 1}))


def compare_section(doc: Document, inp: Input, rowcol: dict[str, object] | None) -> None:
    r = inp.record
    name = _name_of(inp)
    f = r.get("file") or {}
    against = r.get("against") or {}
    doc.add(f'<h2 id="sec-compare-{esc(slug(name))}">Comparison: {esc(inp.path)}</h2>')
    where = (
        f"reference init, seed {against.get('seed')}, profile {against.get('profile')}"
        if against.get("kind") == "reference"
        else f"file {against.get('path')}"
    )
    scheme = (r.get("scheme") or {}).get("label") or against.get("scheme") or "gpt2"
    doc.add(
        f"<p>Candidate {esc(f.get('path'))} ({esc(f.get('format'))}, layout {esc(f.get('layout'))}, "
        f"{esc(f.get('dtype'))}); config {esc(_cfg_text(r.get('config')))}; against {esc(where)}, scheme "
        f"<code>{esc(scheme)}</code>. Verdict {_verdict_html(r.get('verdict'), r.get('passed'))} "
        f"(require {esc(r.get('require'))}: {'pass' if r.get('passed') else 'FAIL'}).</p>"
    )
    tensors = r.get("tensors") or []
    rows = []
    for t in tensors:
        rows.append(
            [
                esc(t.get("name")),
                esc("x".join(map(str, t.get("shape") or []))),
                _verdict_html(t.get("verdict")),
                num(t.get("differing")),
                num(t.get("mismatched")),
                num(t.get("max_abs_diff"), ".3g"),
                num(t.get("std"), ".5g"),
                num(t.get("expected_std"), ".5g"),
                num(t.get("std_ratio"), ".4g"),
                esc(t.get("reason")),
            ]
        )
    figs = []
    if any(t.get("std_ratio") is not None for t in tensors):
        figs.append(
            doc.figure(
                f"compare-{name}-std-ratio",
                F.compare_std_ratios(tensors),
                f"{name}: std over the expected std per random tensor (bars hatched by "
                "verdict) and per layer for the tensors that are not exact or close; dashed: 1.",
            )
        )
    cfg = r.get("config") or {}
    for tname, rc in (rowcol or {}).items():
        per_layer = tname not in ("wte", "wpe")
        figs.append(
            doc.figure(
                f"compare-{name}-{tname}-rows-cols",
                F.rowcol_std(rc, layers=cfg.get("layers", 1) if per_layer else 1),
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
    for p in r.get("problems") or []:
        doc.add(f'<p class="fail">problem: {esc(p)}</p>')
    d = r.get("first_divergence")
    if d:
        at = ", ".join(map(str, d.get("index") or []))
        layer = f" (layer {d['layer']})" if d.get("layer") is not None else ""
        doc.add(
            f"<p><b>First divergence</b> (llm.c's draw order): "
            f"{esc(d.get('tensor'))}[{esc(at)}]{esc(layer)}: "
            f"{num(d.get('candidate'), '.6g')} vs reference {num(d.get('reference'), '.6g')}"
            + (f"; {esc(d['cause'])}" if d.get("cause") else "")
            + "</p>"
        )
    causes = r.get("causes") or []
    if causes:
        doc.add(
            "<p><b>Stream diagnosis</b>:</p><ul>"
            + "".join(f"<li>{esc(c.get('cause'))}</li>" for c in causes)
            + "</ul>"
        )
    if r.get("diagnosis"):
        doc.add(f'<p class="note">{esc(r["diagnosis"])}</p>')
    for x in figs:
        doc.place(x)


def mismatching_tensors(record: dict) -> list[str]:
    """Random tensors a compare record grades distribution/mismatch, worst first."""
    order = {"mismatch": 0, "distribution": 1}
    bad = [
        t
        for t in record.get("tensors") or []
        if t.get("verdict") in order and t.get("std_ratio") is not None and len(t.get("shape") or []) >= 2
    ]
    bad.sort(key=lambda t: order[t["verdict"]])
    return [t["name"] for t in bad][:MAX_ROWCOL_FIGURES]


# ---- gradient flow ----------------------------------------------------------------------------


def gradflow_section(doc: Document, inp: Input) -> None:
    r = inp.record
    name = _name_of(inp)
    g = r.get("gradients") or {}
    acts = r.get("activations") or {}
    tok = r.get("tokens") or {}
    doc.add(f'<h2 id="sec-gradflow-{esc(slug(name))}">Gradient flow: {esc(inp.path)}</h2>')
    lb = g.get("loss_bound")
    bound = f"; random-init bound [{num(lb.get('lo'))}, {num(lb.get('hi'))}]" if lb else ""
    doc.add(
        f"<p>Config {esc(_cfg_text(r.get('config')))}; model {esc((r.get('model') or {}).get('source'))}; "
        f"tokens B={esc(tok.get('batch'))} T={esc(tok.get('seq'))}; gradients {esc(g.get('source'))}; "
        f"loss {num(r.get('loss'), '.6f')}{esc(bound)}. Verdict {_verdict_html(r.get('verdict'))}.</p>"
    )
    figs = [
        doc.figure(
            f"gradflow-{name}-norms-scales",
            F.gradflow_bars(
                g.get("rows") or [],
                acts.get("blocks") or [],
                acts.get("embed"),
                acts.get("expected_last_over_embed"),
            ),
            f"{name}: gradient norm per layer and tensor (bars, log scale) and mean |x| of the "
            "residual stream after the embedding and each block; dashed: the level GPT-2's "
            "1/sqrt(2L) scaling predicts after the last block.",
        )
    ]
    sweep = r.get("width_sweep")
    if sweep and sweep.get("scales"):
        figs.append(
            doc.figure(
                f"gradflow-{name}-width-sweep",
                F.width_sweep(sweep),
                f"{name}: coordinate check: mean |x| of each quantity against the width (log-log), "
                f"init {sweep.get('init')}, at init and after each AdamW step; flat lines mean "
                "width-independent coordinates.",
            )
        )
    doc.add("<p>" + ", ".join(doc.ref(x) for x in figs) + ".</p>")
    rows = [
        [
            esc(t.get("tensor")),
            num(t.get("grad_norm"), ".4g"),
            num(t.get("update_ratio"), ".3g"),
            num(t.get("norm_spread"), ".3g"),
            num(t.get("ratio_spread"), ".3g"),
            esc(t.get("min_layer")),
            esc(t.get("max_layer")),
        ]
        for t in g.get("tensors") or []
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
    if sweep and sweep.get("slopes"):
        srows = [[esc(q), *[num(x, ".3f") for x in v]] for q, v in sweep["slopes"].items()]
        steps = len(next(iter(sweep["slopes"].values()), []))
        doc.add(
            f"<p>Width sweep slopes (d log mean|x| / d log width; flagged above "
            f"{num(sweep.get('slope_limit'), 'g')}):</p>"
        )
        doc.add(
            table(
                ["quantity"] + ["init" if s == 0 else f"step {s}" for s in range(steps)],
                srows,
                numeric=set(range(1, steps + 1)),
                raw={0},
            )
        )
    numerics = r.get("numerics")
    if numerics:
        nrows = [
            [
                esc(x.get("quantity")),
                num(x.get("max_abs"), ".3g"),
                num(x.get("max_rel"), ".3g"),
                num(x.get("mismatched")),
                bar(x.get("used_percent")),
                num(x.get("used_percent"), ".1f"),
                _verdict_html("pass" if x.get("passed") else "fail"),
            ]
            for x in numerics.get("results") or []
        ]
        table_name = (numerics.get("table") or {}).get("name")
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
    _findings(doc, r.get("findings") or [])
    for x in figs:
        doc.place(x)


def _findings(doc: Document, findings: list[dict]) -> None:
    if not findings:
        doc.add("<p>No findings.</p>")
        return
    rows = [
        [
            _verdict_html("fail" if f.get("severity") == "fail" else "warn"),
            esc(f.get("section")),
            esc(f.get("check")),
            esc(f.get("reason")),
        ]
        for f in findings
    ]
    doc.add(table(["severity", "section", "check", "reason"], rows, raw={0, 1, 2, 3}))


# ---- llm.c harness ----------------------------------------------------------------------------


def llmc_section(doc: Document, inp: Input) -> None:
    r = inp.record
    name = _name_of(inp)
    checks = r.get("checks") or []
    failed = [c for c in checks if not c.get("passed")]
    doc.add(f'<h2 id="sec-llmc-{esc(slug(name))}">llm.c harness: {esc(inp.path)}</h2>')
    doc.add(
        f"<p>Config {esc(_cfg_text(r.get('config')))}; seed {esc(r.get('seed'))}; weights "
        f"{esc(r.get('weights'))}. Verdict {_verdict_html(r.get('verdict'))}: {len(failed)} of {len(checks)} "
        "checks failed. The bar shows the share of the tolerance used (striped: over 100 %).</p>"
    )
    rows = [
        [
            esc(c.get("binary")),
            esc(c.get("check")),
            num(c.get("value"), ".3g"),
            num(c.get("tolerance"), ".3g"),
            bar(c.get("used")),
            num(c.get("used"), ".1f"),
            _verdict_html("ok" if c.get("passed") else "FAIL", c.get("passed")),
            esc(c.get("llmc_says")),
            esc(c.get("detail")),
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
    notes = r.get("builds_compared") or []
    if notes:
        doc.add("<p>Builds compared:</p><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")


# ---- ablation ---------------------------------------------------------------------------------


def _interval(s: dict | None) -> str:
    if not s or s.get("mean") is None:
        return "-"
    return f"{num(s.get('mean'))} [{num(s.get('lo'))}, {num(s.get('hi'))}] (n={s.get('n')})"


def ablation_section(doc: Document, inp: Input) -> None:
    r = inp.record
    name = _name_of(inp)
    data = r.get("data") or {}
    schemes = r.get("schemes") or []
    doc.add(f'<h2 id="sec-ablation-{esc(slug(name))}">Ablation: {esc(inp.path)}</h2>')
    doc.add(
        f"<p>Config {esc(_cfg_text(r.get('config')))}; data {esc(data.get('kind'))}: "
        f"{esc(data.get('description'))}"
        + (
            f" (entropy rate {num(data.get('entropy_rate'))} nats/token)"
            if data.get("entropy_rate") is not None
            else ""
        )
        + f"; {esc(r.get('steps'))} steps, seeds {esc(r.get('seeds'))}, B={esc(r.get('batch'))} "
        f"T={esc(r.get('seq'))}, lr {esc(r.get('lr'))}"
        + (f", target loss {num(r.get('target_loss'))}" if r.get("target_loss") is not None else "")
        + ".</p>"
    )
    figs = [
        doc.figure(
            f"ablation-{name}-loss-curves",
            F.ablation_curves(
                schemes, entropy_rate=data.get("entropy_rate"), target_loss=r.get("target_loss")
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
    if any((s.get("grad_norm_profile") or {}).get("layer") for s in schemes):
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
            esc(s.get("name")),
            esc(s.get("scheme")),
            esc(" ".join(s.get("overrides") or [])),
            esc(_interval(s.get("final_loss"))),
            esc(_interval(s.get("best_loss"))),
            esc(_interval(s.get("steps_to_target"))),
            esc(", ".join(map(str, s.get("diverged") or [])) or "none"),
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


def _bench_label(row: dict) -> str:
    dev = row.get("device") or {}
    cfg = row.get("config") or {}
    what = row.get("descriptor") or (f"L{cfg.get('layers')} C{cfg.get('channels')}" if cfg else "?")
    device = dev.get("gpu_name") or dev.get("cpu_model") or dev.get("name") or dev.get("kind")
    return (
        f"{row.get('impl')} {what} B{row.get('batch')} T{row.get('seq')} {row.get('dtype')}"
        + (" compiled" if row.get("compile") else "")
        + f" | {device}"
    )


def bench_section(doc: Document, inp: Input) -> None:
    r = inp.record
    name = _name_of(inp)
    rows = r.get("rows") or []
    doc.add(f'<h2 id="sec-bench-{esc(slug(name))}">Benchmark: {esc(inp.path)}</h2>')
    labels = [_bench_label(x) for x in rows]
    figs = []
    if rows:
        figs.append(
            doc.figure(
                f"bench-{name}-throughput-mfu",
                F.bench_bars(labels, [x.get("tokens_per_s") for x in rows], [x.get("mfu") for x in rows]),
                f"{name}: training throughput (tokens/s, log scale) and model FLOPs utilisation "
                "per configuration and device.",
            )
        )
        doc.add(
            "<p>" + ", ".join(doc.ref(x) for x in figs) + f"; tool version {esc(r.get('tool_version'))}.</p>"
        )
    trows = []
    for x in rows:
        st = x.get("step_s") or {}
        mem = x.get("peak_memory_bytes")
        trows.append(
            [
                esc(_bench_label(x)),
                num(st.get("median"), ".4g"),
                f"{num(st.get('q1'), '.4g')} .. {num(st.get('q3'), '.4g')}",
                num(x.get("tokens_per_s"), ",.0f"),
                num(x.get("achieved_tflops"), ".3g"),
                num(x.get("peak_tflops"), ".4g"),
                num(None if x.get("mfu") is None else 100 * x["mfu"], ".2f"),
                esc(x.get("peak_source")),
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


SECTIONS = {
    "compare": compare_section,
    "gradflow": gradflow_section,
    "llmc": llmc_section,
    "ablation": ablation_section,
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
    (None: when stderr is a terminal). Raises verify.errors.InputError on bad input and
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
        doc.add("<h2>Inputs</h2>")
        rows = []
        for i in order:
            inp = loaded[i]
            rec = inp.record or {}
            rows.append(
                [
                    esc(inp.path),
                    esc(inp.kind),
                    _verdict_html(rec.get("verdict"), rec.get("passed"))
                    if inp.kind != "init"
                    else "streamed below",
                    f'<a href="#sec-{esc(inp.kind)}-{esc(slug(_name_of(inp)))}">section</a>',
                ]
            )
        doc.add(table(["input", "kind", "verdict", ""], rows, raw={0, 1, 2, 3}))
        # compare records whose candidate file is also an input: draw where it differs from the same pass
        wanted: dict[int, dict[str, int]] = {}
        for ci, c in enumerate(loaded):
            if c.kind != "compare":
                continue
            for mi, m in enumerate(loaded):
                if m.kind == "init" and _same_file(m.path, ((c.record or {}).get("file") or {}).get("path")):
                    wanted.setdefault(mi, {}).update({t: ci for t in mismatching_tensors(c.record)})
        rowcols: dict[int, dict] = {}
        for i in order:
            inp = loaded[i]
            try:
                if inp.kind == "init":
                    init = expected_laws(inp.model.config, scheme=scheme, overrides=overrides)
                    total = sum(int(_numel(inp.model.shape(s.name))) for s in inp.model.config.tensors())
                    with Progress(total, f"report {_name_of(inp)}", enabled=progress) as bar_:
                        stats = scan_model(inp.model, init, rowcol=tuple(wanted.get(i, {})), progress=bar_)
                    for t, ci in wanted.get(i, {}).items():
                        if stats[t].rowcol is not None:
                            rowcols.setdefault(ci, {})[t] = stats[t].rowcol
                    init_section(doc, inp, stats, init)
                elif inp.kind == "stats":
                    cfg = GPTConfig.from_dict(inp.record["config"])
                    stats_section(doc, inp, expected_laws(cfg, scheme=scheme, overrides=overrides))
                else:
                    if inp.kind == "compare":
                        compare_section(doc, inp, rowcols.get(i))
                    else:
                        SECTIONS[inp.kind](doc, inp)
            except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
                if inp.kind == "init":
                    raise
                raise InputError(
                    inp.path,
                    f"malformed {inp.kind} record ({type(e).__name__}: {e}); "
                    f"regenerate it with gpt2-verify {inp.kind} --json",
                ) from None
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
    return ReportResult(text, doc.figures, [(loaded[i].kind, loaded[i].path) for i in order])


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
