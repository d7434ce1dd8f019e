#!/usr/bin/env bash
# Runs the image the way deploy/ does and calls the server inside it from this machine over gRPC:
#   1. the server binary loads its libraries in the image (--version);
#   2. the image's export tool writes seeded random weights into a host directory mounted at /models, run by
#      deploy/'s initContainer script where the checkout has it (uid 10001, read-only root filesystem, /tmp
#      the only scratch, no network: nothing is downloaded);
#   3. the server serves that model (same user, read-only root, model mounted read-only) on loopback ports;
#   4. grpc.health.v1 turns SERVING, reflection lists the API, a Caption and a Detect call answer,
#      /metrics counts them; 5. SIGTERM drains and the server exits 0.
# Needs the project's .venv (the Python client) and podman (tools/setup/image_tools.sh); root.
#
# Usage: tools/image/smoke.sh
# Env:   IMAGE (default florence-serve:latest), SMOKE_MODEL (tiny|base|baked, default tiny: the export and
#        the model load take seconds instead of minutes; baked: serve the model of a BAKE_MODEL=1 image),
#        STORAGE_DRIVER (default: podman's, overlay for root; set it only to the one the image was built with),
#        PODMAN_RUNTIME (default:
#        podman's own, else runc where that one cannot start containers, e.g. crun on hybrid cgroups).
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:-florence-serve:latest}
SMOKE_MODEL=${SMOKE_MODEL:-tiny}
STORAGE_DRIVER=${STORAGE_DRIVER:-}
PY=.venv/bin/python
APP=/opt/florence-serve
MODEL=/models/florence2-$SMOKE_MODEL-random
name=florence-smoke-$$
work=$(mktemp -d /tmp/florence-smoke.XXXXXX)
podman=(podman ${STORAGE_DRIVER:+--storage-driver "$STORAGE_DRIVER"})
cleanup() {
  "${podman[@]}" rm -f "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
[ -x "$PY" ] || { echo "smoke: no $PY (make setup)" >&2; exit 1; }
command -v podman >/dev/null || { echo "smoke: no podman; run tools/setup/image_tools.sh" >&2; exit 1; }
elapsed() { echo $(( $(date +%s) - $1 )); }

# Explicit limits, within the caller's own: podman's defaults (nofile 1048576 and a high nproc, as root) are
# refused by some hosts (setrlimit: operation not permitted), as is nproc 65536 where the hard limit is higher.
min() { [ "$1" = unlimited ] && echo "$2" || echo $(( $1 < $2 ? $1 : $2 )); }
nofile=$(min "$(ulimit -Hn)" 65536)
nproc=$(min "$(ulimit -Hu)" 32768)
limits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
run() { "${podman[@]}" ${PODMAN_RUNTIME:+--runtime "$PODMAN_RUNTIME"} run "${limits[@]}" "$@"; }

# 1. The binary and every library it needs are in the image.
if ! version=$(run --rm "$IMAGE" --version 2>&1); then
  if [ -z "${PODMAN_RUNTIME:-}" ] && command -v runc >/dev/null; then
    echo "smoke: podman's default runtime failed ($version); trying runc"
    PODMAN_RUNTIME=runc
    version=$(run --rm "$IMAGE" --version 2>&1) || { echo "smoke: $version" >&2; exit 1; }
  else
    echo "smoke: $version" >&2; exit 1
  fi
fi
echo "smoke: 1/5 $(head -1 <<<"$version") loads in $IMAGE"

# 2. Export as the init container does: deploy/'s model_init.py where the checkout has it, else the tool itself.
export_model() {
  local export_run=(run --rm --network none --read-only --tmpfs /tmp --user 10001:10001
                    -v "$work/models:/models" --entrypoint "$APP/.venv/bin/python")
  if [ -f deploy/base/model_init.py ]; then
    local init=/etc/florence-serve/model-init
    cp deploy/base/model_init.py "$work/init/"
    echo "--random $SMOKE_MODEL --seed 0" >"$work/init/export.args"
    echo "--model=$MODEL" >"$work/init/server.flags"
    "${export_run[@]}" -v "$work/init:$init:ro" "$IMAGE" "$init/model_init.py" --flags="$init/server.flags" \
      --export-args="$init/export.args" --app-dir="$APP"
    how=deploy/base/model_init.py
  else
    "${export_run[@]}" "$IMAGE" tools/florence2_export.py --random "$SMOKE_MODEL" --seed 0 --out "$MODEL"
    how=tools/florence2_export.py
  fi
}
mkdir -p "$work/models" "$work/images" "$work/init"
chown 10001:10001 "$work/models"
if [ "$SMOKE_MODEL" = baked ]; then
  # An image built with BAKE_MODEL=1 serves its own /models with its server.flags' --model.
  mount=() model=()
  echo "smoke: 2/5 skipped: serving the model baked into $IMAGE"
else
  mount=(-v "$work/models:/models:ro") model=(--model="$MODEL")
  start=$(date +%s)
  export_model
  echo "smoke: 2/5 $how exported $MODEL in the image in $(elapsed "$start") s ($(du -sh "$work/models" | cut -f1))"
fi

# 3. Serve it on loopback ports of this machine.
read -r port mport < <("$PY" -c 'import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
start=$(date +%s)
# The image's own mode of start: its ENTRYPOINT and server.flags; only the model and the addresses overridden.
run -d --name "$name" --network host --read-only --tmpfs /tmp --user 10001:10001 \
  "${mount[@]}" "$IMAGE" --flagfile="$APP/server.flags" "${model[@]}" \
  --address="127.0.0.1:$port" --metrics_address="127.0.0.1:$mport" >/dev/null
"$PY" - "$port" "$name" "${podman[@]}" <<'PY' || { "${podman[@]}" logs "$name" | tail -30 >&2; exit 1; }
import subprocess, sys, time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

port, name, *podman = sys.argv[1:]
stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    state = subprocess.run([*podman, "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True)
    if state.stdout.strip() != "true":
        sys.exit("smoke: the server container exited")
    try:
        status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3).status
        if status == health_pb2.HealthCheckResponse.SERVING:
            sys.exit(0)
    except grpc.RpcError:
        pass
    time.sleep(1)
sys.exit("smoke: not SERVING after 600 s")
PY
echo "smoke: 3/5 SERVING on 127.0.0.1:$port after $(elapsed "$start") s (model load and warm-up)"

# 4. Calls from this machine.
if [ -x .tools/bin/grpcurl ]; then
  echo "smoke: reflection lists: $(.tools/bin/grpcurl -plaintext "127.0.0.1:$port" list | tr '\n' ' ')"
fi
"$PY" -c "from PIL import Image; from skimage import data
Image.fromarray(data.astronaut()).save('$work/images/astronaut.jpg', quality=90)"
for task in caption od; do
  start=$(date +%s)
  "$PY" clients/python/florence_client.py --server "127.0.0.1:$port" --task "$task" --max-new-tokens 16 \
    --num-beams 1 "$work/images/astronaut.jpg" | sed -n 1,12p
  echo "smoke: 4/5 $task answered in $(elapsed "$start") s"
done
"$PY" - "$mport" <<'PY'
import sys
import urllib.request

text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode()
lines = [l for l in text.splitlines() if l.startswith("florence_requests_total")]
print("\n".join(lines))
assert lines, "no florence_requests_total in /metrics"
PY

# 5. SIGTERM drains and exits 0.
start=$(date +%s)
"${podman[@]}" stop -t 60 "$name" >/dev/null
code=$("${podman[@]}" inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { "${podman[@]}" logs "$name" | tail -20 >&2; echo "smoke: exit code $code" >&2; exit 1; }
"${podman[@]}" logs "$name" 2>&1 | tail -4 | sed 's/^/  server: /'
echo "smoke: 5/5 SIGTERM: drained and exited 0 in $(elapsed "$start") s"
echo "smoke: OK ($IMAGE, $SMOKE_MODEL model)"
