package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/conduit-gateway/conduit/gateway"
	"github.com/conduit-gateway/conduit/testbed"
)

// The environment is read here and in config loading only; the packages
// below take what it says as options, so that a library caller (a test, the
// demo, another program) decides everything explicitly.
const (
	// passphraseEnv holds the passphrase that decrypts the agency's
	// secret key; for the gateway it overrides keys.passphrase-file.
	passphraseEnv = "CONDUIT_PASSPHRASE"
	// vaultTokenEnv is an operator's Vault token for the key commands,
	// whose writes the gateway's own read-only policy does not allow.
	vaultTokenEnv = "CONDUIT_VAULT_TOKEN"
	// auditKeyFileEnv names the audit chain's HMAC key file.
	auditKeyFileEnv = "CONDUIT_AUDIT_KEY_FILE"
	// cpuProfileEnv, for measurements (bench/e2e.sh -profile), names a
	// file prefix: serve writes a CPU profile to PREFIX.PID until it
	// stops. A profile holds call stacks and counts, never message data.
	cpuProfileEnv = "CONDUIT_CPU_PROFILE"
)

// gcPercent is the daemon's garbage collector target when GOGC does not
// set one. Go's default (100) collects each time the heap doubles; the
// gateway's live heap is small (keys, config, the envelopes in flight) and
// most of what it allocates is per-message garbage, so at 100 the collector
// took about 5% of a loaded gateway's CPU. At 400 it runs a quarter as
// often.
const gcPercent = 400

// memoryLimit is the soft heap limit when GOMEMLIMIT does not set one. At
// gcPercent 400 a burst of large packages would let the heap reach five
// times what is live (a receiving gateway peaked at 813 MiB with 10 MiB
// packages); under this limit the collector runs as often as it must to
// stay below it, and at 400 otherwise.
const memoryLimit = 512 << 20

// gcDefault applies gcPercent and memoryLimit unless the operator set
// GOGC or GOMEMLIMIT.
func gcDefault() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(memoryLimit)
	}
}

// cpuProfile starts the CPU profile cpuProfileEnv asks for; stop ends it.
func cpuProfile(log *slog.Logger) (stop func(), err error) {
	prefix := os.Getenv(cpuProfileEnv)
	if prefix == "" {
		return func() {}, nil
	}
	name := fmt.Sprintf("%s.%d", prefix, os.Getpid())
	f, err := os.Create(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cpuProfileEnv, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", cpuProfileEnv, err)
	}
	log.Warn("writing a CPU profile", "file", name)
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// gatewayOptions completes the options of gateway.New with what the
// environment says: the passphrase and Vault token overrides, and the
// test clock.
func gatewayOptions(opt gateway.Options) gateway.Options {
	if v := os.Getenv(passphraseEnv); v != "" && opt.Passphrase == nil {
		opt.Passphrase = []byte(v)
	}
	if opt.VaultToken == "" {
		opt.VaultToken = os.Getenv(vaultTokenEnv)
	}
	if opt.Now == nil {
		opt.Now = testClock(opt.Log)
	}
	return opt
}

// testClock honours testbed.ClockEnv, a test-only hook: it names a file
// whose content (a Go duration, "73h") is added to the gateway's clock,
// so that end-to-end tests and the demo can move a running gateway
// process 72 hours ahead in a second. A deployment never sets it; nil when
// unset.
func testClock(log *slog.Logger) func() time.Time {
	f := os.Getenv(testbed.ClockEnv)
	if f == "" {
		return nil
	}
	if log == nil {
		log = slog.Default()
	}
	log.Warn("the clock is offset by a test file; never in a deployment", "file", f)
	return offsetClock(f)
}

// offsetClock is time.Now plus the offset in a file, re-read when the file
// changes.
func offsetClock(path string) func() time.Time {
	var mu sync.Mutex
	var mod time.Time
	var off time.Duration
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		if st, err := os.Stat(path); err == nil && !st.ModTime().Equal(mod) {
			mod = st.ModTime()
			if b, err := os.ReadFile(path); err == nil {
				if d, err := time.ParseDuration(strings.TrimSpace(string(b))); err == nil {
					off = d
				}
			}
		}
		return time.Now().Add(off)
	}
}
