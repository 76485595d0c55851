#!/usr/bin/env bash
# Starts the local stack on free loopback ports chosen by the servers:
#   - nats-server 2.15 with JetStream (file store in STATE_DIR), max_payload 8 MiB
#   - moto's S3 server, with the bucket created
# Writes STATE_DIR/env (shell exports for tests, benches and `floe`) and prints
# the endpoints. Stop it with: localstack/down.sh STATE_DIR
#
# usage: localstack/up.sh [STATE_DIR]     (default: a new temp dir, printed)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bin="$("$here/install.sh")"
STATE="${1:-$(mktemp -d -t floe-stack.XXXXXX)}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
BUCKET="${FLOE_TEST_S3_BUCKET:-floe-test}"

log() { echo "[floe/localstack] $*" >&2; }
fail() { log "error: $*"; "$here/down.sh" "$STATE" >/dev/null 2>&1 || true; exit 1; }

wait_for() { # seconds, command...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

# --- NATS JetStream ---------------------------------------------------------
mkdir -p "$STATE/nats"
cat > "$STATE/nats/nats.conf" <<CONF
# The default 1 MiB max_payload is too small for 1 MiB log records plus headers.
max_payload: 8MB
CONF
"$bin/nats-server" -c "$STATE/nats/nats.conf" -a 127.0.0.1 -p -1 -m -1 \
  -js -sd "$STATE/nats/store" --ports_file_dir "$STATE/nats" \
  > "$STATE/nats/server.log" 2>&1 &
NATS_PID=$!
echo "$NATS_PID" > "$STATE/nats.pid"
ports_file="$STATE/nats/nats-server_${NATS_PID}.ports"
wait_for 10 test -s "$ports_file" || fail "nats-server did not start; see $STATE/nats/server.log"
NATS_URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nats"][0])' "$ports_file")
NATS_MON=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["monitoring"][0])' "$ports_file")
wait_for 10 curl -sf "$NATS_MON/healthz?js-enabled-only=true" || fail "JetStream not ready; see $STATE/nats/server.log"

# --- S3 (moto) --------------------------------------------------------------
mkdir -p "$STATE/s3"
"$bin/moto_server" -H 127.0.0.1 -p 0 > "$STATE/s3/server.log" 2>&1 &
S3_PID=$!
echo "$S3_PID" > "$STATE/s3.pid"
s3_port() { grep -oE 'Running on http://127\.0\.0\.1:[0-9]+' "$STATE/s3/server.log" | head -1 | grep -oE '[0-9]+$'; }
wait_for 30 s3_port || fail "moto_server did not start; see $STATE/s3/server.log"
S3_ENDPOINT="http://127.0.0.1:$(s3_port)"
# moto accepts unsigned requests; a real bucket creation through the S3 API.
wait_for 30 curl -sf -X PUT "$S3_ENDPOINT/$BUCKET" || fail "could not create bucket $BUCKET at $S3_ENDPOINT"

cat > "$STATE/env" <<ENV
export FLOE_TEST_NATS_URL=$NATS_URL
export FLOE_TEST_NATS_MONITOR=$NATS_MON
export FLOE_TEST_NATS_BIN=$bin/nats-server
export FLOE_TEST_PYTHON=$bin/python
export FLOE_TEST_S3_ENDPOINT=$S3_ENDPOINT
export FLOE_TEST_S3_BUCKET=$BUCKET
export AWS_ACCESS_KEY_ID=\${AWS_ACCESS_KEY_ID:-floe-test}
export AWS_SECRET_ACCESS_KEY=\${AWS_SECRET_ACCESS_KEY:-floe-test}
export AWS_REGION=\${AWS_REGION:-us-east-1}
export FLOE_STACK_DIR=$STATE
ENV

log "nats (JetStream): $NATS_URL   monitoring: $NATS_MON"
log "s3 (moto):        $S3_ENDPOINT   bucket: $BUCKET"
log "env file:         $STATE/env   (source it; stop with localstack/down.sh $STATE)"
echo "$STATE"
