#!/usr/bin/env bash
# Installs what tests/deploy/test_manifests.py needs to check deploy/ offline, pinned, from the Go module proxy:
#   .tools/bin/kustomize, .tools/bin/kubeconform   renders the overlays / validates every object against JSON schemas
#                                                  (installed by tools/setup/go_tools.sh, which this script runs)
#   .tools/deploy/                                 the sources of those schemas, copied out of the projects' Go modules:
#     kubernetes/swagger.json   the OpenAPI document of the oldest Kubernetes release deploy/ targets (1.30)
#     crds/*.yaml               the CRDs of the custom resources deploy/ uses (ServiceMonitor, GRPCRoute)
#     sources.txt               where each file came from (also the stamp: a changed pin re-fetches)
# The test turns the OpenAPI document and the CRDs into strict JSON schemas itself. Skips what is already at its
# pin. Without a Go toolchain it says so and exits 0; the test then fails, naming this script.
set -euo pipefail
cd "$(dirname "$0")/../.."
# "module@version path-in-module file-under-.tools/deploy"
SCHEMA_SOURCES=(
  "k8s.io/kubernetes@v1.30.14 api/openapi-spec/swagger.json kubernetes/swagger.json"
  "github.com/prometheus-operator/prometheus-operator@v0.85.0 \
     example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml \
     crds/monitoring.coreos.com_servicemonitors.yaml"
  "sigs.k8s.io/gateway-api@v1.6.3 \
     config/crd/standard/gateway.networking.k8s.io_grpcroutes.yaml crds/gateway.networking.k8s.io_grpcroutes.yaml"
)
tools/setup/go_tools.sh
if ! command -v go >/dev/null 2>&1; then
  echo "deploy_tools: no Go toolchain; skipping the schema sources (tests/deploy/test_manifests.py fails" \
       "without them)" >&2
  exit 0
fi

dest=.tools/deploy
want=$(printf '%s\n' "${SCHEMA_SOURCES[@]}" | tr -s ' ')
if [ "$(cat "$dest/sources.txt" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
# A module cache of its own, deleted afterwards: only the few files listed above are kept (k8s.io/kubernetes
# alone unpacks to ~100 MB).
modcache=$(mktemp -d)
trap 'rm -rf "$modcache"' EXIT
rm -rf "$dest"
mkdir -p "$dest"
for entry in "${SCHEMA_SOURCES[@]}"; do
  read -r module path file <<< "$entry"
  echo "deploy_tools: fetching $module ($path)"
  dir=$(GOMODCACHE="$modcache" GOFLAGS=-modcacherw go mod download -json "$module" |
        sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -f "$dir/$path" ] || { echo "deploy_tools: $module has no $path" >&2; exit 1; }
  install -D -m 0644 "$dir/$path" "$dest/$file"
done
echo "$want" > "$dest/sources.txt"
