#!/usr/bin/env bash
# florence::packed_linear's kernel at a git revision against the working tree's, side by side in one process
# (bench/packed_linear_ab.cc): a decode step's linears, median ms of each and the speed-up, per row count.
#
#   bench/packed_linear_ab.sh REV [ROWS...] [--repeats=21] [--threads=2]
#   e.g. bench/packed_linear_ab.sh e86984e~1 1 3 8 16 32 54
#
# Both kernels are compiled as the project compiles its AVX2 kernel (-O3 -mavx2 -mfma), against the working tree's
# packed_linear_args.h and vec8.h. Needs g++ with OpenMP and git; no Torch.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
rev="${1:?usage: bench/packed_linear_ab.sh REV [ROWS...] [--repeats=N] [--threads=N]}"
shift
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git -C "$repo" show "$rev:engine/ops/packed_linear_kernel.h" > "$work/old_kernel.h"
cp "$repo/engine/ops/packed_linear_kernel.h" "$work/new_kernel.h"
for side in old new; do
  entry="PackedLinear${side^}"
  printf '#include "engine/ops/packed_linear_args.h"\n#define FLORENCE_PACKED_LINEAR_ENTRY %s\n#include "%s_kernel.h"\n' \
    "$entry" "$side" > "$work/$side.cc"
  g++ -std=c++17 -O3 -mavx2 -mfma -I"$repo" -I"$work" -c "$work/$side.cc" -o "$work/$side.o"
done
g++ -std=c++17 -O2 -fopenmp -I"$repo" "$repo/bench/packed_linear_ab.cc" "$work/old.o" "$work/new.o" -o "$work/ab"
"$work/ab" "$@"
