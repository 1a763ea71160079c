"""Benchmark: verify.numerics.model forward+backward against a plain torch GPT-2, in one run.

    python benchmarks/bench_numerics.py [--model d12] [--batch 4] [--seq 64] [--repeat 3]
                                        [--device cpu] [--threads N]

Times one forward+backward (loss and all 16 gradients) on the same weights and tokens:
  R64  verify.numerics.model.forward_backward(dtype="float64")   the judge
  R32  verify.numerics.model.forward_backward(dtype="float32")   the fast path
  M32  a plain torch float32 nn.Module GPT-2 (nn.Linear/LayerNorm/Embedding, tied lm_head,
       F.scaled_dot_product_attention, tanh GELU): what a training script runs
R64/R32 include moving numpy parameters in and gradients out (that is what callers pay);
M32 is timed with its parameters already in the module and gradients left there (set_to_none
between runs). Each figure is the median of --repeat runs after one warm-up. Also prints the
loss of each, as a sanity check that all three compute the same function.
Not a test: figures depend on the machine; compare only ratios from the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt2_verify.reference.config import from_descriptor  # noqa: E402
from gpt2_verify.reference.init import init_tensors  # noqa: E402
from gpt2_verify.verify.numerics.model import forward_backward, random_tokens  # noqa: E402


class Block(nn.Module):
    def __init__(self, C: int, NH: int):
        super().__init__()
        self.nh = NH
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (a.view(B, T, self.nh, C // self.nh).transpose(1, 2) for a in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L: int, C: int, NH: int, V: int, Vp: int, maxT: int):
        super().__init__()
        self.V = V
        self.wte = nn.Embedding(Vp, C)
        self.wpe = nn.Embedding(maxT, C)
        self.h = nn.ModuleList([Block(C, NH) for _ in range(L)])
        self.ln_f = nn.LayerNorm(C)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)[..., :self.V]  # tied lm_head
        return F.cross_entropy(logits.reshape(-1, self.V), targets.reshape(-1))

    @torch.no_grad()
    def load_llmc(self, p: dict[str, np.ndarray]) -> None:
        t = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in p.items()}
        self.wte.weight.copy_(t["wte"])
        self.wpe.weight.copy_(t["wpe"])
        for i, b in enumerate(self.h):
            for mod, w, bias in ((b.ln_1, "ln1w", "ln1b"), (b.c_attn, "qkvw", "qkvb"),
                                 (b.c_proj, "attprojw", "attprojb"), (b.ln_2, "ln2w", "ln2b"),
                                 (b.c_fc, "fcw", "fcb"), (b.mlp_proj, "fcprojw", "fcprojb")):
                mod.weight.copy_(t[w][i])
                mod.bias.copy_(t[bias][i])
        self.ln_f.weight.copy_(t["lnfw"])
        self.ln_f.bias.copy_(t["lnfb"])


def timed(fn, repeat: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="d12")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = from_descriptor(args.model)
    t0 = time.perf_counter()
    params = init_tensors(cfg, 42)
    print(f"{cfg.describe()}  B={args.batch} T={args.seq}  device={args.device}  "
          f"torch threads={torch.get_num_threads()}  (init {time.perf_counter() - t0:.1f} s)")
    x, y = random_tokens(cfg, batch=args.batch, seq=args.seq, seed=0)

    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    r64, fb64 = timed(lambda: forward_backward(cfg, p64, x, y, dtype="float64", device=args.device),
                      args.repeat)
    r32, fb32 = timed(lambda: forward_backward(cfg, params, x, y, dtype="float32", device=args.device),
                      args.repeat)

    model = GPT(cfg.layers, cfg.channels, cfg.heads, cfg.vocab, cfg.padded_vocab, cfg.max_seq_len)
    model.load_llmc(params)
    model.to(args.device)
    xi = torch.from_numpy(x.astype(np.int64)).to(args.device)
    yi = torch.from_numpy(y.astype(np.int64)).to(args.device)

    def step():
        model.zero_grad(set_to_none=True)
        loss = model(xi, yi)
        loss.backward()
        if args.device != "cpu":
            torch.cuda.synchronize()
        return float(loss.detach())

    m32, mloss = timed(step, args.repeat)
    print(f"R64 reference float64  {r64 * 1e3:9.1f} ms   loss {fb64.loss:.9f}")
    print(f"R32 reference float32  {r32 * 1e3:9.1f} ms   loss {fb32.loss:.9f}")
    print(f"M32 nn.Module float32  {m32 * 1e3:9.1f} ms   loss {mloss:.9f}")
    print(f"ratios: R64/M32 {r64 / m32:.2f}   R32/M32 {r32 / m32:.2f}   R64/R32 {r64 / r32:.2f}")


if __name__ == "__main__":
    main()
