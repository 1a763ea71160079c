"""CLI: exit codes (0 ok, 1 check failed, 2 bad input), one-line errors, atomic outputs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from gpt2_verify.reference.config import GPTConfig
from gpt2_verify.reference.init import init_params
from gpt2_verify.verify.cli import main
from gpt2_verify.verify.formats.checkpoint import header_bytes, open_checkpoint

from tests.known import LLMC_SHA256

SMALL = ["--layers", "2", "--channels", "64", "--heads", "4"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_init_custom_reproduces_llmc(tmp_path, capsys):
    out = tmp_path / "m.bin"
    code, stdout, _ = run(capsys, "init", *SMALL, "-o", str(out))
    assert code == 0
    body = out.read_bytes()[1024:]
    want = LLMC_SHA256[(2, 64, 4, 50257, 50304, 1024, 42)]
    assert hashlib.sha256(body).hexdigest() == want and want in stdout


def test_init_bf16_is_rne_of_fp32(tmp_path, capsys):
    cfg = GPTConfig(1, 8, 2, 100, 128, 4)
    out = tmp_path / "m16.bin"
    assert run(capsys, "init", "--layers", "1", "--channels", "8", "--heads", "2", "--vocab",
               "100", "--max-seq-len", "4", "--seed", "3", "--dtype", "bf16", "-o", str(out))[0] == 0
    with open_checkpoint(out) as ck:
        assert ck.header.version == 5
        bits = np.array(ck.flat)
    f32 = init_params(cfg, 3).view(np.uint32).astype(np.uint64)
    rne = ((f32 + 0x7FFF + ((f32 >> 16) & 1)) >> 16).astype(np.uint16)  # no NaNs here
    assert np.array_equal(bits, rne)


def test_init_torch_profile_and_seed(tmp_path, capsys):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    assert run(capsys, "init", *SMALL, "--profile", "torch", "-o", str(a))[0] == 0
    assert run(capsys, "init", *SMALL, "--seed", "1337", "-o", str(b))[0] == 0
    body = b.read_bytes()[1024:]
    assert hashlib.sha256(body).hexdigest() == LLMC_SHA256[(2, 64, 4, 50257, 50304, 1024, 1337)]
    assert a.read_bytes() != b.read_bytes()


@pytest.mark.parametrize("argv,needle", [
    (["init", "d13", "-o", "X"], "no GPT-2 descriptor d13"),
    (["init", "gpt9", "-o", "X"], "unknown model descriptor"),
    (["init", "--layers", "2", "--channels", "10", "--heads", "3", "-o", "X"], "not divisible"),
    (["init", "--layers", "0", "--channels", "8", "--heads", "2", "-o", "X"], "positive"),
    (["init", "--layers", "2", "--channels", "8", "--heads", "2", "--vocab", "100",
      "--padded-vocab", "50", "-o", "X"], "padded_vocab=50 is smaller"),
    (["init", "--layers", "2", "--channels", "300000", "--heads", "2", "-o", "X"], "at most"),
    (["init", "--layers", "2", "-o", "X"], "all of --layers"),
    (["init", "d12", "--layers", "2", "-o", "X"], "not both"),
    (["init", "d6", "--seed", "-1", "-o", "X"], "--seed -1 out of range"),
    (["init", "d6"], "required"),
    (["frobnicate"], "invalid choice"),
    ([], "the following arguments are required: command (see gpt2-verify --help)"),
    (["golden", "check", "nope"], "unknown golden name"),
])
def test_bad_usage_exit_2_one_line(capsys, tmp_path, argv, needle):
    argv = [str(tmp_path / a) if a == "X" else a for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert err.count("gpt2-verify") <= 2 and not err.startswith("gpt2-verify: error: gpt2-verify")
    assert not (tmp_path / "X").exists()


def test_stats_table_and_json(tmp_path, capsys):
    out, js = tmp_path / "m.bin", tmp_path / "s.json"
    run(capsys, "init", *SMALL, "-o", str(out))
    code, stdout, _ = run(capsys, "stats", str(out), "--json", str(js))
    assert code == 0 and "fcprojw" in stdout
    data = json.loads(js.read_text())
    assert data["tensors"]["ln1w"]["mean"] == 1.0 and data["tensors"]["ln1w"]["std"] == 0.0
    assert abs(data["tensors"]["fcw"]["std"] - 0.02) < 1e-4
    assert abs(data["tensors"]["fcprojw"]["std"] - 0.01) < 1e-4  # 0.02/sqrt(2*2)

    code, stdout, _ = run(capsys, "stats", str(out), "--json", "-")
    assert code == 0 and json.loads(stdout)["config"]["layers"] == 2  # stdout is the JSON alone


def test_stats_bad_files_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00" * 100)
    code, _, err = run(capsys, "stats", str(bad))
    assert code == 2 and str(bad) in err and err.count("\n") == 1
    lying = tmp_path / "lying.bin"
    lying.write_bytes(header_bytes(GPTConfig(48, 1600, 25)) + b"\x00" * 64)
    code, _, err = run(capsys, "stats", str(lying))
    assert code == 2 and "truncated" in err


def test_stats_nan_is_a_failed_check(tmp_path, capsys):
    cfg = GPTConfig(1, 4, 1, 5, 5, 1)
    flat = init_params(cfg)
    flat[3] = np.nan
    path = tmp_path / "nan.bin"
    path.write_bytes(header_bytes(cfg) + flat.astype("<f4").tobytes())
    code, stdout, _ = run(capsys, "stats", str(path))
    assert code == 1 and "NaN/Inf" in stdout


def test_existing_output_untouched_on_failure(tmp_path, capsys):
    out = tmp_path / "keep.bin"
    out.write_bytes(b"precious")
    code, _, _ = run(capsys, "init", "--layers", "2", "--channels", "9", "--heads", "2",
                     "-o", str(out))
    assert code == 2 and out.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["keep.bin"]


def test_checksum_command_json(tmp_path, capsys):
    js = tmp_path / "c.json"
    code, _, _ = run(capsys, "checksum", *SMALL, "--seed", "0", "--json", str(js))
    assert code == 0
    data = json.loads(js.read_text())
    assert data["schema"] == "gpt2-verify/checksum/1"
    assert data["sha256_fp32"] == LLMC_SHA256[(2, 64, 4, 50257, 50304, 1024, 0)]


def test_init_checks_free_space_before_writing(tmp_path, capsys, monkeypatch):
    """gpt3:c12288 is ~700 GB: refused at once on a disk with less free (a faked disk_usage, so
    nothing large is ever written), naming the size and the free space."""
    import collections
    import shutil

    from gpt2_verify.reference.config import from_descriptor
    from gpt2_verify.verify.formats.checkpoint import expected_size

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 10**12 - 5 * 2**30, 5 * 2**30))
    out = tmp_path / "big.bin"
    code, _, err = run(capsys, "init", "gpt3:c12288", "-o", str(out))
    need = expected_size(from_descriptor("gpt3:c12288"), "fp32")
    assert code == 2 and err.count("\n") == 1 and str(out) in err
    assert f"needs {need:,} bytes" in err and "5.0 GiB) free" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # a file that fits is written as before
    code, _, _ = run(capsys, "init", *SMALL, "--vocab", "100", "--max-seq-len", "16", "-o",
                     str(tmp_path / "small.bin"))
    assert code == 0 and (tmp_path / "small.bin").stat().st_size < 5 * 2**30


def test_checksum_json_to_a_file_still_prints_the_digests(tmp_path, capsys):
    js = tmp_path / "c.json"
    code, out, _ = run(capsys, "checksum", *SMALL, "--seed", "0", "--json", str(js))
    digest = LLMC_SHA256[(2, 64, 4, 50257, 50304, 1024, 0)]
    assert code == 0 and f"sha256 fp32 {digest}" in out and f"wrote {js}" in out
    code, out, _ = run(capsys, "checksum", *SMALL, "--seed", "0", "--json", "-")
    assert code == 0 and json.loads(out)["sha256_fp32"] == digest  # '-': stdout carries only the JSON


def test_golden_check_command(capsys):
    code, stdout, _ = run(capsys, "golden", "check", "tiny-L1-C2", "odd-L3-C9")
    assert code == 0 and stdout.count("ok") == 2


def test_python_dash_m_and_console_script_exit_codes(tmp_path):
    res = subprocess.run([sys.executable, "-m", "gpt2_verify", "stats", str(tmp_path / "none.bin")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "none.bin" in res.stderr and "Traceback" not in res.stderr


def test_params_table_counts_and_hf_layout(capsys):
    code, out, _ = run(capsys, "params", "d12", "--layout", "hf")
    assert code == 0
    assert "124,475,904 as llm.c stores them" in out
    assert "123,689,472 nanoGPT non-embedding" in out  # nanoGPT prints 123.69M for d12
    assert "transformer.h.{i}.attn.c_attn.weight (768x2304)" in out  # Conv1D: (in, out)
    code, out, _ = run(capsys, "params", "d12", "--layout", "nanogpt")
    assert "transformer.h.{i}.attn.c_attn.weight (2304x768)" in out  # nn.Linear: (out, in)
