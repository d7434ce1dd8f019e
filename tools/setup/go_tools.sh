#!/usr/bin/env bash
# Installs the Go command-line tools the project uses into .tools/bin from the Go module proxy, pinned:
# grpcurl (the README's example client, by server reflection), ghz (the load generator of loadtest/run),
# kustomize and kubeconform (the offline manifest validation).
# Skips tools already at the pinned version. Without a Go toolchain it says so and exits 0; the load-test
# smoke test (loadtest.quick) then fails, saying ghz is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
declare -A TOOLS=(
  [grpcurl]="github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3"
  [ghz]="github.com/bojand/ghz/cmd/ghz@v0.120.0"
  # tests/deploy/test_manifests.py: renders deploy/'s overlays, validates the objects (tools/setup/deploy_tools.sh)
  [kustomize]="sigs.k8s.io/kustomize/kustomize/v5@v5.8.1"
  [kubeconform]="github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0"
)
if ! command -v go >/dev/null 2>&1; then
  echo "go_tools: no Go toolchain; skipping ${!TOOLS[*]} (optional: example clients only)" >&2
  exit 0
fi
mkdir -p .tools/bin
for name in "${!TOOLS[@]}"; do
  pkg=${TOOLS[$name]}
  stamp=.tools/bin/.$name.version
  if [ -x ".tools/bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg" ]; then
    continue
  fi
  echo "go_tools: installing $pkg"
  if GOBIN="$PWD/.tools/bin" go install "$pkg"; then
    echo "$pkg" > "$stamp"
  else
    echo "go_tools: could not install $pkg" >&2
  fi
done
