#!/usr/bin/env bash
# Prints the extra pip index that the image's torch comes from, or nothing for PyPI alone.
# Usage: tools/image/torch_index.sh FLAVOR TORCH_INDEX_URL
#   FLAVOR           cpu | cuda
#   TORCH_INDEX_URL  auto: cpu -> PyTorch's CPU-only index (torch==2.11.0 resolves to 2.11.0+cpu, no CUDA
#                          libraries); cuda -> PyPI, whose Linux torch 2.11.0 wheel is the CUDA 13.0 build
#                          (the one tools/requirements.txt gives `make setup` and the GPU machines)
#                    pypi: PyPI alone whatever the flavor (a CPU image then carries the CUDA wheel, which
#                          also runs on CPU; for machines that reach PyPI but not PyTorch's index)
#                    any other value: used as the extra index
set -euo pipefail
flavor=${1:?FLAVOR (cpu or cuda)}
index=${2:-auto}
case "$flavor" in
  cpu | cuda) ;;
  *) echo "torch_index: FLAVOR must be cpu or cuda, not '$flavor'" >&2; exit 2 ;;
esac
case "$index" in
  auto) [ "$flavor" = cpu ] && echo "https://download.pytorch.org/whl/cpu" ;;
  pypi) ;;
  *) echo "$index" ;;
esac
exit 0
