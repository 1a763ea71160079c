"""gpt2-verify report: inputs made with the project's own commands, the HTML parsed back.

Expected figures in the tables are read from the JSON records the other commands wrote (or,
for the init state, computed here with plain numpy from the checkpoint), never from the report
code; the streamed histogram is checked against np.histogram of the whole array.
"""

from __future__ import annotations

import base64
import html.parser
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gpt2_verify.reference.config import GPTConfig
from gpt2_verify.verify.cli import main

from tests.known import SMALL

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]
GRADFLOW_CFG = ["--layers", "2", "--channels", "32", "--heads", "2", "--vocab", "200", "--max-seq-len", "16"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk (the first chunk of every PNG)."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


class Page(html.parser.HTMLParser):
    """Sections (h2 ids), figures (id, img src, caption), in-page links and table rows."""

    def __init__(self):
        super().__init__()
        self.sections, self.figures, self.links, self.tables = [], [], [], []
        self._fig = None
        self._row = None
        self._cell = None
        self.external = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href"):
            v = a.get(k)
            if v and not (v.startswith("data:image/png;base64,") or v.startswith("#")):
                self.external.append(v)
        if tag == "h2":
            self.sections.append(a.get("id"))
        elif tag == "figure":
            self._fig = {"id": a.get("id"), "src": None}
            self.figures.append(self._fig)
        elif tag == "img" and self._fig is not None:
            self._fig["src"] = a["src"]
        elif tag == "a" and a.get("href", "").startswith("#"):
            self.links.append(a["href"][1:])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
            self.tables[-1].append(self._row)
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "figure":
            self._fig = None
        elif tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(path) -> Page:
    p = Page()
    p.feed(Path(path).read_text())
    return p


def table_with(page: Page, header: str) -> list[dict]:
    for t in page.tables:
        if t and header in t[0]:
            return [dict(zip(t[0], row)) for row in t[1:]]
    raise AssertionError(f"no table with column {header!r}")


# ---- inputs ------------------------------------------------------------------------------------


def _plant_bugs(path: Path, cfg: GPTConfig) -> None:
    """Residual scaling missing in fcprojw (x sqrt(2L) = 2), a non-zero padded wte row and one
    LayerNorm weight off."""
    body = np.memmap(path, dtype="<f4", mode="r+", offset=1024)
    spec = {s.name: s for s in cfg.tensors()}
    s = spec["fcprojw"]
    body[s.offset : s.offset + s.numel] *= np.float32(math.sqrt(2 * cfg.layers))
    s = spec["wte"]
    body[s.offset + cfg.vocab * cfg.channels + 5] = 0.5  # row V, column 5
    s = spec["ln2w"]
    body[s.offset + cfg.channels + 3] = 1.5  # layer 1, channel 3
    body.flush()
    del body


def _ablation_summary(cfg: GPTConfig) -> dict:
    def interval(values):
        v = [float(x) for x in values]
        return {"mean": float(np.mean(v)), "lo": min(v), "hi": max(v), "n": len(v), "values": v}

    schemes = []
    for k, (name, scheme) in enumerate(
        [("gpt2", "gpt2"), ("gpt2[attprojw,fcprojw.scale=10]", "gpt2"), ("xavier-normal", "xavier-normal")]
    ):
        steps = list(range(0, 50, 5))
        mean = [6.9 - 0.05 * i * (k + 1) for i in range(len(steps))]
        schemes.append(
            {
                "name": name,
                "scheme": scheme,
                "overrides": ["attprojw,fcprojw.scale=10"] if k == 1 else [],
                "final_loss": interval([mean[-1] - 0.01, mean[-1], mean[-1] + 0.02]),
                "best_loss": interval([mean[-1] - 0.02, mean[-1] - 0.01, mean[-1]]),
                "steps_to_target": None,
                "diverged": [2] if k == 1 else [],
                "curve": {
                    "step": steps,
                    "mean": mean,
                    "lo": [m - 0.05 for m in mean],
                    "hi": [m + 0.05 for m in mean],
                },
                "val_curve": {"step": steps[::3], "mean": mean[::3], "lo": mean[::3], "hi": mean[::3]},
                "grad_norm_profile": {
                    "layer": [0, 1],
                    "mean": [1.0 + k, 0.8 + k],
                    "lo": [0.9 + k, 0.7 + k],
                    "hi": [1.1 + k, 0.9 + k],
                },
            }
        )
    return {
        "schema": "gpt2-verify/ablate/1",
        "tool_version": "test",
        "config": cfg.as_dict(),
        "data": {"kind": "markov", "description": "order-1 Markov chain, 64 states", "entropy_rate": 3.1},
        "steps": 50,
        "seeds": [0, 1, 2],
        "batch": 4,
        "seq": 16,
        "lr": 1e-3,
        "target_loss": 5.0,
        "schemes": schemes,
        "runs": [],
    }


def _bench_record() -> dict:
    def stats(m):
        return {"median": m, "min": 0.9 * m, "max": 1.2 * m, "q1": 0.95 * m, "q3": 1.05 * m}

    rows = []
    for desc, dev, tps, mfu in [
        ("d12", "cpu", 1234.5, None),
        ("d12", "cuda", 98765.0, 0.41),
        ("d24", "cuda", 45678.0, 0.38),
    ]:
        cfg = GPTConfig.from_dict({"descriptor": desc}) if desc else SMALL
        gpu = dev == "cuda"
        rows.append(
            {
                "device": {
                    "kind": dev,
                    "name": "NVIDIA H100" if gpu else "cpu",
                    "cpu_model": "AMD EPYC",
                    "cores": 2,
                    "threads": 2,
                    "gpu_name": "NVIDIA H100 80GB HBM3" if gpu else None,
                    "gpu_memory_bytes": 80 * 2**30 if gpu else None,
                    "torch": "2.13.0",
                    "cuda": "12.8" if gpu else None,
                    "driver": "570.1" if gpu else None,
                    "host": "test",
                },
                "impl": "reference",
                "config": cfg.as_dict(),
                "descriptor": desc,
                "batch": 4,
                "seq": 64,
                "dtype": "bf16" if gpu else "fp32",
                "compile": False,
                "fwd_s": stats(0.1),
                "bwd_s": stats(0.2),
                "opt_s": None,
                "step_s": stats(0.35),
                "tokens_per_s": tps,
                "flops_per_token": 7.6e8,
                "achieved_tflops": tps * 7.6e8 / 1e12,
                "peak_tflops": 989.5 if gpu else None,
                "peak_source": "NVIDIA H100 datasheet" if gpu else None,
                "mfu": mfu,
                "peak_memory_bytes": 2**30 if gpu else None,
            }
        )
    return {"schema": "gpt2-verify/bench/1", "tool_version": "test", "rows": rows}


def _llmc_record(cfg: GPTConfig) -> dict:
    from gpt2_verify.verify.llmc.harness import Check, HarnessReport

    checks = [
        Check("build/test_gpt2", "logits", 4.3e-6, 9.6e-5, True, "OK"),
        Check("build/test_gpt2", "dfcprojw", 2.0e-4, 9.0e-6, False, "OK", "max diff at [0, 3, 1]"),
        Check("build/test_gpt2", "determinism", None, None, True, None),
    ]
    return HarnessReport(cfg.as_dict(), 42, "probe", checks).to_dict()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    cfg = SMALL
    good, bug = d / "good.bin", d / "bug.bin"
    cfg_args = [
        "--layers",
        cfg.layers,
        "--channels",
        cfg.channels,
        "--heads",
        cfg.heads,
        "--vocab",
        cfg.vocab,
        "--max-seq-len",
        cfg.max_seq_len,
    ]
    assert main([str(a) for a in ["init", *cfg_args, "-o", good]]) == 0
    shutil.copy(good, bug)
    _plant_bugs(bug, cfg)
    assert main(["compare", str(bug), "--json", str(d / "compare.json")]) == 1
    assert main(
        [
            "gradflow",
            *GRADFLOW_CFG,
            "--batch",
            "2",
            "--seq",
            "8",
            "--widths",
            "16,32,48",
            "--steps",
            "1",
            "--json",
            str(d / "gradflow.json"),
        ]
    ) in (0, 1)
    abl = d / "ablation-run"
    abl.mkdir()
    (abl / "summary.json").write_text(json.dumps(_ablation_summary(cfg)))
    (d / "bench.json").write_text(json.dumps(_bench_record()))
    (d / "llmc.json").write_text(json.dumps(_llmc_record(cfg)))
    return {
        "dir": d,
        "cfg": cfg,
        "good": good,
        "bug": bug,
        "compare": d / "compare.json",
        "gradflow": d / "gradflow.json",
        "ablation": abl,
        "bench": d / "bench.json",
        "llmc": d / "llmc.json",
    }


@pytest.fixture(scope="module")
def report(inputs):
    d = inputs["dir"]
    out, png = d / "report.html", d / "png"
    argv = [
        "report",
        inputs["bug"],
        inputs["compare"],
        inputs["gradflow"],
        inputs["llmc"],
        inputs["ablation"],
        inputs["bench"],
        "-o",
        out,
        "--png",
        png,
    ]
    assert main([str(a) for a in argv]) == 0
    return {"html": out, "png": png, "page": parse(out)}


# ---- streamed statistics ---------------------------------------------------------------------------


def test_streamed_histogram_equals_np_histogram():
    from gpt2_verify.verify.report.stream import StreamHistogram

    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 0.02, 100_003), [0.5, -0.7, 0.12, -0.12]]).astype(np.float32)
    rng.shuffle(x)
    h = StreamHistogram.symmetric(0.12, bins=120)
    for lo in range(0, x.size, 7777):
        h.add(x[lo : lo + 7777])
    whole, _ = np.histogram(x, bins=h.edges)
    assert np.array_equal(h.counts, whole)
    assert h.under == int(np.sum(x < -0.12)) and h.over == int(np.sum(x > 0.12))
    assert h.total == x.size
    # quantiles from the histogram lie within one bin of the data's own
    q = np.array([0.01, 0.25, 0.5, 0.75, 0.99])
    width = h.edges[1] - h.edges[0]
    assert np.all(np.abs(h.quantiles(q) - np.quantile(x.astype(np.float64), q)) <= width)


def test_scan_model_matches_whole_arrays(inputs):
    """Chunks of 1000 values straddle layers and wte's padded rows: every statistic equals the
    one computed from the whole tensor with numpy."""
    from gpt2_verify.reference.schemes import resolve
    from gpt2_verify.verify.formats.model import open_model
    from gpt2_verify.verify.report.stream import scan_model

    cfg = inputs["cfg"]
    with open_model(inputs["bug"]) as m:
        stats = scan_model(m, resolve("gpt2", cfg), chunk=1000, rowcol=("fcprojw",))
        arrays = {s.name: m.tensor(s.name).astype(np.float64) for s in cfg.tensors()}
    wte = stats["wte"]
    whole, _ = np.histogram(arrays["wte"][: cfg.vocab], bins=wte.hist.edges)
    assert np.array_equal(wte.hist.counts, whole)
    padded = [c for c in wte.constants if c.padded][0]
    assert (padded.n, padded.differing, padded.max_abs_diff) == (
        (cfg.padded_vocab - cfg.vocab) * cfg.channels,
        1,
        0.5,
    )
    assert padded.first_index == cfg.vocab * cfg.channels + 5
    ln2w = stats["ln2w"].constants[0]
    assert (ln2w.differing, ln2w.first_index) == (1, cfg.channels + 3)
    fcprojw = arrays["fcprojw"]
    for layer in range(cfg.layers):
        m = stats["fcprojw"].layers[layer]
        assert m.n == fcprojw[layer].size
        assert m.mean == pytest.approx(fcprojw[layer].mean(), rel=1e-9, abs=1e-15)
        assert m.std == pytest.approx(fcprojw[layer].std(), rel=1e-9)
        assert m.expected_std == pytest.approx(0.02 / math.sqrt(2 * cfg.layers), rel=1e-6)
    rc = stats["fcprojw"].rowcol
    flat_rows = fcprojw.reshape(-1, fcprojw.shape[-1])
    assert np.allclose(rc.row_std, flat_rows.std(axis=1), rtol=1e-9)
    assert np.allclose(rc.col_std, flat_rows.std(axis=0), rtol=1e-9)


# ---- the report -------------------------------------------------------------------------------------


def test_every_section_and_self_contained(report):
    page = report["page"]
    kinds = [s.split("-")[1] for s in page.sections if s and s.startswith("sec-")]
    assert kinds == ["init", "compare", "gradflow", "llmc", "ablation", "bench"]
    assert page.external == []  # nothing but data: URIs and in-page anchors
    assert "<script" not in report["html"].read_text()


def test_figures_are_pngs_numbered_and_referenced(report):
    page = report["page"]
    ids = [f["id"] for f in page.figures]
    assert ids == [f"fig-{i}" for i in range(1, len(ids) + 1)]
    assert len(ids) >= 10
    for f in page.figures:
        data = base64.b64decode(f["src"].split(",", 1)[1])
        w, h = png_size(data)
        assert 200 <= w <= 3000 and 100 <= h <= 3000
        assert f["id"] in page.links, f"{f['id']} is never referenced"
    assert set(page.links) <= set(ids) | set(page.sections)


def test_png_dir_holds_the_same_figures(report):
    page = report["page"]
    files = sorted(report["png"].glob("*.png"))
    assert len(files) == len(page.figures)
    embedded = {base64.b64decode(f["src"].split(",", 1)[1]) for f in page.figures}
    assert {p.read_bytes() for p in files} == embedded
    names = {p.name for p in files}
    assert {
        "init-bug-histograms.png",
        "init-bug-qq.png",
        "init-bug-layers.png",
        "compare-compare-std-ratio.png",
        "compare-compare-fcprojw-rows-cols.png",
        "gradflow-gradflow-width-sweep.png",
        "ablation-ablation-run-loss-curves.png",
        "bench-bench-throughput-mfu.png",
    } <= names


def test_compare_table_matches_the_json(inputs, report):
    rec = json.loads(inputs["compare"].read_text())
    rows = {r["tensor"]: r for r in table_with(report["page"], "std ratio")}
    assert set(rows) == {t["name"] for t in rec["tensors"]}
    for t in rec["tensors"]:
        r = rows[t["name"]]
        assert r["verdict"] == t["verdict"]
        assert r["differing"] == f"{t['differing']:,}"
        if t["std_ratio"] is not None:
            assert float(r["std ratio"]) == pytest.approx(t["std_ratio"], rel=1e-3)
    assert rows["fcprojw"]["verdict"] == "mismatch"
    text = report["html"].read_text()
    d = rec["first_divergence"]
    assert f"First divergence</b> (llm.c's draw order): {d['tensor']}[" in text


def test_init_table_from_the_checkpoint(inputs, report):
    """std per tensor against numpy on the whole checkpoint; constant parts marked exact or not."""
    from gpt2_verify.verify.formats.model import open_model

    rows = {r["tensor"]: r for r in table_with(report["page"], "std / expected")}
    with open_model(inputs["bug"]) as m:
        for name in ("wpe", "qkvw", "fcprojw"):
            assert float(rows[name]["std"]) == pytest.approx(
                float(m.tensor(name).astype(np.float64).std()), rel=1e-4
            )
    assert float(rows["fcprojw"]["std / expected"]) == pytest.approx(2.0, rel=0.02)
    consts = table_with(report["page"], "expected value")
    verdict = {(r["tensor"], r["part"]): r["verdict"] for r in consts}
    assert verdict[("wte", "padded rows V..Vp")].startswith("NOT exact: 1 of")
    assert verdict[("ln2w", "whole tensor")].startswith("NOT exact: 1 of 128 differ, max |diff| 0.5")
    assert verdict[("ln1w", "whole tensor")] == "exact"


def _verdict_lines(page_html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", m) for m in re.findall(r'<p class="verdict">(.*?)</p>', page_html)]


def test_model_verdicts_agree_with_compare(inputs, report):
    """The init section grades each tensor against the laws as compare does: the tensors marked
    mismatch are the ones compare's JSON grades mismatch (fcprojw 2x, a padded wte row, ln2w)."""
    rec = json.loads(inputs["compare"].read_text())
    want = {t["name"] for t in rec["tensors"] if t["verdict"] == "mismatch"}
    assert want == {"wte", "ln2w", "fcprojw"}
    html = report["html"].read_text()
    lines = _verdict_lines(html)
    assert len(lines) == 2 and lines[0] == lines[1]  # at the top and in the init section
    assert lines[0].startswith(f"{inputs['bug']}: \u2717 mismatch: 3 of 16 tensors")
    for name in want:
        assert name in lines[0]
    rows = {r["tensor"]: r["verdict"] for r in table_with(report["page"], "std / expected")}
    assert {t for t, v in rows.items() if v == "\u2717 MISMATCH"} == want & set(rows)
    assert table_with(report["page"], "kind")[0]["verdict"] == "\u2717 MISMATCH"


def test_report_of_a_correct_init_says_so(inputs, tmp_path):
    out = tmp_path / "good.html"
    assert main(["report", str(inputs["good"]), "-o", str(out)]) == 0
    page = parse(out)
    lines = _verdict_lines(out.read_text())
    assert lines[0].startswith(f"{inputs['good']}: \u2713 correct init: every tensor follows the law gpt2 "
                               "expects (6 random tensors pass their law checks")
    assert {r["verdict"] for r in table_with(page, "std / expected")} == {"\u2713 right law"}
    assert table_with(page, "kind")[0]["verdict"] == "\u2713 correct init"


def test_report_of_2x_std_projections_names_them(tmp_path):
    """attprojw and fcprojw at 2x their std (L = 3: not the 1/sqrt(2L) = 2.45x signature): a
    mismatch naming both, each with the ratio computed here from the file."""
    from gpt2_verify.verify.formats.model import open_model

    cfg = GPTConfig(3, 32, 2, vocab=100, max_seq_len=16)
    path = tmp_path / "x2.bin"
    assert main(["init", "--layers", "3", "--channels", "32", "--heads", "2", "--vocab", "100",
                 "--max-seq-len", "16", "-o", str(path)]) == 0
    body = np.memmap(path, dtype="<f4", mode="r+", offset=1024)
    for s in cfg.tensors():
        if s.name in ("attprojw", "fcprojw"):
            body[s.offset : s.offset + s.numel] *= np.float32(2)
    body.flush()
    del body
    out = tmp_path / "x2.html"
    assert main(["report", str(path), "-o", str(out)]) == 0
    html_text = out.read_text()
    top = _verdict_lines(html_text)[0]
    assert top.startswith(f"{path}: \u2717 mismatch: 2 of 16 tensors do not follow the laws gpt2 expects "
                          "(attprojw, fcprojw)")
    rows = {r["tensor"]: r["verdict"] for r in table_with(parse(out), "std / expected")}
    assert rows.pop("attprojw") == rows.pop("fcprojw") == "\u2717 MISMATCH"
    assert set(rows.values()) == {"\u2713 right law"}
    with open_model(path) as m:
        for name in ("attprojw", "fcprojw"):
            ratio = float(m.tensor(name).astype(np.float64).std()) / (0.02 / math.sqrt(6))
            assert f"{name} std " in html_text and f"= {ratio:.3g}x expected" in html_text


def test_the_model_is_read_once(inputs, tmp_path, monkeypatch):
    """Statistics, histograms and law grades come from one streamed pass: each tensor's chunks
    are iterated once."""
    from gpt2_verify.verify.formats import model as M

    calls: dict[str, int] = {}
    orig = M.ModelFile.iter_chunks

    def counting(self, name, *a, **kw):
        calls[name] = calls.get(name, 0) + 1
        return orig(self, name, *a, **kw)

    monkeypatch.setattr(M.ModelFile, "iter_chunks", counting)
    assert main(["report", str(inputs["bug"]), "-o", str(tmp_path / "r.html")]) == 0
    assert calls == {s.name: 1 for s in inputs["cfg"].tensors()}


def test_other_tables_match_their_json(inputs, report):
    page = report["page"]
    llmc = json.loads(inputs["llmc"].read_text())
    rows = table_with(page, "llm.c says")
    assert [r["check"] for r in rows] == [c["check"] for c in llmc["checks"]]
    assert [r["ours"] for r in rows] == ["ok" if c["passed"] else "FAIL" for c in llmc["checks"]]
    assert float(rows[1]["%"]) == pytest.approx(llmc["checks"][1]["used"], abs=0.05)
    abl = json.loads((inputs["ablation"] / "summary.json").read_text())
    rows = table_with(page, "final loss mean [lo, hi]")
    for r, s in zip(rows, abl["schemes"], strict=True):
        f = s["final_loss"]
        assert r["scheme"] == s["name"]
        assert r["final loss mean [lo, hi]"] == f"{f['mean']:.4g} [{f['lo']:.4g}, {f['hi']:.4g}] (n={f['n']})"
    bench = json.loads(inputs["bench"].read_text())
    rows = table_with(page, "tokens/s")
    assert [r["tokens/s"] for r in rows] == [f"{x['tokens_per_s']:,.0f}" for x in bench["rows"]]
    assert [r["MFU %"] for r in rows] == [
        "-" if x["mfu"] is None else f"{100 * x['mfu']:.2f}" for x in bench["rows"]
    ]
    gf = json.loads(inputs["gradflow"].read_text())
    rows = table_with(page, "norm spread")
    assert [r["tensor"] for r in rows] == [t["tensor"] for t in gf["gradients"]["tensors"]]
    for r, t in zip(rows, gf["gradients"]["tensors"]):
        assert float(r["grad norm"]) == pytest.approx(t["grad_norm"], rel=1e-3)


def test_bench_fixture_is_schema_valid():
    from gpt2_verify.verify.bench.record import validate_record

    assert len(validate_record(_bench_record(), "fixture")) == 3


# ---- bad input and missing matplotlib ---------------------------------------------------------------


def _bad_inputs(d: Path, good: Path) -> dict:
    (d / "garbage.json").write_text("{not json")
    (d / "unknown.json").write_text(json.dumps({"schema": "gpt2-verify/nope/9"}))
    (d / "noschema.json").write_text(json.dumps({"verdict": "pass"}))
    (d / "malformed.json").write_text(json.dumps({"schema": "gpt2-verify/compare/1", "tensors": "x"}))
    data = good.read_bytes()
    (d / "truncated.bin").write_bytes(data[: len(data) - 100])
    return {
        "garbage.json": "not valid JSON",
        "unknown.json": "unknown schema 'gpt2-verify/nope/9'",
        "noschema.json": "schema",
        "malformed.json": "malformed compare record",
        "truncated.bin": "truncated",
        "missing.bin": "no such file",
    }


def test_bad_inputs_exit_2_one_line(inputs, capsys):
    d = inputs["dir"] / "bad"
    d.mkdir()
    out = d / "r.html"
    out.write_text("old")
    for name, needle in _bad_inputs(d, inputs["good"]).items():
        code, _, err = run(capsys, "report", inputs["good"], d / name, "-o", out)
        assert code == 2, name
        assert err.count("\n") == 1 and needle in err and name in err, err
        assert out.read_text() == "old"  # nothing written on failure
    code, _, err = run(capsys, "report", inputs["good"], "-o", out, "--set", "nope.std=1")
    assert code == 2 and "unknown tensor 'nope'" in err


def test_missing_matplotlib_one_line_exit_2(inputs, tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None; from verify.cli import main; "
        f"sys.exit(main(['report', {str(inputs['good'])!r}, '-o', {str(tmp_path / 'r.html')!r}]))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 2
    assert res.stderr == "gpt2-verify: error: report needs matplotlib: pip install 'gpt2-verify[report]'\n"
    assert not (tmp_path / "r.html").exists()


def test_importing_the_package_does_not_import_matplotlib():
    code = "import sys, verify.report, verify.cli; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0


# ---- a real browser ---------------------------------------------------------------------------------

BROWSERS = ("chromium-headless-shell", "chromium", "google-chrome", "chromium-browser")
PROBE = (
    "<script>var bad=[];window.addEventListener('error',function(e){bad.push(String(e.message||"
    "(e.target&&e.target.tagName)))},true);window.addEventListener('load',function(){var im=document.images,"
    "ok=0;for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++}"
    "document.body.setAttribute('data-probe',im.length+':'+ok+':'+bad.length)});</script>"
)


def test_renders_in_a_headless_browser(report, tmp_path):
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip(
            f"no headless browser on PATH (looked for {', '.join(BROWSERS)}); "
            "apt-get install chromium-headless-shell provides one"
        )
    page = tmp_path / "probe.html"
    # the probe script goes at the start of <head> so that it sees every image's error event
    page.write_text(report["html"].read_text().replace("<head>", "<head>" + PROBE, 1))
    res = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    m = re.search(r'data-probe="(\d+):(\d+):(\d+)"', res.stdout)
    assert m, res.stderr[-2000:]
    images, loaded, errors = map(int, m.groups())
    assert images == len(report["page"].figures) and loaded == images and errors == 0


def test_stats_record_against_the_schemes_moments(tmp_path):
    # a checkpoint with attprojw scaled by 3: the stats record's table says 3x where it is
    from gpt2_verify.reference.init import init_tensors
    from gpt2_verify.verify.formats.checkpoint import write_checkpoint

    cfg = GPTConfig(2, 32, 2, vocab=100, max_seq_len=16)  # Vp 128: wte's expected std includes 28 zero rows
    t = init_tensors(cfg, 3)
    t["attprojw"] = t["attprojw"] * np.float32(3)
    flat = np.concatenate([t[s.name].reshape(-1) for s in cfg.tensors()])
    write_checkpoint(tmp_path / "m.bin", cfg, iter([flat]), "fp32")
    assert main(["stats", str(tmp_path / "m.bin"), "--json", str(tmp_path / "s.json")]) == 0
    rec = json.loads((tmp_path / "s.json").read_text())
    assert rec["schema"] == "gpt2-verify/stats/1"
    assert main(["report", str(tmp_path / "s.json"), "-o", str(tmp_path / "r.html")]) == 0
    page = Page()
    page.feed((tmp_path / "r.html").read_text())
    rows = {r["tensor"]: r for r in table_with(page, "expected std")}
    assert float(rows["wte"]["expected std"]) == pytest.approx(0.02 * math.sqrt(100 / 128), rel=1e-3)
    assert float(rows["attprojw"]["std ratio"]) == pytest.approx(3.0, rel=0.05)
    assert float(rows["qkvw"]["std ratio"]) == pytest.approx(1.0, rel=0.05)
    assert rows["ln1w"]["expected mean"] == "1" and rows["ln1w"]["std"] == "0"
