"""Progress bar, background pipeline, thread-count independence, table cache integrity."""

from __future__ import annotations

import io

import numpy as np
import pytest
from gpt2_verify.reference import boxmuller_tables, parallel
from gpt2_verify.reference.config import GPTConfig
from gpt2_verify.reference.init import init_params
from gpt2_verify.verify.pipeline import background
from gpt2_verify.verify.progress import Progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_only_on_a_terminal():
    tty, pipe = _Tty(), io.StringIO()
    for stream in (tty, pipe):
        with Progress(100, "init d12", stream=stream) as bar:
            for _ in range(10):
                bar.update(10)
    assert "init d12" in tty.getvalue() and "100.0%" in tty.getvalue()
    assert pipe.getvalue() == ""


def test_background_keeps_order_and_reraises():
    assert list(background(iter(range(1000)), depth=2)) == list(range(1000))

    def broken():
        yield 1
        raise ValueError("boom in producer")

    out = []
    with pytest.raises(ValueError, match="boom in producer"):
        for x in background(broken()):
            out.append(x)
    assert out == [1]


def test_bits_do_not_depend_on_thread_count(monkeypatch):
    cfg = GPTConfig(2, 32, 4, 500, 512, 40)
    monkeypatch.setenv("GPT2_VERIFY_THREADS", "1")
    one = init_params(cfg, 5)
    monkeypatch.setenv("GPT2_VERIFY_THREADS", "3")
    three = init_params(cfg, 5)
    assert np.array_equal(one.view(np.uint32), three.view(np.uint32))
    monkeypatch.setenv("GPT2_VERIFY_THREADS", "x")
    with pytest.raises(ValueError, match="GPT2_VERIFY_THREADS"):
        parallel.threads()


def test_corrupt_table_cache_is_rebuilt(tmp_path, monkeypatch):
    """A cache file that fails its SHA-256 is ignored, never trusted."""
    good = boxmuller_tables.table("radius")
    monkeypatch.setenv("GPT2_VERIFY_CACHE", str(tmp_path))
    path = tmp_path / f"boxmuller-v{boxmuller_tables._CACHE_VERSION}-radius-fma.f32"
    boxmuller_tables._save(path, good)
    assert np.array_equal(boxmuller_tables._load(path, "radius"), good)
    with open(path, "r+b") as fh:  # flip one value
        fh.seek(4 * 12345)
        fh.write(np.float32(1.5).tobytes())
    assert boxmuller_tables._load(path, "radius") is None
    path.write_bytes(b"short")
    assert boxmuller_tables._load(path, "radius") is None


def test_atomic_output_gets_the_mode_open_would_give(tmp_path):
    import os

    from gpt2_verify.verify.atomic import write_text_atomic

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = tmp_path / "atomic.txt"
    write_text_atomic(atomic, "x")
    assert os.stat(atomic).st_mode & 0o777 == os.stat(plain).st_mode & 0o777
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
