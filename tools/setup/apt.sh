#!/usr/bin/env bash
# Installs the Debian packages the build needs, skipping those already present (so re-runs are instant).
# Usage: tools/setup/apt.sh PACKAGE... where PACKAGE may be written COMMAND=PACKAGE to skip it whenever
# COMMAND already works (e.g. a Node.js/npm or Python installed outside Debian's packages, which the
# Debian package would conflict with).
set -euo pipefail
missing=()
for spec in "$@"; do
  pkg=${spec#*=}
  if [ "$spec" != "$pkg" ] && bash -c "${spec%%=*}" >/dev/null 2>&1; then
    continue
  fi
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "apt: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
