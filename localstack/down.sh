#!/usr/bin/env bash
# Stops what localstack/up.sh started in STATE_DIR and removes the directory.
set -uo pipefail
STATE="${1:?usage: localstack/down.sh STATE_DIR}"
for name in nats s3; do
  pidfile="$STATE/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
done
case "$STATE" in
  /tmp/*|"${TMPDIR:-/tmp}"/*) rm -rf "$STATE" ;;
  *) rm -f "$STATE"/*.pid ;;
esac
