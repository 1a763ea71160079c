"""verify.records: one record of every type, written by the project's own commands and
producers, read back typed; a malformed record of each type is one line naming the file, the
field and the problem; `report` renders every type; a bug inside a report section stays a
traceback; reading records imports no numpy, torch, matplotlib or compare engine."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from gpt2_verify.reference.config import GPTConfig
from gpt2_verify.verify import records as R
from gpt2_verify.verify.cli import main
from gpt2_verify.verify.errors import InputError

from tests import candidates

TINY = GPTConfig(2, 32, 2, vocab=100, max_seq_len=16)
CFG = ["--layers", "2", "--channels", "32", "--heads", "2", "--vocab", "100", "--max-seq-len", "16"]
ROOT = Path(__file__).resolve().parents[1]


def _equal(a, b) -> bool:
    """JSON equality with NaN equal to NaN (json writes NaN for a float nan)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b and type(a) is type(b)


def _fuzz_record() -> dict:
    from gpt2_verify.verify.compare.candidate import Candidate
    from gpt2_verify.verify.compare.fuzz import fuzz

    result = fuzz(Candidate(function=candidates.residual_scale_from_l3), examples=60, max_params=5_000,
                  derandomize=True, progress=False, require="close")
    assert result.failure is not None and result.failure.report is not None
    return result.to_dict()


def _llmc_record() -> dict:
    from gpt2_verify.verify.llmc.harness import Check, HarnessReport

    checks = [Check("build/test_gpt2", "logits", 4.3e-6, 9.6e-5, True, "OK"),
              Check("build/test_gpt2", "dfcprojw", 2.0e-4, 9.0e-6, False, "OK", "max diff at [0, 3, 1]"),
              Check("build/test_gpt2", "determinism", None, None, True, None)]
    return HarnessReport(TINY.as_dict(), 42, "probe", checks).to_dict()


def _ablation(d: Path) -> Path:
    pytest.importorskip("torch")
    from gpt2_verify.verify.experiments import sources, study

    cfg = GPTConfig(1, 16, 2, vocab=16, max_seq_len=8)
    data = sources.markov_tokens(vocab=16, alpha=0.1, seed=0, train_tokens=2000, val_tokens=512)
    s = study.Settings(cfg, tuple(study.parse_arms("gpt2")), (0,), 3, 2, 8, 1e-3, eval_every=2,
                       log_every=2, data=data.to_dict())
    out = d / "ablation"
    study.run_ablation(s, data, out, progress=False)
    return out


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    """schema -> a file holding one record of that type, each made by the code that makes it."""
    d = tmp_path_factory.mktemp("records")
    out = {}

    def cli(*argv, codes=(0,)):
        assert main([str(a) for a in argv]) in codes, argv

    cli("checksum", *CFG, "--json", d / "checksum.json")
    cli("init", *CFG, "-o", d / "m.bin")
    cli("stats", d / "m.bin", "--json", d / "stats.json")
    cli("params", *CFG, "--json", d / "params.json")
    body = bytearray((d / "m.bin").read_bytes())
    body[-200:-196] = b"\x00\x00\x80\x7f"  # +Inf in lnfw: compare fails with a NaN/Inf reason
    (d / "bad.bin").write_bytes(bytes(body))
    cli("compare", d / "bad.bin", "--json", d / "compare.json", codes=(1,))
    cli("gradflow", *CFG, "--batch", "2", "--seq", "8", "--json", d / "gradflow.json", codes=(0, 1))
    (d / "fuzz.json").write_text(json.dumps(_fuzz_record()))
    (d / "llmc.json").write_text(json.dumps(_llmc_record()))
    abl = _ablation(d)
    cli("bench", "--layers", "1", "--channels", "16", "--heads", "2", "--vocab", "64", "--max-seq-len", "8",
        "--batch", "1", "--seq", "8", "--repeats", "1", "--warmup", "0", "--device", "cpu",
        "--json", d / "bench.json")
    # the one `module` run of this file: llm.c's train_gpt2.py GPT on the default config (~2 s)
    cli("module", ROOT / "tests" / "module_peers.py:llmc_gpt", "--json", d / "module.json")
    files = [d / f"{k}.json" for k in ("checksum", "stats", "params", "compare", "gradflow", "fuzz", "llmc",
                                       "bench", "module")]
    files += [abl / "summary.json", abl / "ablation.json", next((abl / "runs").iterdir())]
    for f in files:
        out[json.loads(f.read_text())["schema"]] = f
    return out


def test_every_record_type_has_a_sample(samples):
    missing = set(R.RECORDS) - set(samples)
    assert not missing, f"add a sample of {missing} to the `samples` fixture (written by its producer)"


def test_records_round_trip_typed(samples):
    for schema, path in samples.items():
        text = json.loads(path.read_text())
        rec = R.read(path)
        assert type(rec) is R.RECORDS[schema] and rec.SCHEMA == schema
        assert _equal(rec.to_dict(), text), schema
        assert list(rec.to_dict())[0] == "schema"


def test_typed_fields_hold_what_the_producer_wrote(samples):
    cmp = R.read(samples[R.CompareRecord.SCHEMA])
    raw = json.loads(samples[R.CompareRecord.SCHEMA].read_text())
    assert cmp.verdict == raw["verdict"] == "mismatch" and cmp.passed is False
    assert [t.name for t in cmp.tensors] == [t["name"] for t in raw["tensors"]]
    lnfw = next(t for t in cmp.tensors if t.name == "lnfw")
    assert lnfw.nonfinite == 1 and "Inf" in lnfw.reason
    assert cmp.config.gpt() == TINY
    ck = R.read(samples[R.ChecksumRecord.SCHEMA])
    assert ck.scheme.label == "gpt2" and ck.numel == TINY.num_params_padded
    assert set(ck.tensors) == {s.name for s in TINY.tensors()}
    fz = R.read(samples[R.FuzzRecord.SCHEMA])
    assert fz.verdict == "fail" and fz.failure.report.passed is False
    assert fz.failure.config.layers >= 3  # the bug starts at L = 3
    gf = R.read(samples[R.GradflowRecord.SCHEMA])
    assert gf.tokens.origin == "random_tokens" and gf.to_dict()["tokens"]["from"] == "random_tokens"
    mod = R.read(samples[R.ModuleRecord.SCHEMA])
    raw = json.loads(samples[R.ModuleRecord.SCHEMA].read_text())
    assert mod.verdict == "pass" and mod.cause is None
    assert mod.config.gpt() == GPTConfig.from_dict(raw["config"])
    # logits, loss, one gradient per llm.c tensor, then one loss per training step
    assert [c.quantity for c in mod.checks][:2] == ["logits", "loss"] and len(mod.checks) == 2 + 16
    assert [c.quantity for c in mod.steps.checks] == [f"step {i} loss" for i in range(3)]
    for c, rc in zip(mod.all_checks(), raw["checks"] + raw["steps"]["checks"]):
        assert c.used_percent == pytest.approx(100 * rc["error"] / rc["limit"]) and c.passed
        assert c.message.startswith("Mismatched elements: 0 / ")


def _broken(obj: dict) -> list[tuple[str, dict]]:
    """(field, record) pairs: the first required field dropped, and a string where the first
    numeric field (searched depth first) should be."""
    out = []
    cls = R.RECORDS[obj["schema"]]
    first = next(key for _a, key, _t, required in cls._fields() if required)
    dropped = copy.deepcopy(obj)
    del dropped[first]
    out.append((first, dropped))

    def find_number(x, path):
        if isinstance(x, dict):
            items = [(k, v) for k, v in x.items() if k != "schema"]
        elif isinstance(x, list):
            items = list(enumerate(x))
        else:
            return None
        for k, v in items:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return path + [k]
            found = find_number(v, path + [k])
            if found:
                return found
        return None

    path = find_number(obj, [])
    wrong = copy.deepcopy(obj)
    target = wrong
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = "oops"
    name = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")
    out.append((name, wrong))
    return out


def test_a_malformed_record_of_each_type_is_one_line(samples, tmp_path, capsys):
    readable = {c.SCHEMA for c in R.RECORDS.values() if c.KIND not in ("params", "ablate-settings")}
    for schema, path in samples.items():
        for field, obj in _broken(json.loads(path.read_text())):
            bad = tmp_path / "bad.json"
            bad.write_text(json.dumps(obj))
            with pytest.raises(InputError) as e:
                R.read(bad)
            msg = str(e.value)
            assert msg.startswith(f"{bad}: malformed {R.RECORDS[schema].KIND} record ({schema}): "), msg
            assert f"field {field!r}" in msg and "\n" not in msg, (schema, msg)
            assert ("missing" in msg) or ("expected" in msg and "'oops'" in msg), msg
            if schema in readable:  # the report says the same: exit 2, one line, nothing written
                capsys.readouterr()
                assert main(["report", str(bad), "-o", str(tmp_path / "r.html")]) == 2
                err = capsys.readouterr().err
                assert err.count("\n") == 1 and f"field {field!r}" in err and str(bad) in err, err
                assert not (tmp_path / "r.html").exists()


def test_bench_row_rules_come_from_the_contract(samples):
    obj = json.loads(samples[R.BenchRecord.SCHEMA].read_text())
    cases = {
        "rows[0].tokens_per_s": lambda r: r["rows"][0].update(tokens_per_s=float("nan")),
        "rows[0].impl": lambda r: r["rows"][0].update(impl="nanogpt"),
        "rows[0].config": lambda r: r["rows"][0]["config"].update(channels=33),
        "rows[0].step_s.q3": lambda r: r["rows"][0]["step_s"].pop("q3"),
        "rows[0].device.host": lambda r: r["rows"][0]["device"].pop("host"),
    }
    for field, edit in cases.items():
        bad = copy.deepcopy(obj)
        edit(bad)
        with pytest.raises(InputError, match=re.escape(f"field {field!r}")):
            R.parse(bad, "b.json")


def test_a_producer_bug_is_a_record_error_not_bad_input():
    with pytest.raises(R.RecordError) as e:
        R.ChecksumRecord.make(config=TINY.as_dict(), seed="42", profile="llmc", scheme={"scheme": "gpt2",
                              "label": "gpt2"}, numel=1, sha256_fp32="", sha256_bf16="", tensors={})
    assert e.value.field == "seed" and not isinstance(e.value, InputError)


def test_unknown_keys_pass_through_and_optional_fields_may_be_absent(samples):
    obj = json.loads(samples[R.StatsRecord.SCHEMA].read_text())
    obj["written_by_a_newer_version"] = {"x": 1}
    obj["tensors"]["wte"]["extra_figure"] = 2.5
    assert R.parse(obj, "s.json").to_dict() == obj
    run = json.loads(samples[R.LlmcRecord.SCHEMA].read_text())
    del run["builds_compared"]  # has a default: older records without it still read
    assert R.parse(run, "l.json").builds_compared == []


def test_report_renders_every_record_type(samples, tmp_path):
    pytest.importorskip("matplotlib")
    from gpt2_verify.verify.report import build_report

    inputs = [p for s, p in samples.items() if R.RECORDS[s].KIND not in ("params", "ablate-settings")]
    inputs[inputs.index(samples[R.AblateSummary.SCHEMA])] = samples[R.AblateSummary.SCHEMA].parent
    result = build_report(inputs, output=tmp_path / "r.html")
    kinds = {k for k, _p in result.sections}
    assert kinds == {"checksum", "stats", "compare", "fuzz", "gradflow", "llmc", "ablation", "ablate-run",
                     "bench", "module"}
    html = result.html
    for kind in kinds:
        assert f'id="sec-{kind}-' in html, kind
    ck = R.read(samples[R.ChecksumRecord.SCHEMA])
    assert ck.sha256_fp32 in html and ck.sha256_bf16 in html
    fz = R.read(samples[R.FuzzRecord.SCHEMA])
    assert fz.failure.command in html.replace("&#x27;", "'").replace("&quot;", '"')
    for schema in (R.ParamsRecord.SCHEMA, R.AblateSettings.SCHEMA):
        with pytest.raises(InputError, match="this reads"):
            build_report([samples[schema]], output=tmp_path / "x.html")


def _failing_module(path: Path) -> dict:
    """The real module record with its dfcprojw gradient check made to fail by 3x its limit,
    as the module command writes a mismatch (verdict, passed and message consistent)."""
    obj = json.loads(path.read_text())
    c = next(c for c in obj["checks"] if c["quantity"] == "dfcprojw")
    c.update(error=3 * c["limit"], used_percent=300.0, passed=False, mismatched=7,
             message="Mismatched elements: 7 / 4096 (0.2%), greatest absolute difference 1e-3 at (1, 2)")
    obj["verdict"] = "fail"
    obj["cause"] = {"variants": ["gelu-erf"], "matches": True, "score": 0.5, "baseline": 3.0,
                    "text": "matches GPT-2 with exact-erf GELU"}
    return obj


def test_module_record_verdict_must_follow_its_checks(samples, tmp_path, capsys):
    bad = _failing_module(samples[R.ModuleRecord.SCHEMA])
    bad["verdict"] = "pass"  # one check failed: the verdict lies
    path = tmp_path / "module.json"
    path.write_text(json.dumps(bad))
    assert main(["report", str(path), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "field 'verdict'" in err, err
    assert not (tmp_path / "r.html").exists()
    bad = json.loads(samples[R.ModuleRecord.SCHEMA].read_text())
    bad["checks"][0]["passed"] = False  # error within the limit
    with pytest.raises(InputError, match=re.escape("field 'checks[0].passed'")):
        R.parse(bad, "m.json")


def test_report_marks_a_failing_module_check_by_text(samples, tmp_path):
    pytest.importorskip("matplotlib")
    from gpt2_verify.verify.report import build_report

    good = build_report([samples[R.ModuleRecord.SCHEMA]], output=tmp_path / "good.html").html
    assert "\u2713 PASS: all 21 checks within cpu-fp32" in good and "\u2717" not in good
    path = tmp_path / "failing.json"
    path.write_text(json.dumps(_failing_module(samples[R.ModuleRecord.SCHEMA])))
    html = build_report([path], output=tmp_path / "bad.html").html
    assert "\u2717 FAIL: 1 of 21 checks failed" in html
    assert html.count("\u2717 FAIL</span>") == 1 and "Mismatched elements: 7 / 4096" in html
    assert "<b>Cause</b>: matches GPT-2 with exact-erf GELU" in html
    # the verdict comes before the checks table
    assert html.index("\u2717 FAIL: 1 of 21") < html.index("<th>quantity</th>")


def test_a_bug_in_a_section_is_a_traceback(samples, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from gpt2_verify.verify.report import build_report, sections

    def broken(doc, inp):
        return {}["no such key"]

    monkeypatch.setitem(sections.SECTIONS, "llmc", broken)
    with pytest.raises(KeyError):
        build_report([samples[R.LlmcRecord.SCHEMA]], output=tmp_path / "r.html")


def test_reading_records_is_cheap_to_import():
    code = ("import sys; import gpt2_verify.verify.records, gpt2_verify.verify.report.inputs;"
            "heavy = [m for m in ('numpy', 'torch', 'matplotlib', 'gpt2_verify.verify.compare',"
            " 'gpt2_verify.verify.report.sections') if m in sys.modules];"
            "ours = [m for m in sys.modules if m.startswith('gpt2_verify')];"
            "print(heavy, len(ours))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    heavy, n = out.stdout.rsplit(" ", 1)
    assert heavy == "[]" and int(n) <= 8, out.stdout + out.stderr
