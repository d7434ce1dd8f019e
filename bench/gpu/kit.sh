#!/usr/bin/env bash
# Lays out .gpu/ (git-ignored through .git/info/exclude): everything bench/gpu/run.sh needs on a lent GPU machine
# that has python3 with torch 2.11.0+cu130 (the wheel this project pins and links), nvcc and CMake, but no package
# registry and no gRPC/Abseil dev packages.
#
#   .gpu/dist/bin/      florence2-server, florence2-run, florence2-probe built here against .venv's torch (the same
#                       wheel as there), debug sections stripped, RPATH $ORIGIN/../lib:$ORIGIN/../lib/torch
#   .gpu/dist/lib/      the Debian shared libraries they load (gRPC, Abseil, protobuf, image codecs, ...; see
#                       tools/image/bundle.sh); lib/torch is linked to that machine's torch/lib by run.sh
#   .gpu/dist/.cache/   the tokenizer's one download (the export needs no network)
#   .gpu/whl/           the pinned Python packages the machine lacks or has at other versions (gRPC client,
#                       protobuf runtime for our stubs, transformers/tokenizers at this project's pins)
#   .gpu/pylib/         blingfire's three files the tokenizer rebuild reads (tools/florence2/tokenizer_build.py:
#                       the ctypes module, its .so and roberta.i2w), taken from .venv: its 42 MB wheel would not fit
#                       the device call's 64 MiB carry
#   .gpu/images/        the benchmark images (tools/test_images.py)
#
# Usage: bench/gpu/kit.sh   (then the device call: see bench/gpu/run.sh's header)
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=.gpu
mkdir -p .git/info
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude

cmake --build build -j2 --target florence2-server florence2-run florence2-probe
tools/image/bundle.sh build "$KIT/dist" '$ORIGIN/..'
torch_lib=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__) + "/lib")')
for b in florence2-run florence2-probe; do
  objcopy --strip-debug "build/engine/$b" "$KIT/dist/bin/$b"
  patchelf --force-rpath --set-rpath '$ORIGIN/../lib:$ORIGIN/../lib/torch' "$KIT/dist/bin/$b"
done
# Every library each binary loads must be bundled, LibTorch's (linked on that machine) or the system's.
for b in "$KIT"/dist/bin/*; do
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r soname path; do
    case "$soname" in
      libc.so.* | libm.so.* | libdl.so.* | librt.so.* | libpthread.so.* | ld-linux*.so.* | libstdc++.so.* | \
      libgcc_s.so.*) continue ;;
    esac
    case "$(realpath "$path")" in "$(realpath "$torch_lib")"/* | "$(realpath .venv)"/*) continue ;; esac
    [ -e "$KIT/dist/lib/$soname" ] || { echo "kit: $b needs $soname, not bundled" >&2; exit 1; }
  done
done

mkdir -p "$KIT/whl"
for spec in grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1 \
            protobuf==7.36.2 transformers==5.24.0 tokenizers==0.23.3; do
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$KIT/whl" "$spec"
done
bf=$(.venv/bin/python -c 'import blingfire, os; print(os.path.dirname(blingfire.__file__))')
rm -rf "$KIT/pylib/blingfire"
mkdir -p "$KIT/pylib/blingfire"
cp "$bf/__init__.py" "$bf/libblingfiretokdll.so" "$bf/roberta.i2w" "$KIT/pylib/blingfire/"
.venv/bin/python tools/test_images.py --out "$KIT/images"
du -sh "$KIT"/*
