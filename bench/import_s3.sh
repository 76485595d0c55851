#!/bin/bash
# Bulk import (server side, `floe import --on-server`) against `floe import`
# over HTTP of the same 1M x 128-d Parquet file in the local S3 server, each
# into its own collection of one `floe serve` (cloud mode: S3 + JetStream,
# default settings): time to acknowledged, and to fully indexed.
#   cargo build --release -p floe --bin floe -p floe-bench
#   bench/import_s3.sh              # both; RUNS=http or RUNS=server for one
# Binaries from $FLOE_RELEASE_DIR (default target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
R="${FLOE_RELEASE_DIR:-$PWD/target/release}"
bin=$(./localstack/install.sh 2>/dev/null)
STATE=$(./localstack/up.sh)
trap './localstack/down.sh "$STATE"' EXIT
source "$STATE/env"
id=$(date +%s)
PORT=$((20000 + RANDOM % 20000))
export FLOE_STORE_URL="s3://$FLOE_TEST_S3_BUCKET/bench-$id"
export FLOE_S3_ENDPOINT="$FLOE_TEST_S3_ENDPOINT" FLOE_S3_REGION=us-east-1 FLOE_S3_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID=floe-test AWS_SECRET_ACCESS_KEY=floe-test
export FLOE_NATS_URL="$FLOE_TEST_NATS_URL" FLOE_NATS_STREAM_PREFIX="B$id" FLOE_NATS_SUBJECT_PREFIX="b$id"
D=$(mktemp -d)
[ -f /tmp/bench-1m.parquet ] || $R/floe-bench parquet --n 1000000 --dim 128 --out /tmp/bench-1m.parquet
ls -la /tmp/bench-1m.parquet
t0=$(date +%s.%N)
$bin/python - <<PY
import boto3
s3 = boto3.client("s3", endpoint_url="$FLOE_TEST_S3_ENDPOINT", region_name="us-east-1",
                  aws_access_key_id="floe-test", aws_secret_access_key="floe-test")
s3.upload_file("/tmp/bench-1m.parquet", "$FLOE_TEST_S3_BUCKET", "bench-$id/uploads/bench-1m.parquet")
PY
echo "upload: $(echo "$(date +%s.%N) - $t0" | bc) s"
RUST_LOG=info $R/floe serve --data-dir $D --listen 127.0.0.1:$PORT > $D/serve.log 2>&1 &
SERVE=$!
trap 'kill $SERVE; ./localstack/down.sh "$STATE"' EXIT
sleep 2
export FLOE_URL=http://127.0.0.1:$PORT
wait_indexed() { # name start
  while true; do
    s=$($R/floe collections describe $1 --json)
    ir=$(echo "$s" | python3 -c 'import json,sys; d=json.load(sys.stdin)["stats"]; print(d["indexed_rows"], d["rows"], d["segments"])')
    set -- $1 $2 $ir
    if [ "$3" -ge 1000000 ] && [ "$4" -eq 1000000 ]; then echo "$1 fully indexed $(echo "$(date +%s.%N) - $2" | bc) s after the start ($5 segments)"; return; fi
    sleep 1
  done
}
for run in ${RUNS:-server http}; do
  name=b$run
  $R/floe collections create $name --dimension 128 --metric l2 --attribute group:i64 > /dev/null
  start=$(date +%s.%N)
  if [ $run = server ]; then
    /usr/bin/time -f "cli: %e s, %M KB max RSS, %P cpu" $R/floe import $name uploads/bench-1m.parquet --on-server --job-id bench-1
  else
    /usr/bin/time -f "cli: %e s, %M KB max RSS, %P cpu" $R/floe import $name "$FLOE_STORE_URL/uploads/bench-1m.parquet"
  fi
  echo "$run import returned after $(echo "$(date +%s.%N) - $start" | bc) s"
  wait_indexed $name $start
  grep VmHWM /proc/$SERVE/status
done
grep -iE "import ended|index built|compacted|flushed" $D/serve.log | cut -c1-260 | tail -25
