#!/usr/bin/env bash
# `make serve`: picks the model, writes a sample request, prints grpcurl examples and runs florence2-server in
# the foreground on localhost:50051 (gRPC) and :9090 (/metrics). Ctrl-C drains and stops it.
#
# Model: $MODEL_DIR if it holds a model; otherwise the real microsoft/Florence-2-base exported from the model
# hub when the hub is reachable; otherwise seeded random weights of the base architecture (outputs are then
# meaningless, and the server says so loudly). MODEL_DTYPE=bfloat16 (float16, int8) picks an opt-in
# reduced-precision export instead (its own directory, models/florence2-base[-random]-<dtype>; accuracy and
# speed in docs/PERFORMANCE.md); the default float32 is the exact path. MODEL_VISION_DTYPE=bfloat16 (with
# MODEL_DTYPE=int8, say) also puts the vision tower in that dtype (export --vision-dtype).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
BUILD_DIR=${BUILD_DIR:-build}
MODEL_DTYPE=${MODEL_DTYPE:-float32}
SUFFIX=""
[ "$MODEL_DTYPE" = float32 ] || SUFFIX="-$MODEL_DTYPE"
MODEL_VISION_DTYPE=${MODEL_VISION_DTYPE:-}
VISION_ARGS=()
if [ -n "$MODEL_VISION_DTYPE" ]; then
  SUFFIX="$SUFFIX-$MODEL_VISION_DTYPE-vision"
  VISION_ARGS=(--vision-dtype "$MODEL_VISION_DTYPE")
fi
REAL_DIR=models/florence2-base$SUFFIX
RANDOM_DIR=models/florence2-base-random$SUFFIX
MODEL_DIR=${MODEL_DIR:-}
ADDRESS=${ADDRESS:-127.0.0.1:50051}
METRICS_ADDRESS=${METRICS_ADDRESS:-127.0.0.1:9090}

# True when $1 holds an export the engine drives in $MODEL_DTYPE (and $MODEL_VISION_DTYPE): a manifest and the
# exporter's current interface version (an export made before an interface change is re-exported rather than
# refused).
current() {
  [ -f "$1/manifest.json" ] && "$PY" -c 'import json, sys
from tools.florence2.export import INTERFACE_VERSION
c = json.load(open(sys.argv[1] + "/config.json"))
def tower(dtype): return "float32" if dtype == "int8" else dtype  # an export without vision_dtype: this
sys.exit(c.get("interface_version") != INTERFACE_VERSION or c.get("dtype") != sys.argv[2]
         or c.get("vision_dtype", tower(c.get("dtype"))) != (sys.argv[3] or tower(sys.argv[2])))' "$1" "$MODEL_DTYPE" "$MODEL_VISION_DTYPE"
}

if [ -z "$MODEL_DIR" ]; then
  if current "$REAL_DIR"; then
    MODEL_DIR=$REAL_DIR
  elif timeout 30 "$PY" -c "import huggingface_hub as h; h.model_info('microsoft/Florence-2-base')" >/dev/null 2>&1 &&
       "$PY" tools/florence2_export.py --from-pretrained microsoft/Florence-2-base --dtype "$MODEL_DTYPE" \
         "${VISION_ARGS[@]}" --out "$REAL_DIR"; then
    MODEL_DIR=$REAL_DIR
  else
    MODEL_DIR=$RANDOM_DIR
    current "$MODEL_DIR" ||
      "$PY" tools/florence2_export.py --random base --seed 0 --dtype "$MODEL_DTYPE" "${VISION_ARGS[@]}" \
        --out "$MODEL_DIR"
  fi
fi
if grep -q '"random"' "$MODEL_DIR/manifest.json" 2>/dev/null; then
  cat >&2 <<'WARN'
################################################################################################
#  WARNING: serving SEEDED RANDOM WEIGHTS of the Florence-2-base architecture (the model hub is #
#  not reachable from here). Every answer is well-formed but MEANINGLESS. For real answers, put #
#  an export of microsoft/Florence-2-base in models/florence2-base (tools/florence2_export.py    #
#  --from-pretrained <hub id or local checkpoint dir> --out models/florence2-base).            #
################################################################################################
WARN
fi

# A sample request (a photograph bundled with scikit-image), sent by the examples below.
SAMPLE=models/samples/astronaut.jpg
REQUEST=models/samples/caption-request.json
mkdir -p models/samples
[ -f "$SAMPLE" ] || "$PY" -c "from PIL import Image; from skimage import data; Image.fromarray(data.astronaut()).save('$SAMPLE', quality=90)"
"$PY" - "$SAMPLE" "$REQUEST" <<'PYEOF'
import base64, json, sys
image = base64.b64encode(open(sys.argv[1], "rb").read()).decode()
json.dump({"image": {"encoded": image}, "detail": "CAPTION_DETAIL_BRIEF",
           "options": {"max_new_tokens": 24, "num_beams": 1}}, open(sys.argv[2], "w"))
PYEOF
GRPCURL=grpcurl
[ -x .tools/bin/grpcurl ] && GRPCURL=.tools/bin/grpcurl
cat <<EOF

florence2-server: model $MODEL_DIR, gRPC on $ADDRESS, metrics on http://$METRICS_ADDRESS/metrics
Once it logs SERVING, in another shell:
  $GRPCURL -plaintext $ADDRESS list florence.v1.Florence
  $GRPCURL -plaintext -d @ $ADDRESS florence.v1.Florence/Caption < $REQUEST
  $GRPCURL -plaintext -import-path proto -proto grpc/health/v1/health.proto $ADDRESS grpc.health.v1.Health/Check
  curl -s http://$METRICS_ADDRESS/metrics | grep florence_requests_total
  $PY clients/python/florence_client.py --server $ADDRESS --task od $SAMPLE --draw /tmp/od.png

EOF
exec "$BUILD_DIR/server/florence2-server" --model "$MODEL_DIR" --address "$ADDRESS" \
  --metrics_address "$METRICS_ADDRESS" "$@"
