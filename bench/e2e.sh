#!/usr/bin/env bash
# End-to-end throughput and latency on loopback, Conduit beside plain Postfix.
#
#   conduit: two `conduit serve` processes (northshire-pio -> hmp-northgate).
#            Each package is submitted over SMTP (STARTTLS, AUTH PLAIN), read
#            for its marking, decided by the sharing policy, signed and
#            encrypted (PGP/MIME), stored durably in SQLite (WAL, synchronous
#            FULL) before the 250, relayed over SMTP with verified TLS 1.2+,
#            then opened, verified, checked for replay and by the inbound
#            policy, and written (fsync) into the receiving Maildir.
#   postfix: a throwaway Postfix instance on loopback, plain SMTP relay (no
#            TLS, no AUTH, no content processing): it queues each message
#            (fsync) and relays it to a sink run by the driver, which writes
#            it (fsync) into a Maildir the same way the gateway does.
#
# The same driver (bench/e2edriver) and the same client load are used on
# both sides: N packages of SIZE bytes, CLIENTS concurrent SMTP clients, a
# new session every 50 packages. Latency is from the start of a package's
# SMTP transaction to the write of its Maildir file.
#
# Usage: bench/e2e.sh [N] [SIZE] [CLIENTS]      (defaults 500 16384 4)
# Installs postfix with apt-get when it is missing (as root).
set -euo pipefail
N=${1:-500}
SIZE=${2:-16384}
CLIENTS=${3:-4}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/e2ebench.XXXXXX)
pf=$work/postfix
pfconf=$pf/conf
chmod 755 "$work" # the postfix user must reach its data and queue directories

cleanup() {
	if [ -f "$pfconf/main.cf" ]; then
		postfix -c "$pfconf" stop >/dev/null 2>&1 || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

if ! command -v postfix >/dev/null 2>&1 || ! [ -x /usr/sbin/postfix ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "postfix is not installed (apt-get install postfix) and this is not root" >&2
		exit 1
	fi
	echo "e2e.sh: installing postfix"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi

(cd "$repo" && go build -o "$work/conduit" ./cmd/conduit && go build -o "$work/e2edriver" ./bench/e2edriver)
cd "$work"

echo "load: $N packages x $SIZE bytes, $CLIENTS concurrent SMTP clients, loopback, $(nproc) cores ($(uptime | sed 's/.*\(load average\)/\1/'))"
echo
echo "== conduit: submission -> intake+policy -> seal -> durable queue -> relay (TLS) -> open+verify -> Maildir"
mkdir -p bed
conduit_line=$(./e2edriver -mode conduit -bin "$work/conduit" -dir "$work/bed" -n "$N" -size "$SIZE" -clients "$CLIENTS" | grep '^RESULT')
echo "$conduit_line"
case $conduit_line in
*" unverified=0"*) ;;
*) echo "some delivered packages lack their Conduit-Verified header" >&2; exit 1 ;;
esac

echo
echo "== postfix $(postconf -h mail_version 2>/dev/null): plain SMTP relay (queue, no TLS, no content processing) -> sink -> Maildir"
ports=($(./e2edriver -mode ports -count 2))
smtpd_port=${ports[0]} sink_port=${ports[1]}
mkdir -p "$pfconf" "$pf/queue" "$pf/data"
chown postfix "$pf/data"
cat >"$pfconf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localhost
mydomain = localhost
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:$sink_port
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtputf8_enable = no
message_size_limit = 52428800
maillog_file = $pf/maillog
maillog_file_prefixes = $pf
EOF
# Debian's services without chroot (the queue directory is not a prepared
# chroot), smtpd on the high loopback port instead of port 25.
awk -v port="$smtpd_port" '
	/^smtp[ \t]+inet/ { print "127.0.0.1:" port " inet n - n - - smtpd"; next }
	/^[a-z]/ && NF >= 8 { $5 = "n" }
	{ print }
' /etc/postfix/master.cf >"$pfconf/master.cf"
postfix -c "$pfconf" check >/dev/null 2>&1 || true
postfix -c "$pfconf" start >/dev/null 2>&1 || { echo "postfix did not start:" >&2; cat "$pf/maillog" >&2 2>/dev/null || true; exit 1; }
deadline=$((SECONDS + 20))
until (exec 3<>"/dev/tcp/127.0.0.1/$smtpd_port") 2>/dev/null; do
	[ $SECONDS -lt $deadline ] || { echo "postfix does not listen on $smtpd_port" >&2; cat "$pf/maillog" >&2 || true; exit 1; }
	sleep 0.1
done
postfix_line=$(./e2edriver -mode relay -relay "127.0.0.1:$smtpd_port" -sink "127.0.0.1:$sink_port" -dir "$work/relay" -n "$N" -size "$SIZE" -clients "$CLIENTS" | grep '^RESULT')
echo "$postfix_line"
postfix -c "$pfconf" stop >/dev/null 2>&1 || true

field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }
echo
printf '%-9s %10s %10s %10s %12s\n' side "pkg/s" "p50 ms" "p99 ms" "submit s"
for side in conduit postfix; do
	line=${side}_line
	printf '%-9s %10s %10s %10s %12s\n' "$side" "$(field "${!line}" pps)" "$(field "${!line}" p50_ms)" "$(field "${!line}" p99_ms)" "$(field "${!line}" submit_s)"
done
awk -v c="$(field "$conduit_line" pps)" -v p="$(field "$postfix_line" pps)" 'BEGIN {
	printf "\nthroughput ratio conduit/postfix: %.2fx\n", c / p
	printf "(conduit does seal+policy+durable queue+TLS twice+open+verify+Maildir; postfix only relays in clear)\n"
}'
