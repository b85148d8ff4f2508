#!/usr/bin/env bash
# End-to-end throughput and latency on loopback: Conduit beside plain
# Postfix and beside the two set-ups a user would pick instead of it.
#
#   conduit:     two `conduit serve` processes (northshire-pio -> hmp-northgate).
#                Each package is submitted over SMTP (STARTTLS, AUTH PLAIN), read
#                for its marking, decided by the sharing policy, signed and
#                encrypted (PGP/MIME), stored durably in SQLite (WAL, synchronous
#                FULL) before the 250, relayed over SMTP with verified TLS 1.2+,
#                then opened, verified, checked for replay and by the inbound
#                policy, and written (fsync) into the receiving Maildir.
#   conduit open loop: the same, packages arriving at a fixed rate, half of
#                what Conduit sustained in its closed-loop run, each at its
#                time whatever the gateway's pace (16 clients); a package's
#                latency counts from its arrival.
#   postfix:     a throwaway Postfix instance on loopback, plain SMTP relay (no
#                TLS, no AUTH, no content processing): it queues each message
#                (fsync) and relays it to a sink run by the driver, which writes
#                it (fsync) into a Maildir the same way the gateway does.
#   postfix+tls: two Postfix instances, the sender's MTA and the receiver's,
#                each queueing, with mandatory TLS 1.2+ between them
#                (smtp_tls_security_level=encrypt, smtpd_tls_security_level=
#                encrypt), the receiver's relaying to the same sink.
#   postfix+gpg: the same, with a content filter on the sender's MTA that
#                spawns `gpg --sign --encrypt` per message and reinjects it
#                over SMTP, as zeyple and gpg-mailgate do (headers kept in
#                clear, the body signed and encrypted; Ed25519 and Curve25519).
#
# The same driver (bench/e2edriver) and the same client load are used on
# every closed-loop side: N packages of SIZE bytes, CLIENTS concurrent SMTP
# clients, a new session every 50 packages. Latency is from the start of a
# package's SMTP transaction (open loop: its arrival) to the write of its
# Maildir file.
#
# Usage: bench/e2e.sh [N] [SIZE] [CLIENTS]      (defaults 500 16384 4)
# Installs postfix with apt-get when it is missing (as root).
set -euo pipefail
N=${1:-500}
SIZE=${2:-16384}
CLIENTS=${3:-4}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/e2ebench.XXXXXX)
chmod 755 "$work" # the postfix user must reach its data and queue directories

started=()
pf_stop() {
	local c
	for c in "${started[@]}"; do
		postfix -c "$c" stop >/dev/null 2>&1 || true
	done
	started=()
}
trap 'pf_stop; rm -rf "$work"' EXIT

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

# settle writes back what the last step left dirty (the build, the side
# before, the files it deleted) and gives the disk a moment, so that a side
# pays less for the one before: run back to back, each right after the
# last one's files were deleted, Conduit's rate fell by up to a third from
# run to run (a file system mounted with online discard issues a
# deletion's discards at its next journal commit).
settle() {
	sync
	sleep 2
}

field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }

echo "load: $N packages x $SIZE bytes, $CLIENTS concurrent SMTP clients, loopback, $(nproc) cores ($(uptime | sed 's/.*\(load average\)/\1/'))"
echo
echo "== conduit: submission -> intake+policy -> seal -> durable queue -> relay (TLS) -> open+verify -> Maildir"
mkdir -p bed
settle
conduit_line=$(./e2edriver -mode conduit -bin "$work/conduit" -dir "$work/bed" -n "$N" -size "$SIZE" -clients "$CLIENTS" | grep '^RESULT')
echo "$conduit_line"
case $conduit_line in
*" unverified=0"*) ;;
*) echo "some delivered packages lack their Conduit-Verified header" >&2; exit 1 ;;
esac

rate=$(awk -v p="$(field "$conduit_line" pps)" 'BEGIN { printf "%.1f", p / 2 }')
echo
echo "== conduit, open loop: $rate packages/s arriving (half its closed-loop rate), 16 clients"
rm -rf "$work/bed"
mkdir -p bed
settle
open_line=$(./e2edriver -mode conduit -bin "$work/conduit" -dir "$work/bed" -n "$N" -size "$SIZE" -clients 16 -rate "$rate" | grep '^RESULT')
echo "$open_line"

# pf_start NAME SMTPD_PORT NEXTHOP TLS FILTER writes and starts a Postfix
# instance under $work/NAME: smtpd on 127.0.0.1:SMTPD_PORT, relaying
# everything to NEXTHOP (host:port). TLS "out" makes TLS mandatory to the
# next hop, "in" mandatory from clients, "none" neither. FILTER "gpg" runs
# the gpg content filter on what smtpd receives.
pf_start() {
	local name=$1 port=$2 nexthop=$3 tls=$4 filter=$5
	local d=$work/$name
	mkdir -p "$d/conf" "$d/queue" "$d/data"
	chown postfix "$d/data"
	{
		echo "compatibility_level = 3.6"
		echo "queue_directory = $d/queue"
		echo "data_directory = $d/data"
		echo "mail_owner = postfix"
		echo "setgid_group = postdrop"
		echo "myhostname = $name.localhost"
		echo "mydomain = localhost"
		echo "myorigin = \$myhostname"
		echo "mydestination ="
		echo "local_recipient_maps ="
		echo "alias_maps ="
		echo "alias_database ="
		echo "inet_interfaces = 127.0.0.1"
		echo "inet_protocols = ipv4"
		echo "mynetworks = 127.0.0.0/8"
		echo "smtpd_relay_restrictions = permit_mynetworks, reject"
		echo "relayhost = [${nexthop%:*}]:${nexthop##*:}"
		echo "smtputf8_enable = no"
		echo "message_size_limit = 52428800"
		echo "maillog_file = $d/maillog"
		echo "maillog_file_prefixes = $d"
		case $tls in
		out)
			echo "smtp_tls_security_level = encrypt"
			echo "smtp_tls_mandatory_protocols = >=TLSv1.2"
			echo "smtpd_tls_security_level = none"
			;;
		in)
			echo "smtp_tls_security_level = none"
			echo "smtpd_tls_security_level = encrypt"
			echo "smtpd_tls_cert_file = $work/tls/cert.pem"
			echo "smtpd_tls_key_file = $work/tls/key.pem"
			echo "smtpd_tls_mandatory_protocols = >=TLSv1.2"
			;;
		*)
			echo "smtp_tls_security_level = none"
			echo "smtpd_tls_security_level = none"
			;;
		esac
	} >"$d/conf/main.cf"
	local opts=""
	if [ "$filter" = gpg ]; then
		opts=" -o content_filter=gpgfilter:dummy"
	fi
	# Debian's services without chroot (the queue directory is not a
	# prepared chroot), smtpd on a high loopback port instead of port 25.
	awk -v port="$port" -v opts="$opts" '
		/^smtp[ \t]+inet/ { print "127.0.0.1:" port " inet n - n - - smtpd" opts; next }
		/^[a-z]/ && NF >= 8 { $5 = "n" }
		{ print }
	' /etc/postfix/master.cf >"$d/conf/master.cf"
	if [ "$filter" = gpg ]; then
		# The filter's way back in: a second smtpd without the filter.
		printf '127.0.0.1:%s inet n - n - - smtpd -o content_filter= -o smtpd_tls_security_level=none\n' "$inject_port" >>"$d/conf/master.cf"
		printf 'gpgfilter unix - n n - - pipe\n  flags=Rq user=nobody argv=%s -f ${sender} -- ${recipient}\n' "$work/gpgfilter.sh" >>"$d/conf/master.cf"
	fi
	postfix -c "$d/conf" check >/dev/null 2>&1 || true
	if ! postfix -c "$d/conf" start >/dev/null 2>&1; then
		echo "postfix $name did not start:" >&2
		cat "$d/maillog" >&2 2>/dev/null || true
		exit 1
	fi
	started+=("$d/conf")
	local deadline=$((SECONDS + 20))
	until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
		if [ $SECONDS -ge $deadline ]; then
			echo "postfix $name does not listen on $port" >&2
			cat "$d/maillog" >&2 || true
			exit 1
		fi
		sleep 0.1
	done
}

ports=($(./e2edriver -mode ports -count 4))
smtpd_port=${ports[0]} sink_port=${ports[1]} rx_port=${ports[2]} inject_port=${ports[3]}

echo
echo "== postfix $(postconf -h mail_version 2>/dev/null || true): plain SMTP relay (queue, no TLS, no content processing) -> sink -> Maildir"
pf_start postfix "$smtpd_port" "127.0.0.1:$sink_port" none none
settle
postfix_line=$(./e2edriver -mode relay -relay "127.0.0.1:$smtpd_port" -sink "127.0.0.1:$sink_port" -dir "$work/relay" -n "$N" -size "$SIZE" -clients "$CLIENTS" | grep '^RESULT')
echo "$postfix_line"
pf_stop

mkdir -p "$work/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=receiver.localhost \
	-keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" >/dev/null 2>&1
chmod 644 "$work/tls/cert.pem" "$work/tls/key.pem"

echo
echo "== postfix+tls: sender's Postfix -> mandatory TLS -> receiver's Postfix (each queues) -> sink -> Maildir"
pf_start pfrx "$rx_port" "127.0.0.1:$sink_port" in none
pf_start pftx "$smtpd_port" "127.0.0.1:$rx_port" out none
settle
tls_line=$(./e2edriver -mode relay -relay "127.0.0.1:$smtpd_port" -sink "127.0.0.1:$sink_port" -dir "$work/relaytls" -n "$N" -size "$SIZE" -clients "$CLIENTS" | grep '^RESULT')
echo "$tls_line"
pf_stop

# The gpg filter's keys: the sender's signing key (Ed25519) and the
# receiver's key (Ed25519 with a Curve25519 encryption subkey), unprotected, in a home that the
# filter's user (nobody) owns.
gh=$work/gnupg
mkdir -p "$gh"
chmod 700 "$gh"
gpg --homedir "$gh" --batch --quiet --passphrase '' --quick-gen-key 'bench sender <pio@northshire-pio.example>' ed25519 sign never 2>/dev/null
gpg --homedir "$gh" --batch --quiet --passphrase '' --quick-gen-key 'bench receiver <pio@hmp-northgate.example>' future-default default never 2>/dev/null
gpgconf --homedir "$gh" --kill gpg-agent 2>/dev/null || true
chown -R nobody "$gh"
{
	echo '#!/bin/sh'
	echo '# Content filter: headers in clear, the body signed and encrypted by one'
	echo '# gpg process, reinjected over SMTP into the MTA past the filter.'
	echo 'from=$2; shift 3'
	echo 'tmp=$(mktemp) || exit 75'
	echo 'trap '"'"'rm -f "$tmp"'"'"' EXIT'
	echo 'cat >"$tmp" || exit 75'
	echo "{ sed '/^\\r\\?\$/q' \"\$tmp\"; sed '1,/^\\r\\?\$/d' \"\$tmp\" | gpg --homedir $gh --batch --quiet --trust-model always -u pio@northshire-pio.example -r pio@hmp-northgate.example --sign --encrypt --armor; } |"
	echo "	$work/e2edriver -mode inject -relay 127.0.0.1:$inject_port \"\$from\" \"\$@\" || exit 75"
} >"$work/gpgfilter.sh"
chmod 755 "$work/gpgfilter.sh"

echo
echo "== postfix+gpg: the same, with a content filter spawning gpg --sign --encrypt per message on the sender's Postfix"
pf_start pfrx "$rx_port" "127.0.0.1:$sink_port" in none
pf_start pftx "$smtpd_port" "127.0.0.1:$rx_port" out gpg
settle
gpg_line=$(./e2edriver -mode relay -relay "127.0.0.1:$smtpd_port" -sink "127.0.0.1:$sink_port" -dir "$work/relaygpg" -n "$N" -size "$SIZE" -clients "$CLIENTS" | grep '^RESULT')
echo "$gpg_line"
pf_stop

echo
echo "load at the end: $(uptime | sed 's/.*\(load average\)/\1/')"
printf '%-24s %9s %9s %9s %10s %14s\n' side "pkg/s" "p50 ms" "p99 ms" "submit s" "conduit/side"
row() {
	printf '%-24s %9s %9s %9s %10s %14s\n' "$1" "$(field "$2" pps)" "$(field "$2" p50_ms)" "$(field "$2" p99_ms)" "$(field "$2" submit_s)" \
		"$(awk -v c="$(field "$conduit_line" pps)" -v p="$(field "$2" pps)" 'BEGIN { printf "%.2fx", c / p }')"
}
row conduit "$conduit_line"
row "conduit open @$rate/s" "$open_line"
row postfix "$postfix_line"
row postfix+tls "$tls_line"
row postfix+gpg "$gpg_line"
echo
echo "conduit/side: Conduit's closed-loop throughput over that side's. Conduit seals, keeps every"
echo "promise (fsync before each 250 and each delivery), relays over verified TLS, opens and verifies;"
echo "postfix relays in clear; postfix+tls queues twice with TLS between; postfix+gpg adds a gpg per message."
