package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// loadSrc writes a config beside the base directory and loads it.
func loadSrc(t *testing.T, src string) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	tcheck(t, os.WriteFile(filepath.Join(dir, "directory.yaml"), []byte(base), 0o600), "write directory")
	path := filepath.Join(dir, "conduit.yaml")
	tcheck(t, os.WriteFile(path, []byte(src), 0o600), "write config")
	return Load(path)
}

const minimal = "agency: pas\ndirectory: directory.yaml\npolicy: p.yaml\n"

const vaultSection = "keys:\n  backend: vault\nvault:\n  address: https://vault.example:8200\n  auth: {method: token, token-file: t}\n"

func TestLoadFillsEveryDefault(t *testing.T) {
	c, err := loadSrc(t, minimal+vaultSection)
	tcheck(t, err, "load")
	g := c.Gateway
	for _, tc := range []struct {
		field     string
		got, want any
	}{
		{"limits.message-bytes", g.Limits.MessageBytes, int64(DefaultMessageBytes)},
		{"limits.recipients", g.Limits.Recipients, DefaultRecipients},
		{"limits.connections", g.Limits.Connections, DefaultConnections},
		{"limits.commands", g.Limits.Commands, DefaultCommands},
		{"limits.connections-per-address", g.Limits.ConnectionsPerAddress, 10},
		{"limits.partner-slots", g.Limits.PartnerSlots, 20},
		{"limits.pre-auth-timeout", time.Duration(g.Limits.PreAuthTimeout), 20 * time.Second},
		{"limits.pre-auth-total", time.Duration(g.Limits.PreAuthTotal), time.Minute},
		{"auth.penalty", time.Duration(g.Auth.Penalty), time.Second},
		{"auth.max-penalty", time.Duration(g.Auth.MaxPenalty), 15 * time.Second},
		{"auth.account-failures", g.Auth.AccountFailures, 10},
		{"auth.address-failures", g.Auth.AddressFailures, 20},
		{"auth.window", time.Duration(g.Auth.Window), 15 * time.Minute},
		{"auth.lockout", time.Duration(g.Auth.Lockout), 15 * time.Minute},
		{"auth.session-failures", g.Auth.SessionFailures, 3},
		{"quarantine.quota-bytes", g.Quarantine.QuotaBytes, int64(1 << 30)},
		{"quarantine.per-source-hour", g.Quarantine.PerSourceHour, 20},
		{"quarantine.alert-interval", time.Duration(g.Quarantine.AlertInterval), 10 * time.Minute},
		{"queue.retry-min", time.Duration(g.Queue.RetryMin), 30 * time.Second},
		{"queue.retry-max", time.Duration(g.Queue.RetryMax), 30 * time.Minute},
		{"queue.max-age", time.Duration(g.Queue.MaxAge), 72 * time.Hour},
		{"queue.workers", g.Queue.Workers, 4},
		{"queue.receipt-gather", time.Duration(g.Queue.ReceiptGather), 200 * time.Millisecond},
		{"queue.receipt-batch", g.Queue.ReceiptBatch, 200},
		{"keys.expiry-warning", time.Duration(g.Keys.ExpiryWarning), 30 * 24 * time.Hour},
		{"keys.check-interval", time.Duration(g.Keys.CheckInterval), 5 * time.Second},
		{"keys.profile", g.Keys.Profile, "rfc4880"},
		{"shutdown-timeout", time.Duration(g.ShutdownTimeout), 30 * time.Second},
		{"housekeeping-interval", time.Duration(g.HousekeepingInterval), time.Minute},
		{"vault.mount", g.Vault.Mount, "conduit"},
		{"vault.path", g.Vault.Path, "agency-identity"},
		{"vault.auth.mount", g.Vault.Auth.Mount, "token"},
		{"vault.timeout", time.Duration(g.Vault.Timeout), 10 * time.Second},
		{"vault.max-retries", g.Vault.MaxRetries, 2},
		{"vault.retry-wait", time.Duration(g.Vault.RetryWait), 500 * time.Millisecond},
		{"vault.check-interval", time.Duration(g.Vault.CheckInterval), 5 * time.Second},
		{"vault.renew", *g.Vault.Renew, true},
		{"legacy-markings", string(c.LegacyMarkings["RESTRICTED"]), "OFFICIAL-SENSITIVE"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want the default %v", tc.field, tc.got, tc.want)
		}
	}
}

func TestSetValueOverridesDefault(t *testing.T) {
	c, err := loadSrc(t, minimal+"queue: {retry-min: 1s, retry-max: 2m, max-age: 6h, workers: 16}\nlimits: {commands: 500}\n"+
		"shutdown-timeout: 5s\nhousekeeping-interval: 10s\n"+vaultSection+"  max-retries: -1\n  renew: false\n  check-interval: 1s\n")
	tcheck(t, err, "load")
	g := c.Gateway
	for _, tc := range []struct {
		field     string
		got, want any
	}{
		{"queue.retry-min", time.Duration(g.Queue.RetryMin), time.Second},
		{"queue.retry-max", time.Duration(g.Queue.RetryMax), 2 * time.Minute},
		{"queue.max-age", time.Duration(g.Queue.MaxAge), 6 * time.Hour},
		{"queue.workers", g.Queue.Workers, 16},
		{"limits.commands", g.Limits.Commands, 500},
		{"limits.recipients (still the default)", g.Limits.Recipients, DefaultRecipients},
		{"shutdown-timeout", time.Duration(g.ShutdownTimeout), 5 * time.Second},
		{"housekeeping-interval", time.Duration(g.HousekeepingInterval), 10 * time.Second},
		{"vault.max-retries", g.Vault.MaxRetries, -1},
		{"vault.renew", *g.Vault.Renew, false},
		{"keys.check-interval (from vault.check-interval)", time.Duration(g.Keys.CheckInterval), time.Second},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want the configured %v", tc.field, tc.got, tc.want)
		}
	}
}

func TestDefaultsLeaveErrorsPointingAtTheFile(t *testing.T) {
	for _, tc := range []struct {
		name, extra, lineAt, field, want string
	}{
		{"negative shutdown timeout", "shutdown-timeout: -1s\n", "shutdown-timeout", "$.shutdown-timeout", "must not be negative"},
		{"negative housekeeping interval", "housekeeping-interval: -1m\n", "housekeeping-interval", "$.housekeeping-interval", "must not be negative"},
		{"retry-max below retry-min", "queue:\n  retry-min: 1m\n  retry-max: 10s\n", "retry-max", "$.queue.retry-max", "shorter than retry-min"},
		{"negative workers", "queue:\n  workers: -2\n", "workers", "$.queue.workers", "must not be negative"},
		{"two check intervals", "keys:\n  backend: vault\n  check-interval: 5s\nvault:\n  address: https://v.example\n  auth: {method: token, token-file: t}\n  check-interval: 9s\n",
			"  check-interval: 9s", "$.vault.check-interval", "give one"},
		{"not a duration", "shutdown-timeout: soon\n", "shutdown-timeout", "", "soon"},
		{"negative per-address cap", "limits:\n  connections-per-address: -1\n", "connections-per-address", "$.limits.connections-per-address", "must not be negative"},
		{"partner slots fill every slot", "limits:\n  connections: 10\n  partner-slots: 10\n", "partner-slots", "$.limits.partner-slots", "leaves no slot"},
		{"pre-auth total below the per-command timeout", "limits:\n  pre-auth-timeout: 30s\n  pre-auth-total: 10s\n", "pre-auth-total", "$.limits.pre-auth-total", "shorter than pre-auth-timeout"},
		{"negative lockout", "auth:\n  lockout: -5m\n", "lockout", "$.auth.lockout", "must not be negative"},
		{"negative quarantine quota", "quarantine:\n  quota-bytes: -1\n", "quota-bytes", "$.quarantine.quota-bytes", "must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := minimal + tc.extra
			_, err := loadSrc(t, src)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want *config.Error", err, err)
			}
			if !strings.HasSuffix(ce.File, "conduit.yaml") || ce.Line != lineOf(t, src, tc.lineAt) {
				t.Errorf("error at %s:%d, want conduit.yaml:%d: %v", ce.File, ce.Line, lineOf(t, src, tc.lineAt), err)
			}
			if tc.field != "" && ce.Field != tc.field {
				t.Errorf("field %q, want %q: %v", ce.Field, tc.field, err)
			}
			if !strings.Contains(ce.Error(), tc.want) {
				t.Errorf("error %q does not say %q", ce.Error(), tc.want)
			}
		})
	}
}

func TestDurationWrittenAsPeopleWriteIt(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{{72 * time.Hour, "72h"}, {30 * time.Minute, "30m"}, {90 * time.Second, "1m30s"}, {500 * time.Millisecond, "500ms"}, {time.Hour + time.Second, "1h0m1s"}} {
		b, err := Duration(tc.d).MarshalText()
		tcheck(t, err, "marshal")
		if string(b) != tc.want {
			t.Errorf("%v written as %q, want %q", tc.d, b, tc.want)
		}
		var back Duration
		tcheck(t, back.UnmarshalText(b), "parse back")
		if time.Duration(back) != tc.d {
			t.Errorf("%q parses back as %v", b, time.Duration(back))
		}
	}
}
