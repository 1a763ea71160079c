#!/usr/bin/env bash
# Judge llm.c's CUDA binaries on a GPU machine: build test_gpt2cu and train_gpt2cu (PRECISION=BF16,
# llm.c's default, and PRECISION=FP32) from an llm.c checkout in scratch copies, then run
# `gpt2-verify llmc` on each build. No llm.c code lives here: the checkout is an argument.
#
#   benchmarks/device_llmc.sh LLMC_SRC [OUT_DIR]
#
# LLMC_SRC: a karpathy/llm.c checkout (tested at f1e2ace); it is copied, never built in place.
# OUT_DIR:  where the reports go ($OUT when set, else /tmp/gpt2v-device): llmc_{bf16,fp32}.txt and
#           .json (the verdict tables), build_{BF16,FP32}.log, toolchain.txt.
# Needs: nvcc (PATH or /usr/local/cuda/bin; without it: install the CUDA toolkit matching the
# driver, e.g. `apt-get install cuda-toolkit-12-4`, or put its bin/ on PATH), make, a C++
# compiler, python3 (or $PYTHON) with numpy and torch (CPU torch is enough: the reference runs on the CPU).
# Takes ~3-5 minutes: two builds in parallel (nvcc --threads=0), then ~10 s of runs per precision.
# Exit status: 0 both verdicts pass, 1 a check failed, 3 the toolchain is missing.
set -uo pipefail

src=${1:?usage: benchmarks/device_llmc.sh LLMC_SRC [OUT_DIR]}
out=${2:-${OUT:-/tmp/gpt2v-device}}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a "$out/toolchain.txt"; }

[ -f "$src/train_gpt2.cu" ] && [ -f "$src/test_gpt2.cu" ] || { echo "$src: not an llm.c checkout (no train_gpt2.cu)"; exit 3; }
nvcc_bin=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null | head -1)
if [ -z "$nvcc_bin" ]; then
  echo "nvcc not found on PATH or in /usr/local/cuda/bin: install the CUDA toolkit (e.g. apt-get install" \
       "cuda-toolkit-12-4) or put its bin/ on PATH, then rerun" | tee -a "$out/toolchain.txt"
  exit 3
fi
export PATH="$(dirname "$nvcc_bin"):$PATH"
command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: this machine has no NVIDIA driver/GPU" | tee -a "$out/toolchain.txt"; exit 3; }
py=${PYTHON:-python3}
{ nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader
  "$nvcc_bin" --version | tail -2; "$py" --version; } 2>&1 | tee -a "$out/toolchain.txt"
if ! "$py" -c "import numpy, torch; print('numpy', numpy.__version__, 'torch', torch.__version__)" \
     2>&1 | tee -a "$out/toolchain.txt"; then
  echo "$py needs numpy and torch (pip install numpy torch; or PYTHON=/path/to/python)" | tee -a "$out/toolchain.txt"
  exit 3
fi

# gpt2_verify importable without installing: the package's folders linked under one name
farm=$(mktemp -d /tmp/gpt2v-farm.XXXXXX)
mkdir -p "$farm/gpt2_verify"
for f in "$root"/src/gpt2_verify/*; do ln -s "$f" "$farm/gpt2_verify/"; done
for d in verify reference golden; do ln -s "$root/$d" "$farm/gpt2_verify/$d"; done
export PYTHONPATH="$farm"

work=$(mktemp -d /tmp/llmc-build.XXXXXX)
log "building test_gpt2cu train_gpt2cu (BF16 and FP32) in $work"
for p in BF16 FP32; do
  cp -r "$src" "$work/$p"
  # built binaries in the checkout (the CPU ones were built for another machine) would run too
  rm -f "$work/$p"/test_gpt2 "$work/$p"/train_gpt2 "$work/$p"/test_gpt2cu "$work/$p"/train_gpt2cu \
        "$work/$p"/test_gpt2fp32cu "$work/$p"/build/*.o
  ( cd "$work/$p" && make PRECISION=$p test_gpt2cu train_gpt2cu >"$out/build_$p.log" 2>&1 ) &
done
wait
for p in BF16 FP32; do
  if [ ! -x "$work/$p/test_gpt2cu" ] || [ ! -x "$work/$p/train_gpt2cu" ]; then
    log "build $p failed:"; tail -20 "$out/build_$p.log"
  fi
done
log "builds done"

status=0
for p in bf16 fp32; do
  P=$(echo "$p" | tr a-z A-Z)
  [ -x "$work/$P/test_gpt2cu" ] || { status=1; continue; }
  log "gpt2-verify llmc --bin-dir $work/$P --precision $p"
  "$py" -m gpt2_verify llmc --bin-dir "$work/$P" --precision "$p" --timeout 120 \
      --json "$out/llmc_$p.json" >"$out/llmc_$p.txt" 2>&1
  rc=$?
  tail -n 45 "$out/llmc_$p.txt"
  [ "$rc" -eq 0 ] || status=1
done
log "done (exit $status)"
exit $status
