#!/usr/bin/env bash
# Seals and opens a message with a 1 GiB attachment through the conduit
# binary and prints the peak resident memory of each (GNU time's maximum
# resident set size). Seal and open both stream; open spools the decrypted
# payload to an unlinked file encrypted under an ephemeral key.
# Usage: bench/memory-1gib.sh [MiB]   (default 1024)
set -euo pipefail
MIB=${1:-1024}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/membench.XXXXXX)
trap 'rm -rf "$work"' EXIT
[ -x /usr/bin/time ] || { echo "GNU time is needed (apt-get install time)" >&2; exit 1; }
(cd "$repo" && go build -o "$work/conduit" ./cmd/conduit)
cd "$work"
./conduit keys generate --agency met-pio --email conduit@met.example --out met >/dev/null 2>&1
./conduit keys generate --agency hmp-northgate --email conduit@northgate.example --out ng >/dev/null 2>&1
label='v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=fact; subjects=suspected; purpose=crime; sanitised=yes; originator=met-pio; reference=BENCH-1G'

# The attachment's base64 text is MIB MiB; the message is generated as it
# is sealed, so it never sits on disk in clear.
message() {
	printf 'From: analyst@met.example\r\nTo: pio@northgate.example\r\nSubject: large\r\nMIME-Version: 1.0\r\n'
	printf 'Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n'
	printf -- '--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=cctv.bin\r\n\r\n'
	head -c $((MIB * 1024 * 1024 * 3 / 4)) /dev/zero | base64 -w 76
	printf -- '--b--\r\n'
}
rss() { awk -F': ' '/Maximum resident set size/ { printf "%.1f MiB", $2 / 1024 }' "$1"; }
secs() { awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$1"; }

message | /usr/bin/time -v -o seal.time ./conduit seal --signer met.key --recipient ng.pub.asc --label "$label" >sealed.eml 2>/dev/null
/usr/bin/time -v -o open.time ./conduit open --key ng.key --sender met.pub.asc <sealed.eml >opened.eml 2>/dev/null
grep -q 'filename=cctv.bin' opened.eml || { echo "opened message lacks the attachment" >&2; exit 1; }
echo "attachment: ${MIB} MiB of base64; sealed envelope $(du -m sealed.eml | cut -f1) MiB; opened $(du -m opened.eml | cut -f1) MiB"
echo "seal: peak RSS $(rss seal.time), wall $(secs seal.time)"
echo "open: peak RSS $(rss open.time), wall $(secs open.time)"
