#!/usr/bin/env bash
# Builds the Lambda artifacts of the three functions (ingest, query,
# indexer): one zip with a `bootstrap` executable per function and
# architecture, for the provided.al2023 runtime, and checks them.
#
# usage: infra/build.sh [arm64|x86_64]...      (default: arm64 x86_64)
#
# Output: <target dir>/lambda/<arch>/<function>/bootstrap.zip for every
# architecture (CARGO_TARGET_DIR is honoured; the path is printed), and the
# first architecture's zips also at target/lambda/<function>/bootstrap.zip in
# the repository, where infra/template.yaml's CodeUri points (deploy with
# `Architecture=<that arch>`).
#
# cargo-lambda (with zig as the cross linker) comes from PyPI into a venv
# beside the local stack's; the Rust targets come from rustup.
#
# Checks per artifact (fails the build otherwise):
#   * the zip holds exactly one entry, `bootstrap`, executable, of the
#     requested architecture;
#   * it needs no glibc newer than 2.34 (what Amazon Linux 2023 ships);
#   * zip <= FLOE_LAMBDA_MAX_ZIP_MB (default 20) and unzipped <=
#     FLOE_LAMBDA_MAX_UNZIPPED_MB (default 64): well inside Lambda's
#     50 MB / 250 MB limits, and small enough that a cold start stays cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

FUNCTIONS=(floe-ingest floe-query floe-indexer)
ARCHES=("$@")
[ ${#ARCHES[@]} -gt 0 ] || ARCHES=(arm64 x86_64)
MAX_ZIP_MB="${FLOE_LAMBDA_MAX_ZIP_MB:-20}"
MAX_UNZIPPED_MB="${FLOE_LAMBDA_MAX_UNZIPPED_MB:-64}"
GLIBC_MAX="2.34"
# Pinned, zig too (cargo-lambda leaves its version open): the same linker everywhere.
CARGO_LAMBDA_PKG="cargo-lambda==1.9.2"
ZIG_PKG="ziglang==0.17.1"

log() { echo "[floe/build] $*" >&2; }

TOOLS_DIR="${FLOE_TOOLS_DIR:-$HOME/.cache/floe/tools}"
VENV="$TOOLS_DIR/lambda-venv"
STAMP="$VENV/.floe-installed-$(echo "$CARGO_LAMBDA_PKG $ZIG_PKG" | md5sum | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
  log "installing $CARGO_LAMBDA_PKG and $ZIG_PKG into $VENV"
  mkdir -p "$TOOLS_DIR"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$CARGO_LAMBDA_PKG" "$ZIG_PKG"
  touch "$STAMP"
fi
# cargo-lambda finds zig (python -m ziglang) through the venv's PATH.
export PATH="$VENV/bin:$PATH"

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
OUT="$TARGET_DIR/lambda"
bins=()
for f in "${FUNCTIONS[@]}"; do bins+=(--bin "$f"); done

for arch in "${ARCHES[@]}"; do
  case "$arch" in
    arm64) triple=aarch64-unknown-linux-gnu; elf_machine=183 ;;
    x86_64) triple=x86_64-unknown-linux-gnu; elf_machine=62 ;;
    *) log "error: unknown architecture '$arch' (arm64 or x86_64)"; exit 2 ;;
  esac
  rustup target list --installed | grep -qx "$triple" || rustup target add "$triple" >&2
  log "building ${FUNCTIONS[*]} for $arch ($triple)"
  started=$SECONDS
  # --compiler cargo-zigbuild for both: zig links against an old enough glibc
  # even when the host's is newer than Amazon Linux 2023's.
  cargo lambda build --locked --profile lambda-release --compiler cargo-zigbuild --target "$triple" \
    --output-format zip --lambda-dir "$OUT/$arch" "${bins[@]}" >&2
  log "built for $arch in $((SECONDS - started)) s"
  python3 - "$OUT/$arch" "$elf_machine" "$GLIBC_MAX" "$MAX_ZIP_MB" "$MAX_UNZIPPED_MB" "${FUNCTIONS[@]}" <<'PY'
import os, re, sys, zipfile
out, machine, glibc_max, max_zip, max_unzipped = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
version = lambda v: tuple(int(p) for p in v.split("."))
failed = False
for fn in sys.argv[6:]:
    path = os.path.join(out, fn, "bootstrap.zip")
    problems = []
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        if [i.filename for i in infos] != ["bootstrap"]:
            problems.append(f"entries {[i.filename for i in infos]}, expected ['bootstrap']")
        info = infos[0]
        if not (info.external_attr >> 16) & 0o111:
            problems.append("bootstrap is not executable")
        data = z.read(info)
    # The zip's bootstrap, extracted, is what the Lambda emulator test runs.
    unzipped = os.path.join(out, fn, "unzipped", "bootstrap")
    os.makedirs(os.path.dirname(unzipped), exist_ok=True)
    with open(unzipped, "wb") as f:
        f.write(data)
    os.chmod(unzipped, (info.external_attr >> 16) & 0o777)
    if data[:4] != b"\x7fELF" or int.from_bytes(data[18:20], "little") != machine:
        problems.append(f"not an ELF executable for machine {machine}")
    needed = sorted({m.decode() for m in re.findall(rb"GLIBC_(2\.\d+(?:\.\d+)?)", data)}, key=version)
    if needed and version(needed[-1]) > version(glibc_max):
        problems.append(f"needs glibc {needed[-1]} > {glibc_max}")
    zip_mb, raw_mb = os.path.getsize(path) / 1e6, len(data) / 1e6
    if zip_mb > max_zip:
        problems.append(f"zip {zip_mb:.1f} MB > {max_zip} MB")
    if raw_mb > max_unzipped:
        problems.append(f"unzipped {raw_mb:.1f} MB > {max_unzipped} MB")
    glibc = needed[-1] if needed else "none"
    print(f"{path}: zip {zip_mb:.2f} MB, bootstrap {raw_mb:.2f} MB, glibc >= {glibc}"
          + ("" if not problems else "  FAILED: " + "; ".join(problems)), file=sys.stderr)
    failed |= bool(problems)
sys.exit(1 if failed else 0)
PY
done

# The deploy set the template's CodeUri names (../target/lambda/<function>,
# relative to infra/, whatever CARGO_TARGET_DIR is): the first architecture.
deploy="${ARCHES[0]}"
DEPLOY_DIR=target/lambda
for f in "${FUNCTIONS[@]}"; do
  mkdir -p "$DEPLOY_DIR/$f"
  cp "$OUT/$deploy/$f/bootstrap.zip" "$DEPLOY_DIR/$f/bootstrap.zip"
done
echo "$deploy" > "$DEPLOY_DIR/ARCHITECTURE"
log "deploy set: $DEPLOY_DIR/<function>/bootstrap.zip = $deploy (sam deploy ... Architecture=$deploy)"
echo "$OUT"
