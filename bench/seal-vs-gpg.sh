#!/usr/bin/env bash
# Seals the same N packages (default 200 of 4 KiB) three ways and prints
# the rates and ratios:
#   conduit   - Conduit's envelope package in one process, as the gateway seals
#   gpg       - one `gpg --sign --encrypt` process per package, as mail
#               gateways built on GnuPG do
#   conduit-cli - one `conduit seal` process per package, for a like-for-like
#               process-per-package figure
# The same keys (made by conduit, imported into gpg) and messages are used.
# Usage: bench/seal-vs-gpg.sh [N] [SIZE]
set -euo pipefail
N=${1:-200}
SIZE=${2:-4096}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/sealbench.XXXXXX)
export GNUPGHOME=$work/g
trap 'gpgconf --kill all >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
mkdir -p "$GNUPGHOME" "$work/msgs"
chmod 700 "$GNUPGHOME"
command -v gpg >/dev/null || { echo "gpg is not installed (apt-get install gnupg)" >&2; exit 1; }

(cd "$repo" && go build -o "$work/conduit" ./cmd/conduit && go build -o "$work/sealbench" ./bench/sealbench)
cd "$work"
./conduit keys generate --agency met-pio --email conduit@met.example --out met >/dev/null 2>&1
ngfpr=$(./conduit keys generate --agency hmp-northgate --email conduit@northgate.example --out ng 2>/dev/null | awk '{print $3}')
metfpr=$(./conduit keys export --key met.key 2>&1 >/dev/null | awk '{print $2}')
gpg --batch --quiet --import met.key ng.pub.asc 2>/dev/null

label='v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=fact; subjects=suspected; purpose=crime; sanitised=yes; originator=met-pio; reference=BENCH-1'
for i in $(seq -w 1 "$N"); do
	{
		printf 'From: analyst@met.example\r\nTo: pio@northgate.example\r\nSubject: bench %s\r\nContent-Type: text/plain\r\n\r\n' "$i"
		head -c $((SIZE * 3 / 4)) /dev/urandom | base64 -w 76
	} >"msgs/$i.eml"
done

now() { date +%s.%N; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", n / s }'; }

# Every way appends its envelopes to one file, so that file creation (slow
# on some file systems) does not swamp the cryptography being compared.
read -r _ conduit_s < <(./sealbench -signer met.key -recipient ng.pub.asc -label "$label" -in msgs -out out-conduit)
read -r _ conduitp_s < <(./sealbench -workers "$(nproc)" -signer met.key -recipient ng.pub.asc -label "$label" -in msgs -out out-conduitp)

t0=$(now)
for f in msgs/*.eml; do
	gpg --batch --yes --quiet --trust-model always --armor --sign --encrypt \
		--local-user "$metfpr" --recipient "$ngfpr" --output - "$f"
done >out-gpg
gpg_s=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')

t0=$(now)
for f in msgs/*.eml; do
	./conduit seal --signer met.key --recipient ng.pub.asc --label "$label" <"$f" 2>/dev/null
done >out-cli
cli_s=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')

# Every output must be there and non-empty, or the figures mean nothing.
for o in out-conduit out-conduitp out-gpg out-cli; do
	n=$(grep -c -- '-----BEGIN PGP MESSAGE-----' "$o")
	[ "$n" -eq "$N" ] || { echo "$o: $n of $N sealed" >&2; exit 1; }
done

c=$(rate "$N" "$conduit_s"); p=$(rate "$N" "$conduitp_s"); g=$(rate "$N" "$gpg_s"); l=$(rate "$N" "$cli_s")
echo "packages: $N x $SIZE bytes (rfc4880 profile, Curve25519, signed+encrypted, armored)"
printf '%-40s %10s pkg/s\n' "conduit (in process, one at a time)" "$c"
printf '%-40s %10s pkg/s\n' "conduit (in process, $(nproc) at a time)" "$p"
printf '%-40s %10s pkg/s\n' "gpg --sign --encrypt (process each)" "$g"
printf '%-40s %10s pkg/s\n' "conduit seal (process each)" "$l"
awk -v c="$c" -v p="$p" -v g="$g" -v l="$l" 'BEGIN {
	printf "ratio conduit/gpg:       %.1fx (one at a time)\n", c / g
	printf "ratio conduit/gpg:       %.1fx (concurrent, as the gateway runs)\n", p / g
	printf "ratio conduit-cli/gpg:   %.1fx\n", l / g
}'
