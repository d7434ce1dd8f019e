#!/usr/bin/env bash
# Builds a stand-in for the `debian:bookworm-slim` base image with debootstrap and stores it in the local
# containers storage under that name, for machines that reach Debian's package mirrors but no container
# registry. Skips the work when the image is already there (FORCE=1 rebuilds).
#
# The stand-in is a `minbase` bookworm root (the same package set the registry image starts from, without
# its documentation trimming) plus ca-certificates. When the host trusts extra certificate authorities
# (/usr/local/share/ca-certificates/*.crt, e.g. a TLS-intercepting egress proxy), they are added to the
# stand-in and PIP_CERT / NODE_EXTRA_CA_CERTS point pip and npm at the system bundle, so the Dockerfile's
# RUN steps reach PyPI and npm from behind the same proxy. An image pulled from a registry needs none of it.
#
# Usage: tools/image/base.sh        (root; needs debootstrap and buildah: tools/setup/image_tools.sh)
# Env:   BASE_TAG (default debian:bookworm-slim), MIRROR (default: the host's Debian mirror),
#        STORAGE_DRIVER (default overlay), FORCE=1.
set -euo pipefail
BASE_TAG=${BASE_TAG:-debian:bookworm-slim}
STORAGE_DRIVER=${STORAGE_DRIVER:-overlay}
BUILDAH=(buildah --storage-driver "$STORAGE_DRIVER")

if [ "${FORCE:-0}" != 1 ] && "${BUILDAH[@]}" inspect --type image "$BASE_TAG" >/dev/null 2>&1; then
  echo "base: $BASE_TAG already in local storage (FORCE=1 rebuilds)"
  exit 0
fi

# The host's own Debian mirror (deb822 or one-line sources), else debootstrap's default.
host_mirror() {
  local uri
  uri=$(grep -hs -m1 -E '^URIs:' /etc/apt/sources.list.d/debian.sources | awk '{print $2}')
  [ -n "$uri" ] || uri=$(grep -hs -m1 -E '^deb +(\[[^]]*\] +)?https?://[^ ]+ +bookworm( |$)' \
                          /etc/apt/sources.list | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1}')
  echo "$uri"
}
MIRROR=${MIRROR:-$(host_mirror)}

work=$(mktemp -d /tmp/florence-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
echo "base: debootstrap --variant=minbase bookworm ${MIRROR:-(default mirror)}"
debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" ${MIRROR:+"$MIRROR"} >"$work/log" 2>&1 ||
  { tail -20 "$work/log" >&2; exit 1; }

# The registry image's sources (bookworm, -updates, -security): the host's, when it is a bookworm machine.
if grep -qs -E '^Suites:.*bookworm' /etc/apt/sources.list.d/debian.sources; then
  cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
  rm -f "$rootfs/etc/apt/sources.list"
fi
extra_ca=()
for crt in /usr/local/share/ca-certificates/*.crt; do
  [ -f "$crt" ] && extra_ca+=("$crt")
done
if [ ${#extra_ca[@]} -gt 0 ]; then
  echo "base: adding the host's extra CA certificates: ${extra_ca[*]}"
  cp "${extra_ca[@]}" "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null
fi
# What the registry image also does: no apt caches, no package lists.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin

ctr=$("${BUILDAH[@]}" from scratch)
mnt=$("${BUILDAH[@]}" mount "$ctr")
tar -C "$rootfs" -cf - . | tar -C "$mnt" -xf -
"${BUILDAH[@]}" umount "$ctr" >/dev/null
config=(--cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
if [ ${#extra_ca[@]} -gt 0 ]; then
  config+=(--env PIP_CERT=/etc/ssl/certs/ca-certificates.crt
           --env NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt)
fi
"${BUILDAH[@]}" config "${config[@]}" "$ctr"
"${BUILDAH[@]}" commit --rm "$ctr" "$BASE_TAG" >/dev/null
echo "base: $BASE_TAG committed ($("${BUILDAH[@]}" images --format '{{.Size}}' "$BASE_TAG"))"
