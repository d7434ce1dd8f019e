#!/usr/bin/env bash
# Runs in the Dockerfile's runtime stage: creates .venv with only what tools/florence2_export.py imports
# (torch, numpy, tokenizers, safetensors, blingfire; huggingface_hub comes with tokenizers), at the versions
# tools/requirements.txt pins, torch from the flavor's index (tools/image/torch_index.sh). The server links
# this venv's torch/lib: the same wheel its builder compiled against. Then links lib/torch to it.
# Usage: tools/image/runtime_venv.sh FLAVOR TORCH_INDEX_URL
set -euo pipefail
cd "$(dirname "$0")/../.."
extra=$(tools/image/torch_index.sh "$1" "${2:-auto}")
python3 -m venv .venv
.venv/bin/pip install --no-cache-dir --quiet ${extra:+--extra-index-url "$extra"} \
  -c tools/requirements.txt torch numpy tokenizers safetensors blingfire
.venv/bin/python -c 'import torch; print(f"runtime venv: torch {torch.__version__}, CUDA {torch.version.cuda}")'
mkdir -p lib
ln -sfn "$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__) + "/lib")')" lib/torch
