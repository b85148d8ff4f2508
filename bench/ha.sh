#!/usr/bin/env bash
# End-to-end throughput and latency of an agency running 1, 2 and 3
# gateways on one PostgreSQL database, beside one gateway on SQLite, in the
# same run on the same machine.
#
# The sending agency (northshire-pio) is the one measured: each package is
# submitted (STARTTLS, AUTH), decided, sealed, stored durably before the
# 250 (SQLite WAL synchronous=FULL, or PostgreSQL with fsync and
# synchronous_commit on), relayed with verified TLS, and opened and
# written to the Maildir by the receiving agency's one gateway (SQLite) in
# every run. The clients spread their sessions over the sender's
# gateways. PostgreSQL is a throwaway server (initdb in a temp folder,
# fsync on) started by the driver, on the same machine.
#
# Usage: bench/ha.sh [N] [SIZE] [CLIENTS]      (defaults 300 16384 6)
set -euo pipefail
N=${1:-300}
SIZE=${2:-16384}
CLIENTS=${3:-6}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/habench.XXXXXX)
trap 'rm -rf "$work"' EXIT
if ! command -v initdb >/dev/null 2>&1 && ! command -v pg_config >/dev/null 2>&1; then
	[ "$(id -u)" = 0 ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
(cd "$repo" && go build -o "$work/conduit" ./cmd/conduit && go build -o "$work/e2edriver" ./bench/e2edriver)
cd "$work"
echo "load: $N packages x $SIZE bytes, $CLIENTS concurrent SMTP clients, loopback, $(nproc) cores ($(uptime | sed 's/.*\(load average\)/\1/'))"
for k in 0 1 2 3; do
	mkdir -p "bed$k"
	./e2edriver -mode ha -bin "$work/conduit" -dir "$work/bed$k" -gateways "$k" -n "$N" -size "$SIZE" -clients "$CLIENTS" | grep '^RESULT'
done
