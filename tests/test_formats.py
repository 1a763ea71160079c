"""Model-file readers: every format and layout gives back the reference tensors bit for bit, and
every malformed input is one InputError naming the file and the problem."""

from __future__ import annotations

import json
import os
import struct
import zipfile

import numpy as np
import pytest
from gpt2_verify.reference.bf16 import bf16_bits_to_f32, f32_to_bf16_bits
from gpt2_verify.reference.config import GPTConfig
from gpt2_verify.reference.init import init_tensors
from gpt2_verify.verify.errors import InputError
from gpt2_verify.verify.formats.layouts import state_dict_key
from gpt2_verify.verify.formats.model import detect_format, model_from_mapping, open_model

torch = pytest.importorskip("torch")
CFG = GPTConfig(2, 16, 2, vocab=100, max_seq_len=8)  # Vp 128
REF = init_tensors(CFG, 42)


def state_dict(*, layout="nanogpt", rows=None, prefix="", lm_head=None) -> dict:
    """The reference under train_gpt2.py / nanoGPT (or Hugging Face) keys, as torch tensors."""
    out = {}
    for spec in CFG.tensors():
        for i in range(CFG.layers) if spec.per_layer else [None]:
            a = REF[spec.name] if i is None else REF[spec.name][i]
            if spec.name == "wte":
                a = a[: rows or CFG.vocab]
            if layout == "hf" and spec.name in ("qkvw", "attprojw", "fcw", "fcprojw"):
                a = a.T
            out[prefix + state_dict_key(spec.name, i)] = torch.from_numpy(np.ascontiguousarray(a))
    if lm_head == "tied":
        out[prefix + "lm_head.weight"] = out[prefix + "transformer.wte.weight"]
    elif lm_head == "separate":
        out[prefix + "lm_head.weight"] = torch.randn(CFG.vocab, CFG.channels)
    return out


def assert_reference(model, rows=None):
    assert (model.config.layers, model.config.channels, model.config.vocab, model.config.max_seq_len) == (
        CFG.layers, CFG.channels, CFG.vocab, CFG.max_seq_len)
    for spec in CFG.tensors():
        want = REF[spec.name][: rows or CFG.vocab] if spec.name == "wte" else REF[spec.name]
        got = model.tensor(spec.name)
        assert got.dtype == np.float32 and got.shape == want.shape, spec.name
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), spec.name
        chunks = np.concatenate(list(model.iter_chunks(spec.name, 7)))
        assert np.array_equal(chunks.view(np.uint32), want.reshape(-1).view(np.uint32)), spec.name
        n = want.size
        for start in sorted(x for x in {1, 5, n // 2 + 3, n - 1} if 0 < x < n):  # within, across layers
            tail = np.concatenate(list(model.iter_chunks(spec.name, 7, start=start)))
            assert np.array_equal(tail.view(np.uint32), want.reshape(-1)[start:].view(np.uint32)), \
                (spec.name, start)


# ---- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict_nested", "orig_mod", "ddp_compile"])
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_state_dicts(tmp_path, wrap, zip_format):
    prefix = {"orig_mod": "_orig_mod.", "ddp_compile": "module._orig_mod."}.get(wrap, "")
    sd = state_dict(prefix=prefix, lm_head="tied")
    obj = {"plain": sd, "model": {"model": sd, "iter_num": 5, "config": {"n_layer": 2}},
           "state_dict_nested": {"checkpoint": 1, "state_dict": {"model": sd}}}.get(wrap, sd)
    path = tmp_path / "m.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    assert detect_format(path) == "torch"
    model = open_model(path)
    assert model.layout == "nanogpt" and model.lm_head == "tied" and model.heads_assumed
    assert model.sources["qkvw"] == [f"transformer.h.{i}.attn.c_attn.weight" for i in range(2)]
    assert not model.missing and not model.extra
    assert_reference(model)


def test_hf_layout_is_transposed_back(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(state_dict(layout="hf"), path)
    model = open_model(path)
    assert model.layout == "hf" and model.lm_head == "absent"
    assert_reference(model)


def test_padded_wte_rows_and_lm_head_kinds():
    m = model_from_mapping(state_dict(rows=CFG.padded_vocab), config=CFG)
    assert m.wte_rows == CFG.padded_vocab
    assert_reference(m, rows=CFG.padded_vocab)
    sd = state_dict()
    sd["lm_head.weight"] = sd["transformer.wte.weight"].clone()
    assert model_from_mapping(sd).lm_head == "equal"
    m = model_from_mapping(state_dict(lm_head="separate"))
    assert m.lm_head == "separate" and m.lm_head_tensor().shape == (CFG.vocab, CFG.channels)


def test_llmc_names_in_npz(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, **REF)
    assert detect_format(path) == "npz"
    model = open_model(path)
    assert model.layout == "llmc" and model.wte_rows == CFG.padded_vocab
    assert_reference(model, rows=CFG.padded_vocab)


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_safetensors_and_dtypes(tmp_path, dtype):
    from safetensors.torch import save_file
    tdtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    sd = {k: v.to(tdtype).contiguous() for k, v in state_dict().items()}
    path = tmp_path / "model.safetensors"
    save_file(sd, path)
    model = open_model(path)
    assert model.format == "safetensors" and model.dtype == dtype
    want = REF["qkvw"]
    if dtype == "bf16":
        want = bf16_bits_to_f32(f32_to_bf16_bits(want))
    elif dtype == "fp16":
        want = want.astype(np.float16).astype(np.float32)
    assert np.array_equal(model.tensor("qkvw"), want)


def test_hugging_face_directory(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is an optional test dependency")
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=100,
                                                              n_positions=8))
    hf.save_pretrained(tmp_path / "hf")
    model = open_model(tmp_path / "hf")
    assert model.layout == "hf" and model.lm_head == "tied" and not model.heads_assumed
    assert (model.config.layers, model.config.channels, model.config.heads, model.config.vocab,
            model.config.max_seq_len) == (2, 16, 2, 100, 8)
    assert not model.missing and not model.extra, (model.missing, model.extra)
    c_attn = hf.transformer.h[1].attn.c_attn.weight.detach().numpy()
    assert np.array_equal(model.tensor("qkvw")[1], c_attn.T)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg["n_layer"] = 3
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="n_layer=3"):
        open_model(tmp_path / "hf")


def test_checkpoint_reads_stream(tmp_path):
    from gpt2_verify.verify.formats.checkpoint import write_checkpoint_array
    flat = np.concatenate([REF[s.name].reshape(-1) for s in CFG.tensors()])
    write_checkpoint_array(tmp_path / "m.bin", CFG, flat, "bf16")
    model = open_model(tmp_path / "m.bin")
    assert model.format == "llmc" and model.dtype == "bf16"
    assert np.array_equal(model.tensor("fcw"), bf16_bits_to_f32(f32_to_bf16_bits(REF["fcw"])))


# ---- damaged and hostile inputs ---------------------------------------------------------------

def _safetensors(tmp_path, header: dict | bytes, data: bytes = b"", length: int | None = None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _bad(tmp_path, kind):
    """(path, text the error must contain)"""
    if kind == "huge-header":
        return _safetensors(tmp_path, b"{}", length=2**60), "header length"
    if kind == "invalid-json":
        return _safetensors(tmp_path, b"{not json"), "not valid JSON"
    if kind == "unknown-dtype":
        entry = {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}
        return _safetensors(tmp_path, {"transformer.wte.weight": entry}, b"\0" * 16), "I64"
    if kind == "out-of-range":
        return _safetensors(tmp_path, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                            b"\0" * 8), "outside the data area"
    if kind == "overlap":
        return _safetensors(tmp_path, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                       "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
                            b"\0" * 12), "overlap"
    if kind == "wrong-size":
        return _safetensors(tmp_path, {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                            b"\0" * 8), "needs 12"
    if kind == "npz-object":
        path = tmp_path / "bad.npz"
        np.savez(path, wte=np.array([{"a": 1}], dtype=object))
        return path, "object dtype refused"
    if kind == "truncated-zip":
        path = tmp_path / "m.pt"
        torch.save(state_dict(), path)
        path.write_bytes(path.read_bytes()[:4000])
        return path, "zip"
    if kind == "malicious-pickle":
        marker = tmp_path / "executed"

        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))
        path = tmp_path / "evil.pt"
        torch.save({"transformer.wte.weight": Evil()}, path, _use_new_zipfile_serialization=False)
        return path, "nothing was executed"
    if kind == "missing-tensor":
        sd = state_dict()
        del sd["transformer.wpe.weight"]
        sd = {k: v for k, v in sd.items() if "wte" not in k}
        path = tmp_path / "m.pt"
        torch.save(sd, path)
        return path, "wte is missing"
    if kind == "int-tensor":
        sd = state_dict()
        sd["transformer.wte.weight"] = torch.zeros(100, 16, dtype=torch.int64)
        path = tmp_path / "m.pt"
        torch.save(sd, path)
        return path, "floating point"
    if kind == "not-a-model":
        path = tmp_path / "notes.txt"
        path.write_text("hello " * 100)
        return path, "cannot tell the format"
    if kind == "other-llmc-file":
        path = tmp_path / "state.bin"
        path.write_bytes(struct.pack("<256i", 20240327, 2, *([0] * 254)))
        return path, "debug state"
    if kind == "no-gpt2-keys":
        path = tmp_path / "m.pt"
        torch.save({"encoder.layer.0.weight": torch.zeros(2)}, path)
        return path, "no GPT-2 tensors"


    if kind == "layer-gap":
        sd = {k.replace(".h.1.", ".h.3."): v for k, v in state_dict().items()}
        path = tmp_path / "m.pt"
        torch.save(sd, path)
        return path, "layer index gap"
    if kind == "complex-tensor":
        sd = state_dict()
        sd["transformer.h.0.ln_1.weight"] = torch.zeros(16, dtype=torch.complex64)
        path = tmp_path / "m.pt"
        torch.save(sd, path)
        return path, "complex64"
    if kind == "truncated-legacy":
        path = tmp_path / "m.pt"
        torch.save(state_dict(), path, _use_new_zipfile_serialization=False)
        path.write_bytes(path.read_bytes()[:3000])
        return path, "not a readable PyTorch file"
    if kind == "hf-dir-lying-config":
        from safetensors.torch import save_file
        (tmp_path / "hf").mkdir()
        save_file(state_dict(layout="hf"), tmp_path / "hf" / "model.safetensors")
        (tmp_path / "hf" / "config.json").write_text(json.dumps({"n_embd": 32, "n_layer": 2}))
        return tmp_path / "hf", "n_embd=32 but the tensors say 16"
    if kind == "hf-dir-empty":
        (tmp_path / "hf").mkdir()
        return tmp_path / "hf", "without model.safetensors or pytorch_model.bin"
    raise AssertionError(kind)


BAD = ["layer-gap", "complex-tensor", "truncated-legacy", "hf-dir-lying-config", "hf-dir-empty",
       "huge-header", "invalid-json", "unknown-dtype", "out-of-range", "overlap", "wrong-size", "npz-object",
       "truncated-zip", "malicious-pickle", "missing-tensor", "int-tensor", "not-a-model", "other-llmc-file",
       "no-gpt2-keys"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_is_one_line_naming_the_file(tmp_path, kind):
    path, text = _bad(tmp_path, kind)
    with pytest.raises(InputError) as e:
        open_model(path)
    msg = str(e.value)
    assert str(path) in msg and text in msg and "\n" not in msg, msg
    assert not (tmp_path / "executed").exists()


@pytest.mark.parametrize("kind", ["huge-header", "malicious-pickle", "truncated-zip", "npz-object"])
def test_bad_input_cli_exit_2(tmp_path, capsys, kind):
    from gpt2_verify.verify.cli import main
    path, text = _bad(tmp_path, kind)
    assert main(["compare", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and text in err


def test_mis_shaped_tensor_is_reported_not_raised():
    sd = state_dict()
    sd["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(7, 5)
    sd["transformer.h.0.attn.c_proj.weight"] = sd["transformer.h.0.attn.c_proj.weight"]  # square: fine
    m = model_from_mapping(sd)
    assert "fcw" in m.unusable and "(7, 5)" in m.unusable["fcw"]


def test_zip_is_npz_or_torch(tmp_path):
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("wte.npy", b"")
    assert detect_format(path) == "npz"


def test_hostile_header_fails_fast_without_allocating(tmp_path):
    import time
    import tracemalloc
    path = _safetensors(tmp_path, b"{}" + b" " * 100, length=2**60)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="header length"):
        open_model(path)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 1 << 20, (elapsed, peak)


def test_transposed_weight_is_reported_and_turned_back():
    """One weight stored (in, out) in a nanoGPT file, layer 0's c_attn included (the layout is a vote
    over all weights, not layer 0's alone): reported, and handed out in llm.c orientation."""
    sd = state_dict()
    for key in ("transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_fc.weight"):
        sd[key] = sd[key].T.contiguous()
    m = model_from_mapping(sd)
    assert m.layout == "nanogpt" and not m.unusable
    assert m.shape_problems == [
        "transformer.h.0.attn.c_attn.weight: stored transposed, shape (16, 48) instead of (48, 16)",
        "transformer.h.1.mlp.c_fc.weight: stored transposed, shape (16, 64) instead of (64, 16)"]
    assert m.shape("qkvw") == (2, 48, 16) and m.shape("fcw") == (2, 64, 16)
    assert_reference(m)


def test_missing_key_is_listed_not_raised():
    sd = state_dict()
    del sd["transformer.h.1.ln_2.bias"]
    m = model_from_mapping(sd)
    assert m.missing == ["transformer.h.1.ln_2.bias"] and "ln2b" not in m.sources and "ln2w" in m.sources
    with pytest.raises(KeyError):
        m.tensor("ln2b")


def test_mapping_wrappers_extra_keys_and_buffers():
    sd = {"module." + k: v for k, v in state_dict().items()}
    sd["module.transformer.h.0.attn.bias"] = torch.ones(1, 1, 8, 8)  # causal-mask buffer: ignored
    sd["module.transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    sd["module.value_head.weight"] = torch.zeros(3)
    m = model_from_mapping({"model_state_dict": sd, "epoch": 3, "optimizer": {"lr": 1e-3}})
    assert m.layout == "nanogpt" and m.extra == ["value_head.weight"]
    assert_reference(m)
    with pytest.raises(InputError, match="unknown layout 'gpt'"):
        model_from_mapping(state_dict(), layout="gpt")


def test_hf_directory_with_torch_bin_and_npz_state_dict_keys(tmp_path):
    (tmp_path / "hf").mkdir()
    torch.save(state_dict(layout="hf"), tmp_path / "hf" / "pytorch_model.bin")
    (tmp_path / "hf" / "config.json").write_text(json.dumps(
        {"n_layer": 2, "n_embd": 16, "n_head": 4, "vocab_size": 100, "n_positions": 8,
         "tie_word_embeddings": False}))
    m = open_model(tmp_path / "hf")
    assert (m.format, m.layout, m.config.heads, m.heads_assumed) == ("torch", "hf", 4, False)
    assert m.lm_head == "absent"  # untied in config.json and no lm_head.weight stored
    assert_reference(m)
    path = tmp_path / "m.npz"
    np.savez(path, **{k: v.numpy().astype(np.float64) for k, v in state_dict().items()})
    m = open_model(path)
    assert (m.format, m.layout, m.dtype) == ("npz", "nanogpt", "fp64")
    assert_reference(m)  # float32 -> float64 -> float32 is exact


def test_mixed_dtypes_report_the_widest():
    sd = state_dict()
    sd["transformer.wpe.weight"] = sd["transformer.wpe.weight"].to(torch.bfloat16)
    m = model_from_mapping(sd)
    assert m.dtype == "fp32" and m.dtypes["wpe"] == "bf16" and m.dtypes["wte"] == "fp32"
    assert np.array_equal(m.tensor("wpe"), bf16_bits_to_f32(f32_to_bf16_bits(REF["wpe"])))
