"""init / checksum --workers N: shards generated in parallel processes from their stream
positions, reassembled: the same bytes and SHA-256 as the sequential stream (llm.c's own
checksums where we have them)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from gpt2_verify.reference.config import GPTConfig
from gpt2_verify.reference.init import init_params
from gpt2_verify.reference.schemes import resolve
from gpt2_verify.verify import executors, sharded
from gpt2_verify.verify.cli import main
from gpt2_verify.verify.errors import TaskFailed
from gpt2_verify.verify.sharded import iter_params_sharded

from tests.known import LLMC_SHA256

SMALL = ["--layers", "2", "--channels", "64", "--heads", "4"]


def _raise_on_two(x):
    if x == 2:
        raise ValueError("two")
    return x * 10


@pytest.mark.parametrize("scheme,profile", [("olmo-mitchell", "torch"), ("torch-default", "llmc"),
                                            ("mup", "torch")])
def test_shards_in_order_equal_the_sequential_stream(scheme, profile):
    cfg = GPTConfig(3, 9, 3, 97, 128, 7)  # tensors under 16 values, torch's cached spare
    init = resolve(scheme, cfg, profile=profile)
    ex = executors.Serial()
    got = np.concatenate([c for _s, c in iter_params_sharded(init, 11, ex, shard_values=37)])
    assert np.array_equal(got.view(np.uint32), init_params(cfg, 11, profile, scheme=scheme).view(np.uint32))


def test_init_and_checksum_with_two_processes(tmp_path, capsys):
    out = tmp_path / "m.bin"
    assert main(["init", *SMALL, "--seed", "1337", "--workers", "2", "-o", str(out)]) == 0
    want = LLMC_SHA256[(2, 64, 4, 50257, 50304, 1024, 1337)]  # llm.c's own buffer
    assert hashlib.sha256(out.read_bytes()[1024:]).hexdigest() == want
    one, two = tmp_path / "1.json", tmp_path / "2.json"
    assert main(["checksum", *SMALL, "--scheme", "olmo-mitchell", "--json", str(one)]) == 0
    assert main(["checksum", *SMALL, "--scheme", "olmo-mitchell", "--workers", "2", "--json", str(two)]) == 0
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert (a["sha256_fp32"], a["sha256_bf16"]) == (b["sha256_fp32"], b["sha256_bf16"])
    for name, t in a["tensors"].items():
        u = b["tensors"][name]
        assert (t["sha256_fp32"], t["numel"], t["min"], t["max"]) == \
            (u["sha256_fp32"], u["numel"], u["min"], u["max"])
        # moments merged over other chunk boundaries: float64 rounding only
        assert u["mean"] == pytest.approx(t["mean"], rel=1e-9, abs=1e-15)
        assert u["std"] == pytest.approx(t["std"], rel=1e-12)


def test_a_failing_task_loses_only_itself():
    pool = executors.Processes(2)
    try:
        got = dict(pool.as_done(_raise_on_two, [1, 2, 3]))
    finally:
        pool.close()
    assert got[1] == 10 and got[3] == 30
    assert isinstance(got[2], executors.Failed) and "two" in got[2].error


def test_a_failing_ordered_task_is_one_error():
    pool = executors.Processes(2)
    try:
        with pytest.raises(TaskFailed, match="a worker process failed: ValueError: two"):
            list(pool.ordered(_raise_on_two, [1, 2, 3]))
    finally:
        pool.close()


def test_a_failed_worker_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    def dies(*_a, **_k):
        raise TaskFailed("a worker process died (killed, or out of memory)")
        yield  # a generator, like the real one

    monkeypatch.setattr(sharded, "iter_params_sharded", dies)
    out = tmp_path / "m.bin"
    assert main(["init", *SMALL, "--workers", "2", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "gpt2-verify: error: a worker process died (killed, or out of memory)"]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_executor_usage_errors(capsys):
    code = main(["checksum", *SMALL, "--ray-address", "auto"])
    err = capsys.readouterr().err
    assert code == 2 and "--executor ray" in err and len(err.strip().splitlines()) == 1
    assert main(["checksum", *SMALL, "--workers", "0"]) == 2


def test_compare_one_shard_generates_only_that_shard(tmp_path, capsys, monkeypatch):
    import importlib

    compare_mod = importlib.import_module("gpt2_verify.verify.compare.compare")
    from gpt2_verify.verify.formats.checkpoint import open_checkpoint

    path = tmp_path / "m.bin"
    argv = ["--layers", "4", "--channels", "64", "--heads", "4", "--vocab", "512", "--max-seq-len", "64"]
    assert main(["init", *argv, "-o", str(path)]) == 0
    with open_checkpoint(path) as ck:
        spec = {s.name: s for s in ck.specs}["fcprojw"]
    per = spec.numel // 4
    raw = np.memmap(path, dtype="<f4", mode="r+", offset=1024)  # after the 256-int header
    raw[spec.offset + 3 * per: spec.offset + 4 * per] *= 2  # layer 3's std doubled
    raw.flush()
    del raw

    def no_full_stream(*a, **k):
        raise AssertionError("the whole init was generated for one shard")

    monkeypatch.setattr(compare_mod, "iter_params", no_full_stream)
    capsys.readouterr()
    assert main(["compare", str(path), "--tensor", "fcprojw", "--layers", "0:3"]) == 0
    assert "bit-identical" in capsys.readouterr().out
    assert main(["compare", str(path), "--tensor", "fcprojw", "--layers", "2:4"]) == 1
    out = capsys.readouterr().out
    assert "layer 3" in out and "mismatch" in out
    assert main(["compare", str(path), "--tensor", "qkvw"]) == 0
    for bad in (["--tensor", "nope"], ["--tensor", "fcprojw", "--layers", "3:9"], ["--layers", "1:2"],
                ["--tensor", "wte", "--layers", "0:1"]):
        capsys.readouterr()
        assert main(["compare", str(path), *bad]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
