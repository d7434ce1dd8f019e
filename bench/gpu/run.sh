#!/usr/bin/env bash
# One prepared run on a lent GPU machine: proves the CUDA path end to end and measures the GPU rows of
# docs/PERFORMANCE.md (florence-serve on CUDA LibTorch vs transformers on the same card, same weights).
#
#   here:   bench/gpu/kit.sh                  builds .gpu/ (binaries linked against the pinned torch wheel,
#                                             their Debian libraries, pinned Python wheels, images; ~55 MB)
#   there:  bash bench/gpu/run.sh             through the device tool, carrying .gpu; logs and JSON land in
#                                             $OUT (run.log, results.tgz, refreshed after every phase)
#
# The machine there has python3 with torch 2.11.0+cu130 (the wheel .venv pins, so binaries built here load its
# LibTorch), no registry and no gRPC: nothing is built or fetched there. Phases, each under its own timeout,
# later ones skipped once BUDGET_S is spent:
#   1. environment: GPU, driver, torch; the pinned wheels into /tmp/site; lib/torch -> that torch's libraries
#   2. export: seeded random weights of the real config (PRESET, default base), float32 and bfloat16 (float16
#      overflows on random weights: the vision tower gives NaN, in transformers as in ours)
#   3. engine on CUDA: florence2-probe, then florence2-run on one image on cuda and on cpu (token ids compared)
#   4. generate_vs_transformers: florence2-run --device cuda vs transformers generate() on the same GPU, fp32 on
#      both sides (token ids must agree), caption greedy 32 and OD beam 3 128
#   5. baselines_bf16: florence2-server --device cuda (bfloat16 export) under 16 clients vs transformers in
#      bfloat16 one at a time (a) and batched (b), plus the GPU's limits (matmul, bandwidth, vision, step)
#   6. dtype_probe: the graph methods of the float32 and bfloat16 exports timed side by side, top CUDA kernels
#   7. baselines_fp32: the same in float32 on both sides (token ids through the server's batching vs transformers)
#   8. server_invariance: bench/server_throughput.py on CUDA, float32: the same requests one at a time and from
#      16 clients through the server (token ids compared: does batching change an answer on the GPU?)
# PHASES=environment,export,... runs only those (environment and export are what the others need).
# Locally (no GPU), the same script checks itself: DEVICE=cpu PRESET=tiny PYTHON=.venv/bin/python bash bench/gpu/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/florence-gpu-out}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-base}
PYTHON=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-420}
KIT=$PWD/.gpu
WORK=${WORK:-/tmp/florence-gpu-work}
mkdir -p "$OUT" "$WORK/results"
exec > >(tee -a "$OUT/run.log") 2>&1
START=$(date +%s)
FAILED=()
elapsed() { echo $(($(date +%s) - START)); }
pack() { tar -czf "$OUT/results.tgz" -C "$WORK" results 2>/dev/null || true; }
# step NAME TIMEOUT_S CMD...: runs CMD under a timeout unless the budget is spent; records a failure.
step() {
  local name=$1 limit=$2 rc=0
  shift 2
  case ",${PHASES:-all}," in ,all, | *",$name,"*) ;; *) return ;; esac
  echo
  if [ "$(elapsed)" -ge "$BUDGET_S" ]; then echo "== $name: SKIPPED (budget of $BUDGET_S s spent)"; FAILED+=("$name:skipped"); return; fi
  echo "== $name (+$(elapsed) s)"
  timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" || rc=$?  # bash: the phases are functions
  if [ "$rc" -eq 0 ]; then echo "-- $name: ok (+$(elapsed) s)"; else echo "-- $name: FAILED rc=$rc (+$(elapsed) s)"; FAILED+=("$name:$rc"); fi
  pack
}

env_phase() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PYTHON" - <<'PY'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
  if "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' && [ -d "$KIT/whl" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$KIT"/whl/*.whl || return 1
  fi
  local torch_lib
  torch_lib=$("$PYTHON" -c 'import os, torch; print(os.path.dirname(torch.__file__) + "/lib")') || return 1
  ln -sfn "$torch_lib" "$KIT/dist/lib/torch"
  ! ldd "$KIT"/dist/bin/* | grep 'not found'
}

export_phase() {
  local pids=() dtype
  for dtype in float32 bfloat16; do
    "$PYTHON" tools/florence2_export.py --random "$PRESET" --seed 0 --dtype "$dtype" \
      --cache-dir "$KIT/dist/.cache" --out "$WORK/$PRESET-$dtype" >"$WORK/results/export-$dtype.log" 2>&1 &
    pids+=($!)
  done
  local rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  tail -n 2 "$WORK"/results/export-*.log
  return $rc
}

engine_phase() {
  local img=$KIT/images/astronaut.jpg run=$KIT/dist/bin/florence2-run
  "$KIT/dist/bin/florence2-probe" --model "$WORK/$PRESET-float32" --device "$DEVICE" --steps 8 || return 1
  for d in "$DEVICE" cpu; do
    "$run" --model "$WORK/$PRESET-float32" --device "$d" --task od --num-beams 3 --max-new-tokens 64 \
      --min-new-tokens 64 "$img" >"$WORK/results/run-$d.json" || return 1
  done
  "$PYTHON" - "$WORK/results/run-$DEVICE.json" "$WORK/results/run-cpu.json" <<'PY'
import json, sys
a, b = (json.loads(open(p).read().strip().splitlines()[-1]) for p in sys.argv[1:])
same = sum(x == y for x, y in zip(a["token_ids"], b["token_ids"]))
print(f"OD beam 3, 64 tokens, {sys.argv[1].rsplit('-', 1)[1][:-5]} vs cpu: {same}/{len(b['token_ids'])} token ids equal; "
      f"timings {a['timings_ms']} vs {b['timings_ms']}")
sys.exit(0 if a["token_ids"] == b["token_ids"] else 1)
PY
}

export PYTHONPATH=/tmp/site:$KIT/pylib${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 KIT WORK PYTHON DEVICE PRESET
export -f env_phase export_phase engine_phase
step environment 120 env_phase
step export 180 export_phase
step engine 120 engine_phase
step generate_vs_transformers 150 "$PYTHON" bench/generate_vs_transformers.py --model "$WORK/$PRESET-float32" \
  --runner "$KIT/dist/bin/florence2-run" --image "$KIT/images/astronaut.jpg" --device "$DEVICE" \
  --hf-dtype float32 --repeats 3 --threads 8 --out "$WORK/results/generate_${DEVICE}_fp32.json"
step dtype_probe 90 "$PYTHON" bench/gpu/dtype_probe.py "$WORK/$PRESET-float32" "$WORK/$PRESET-bfloat16" \
  --device "$DEVICE"
step baselines_bf16 270 "$PYTHON" bench/baselines.py --model "$WORK/$PRESET-bfloat16" \
  --server-bin "$KIT/dist/bin/florence2-server" --images "$KIT/images" --device "$DEVICE" --hf-dtype bfloat16 \
  --requests 18 --clients 16 --max-batch 16 --batch-sizes 3,6 --threads 8 --null-seconds 0 --skip c \
  --out "$WORK/results/baselines_${DEVICE}_bf16.json"
step baselines_fp32 150 "$PYTHON" bench/baselines.py --model "$WORK/$PRESET-float32" \
  --server-bin "$KIT/dist/bin/florence2-server" --images "$KIT/images" --device "$DEVICE" --hf-dtype float32 \
  --requests 18 --clients 16 --max-batch 16 --batch-sizes 3,6 --threads 8 --null-seconds 0 --skip c \
  --out "$WORK/results/baselines_${DEVICE}_fp32.json"
step server_invariance 120 "$PYTHON" bench/server_throughput.py --model "$WORK/$PRESET-float32" \
  --server-bin "$KIT/dist/bin/florence2-server" --images "$KIT/images" --requests 9 --clients 16 --max-batch 16 \
  --null-seconds 1 --server-flag=--device="$DEVICE" --out "$WORK/results/server_throughput_${DEVICE}_fp32.json"
echo
echo "== done in $(elapsed) s; failed: ${FAILED[*]:-none}"
pack
[ ${#FAILED[@]} -eq 0 ]
