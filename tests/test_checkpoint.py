"""llm.c model checkpoint format: round trips, bf16 rounding, every validation error, writer."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest
from gpt2_verify.reference.bf16 import bf16_bits_to_f32, f32_to_bf16_bits
from gpt2_verify.reference.config import GPTConfig, parameter_table
from gpt2_verify.verify.errors import InputError
from gpt2_verify.verify.formats.checkpoint import (
    HEADER_BYTES,
    MAGIC,
    check_finite,
    header_bytes,
    open_checkpoint,
    read_header,
    write_checkpoint,
    write_checkpoint_array,
)

SMALL = GPTConfig(2, 8, 2, 10, 16, 4)  # L C NH V Vp maxT
TINY = GPTConfig(1, 4, 1, 5, 5, 1)
CONFIGS = [SMALL, TINY]


def f32(*bits: int) -> np.ndarray:
    return np.array(bits, dtype=np.uint32).view(np.float32)


def body(cfg: GPTConfig, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(cfg.num_params_padded).astype(np.float32)


def header_ints(cfg: GPTConfig = SMALL, dtype: str = "fp32") -> np.ndarray:
    return np.frombuffer(header_bytes(cfg, dtype), dtype="<i4").copy()


def write_raw(path, ints, body_bytes: int | None = None, cfg: GPTConfig = SMALL) -> None:
    if body_bytes is None:
        body_bytes = cfg.num_params_padded * 4
    path.write_bytes(np.asarray(ints, dtype="<i4").tobytes() + b"\0" * body_bytes)


# ---- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS, ids=["small", "tiny"])
def test_round_trip_fp32(tmp_path, cfg):
    path = tmp_path / "m.bin"
    flat = body(cfg)
    # uneven chunks, including an empty one and a 2-D one
    write_checkpoint(path, cfg, [flat[:3], flat[3:3], flat[3:11].reshape(2, 4), flat[11:]])
    assert path.stat().st_size == HEADER_BYTES + 4 * cfg.num_params_padded
    h = np.fromfile(path, dtype="<i4", count=256)
    assert list(h[:8]) == [MAGIC, 3, cfg.max_seq_len, cfg.vocab, cfg.layers, cfg.heads,
                           cfg.channels, cfg.padded_vocab]
    assert not h[8:].any()

    hdr = read_header(path)
    assert (hdr.version, hdr.dtype, hdr.config) == (3, "fp32", cfg)
    assert hdr.nbytes_expected == path.stat().st_size
    with open_checkpoint(path) as ckpt:
        assert ckpt.dtype == "fp32" and ckpt.config == cfg and ckpt.header == hdr
        np.testing.assert_array_equal(ckpt.flat, flat)
        seen = []
        for spec, arr in ckpt.tensors():
            seen.append(spec.name)
            assert arr.shape == spec.shape and arr.dtype == np.float32
            np.testing.assert_array_equal(arr.reshape(-1),
                                          flat[spec.offset:spec.offset + spec.numel])
            np.testing.assert_array_equal(ckpt.tensor_f32(spec.name), arr)
        assert seen == [s.name for s in parameter_table(cfg)]
        with pytest.raises(ValueError, match="read-only"):
            ckpt.tensor("wte")[0, 0] = 1.0
        with pytest.raises(KeyError):
            ckpt.tensor("nope")
    with pytest.raises(ValueError, match="closed"):
        _ = ckpt.flat


@pytest.mark.parametrize("cfg", CONFIGS, ids=["small", "tiny"])
def test_round_trip_bf16(tmp_path, cfg):
    flat = body(cfg, seed=1)
    bits = f32_to_bf16_bits(flat)
    a, b = tmp_path / "from_f32.bin", tmp_path / "from_bits.bin"
    write_checkpoint_array(a, cfg, flat, "bf16")
    write_checkpoint(b, cfg, [bits[:5], flat[5:]], "bf16")  # mixed chunk kinds
    for path in (a, b):
        assert path.stat().st_size == HEADER_BYTES + 2 * cfg.num_params_padded
        h = np.fromfile(path, dtype="<i4", count=8)
        assert h[1] == 5
        with open_checkpoint(path) as ckpt:
            assert ckpt.dtype == "bf16" and ckpt.header.version == 5 and ckpt.config == cfg
            assert ckpt.flat.dtype == np.uint16
            np.testing.assert_array_equal(ckpt.flat, bits)
            for spec, arr in ckpt.tensors():
                assert arr.shape == spec.shape and arr.dtype == np.uint16
                vals = ckpt.tensor_f32(spec.name)
                assert vals.dtype == np.float32 and vals.shape == spec.shape
                np.testing.assert_array_equal(
                    vals.reshape(-1),
                    bf16_bits_to_f32(bits[spec.offset:spec.offset + spec.numel]))
    assert a.read_bytes() == b.read_bytes()


def test_writer_rejects_wrong_dtypes(tmp_path):
    with pytest.raises(TypeError):
        write_checkpoint_array(tmp_path / "a", TINY, np.zeros(TINY.num_params_padded), "fp32")
    with pytest.raises(TypeError):
        write_checkpoint_array(tmp_path / "a", TINY, np.zeros(TINY.num_params_padded, np.int16),
                               "bf16")
    with pytest.raises(ValueError, match="dtype"):
        write_checkpoint_array(tmp_path / "a", TINY, body(TINY), "fp16")
    assert list(tmp_path.iterdir()) == []


# ---- bf16 rounding ----------------------------------------------------------------------------

@pytest.mark.parametrize("src, want", [
    (0x3F800000, 0x3F80),  # 1.0 exact
    (0x3F808000, 0x3F80),  # tie, even below: down
    (0x3F818000, 0x3F82),  # tie, odd below: up
    (0x3F808001, 0x3F81),  # just above a tie: up
    (0x3F807FFF, 0x3F80),  # just below a tie: down
    (0x3F817FFF, 0x3F81),
    (0x3F818001, 0x3F82),
    (0xBF808000, 0xBF80),  # negative ties behave the same on magnitude
    (0xBF818000, 0xBF82),
    (0xBF808001, 0xBF81),
    (0xBF807FFF, 0xBF80),
    (0x3FFF8000, 0x4000),  # carry into the exponent
    (0x00000000, 0x0000),  # +0
    (0x80000000, 0x8000),  # -0
    (0x00000001, 0x0000),  # smallest subnormal rounds to 0
    (0x00008000, 0x0000),  # subnormal tie, even: down
    (0x00018000, 0x0002),  # subnormal tie, odd: up
    (0x00008001, 0x0001),
    (0x80018000, 0x8002),  # negative subnormal
    (0x007FFFFF, 0x0080),  # largest subnormal rounds up to the smallest normal
    (0x7F800000, 0x7F80),  # +inf
    (0xFF800000, 0xFF80),  # -inf
    (0x7F7F0000, 0x7F7F),  # largest finite bf16 stays
    (0x7F7F7FFF, 0x7F7F),  # below the tie to "next" stays finite
    (0x7F7F8000, 0x7F80),  # tie, odd: rounds to inf
    (0x7F7FFFFF, 0x7F80),  # float32 max -> inf
    (0xFF7FFFFF, 0xFF80),  # -float32 max -> -inf
])
def test_bf16_rounding(src, want):
    got = f32_to_bf16_bits(f32(src))
    assert got.dtype == np.uint16 and got.shape == (1,)
    assert int(got[0]) == want, f"{src:#010x} -> {int(got[0]):#06x}, want {want:#06x}"


@pytest.mark.parametrize("src", [0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FFFFFFF, 0xFFFFFFFF,
                                 0x7F810000, 0xFF800001])
def test_bf16_nan_stays_nan(src):
    got = int(f32_to_bf16_bits(f32(src))[0])
    assert got & 0x7F80 == 0x7F80 and got & 0x007F, f"{src:#010x} -> {got:#06x} is not NaN"
    assert got & 0x0040  # quiet
    assert got >> 15 == src >> 31  # sign kept
    assert np.isnan(bf16_bits_to_f32(np.uint16(got)))


def test_bf16_matches_nearest_even_reference():
    """Against an independent rule: pick the nearer of the two bf16 neighbours, ties even."""
    rng = np.random.default_rng(7)
    src = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    near_max = np.arange(0x7F7F0000, 0x7F800000, 37, dtype=np.uint32)
    src = np.concatenate([src, near_max, near_max | np.uint32(0x80000000)])
    src = src[~np.isnan(src.view(np.float32))]
    x = src.view(np.float32).astype(np.float64)
    lo = (src >> 16).astype(np.uint16)
    hi = lo + np.uint16(1)
    vlo = np.abs(bf16_bits_to_f32(lo).astype(np.float64))
    # a neighbour with an all-ones exponent is inf: treat it as 2**128 (what RNE rounds toward)
    vhi = np.abs(bf16_bits_to_f32(hi).astype(np.float64))
    vhi[(hi & 0x7F80) == 0x7F80] = 2.0**128
    ax = np.abs(x)
    dlo, dhi = ax - vlo, vhi - ax
    up = (dhi < dlo) | ((dhi == dlo) & (lo & 1 == 1))
    up &= ~np.isinf(x)
    want = np.where(up, hi, lo)
    np.testing.assert_array_equal(f32_to_bf16_bits(src.view(np.float32)), want)


def test_bf16_helpers_shapes_and_exact_inverse():
    bits = np.arange(0, 2**16, dtype=np.uint32).astype(np.uint16)
    vals = bf16_bits_to_f32(bits)
    back = f32_to_bf16_bits(vals)
    finite = ~np.isnan(vals)
    np.testing.assert_array_equal(back[finite], bits[finite])  # bf16 values are fixed points
    assert np.isnan(bf16_bits_to_f32(back[~finite])).all()
    m = f32_to_bf16_bits(np.ones((2, 3), np.float32))
    assert m.shape == (2, 3) and (m == 0x3F80).all()
    assert int(f32_to_bf16_bits(np.float32(np.nan))) & 0x7FC0 == 0x7FC0  # 0-d input
    with pytest.raises(TypeError):
        bf16_bits_to_f32(np.array([1, 2], dtype=np.int32))


# ---- validation errors ------------------------------------------------------------------------

def assert_input_error(path, *fragments):
    with pytest.raises(InputError) as info:
        read_header(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg, msg
    assert info.value.source == str(path)
    for frag in fragments:
        assert frag in msg, msg
    with pytest.raises(InputError):  # open_checkpoint validates the same way
        open_checkpoint(path)
    return msg


def test_missing_file(tmp_path):
    assert_input_error(tmp_path / "nope.bin", "no such file")


def test_directory(tmp_path):
    assert_input_error(tmp_path, "directory")


def test_empty_file(tmp_path):
    p = tmp_path / "m.bin"
    p.write_bytes(b"")
    assert_input_error(p, "empty")


def test_truncated_header(tmp_path):
    p = tmp_path / "m.bin"
    p.write_bytes(header_bytes(SMALL)[:1000])
    assert_input_error(p, "1000 bytes", "1024")


def test_wrong_magic(tmp_path):
    p = tmp_path / "m.bin"
    h = header_ints()
    h[0] = 12345
    write_raw(p, h)
    assert_input_error(p, "magic", "12345", str(MAGIC))
    h[0] = 20240527  # llm.c's (and llm.mojo's) optimizer state
    write_raw(p, h)
    assert_input_error(p, "optimizer state", "llm.mojo")


def test_magic_20240520_shard_or_llm_mojo(tmp_path):
    """llm.c gives its token shards magic 20240520 (version 1, 1024 + 2 ntok bytes); llm.mojo its
    model checkpoints (version 3/5): the rest of the header and the size tell them apart."""
    p = tmp_path / "m.bin"
    h = np.zeros(256, dtype="<i4")
    h[:3] = (20240520, 1, 50)
    write_raw(p, h, body_bytes=100)
    assert_input_error(p, "token shard (50 tokens", "not a model checkpoint")
    write_raw(p, h, body_bytes=98)
    assert_input_error(p, "damaged shard", "not a model checkpoint")
    h = header_ints()
    h[:2] = (20240520, 7)
    write_raw(p, h)
    assert_input_error(p, "version 7", "neither an llm.c token shard", "nor an llm.mojo")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_llm_mojo_checkpoint_reads_like_llmc(tmp_path, dtype, capsys):
    """ulmentflam/llm.mojo's model file (llmm/checkpointing.mojo write_model_checkpoint): llm.c's
    header fields and tensor layout under magic 20240520; read value for value, the variant named,
    and graded by compare like an llm.c checkpoint."""
    from gpt2_verify.reference.init import init_tensors
    from gpt2_verify.verify.cli import main

    a, m = tmp_path / "a.bin", tmp_path / "m.bin"
    params = init_tensors(SMALL, 42, "llmc")
    write_checkpoint_array(a, SMALL, np.concatenate([np.asarray(params[t.name], dtype=np.float32).ravel()
                                                    for t in SMALL.tensors()]), dtype)
    raw = bytearray(a.read_bytes())
    raw[:4] = (20240520).to_bytes(4, "little")
    m.write_bytes(bytes(raw))
    ha, hm = read_header(a), read_header(m)
    assert (ha.variant, hm.variant) == ("llm.c", "llm.mojo")
    assert hm.config == ha.config and hm.dtype == dtype
    version = 3 if dtype == "fp32" else 5
    assert hm.describe() == f"llm.mojo checkpoint (magic 20240520, version {version}, {dtype})"
    with open_checkpoint(a) as ca, open_checkpoint(m) as cm:
        for t in SMALL.tensors():
            assert np.array_equal(ca.tensor_f32(t.name), cm.tensor_f32(t.name))
    assert main(["compare", str(m)]) == 0
    assert "read as llm.mojo checkpoint (magic 20240520" in capsys.readouterr().out


def test_unknown_version(tmp_path):
    p = tmp_path / "m.bin"
    h = header_ints()
    h[1] = 4
    write_raw(p, h)
    assert_input_error(p, "version 4", "3 (fp32)", "5 (bf16)")


@pytest.mark.parametrize("slot, name", [(2, "maxT"), (3, "V"), (4, "L"), (5, "NH"), (6, "C"),
                                        (7, "Vp")])
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_field(tmp_path, slot, name, value):
    p = tmp_path / "m.bin"
    h = header_ints()
    h[slot] = value
    write_raw(p, h)
    assert_input_error(p, f"{name} is {value}", "positive")


def test_channels_not_divisible_by_heads(tmp_path):
    p = tmp_path / "m.bin"
    h = header_ints()
    h[5] = 3  # NH=3, C=8
    write_raw(p, h)
    assert_input_error(p, "invalid model", "divisible")


def test_padded_vocab_below_vocab(tmp_path):
    p = tmp_path / "m.bin"
    h = header_ints()
    h[7] = 9  # Vp=9 < V=10
    write_raw(p, h)
    assert_input_error(p, "invalid model", "padded_vocab=9")


def test_gpt3_c5140_uneven_heads_accepted(tmp_path):
    """llm.c's gpt3:c5140 (40 heads, 5140 % 40 != 0) is a real llm.c model: header passes."""
    p = tmp_path / "m.bin"
    h = header_ints()
    h[2:8] = [1, 1, 1, 40, 5140, 1]
    write_raw(p, h, body_bytes=0)
    assert_input_error(p, "truncated")  # got past the config check to the size check


def test_nonzero_unused_slot(tmp_path):
    p = tmp_path / "m.bin"
    h = header_ints()
    h[200] = 7
    write_raw(p, h)
    msg = assert_input_error(p, "header slot 200 is nonzero (7)")
    assert "not an llm.c model file or a newer version" in msg


def test_truncated_body(tmp_path):
    p = tmp_path / "m.bin"
    write_checkpoint_array(p, SMALL, body(SMALL))
    full = p.stat().st_size
    with open(p, "r+b") as fh:
        fh.truncate(full - 4)
    assert_input_error(p, "truncated", str(full), str(full - 4))


def test_trailing_bytes(tmp_path):
    p = tmp_path / "m.bin"
    write_checkpoint_array(p, SMALL, body(SMALL), "bf16")
    full = p.stat().st_size
    with open(p, "ab") as fh:
        fh.write(b"\0\0")
    assert_input_error(p, "trailing bytes", str(full), str(full + 2), "bf16")


def test_fp32_file_claiming_bf16_is_a_size_error(tmp_path):
    p = tmp_path / "m.bin"
    write_checkpoint_array(p, SMALL, body(SMALL))
    h = header_ints(SMALL, "bf16")
    with open(p, "r+b") as fh:
        fh.write(h.tobytes())
    assert_input_error(p, "trailing bytes")


@pytest.mark.parametrize("fields", [
    [1024, 50257, 12, 16, 2**30, 50304],  # C=2**30: absurd, caught by the config limits
    [1024, 50257, 9000, 16, 1024, 50304],  # valid but ~113G params: caught by the size check
])
def test_lying_header_fails_fast_without_allocating(tmp_path, fields):
    p = tmp_path / "m.bin"
    h = header_ints()
    h[2:8] = fields
    write_raw(p, h, body_bytes=64)
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as info:
            open_checkpoint(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
    msg = str(info.value)
    assert str(p) in msg and "\n" not in msg
    if fields[4] == 1024:
        assert "truncated" in msg


# ---- check_finite -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_check_finite(tmp_path, dtype):
    p = tmp_path / "m.bin"
    flat = body(SMALL)
    write_checkpoint_array(p, SMALL, flat, dtype)
    assert check_finite(p) is None
    spec = {s.name: s for s in parameter_table(SMALL)}["qkvw"]  # (L, 3C, C) = (2, 24, 8)
    flat[spec.offset + 1 * 24 * 8 + 5 * 8 + 3] = np.inf
    flat[spec.offset + 1 * 24 * 8 + 6 * 8] = np.nan  # later: not the one reported
    write_checkpoint_array(p, SMALL, flat, dtype)
    with pytest.raises(InputError) as info:
        check_finite(p)
    msg = str(info.value)
    assert "qkvw[1, 5, 3]" in msg and "inf" in msg and str(p) in msg and "\n" not in msg


# ---- writer failures --------------------------------------------------------------------------

@pytest.mark.parametrize("delta", [-1, 1])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_wrong_count_leaves_nothing(tmp_path, delta, dtype):
    p = tmp_path / "m.bin"
    flat = np.zeros(SMALL.num_params_padded + delta, np.float32)
    with pytest.raises(ValueError, match=str(SMALL.num_params_padded)):
        write_checkpoint_array(p, SMALL, flat, dtype)
    assert list(tmp_path.iterdir()) == []


def test_wrong_count_keeps_existing_file(tmp_path):
    p = tmp_path / "m.bin"
    write_checkpoint_array(p, SMALL, body(SMALL))
    before = p.read_bytes()
    mtime = os.stat(p).st_mtime_ns

    def chunks():
        yield body(SMALL)[:100]
        yield np.zeros(5, np.float32)  # stops short

    with pytest.raises(ValueError, match="too few"):
        write_checkpoint(p, SMALL, chunks())
    with pytest.raises(ValueError, match="too many"):
        write_checkpoint(p, SMALL, [body(SMALL), np.zeros(1, np.float32)])
    assert p.read_bytes() == before and os.stat(p).st_mtime_ns == mtime
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.bin"]


def test_version_1_unpadded_vocab(tmp_path):
    """llm.c's first format, as joshcarp/llm.go writes it (train_gpt2.py write_model: header[1] = 1,
    slots 2-6 only) and nietras/Llm.cs reads it: float32 with wte's V rows, no padding."""
    cfg = GPTConfig(2, 8, 2, 10, 10, 4)  # Vp = V
    values = np.random.default_rng(0).standard_normal(cfg.num_params_padded).astype(np.float32)
    h = np.zeros(256, dtype="<i4")
    h[:7] = (MAGIC, 1, cfg.max_seq_len, cfg.vocab, cfg.layers, cfg.heads, cfg.channels)
    p = tmp_path / "v1.bin"
    p.write_bytes(h.tobytes() + values.tobytes())
    hd = read_header(p)
    assert hd.version == 1 and hd.dtype == "fp32" and hd.config.padded_vocab == 10
    assert hd.describe() == "llm.c checkpoint (magic 20240326, version 1, fp32, vocab unpadded)"
    with open_checkpoint(p) as ck:
        assert np.array_equal(ck.tensor_f32("wte").ravel(), values[:80])
    h[7] = 16
    p.write_bytes(h.tobytes() + values.tobytes())
    assert_input_error(p, "version 1 has no padded vocab", "slot 7 is 16")
