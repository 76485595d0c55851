#!/usr/bin/env bash
# Creates (once) a venv with the client's dependencies and pytest outside the
# clone, installs this checkout's client into it (every run, so the tests see
# the current code) and prints its python path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
VENV="${FLOE_CLIENT_VENV:-$HOME/.cache/floe/client-venv}"
STAMP="$VENV/.deps-$(md5sum "$here/pyproject.toml" | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$here[test]" >&2
  touch "$STAMP"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$here" >&2
echo "$VENV/bin/python"
