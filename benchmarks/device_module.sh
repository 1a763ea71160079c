#!/usr/bin/env bash
# `gpt2-verify module` for the real peers on CUDA in fp32 (TF32 off), TF32 and bf16 autocast, and
# how much of each (derived) CUDA tolerance table the correct peers use.
#
#     bash benchmarks/device_module.sh          # from the repository root, on a machine with a GPU
#
# Self-contained: serves this checkout as `gpt2_verify` (no install), needs python3 with torch and
# numpy; the Hugging Face peers run when transformers is importable and are skipped otherwise.
# Peers: tests/module_peers.py (train_gpt2.py's GPT FLASH 0/1, GPT2LMHeadModel eager/sdpa, and
# nanoGPT, which must fail naming its GELU). About 1-2 minutes on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .dev/gpt2_verify
for f in src/gpt2_verify/*; do ln -sfn "$PWD/$f" ".dev/gpt2_verify/$(basename "$f")"; done
for d in verify reference golden; do ln -sfn "$PWD/$d" ".dev/gpt2_verify/$d"; done
export PYTHONPATH="$PWD/.dev:$PWD" PYTHONUNBUFFERED=1
python3 -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else ''); sys.exit(0 if torch.cuda.is_available() else 3)" || { echo "no CUDA device"; exit 3; }
peers="llmc_gpt llmc_gpt_flash nanogpt"
if python3 -c "import transformers" 2>/dev/null; then peers="$peers hf_eager hf_sdpa"; else echo "transformers not installed: HF peers skipped"; fi
summary='import json, sys
r = json.load(sys.stdin)
cs = r["checks"] + r["steps"]["checks"]
w = max(cs, key=lambda c: c["used_percent"] if c["used_percent"] is not None else 1e300)
u = "NaN" if w["used_percent"] is None else "%.3g%%" % w["used_percent"]
cause = (r["cause"] or {}).get("text", "")
print("%-4s %-15s %s  max used %s (%s)  %s" % (r["precision"], sys.argv[1], r["verdict"].upper(), u, w["quantity"], cause[:90]))
if r["margins"]:
    print("     margins: " + ", ".join("%s %.3gx" % kv for kv in r["margins"].items() if kv[1] is not None))'
for dtype in fp32 tf32 bf16; do
  for peer in $peers; do
    margins=""; [ "$peer" = llmc_gpt ] && margins="--margins"
    python3 -m gpt2_verify module "tests/module_peers.py:$peer" --device cuda --dtype "$dtype" $margins --json - \
      | python3 -c "$summary" "$peer"
  done
done
python3 benchmarks/measure_module_tolerances.py --device cuda --dtypes fp32,tf32,bf16 --seeds 0,1
