#!/usr/bin/env bash
# Creates the benchmark's Python venv (FAISS, numpy, the MiniLM model) outside
# the clone and prints its python path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
VENV="${FLOE_BENCH_VENV:-$HOME/.cache/floe/bench-venv}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import faiss, numpy' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
fi
echo "$VENV/bin/python"
