#!/usr/bin/env bash
# Builds the florence-serve image from the Dockerfile without a Docker daemon: buildah, chroot isolation (the
# RUN steps use the host's network and need no user namespaces or OCI runtime), local containers storage,
# Docker image format (the OCI format has no SHELL: buildah would run RUN steps with /bin/sh instead of bash).
# Where no registry is reachable the `debian:bookworm-slim` base is made locally first (tools/image/base.sh).
#
# Usage: tools/image/build.sh        (root; tools/setup/image_tools.sh installs buildah and debootstrap)
# Env:   IMAGE (default florence-serve:latest), FLAVOR (cpu|cuda, default cpu), TORCH_INDEX_URL (auto|pypi|URL,
#        default auto: see tools/image/torch_index.sh), BASE_IMAGE, BUILDER_IMAGE (default debian:bookworm-slim),
#        BAKE_MODEL=1, STORAGE_DRIVER (default overlay; vfs where overlay mounts are refused),
#        BUILD_ARGS (more buildah options, e.g. "--build-arg MODEL_ARGS='--random tiny --seed 0'").
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:-florence-serve:latest}
FLAVOR=${FLAVOR:-cpu}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-auto}
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
BUILDER_IMAGE=${BUILDER_IMAGE:-debian:bookworm-slim}
BAKE_MODEL=${BAKE_MODEL:-0}
STORAGE_DRIVER=${STORAGE_DRIVER:-overlay}
export STORAGE_DRIVER

command -v buildah >/dev/null || { echo "build: no buildah; run tools/setup/image_tools.sh" >&2; exit 1; }

# Fail early, with the way out, when the flavor's torch index is out of reach (the build would fail in pip).
index=$(tools/image/torch_index.sh "$FLAVOR" "$TORCH_INDEX_URL")
reachable() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=30)' "$1"; }
if [ -n "$index" ] && ! reachable "$index/torch/" >/dev/null 2>&1; then
  echo "build: the torch index $index is not reachable from here. TORCH_INDEX_URL=pypi builds with PyPI's" >&2
  echo "       torch 2.11.0 instead (the CUDA 13.0 build, which also runs on CPU; a larger image)." >&2
  exit 1
fi

for base in "$BUILDER_IMAGE" "$BASE_IMAGE"; do
  if [ "$base" = debian:bookworm-slim ] &&
     ! buildah --storage-driver "$STORAGE_DRIVER" inspect --type image "$base" >/dev/null 2>&1 &&
     ! buildah --storage-driver "$STORAGE_DRIVER" pull -q "docker.io/library/$base" >/dev/null 2>&1; then
    BASE_TAG=$base tools/image/base.sh
  fi
done

start=$(date +%s)
# shellcheck disable=SC2086 # BUILD_ARGS holds several options
buildah --storage-driver "$STORAGE_DRIVER" bud --isolation chroot --layers --format docker \
  --build-arg FLAVOR="$FLAVOR" --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" \
  --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg BUILDER_IMAGE="$BUILDER_IMAGE" \
  --build-arg BAKE_MODEL="$BAKE_MODEL" ${BUILD_ARGS:-} -t "$IMAGE" -f Dockerfile .
echo "build: $IMAGE built in $(( $(date +%s) - start )) s;" \
     "size $(buildah --storage-driver "$STORAGE_DRIVER" images --format '{{.Size}}' "$IMAGE" | head -1)"
