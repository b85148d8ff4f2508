#!/usr/bin/env bash
# Runs the whole test suite: installs the real peers the interop and
# deployment tests use (GnuPG, Sequoia sq, swaks, Postfix, Dovecot,
# systemd-analyze), then gofmt, go mod tidy -diff, go vet, every test, the Vault test
# module (vaulttest/, against Vault's own server), and a bounded run of each
# fuzz target. Used by the README and by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v gpg >/dev/null 2>&1 || need+=(gnupg)
command -v sq >/dev/null 2>&1 || need+=(sq)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
# The agency's own mail system in the deployment tests: Postfix (the
# MTA relaying through the gateway), Dovecot (LMTP and IMAP), and
# systemd-analyze for the unit. The tests start their own instances from
# temporary folders on loopback ports; a system Postfix or Dovecot that
# the packages start is neither used nor disturbed.
command -v postfix >/dev/null 2>&1 || need+=(postfix)
[ -x /usr/lib/dovecot/lmtp ] || need+=(dovecot-lmtpd)
[ -x /usr/lib/dovecot/imap ] || need+=(dovecot-imapd)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# PostgreSQL's server: the store suite and the multi-gateway tests start
# throwaway clusters with initdb (pgtest); under CI=true they fail, never
# skip, when it is missing.
command -v initdb >/dev/null 2>&1 || [ -x "$(pg_config --bindir 2>/dev/null)/initdb" ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# The console's browser tests drive headless Chromium.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v npm >/dev/null 2>&1 || need+=(npm)
if ((${#need[@]})); then
	if [ "$(id -u)" = 0 ]; then
		echo "test.sh: installing ${need[*]}"
		# Postfix asks how to configure the system's mail: "No
		# configuration" (the tests configure their own instances).
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
	else
		echo "test.sh: ${need[*]} missing; install them (apt-get install ${need[*]}) or interop tests skip" >&2
	fi
fi

# axe-core, run inside each console page by the browser tests: a pinned
# release from the npm registry, checked against its recorded digest,
# kept in the user's cache (the test reads it from $CONDUIT_AXE).
axever=4.10.3
axesum=0f2b4d7dcdf7d1219df8d1959ad68e565f51d14c3f0d88bb71cd59abeb956292
axedir="${XDG_CACHE_HOME:-$HOME/.cache}/conduit-test/axe-core-$axever"
if [ ! -f "$axedir/package/axe.min.js" ]; then
	echo "test.sh: fetching axe-core $axever from the npm registry"
	mkdir -p "$axedir"
	(cd "$axedir" && npm pack "axe-core@$axever" --silent >/dev/null)
	echo "$axesum  $axedir/axe-core-$axever.tgz" | sha256sum -c --quiet -
	tar -xzf "$axedir/axe-core-$axever.tgz" -C "$axedir" package/axe.min.js
fi
export CONDUIT_AXE="$axedir/package/axe.min.js"

# The Vault test module (vaulttest/) has a dependency graph of its own,
# far larger than the product's: fetch and compile it now, in the
# background and niced, so that its download and cold build (several
# minutes) overlap the product's tests, which mostly wait on sockets and
# keep their CPU priority. Its tests run below, once the product's pass.
vaultlog=$(mktemp)
(cd vaulttest && nice -n 19 go vet ./... && nice -n 19 go test -count=1 -run '^$' ./...) >"$vaultlog" 2>&1 &
vaultbuild=$!
# Under set -e a failing command in the trap would change the exit status.
trap 'pkill -P "$vaultbuild" 2>/dev/null || true; kill "$vaultbuild" 2>/dev/null || true' EXIT

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi
# go.mod and go.sum say exactly what the code imports (a direct
# dependency is not marked indirect, nothing unused is left).
go mod tidy -diff
go vet ./...
# The end-to-end package runs real gateway processes one test after
# another and takes several minutes on a small machine: past go test's
# default 10-minute limit per package on a loaded one.
go test -count=1 -timeout 30m ./...

# The Vault key backend against Vault's own in-process server (real core,
# real TLS, the policies in docs/): a module of its own, vaulttest/go.mod,
# so that Vault's large dependency graph stays out of the product's.
if ! wait "$vaultbuild"; then
	cat "$vaultlog" >&2
	echo "test.sh: the Vault test module does not build or go vet finds fault with it" >&2
	exit 1
fi
rm -f "$vaultlog"
(cd vaulttest && go test -count=1 -timeout 20m ./...)

# Each fuzz target for a bounded number of executions (FUZZTIME, default
# 10000x: the budget of a CI run on a small machine; a longer
# run is FUZZTIME=200000x bash test.sh), seeded by its corpus under testdata/fuzz. A count, not a
# duration: Go 1.26's fuzz coordinator can report a spurious "context
# deadline exceeded" when a duration runs out under CPU load
# (golang/go#75804, fixed in Go 1.27). A real finding writes its input to
# testdata/fuzz and fails.
fuzztime=${FUZZTIME:-10000x}
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
		echo "fuzz $pkg $target for $fuzztime"
		go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$pkg"
	done
done
echo "test.sh: all tests passed"
