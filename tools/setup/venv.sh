#!/usr/bin/env bash
# Creates .venv from tools/requirements.txt; re-installs only when the requirements file changed.
# The torch wheel in it also provides LibTorch (headers, libraries, CMake config) to the C++ build.
set -euo pipefail
cd "$(dirname "$0")/../.."
stamp=.venv/.requirements.sha256
want=$(sha256sum tools/requirements.txt | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -r tools/requirements.txt
echo "$want" > "$stamp"
