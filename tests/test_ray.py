"""--executor ray on a local Ray (started by the command or the executor): ablation runs as Ray
tasks give the same per-run records as the local executor and resume the same way; a worker
that dies loses only its task; the init in shards on Ray gives llm.c's checksum. Without Ray
installed, --executor ray is one line naming the extra."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest
from gpt2_verify.verify import executors
from gpt2_verify.verify.cli import main

from tests.known import LLMC_SHA256

ABLATE = ["ablate", "--layers", "1", "--channels", "16", "--heads", "2", "--vocab", "16",
          "--max-seq-len", "8",
          "--markov-vocab", "16", "--train-tokens", "4000", "--steps", "6", "--batch", "2", "--seq", "8",
          "--eval-every", "2", "--log-every", "2", "--schemes", "gpt2,xavier-uniform", "--seeds", "2"]
# the run's record but for its wall time
SAME = ("train_loss", "val_loss", "grad_norm", "act_rms", "init", "settings", "diverged", "label", "seed")


def test_missing_ray_is_one_line_naming_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = main([*ABLATE, "--executor", "ray", "-o", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "gpt2-verify[ray]" in err
    code = main(["checksum", "--layers", "1", "--channels", "8", "--heads", "2", "--executor", "ray"])
    assert code == 2 and "gpt2-verify[ray]" in capsys.readouterr().err


def test_ablation_on_ray_equals_local_and_resumes(tmp_path, capsys):
    pytest.importorskip("ray")
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray task (--cpus-per-run 1): the same kernels, bit for bit
    try:
        assert main([*ABLATE, "-o", str(tmp_path / "local")]) == 0
    finally:
        torch.set_num_threads(threads)
    ray_dir = tmp_path / "ray"
    assert main([*ABLATE, "--executor", "ray", "-o", str(ray_dir)]) == 0  # starts and stops a local Ray
    names = sorted(p.name for p in (tmp_path / "local" / "runs").iterdir())
    assert names == sorted(p.name for p in (ray_dir / "runs").iterdir()) and len(names) == 4
    for name in names:
        a = json.loads((tmp_path / "local" / "runs" / name).read_text())
        b = json.loads((ray_dir / "runs" / name).read_text())
        assert {k: a[k] for k in SAME} == {k: b[k] for k in SAME}, name
    summary = json.loads((ray_dir / "summary.json").read_text())
    assert [e["final_loss"]["n"] for e in summary["schemes"]] == [2, 2]
    # a rerun into the same directory trains nothing (and starts no Ray)
    before = {n: (ray_dir / "runs" / n).stat().st_mtime_ns for n in names}
    assert main([*ABLATE, "--executor", "ray", "-o", str(ray_dir)]) == 0
    assert {n: (ray_dir / "runs" / n).stat().st_mtime_ns for n in names} == before


def test_dead_worker_loses_only_its_task_resume_and_sharded_init_on_ray(tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("torch")
    import os

    from gpt2_verify.reference.config import GPTConfig
    from gpt2_verify.reference.schemes import resolve
    from gpt2_verify.verify.experiments import sources, study
    from gpt2_verify.verify.sharded import iter_params_sharded

    TINY = GPTConfig(1, 16, 2, vocab=16, max_seq_len=8)
    data = sources.markov_tokens(vocab=16, alpha=0.1, seed=0, train_tokens=4000, val_tokens=1000)

    def crash_on_two(x):  # defined here: Ray ships it by value
        if x == 2:
            os._exit(3)  # the worker process dies mid-task
        return x * 10

    ex = executors.Ray(workers=2)
    try:
        got = dict(ex.as_done(crash_on_two, [1, 2, 3, 4]))
        assert (got[1], got[3], got[4]) == (10, 30, 40)
        assert isinstance(got[2], executors.Failed)
        # resume on Ray: a lost run is the only one trained again
        s = study.Settings(TINY, tuple(study.parse_arms("gpt2")), (0, 1), 4, 2, 8, 1e-3, eval_every=2,
                           log_every=2, data=data.to_dict())
        study.run_ablation(s, data, tmp_path, progress=False, executor=ex)
        (tmp_path / study.run_file(s.arms[0], 1)).unlink()
        trained = []
        study.run_ablation(s, data, tmp_path, progress=False, executor=ex,
                           on_run_done=lambda rec: trained.append(rec["seed"]))
        assert trained == [1]
        cfg = GPTConfig(2, 64, 4)
        h = hashlib.sha256()
        for _spec, chunk in iter_params_sharded(resolve("gpt2", cfg), 1337, ex):
            h.update(np.ascontiguousarray(chunk, dtype="<f4").data)
        assert h.hexdigest() == LLMC_SHA256[(2, 64, 4, 50257, 50304, 1024, 1337)]
    finally:
        ex.close()
