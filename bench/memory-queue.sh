#!/usr/bin/env bash
# The gateways' memory under a large backlog, in three phases. Queueing: N
# packages of SIZE bytes are submitted (CLIENTS at a time, over SMTP with
# STARTTLS and AUTH) to a sender gateway whose destination's gateway is
# down, so that they queue. Backlog: the sender is restarted (what the
# submissions left in its memory goes) and holds the whole queue, due and
# retried, for BACKLOG (default 30s) with the receiver still down. Drain:
# the receiving gateway starts and the queue drains into its Maildir. Two
# `conduit serve` processes on loopback, laid out by bench/e2edriver (mode
# queue) as bench/e2e.sh does.
#
# Prints, for each phase, its time and each running gateway's peak resident
# memory: VmHWM from /proc/PID/status (the sender's reset at the drain's
# start), and the highest VmRSS sampled every 200 ms beside it. The
# gateways run with the memory settings `serve` applies by default
# (GOGC=400, a 512 MiB soft limit: cmd/conduit/env.go) unless GOGC or
# GOMEMLIMIT are set in the environment.
#
# While the receiver is down the sender retries each item 1 s, 2 s, 4 s...
# up to RETRY_MAX (default 10s) apart, so that the drain starts within that
# of the receiver's start.
#
# Usage: bench/memory-queue.sh [N] [SIZE] [CLIENTS]   (defaults 1000 10485760 4)
#   CONDUIT_BIN=PATH  runs that conduit binary instead of building this tree's
#                     (another build, for a before and after)
# Disk: about N x SIZE x 1.8 in the sender's store (armored envelopes, and
# SQLite's WAL) and N x SIZE in the receiver's Maildir, under a temporary
# folder (TMPDIR) removed at the end.
set -euo pipefail
N=${1:-1000}
SIZE=${2:-10485760}
CLIENTS=${3:-4}
RETRY_MAX=${RETRY_MAX:-10s}
BACKLOG=${BACKLOG:-30s}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/memqueue.XXXXXX")
trap 'rm -rf "$work"' EXIT

(cd "$repo" && go build -o "$work/e2edriver" ./bench/e2edriver)
if [ -n "${CONDUIT_BIN:-}" ]; then
	cp "$CONDUIT_BIN" "$work/conduit"
else
	(cd "$repo" && go build -o "$work/conduit" ./cmd/conduit)
fi
need=$((N * SIZE * 3 / 1048576))
free=$(df -Pm "$work" | awk 'NR == 2 { print $4 }')
if [ "$free" -lt "$need" ]; then
	echo "memory-queue.sh: about $need MiB of disk needed under $work, $free MiB free" >&2
	exit 1
fi

echo "load: $N packages x $SIZE bytes, $CLIENTS concurrent SMTP clients, receiver down until all are queued; $(nproc) cores ($(uptime | sed 's/.*\(load average\)/\1/'))"
dflt="serve's default"
echo "gateways' memory settings: GOGC=${GOGC:-400, $dflt} GOMEMLIMIT=${GOMEMLIMIT:-512MiB, $dflt}"
mkdir -p "$work/bed"
"$work/e2edriver" -mode queue -bin "$work/conduit" -dir "$work/bed" -n "$N" -size "$SIZE" -clients "$CLIENTS" \
	-retry-max "$RETRY_MAX" -backlog "$BACKLOG" -timeout 6h | grep '^RESULT'
