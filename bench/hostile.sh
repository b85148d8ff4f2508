#!/usr/bin/env bash
# Admission under attack: two `conduit serve` processes on loopback
# (northshire-pio -> hmp-northgate). While IDLE connections that never
# send a byte and SLOW slow-loris connections (one byte every 2 s) from
# one attacker address are held open against the receiver's inbound
# listener (reconnecting whenever the gateway refuses or cuts them), the
# driver measures a partner's banner (with its client certificate) and
# the time from submitting an immediate (escape risk) package to its file
# in the receiver's Maildir, and the receiver's resident memory.
#
# Usage: bench/hostile.sh [IDLE] [SLOW] [ADDRS] [PROBES] [RETRY]      (defaults 1000 1000 1 5 1s)
# RETRY is how soon a refused or dropped attacker connects again.
# ADDRS > 1 spreads the attacker over that many loopback addresses.
set -euo pipefail
IDLE=${1:-1000}
SLOW=${2:-1000}
ADDRS=${3:-1}
PROBES=${4:-5}
RETRY=${5:-1s}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/hostilebench.XXXXXX)
trap 'rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cd "$repo"
go build -o "$work/conduit" ./cmd/conduit
go build -o "$work/hostile" ./bench/hostile
"$work/hostile" -bin "$work/conduit" -dir "$work/bed" -idle "$IDLE" -slow "$SLOW" -addrs "$ADDRS" -probes "$PROBES" -retry "$RETRY"
