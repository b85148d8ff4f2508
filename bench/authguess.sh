#!/usr/bin/env bash
# Password guessing against the submission listener from one address,
# without and with the login throttle: guesses answered per second, and
# whether the right password still works afterwards.
#
# Usage: bench/authguess.sh [SESSIONS] [SECONDS]      (defaults 8 20)
set -euo pipefail
SESSIONS=${1:-8}
SECS=${2:-20}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/authguess.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$repo"
go build -o "$work/conduit" ./cmd/conduit
go build -o "$work/authguess" ./bench/authguess
"$work/authguess" -bin "$work/conduit" -dir "$work/before" -sessions "$SESSIONS" -for "${SECS}s" -unthrottled
"$work/authguess" -bin "$work/conduit" -dir "$work/after" -sessions "$SESSIONS" -for "${SECS}s"
