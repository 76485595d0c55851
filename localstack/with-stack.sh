#!/usr/bin/env bash
# Runs a command with the local stack up and its endpoints in the environment,
# then tears the stack down, whatever the command's outcome.
# usage: localstack/with-stack.sh COMMAND [ARGS...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
STATE="$("$here/up.sh")"
trap '"$here/down.sh" "$STATE"' EXIT INT TERM
# shellcheck disable=SC1091
source "$STATE/env"
"$@"
