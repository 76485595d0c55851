#!/usr/bin/env bash
# Runs every check and test of Floe on a Debian machine with a Rust toolchain:
# installs nats-server and the S3 server (moto) from PyPI if missing, checks
# the OpenAPI description and the SAM template, runs fmt and clippy, builds
# and checks the Lambda artifacts (infra/build.sh), builds the Python
# client's venv (clients/python/venv.sh), starts the servers on
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
# The Lambda emulator tests run both architectures' zipped executables: this
# machine's natively, the other under qemu's user-mode emulation (from apt).
case "$(uname -m)" in
  x86_64) native=X86_64; foreign=ARM64; qemu=qemu-aarch64; sysroot=/usr/aarch64-linux-gnu; cross_libc=libc6-arm64-cross ;;
  aarch64|arm64) native=ARM64; foreign=X86_64; qemu=qemu-x86_64; sysroot=/usr/x86_64-linux-gnu; cross_libc=libc6-amd64-cross ;;
  *) echo "error: no Lambda architecture for $(uname -m)" >&2; exit 1 ;;
esac
if ! command -v "$qemu" >/dev/null 2>&1 || [ ! -d "$sysroot/lib" ]; then
  echo "[floe] installing qemu-user and $cross_libc from apt" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qemu-user "$cross_libc" >/dev/null
fi
export FLOE_TEST_LAMBDA_DIR="$(cd "$lambda_dir" && pwd)"
export "FLOE_TEST_LAMBDA_RUN_$native=native"
export "FLOE_TEST_LAMBDA_RUN_$foreign=$qemu -L $sysroot"
# The Python client's tests (functions/tests/python_client.rs) run pytest
# in a venv with this checkout's client installed.
export FLOE_TEST_CLIENT_PYTHON="$(./clients/python/venv.sh)"
echo "== tests (against nats-server -js and moto S3 on loopback)"
./localstack/with-stack.sh cargo test --workspace --locked "$@"
