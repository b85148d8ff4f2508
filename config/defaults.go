package config

import (
	"maps"
	"time"

	"github.com/conduit-gateway/conduit/envelope"
)

// The defaults of every optional setting, filled into the Config once by
// Load (setDefaults), so the rest of the code reads plain fields and
// `conduit config show` prints what is in force. Each says why it is what
// it is.
const (
	// DefaultMessageBytes (25 MiB) is the size most mail systems accept
	// for one message; a package bigger than the partner's mail system
	// takes would be refused there after crossing the network.
	DefaultMessageBytes = 25 << 20
	// DefaultRecipients bounds one submission's RCPTs: a package goes to
	// a few agencies' mailboxes, never to a mailing list.
	DefaultRecipients = 50
	// DefaultConnections bounds concurrent SMTP connections per listener,
	// so a flood of connections cannot exhaust file descriptors.
	DefaultConnections = 100
	// DefaultCommands bounds one SMTP session's commands; a partner's
	// relay reuses a session for at most 100, so 200 leaves room while
	// cutting off a client that loops.
	DefaultCommands = 200

	// DefaultConnectionsPerAddress bounds one address's unproven
	// connections: a partner's relay holds a few (its workers and its
	// connection cache), a member of staff one or two; Postfix's anvil
	// allows 50 for an open MX, a closed gateway needs far fewer.
	DefaultConnectionsPerAddress = 10
	// DefaultPartnerSlots of DefaultConnections are kept for partners
	// with their client certificate and staff who logged in, so that idle
	// strangers cannot delay an immediate package.
	DefaultPartnerSlots = 20
	// DefaultPreAuthTimeout bounds each wait before a client proves who
	// it is: a real client answers in milliseconds; mox gives 30s, we
	// follow Postfix's stress-mode smtpd_timeout of 10s doubled.
	DefaultPreAuthTimeout = 20 * time.Second
	// DefaultPreAuthTotal bounds the whole unproven phase (banner,
	// EHLO, STARTTLS, AUTH): slow-loris clients cannot renew it.
	DefaultPreAuthTotal = 60 * time.Second

	// Failed logins, after Dovecot's auth_penalty (2^n seconds, capped
	// at 15) and mox's lockouts.
	DefaultAuthPenalty         = time.Second
	DefaultAuthMaxPenalty      = 15 * time.Second
	DefaultAuthAccountFailures = 10
	DefaultAuthAddressFailures = 20
	DefaultAuthWindow          = 15 * time.Minute
	DefaultAuthLockout         = 15 * time.Minute
	DefaultAuthSessionFailures = 3

	// DefaultQuarantineQuota (1 GiB) keeps a flood of failed messages
	// from filling the disk; a partner's genuine failures are rare and
	// small against it.
	DefaultQuarantineQuota = 1 << 30
	// DefaultQuarantinePerSourceHour bounds one address's quarantined
	// messages per hour: a partner with a real fault is alerted long
	// before.
	DefaultQuarantinePerSourceHour = 20
	// DefaultQuarantineAlertInterval groups quarantine alerts.
	DefaultQuarantineAlertInterval = 10 * time.Minute

	// DefaultRetryMin is the first retry delay after a temporary relay
	// failure: short enough that a partner's restart costs little.
	DefaultRetryMin = 30 * time.Second
	// DefaultRetryMax caps the doubling retry delay, so a partner back
	// from an outage is tried again within half an hour.
	DefaultRetryMax = 30 * time.Minute
	// DefaultMaxAge is how long a package is retried before its sender
	// is told it could not be delivered: three days ride out a partner
	// gateway down over a weekend; beyond that the intelligence may be
	// stale and a person should decide how else to pass it on.
	DefaultMaxAge = 72 * time.Hour
	// DefaultWorkers is the number of concurrent deliveries: each waits
	// mostly on the receiver's fsyncs, so a few overlap those waits
	// without loading a small machine.
	DefaultWorkers = 4
	// DefaultReceiptGather is how long receipts to one partner are
	// gathered into one envelope: a burst of deliveries costs one seal and
	// one SMTP transaction for its receipts, and a receipt is late by a
	// fifth of a second at most.
	DefaultReceiptGather = 200 * time.Millisecond
	// DefaultReceiptBatch bounds one receipt envelope's list, so that it
	// stays a few tens of KiB.
	DefaultReceiptBatch = 200

	// DefaultExpiryWarning is how long before a key expires that
	// administrators are warned: 30 days leaves time to rotate and have
	// partners check the new fingerprint by a trusted channel.
	DefaultExpiryWarning = 30 * 24 * time.Hour

	// DefaultShutdownTimeout bounds a clean stop: sessions in progress
	// and deliveries under way get this long to finish (a 250 promised is
	// kept either way: the store is durable), then connections are closed.
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultHousekeepingInterval is how often the gateway looks for work
	// that falls due without a message arriving (overdue clocks,
	// retention, key expiry): a minute is well inside every deadline,
	// which are counted in hours.
	DefaultHousekeepingInterval = time.Minute

	// DefaultConsoleIdleTimeout signs a console user out after a quarter
	// of an hour without a request: a screen left unlocked in an office
	// stops showing intelligence metadata soon, and a PIO composing a
	// package sends a request with every change.
	DefaultConsoleIdleTimeout = 15 * time.Minute

	// DefaultVaultMount and DefaultVaultPath are the KV v2 mount and
	// secret that docs/vault-policy.hcl grants.
	DefaultVaultMount = "conduit"
	DefaultVaultPath  = "agency-identity"
	// DefaultVaultTransitMount is where Vault mounts Transit by default.
	DefaultVaultTransitMount = "transit"
	// DefaultVaultTimeout bounds one Vault operation, retries included:
	// a submission waits on it before its 250.
	DefaultVaultTimeout = 10 * time.Second
	// DefaultVaultMaxRetries rides over a Vault leader election or a
	// dropped connection without failing the operation.
	DefaultVaultMaxRetries = 2
	// DefaultVaultRetryWait is the first wait before a retry (up to three
	// times that): shorter than a submitter's patience, longer than a
	// standby's redirect.
	DefaultVaultRetryWait = 500 * time.Millisecond
	// DefaultKeyCheckInterval is how often the gateway checks that its
	// key backend answers and whether the key was rotated: an outage
	// closes the gateway within seconds (fail closed), and the check (a
	// file's stat, a Vault metadata read) is cheap.
	DefaultKeyCheckInterval = 5 * time.Second
)

// SetDefaults fills every optional setting left unset with its default.
// Load runs it once, after the checks, so that an error still points at
// what the file says; a Config built in code (tests of parts) calls it.
func (c *Config) SetDefaults() {
	if len(c.LegacyMarkings) == 0 {
		c.LegacyMarkings = maps.Clone(map[string]envelope.Classification(envelope.DefaultLegacyMarkings))
	}
	g := &c.Gateway
	if g.ShutdownTimeout == 0 {
		g.ShutdownTimeout = Duration(DefaultShutdownTimeout)
	}
	if g.HousekeepingInterval == 0 {
		g.HousekeepingInterval = Duration(DefaultHousekeepingInterval)
	}
	if g.Keys.Backend == "" {
		g.Keys.Backend = BackendFile
	}
	if g.Keys.Profile == "" {
		g.Keys.Profile = "rfc4880"
	}
	setDuration(&g.Keys.ExpiryWarning, DefaultExpiryWarning)
	if g.Keys.CheckInterval == 0 && g.Keys.Backend == BackendVault {
		g.Keys.CheckInterval = g.Vault.CheckInterval
	}
	setDuration(&g.Keys.CheckInterval, DefaultKeyCheckInterval)
	setInt(&g.Limits.Recipients, DefaultRecipients)
	setInt(&g.Limits.Connections, DefaultConnections)
	setInt(&g.Limits.Commands, DefaultCommands)
	setInt(&g.Limits.ConnectionsPerAddress, DefaultConnectionsPerAddress)
	setInt(&g.Limits.PartnerSlots, min(DefaultPartnerSlots, g.Limits.Connections/2))
	setDuration(&g.Limits.PreAuthTimeout, DefaultPreAuthTimeout)
	setDuration(&g.Limits.PreAuthTotal, max(DefaultPreAuthTotal, time.Duration(g.Limits.PreAuthTimeout)))
	setDuration(&g.Auth.Penalty, DefaultAuthPenalty)
	setDuration(&g.Auth.MaxPenalty, DefaultAuthMaxPenalty)
	setInt(&g.Auth.AccountFailures, DefaultAuthAccountFailures)
	setInt(&g.Auth.AddressFailures, DefaultAuthAddressFailures)
	setDuration(&g.Auth.Window, DefaultAuthWindow)
	setDuration(&g.Auth.Lockout, DefaultAuthLockout)
	setInt(&g.Auth.SessionFailures, DefaultAuthSessionFailures)
	if g.Quarantine.QuotaBytes == 0 {
		g.Quarantine.QuotaBytes = DefaultQuarantineQuota
	}
	setInt(&g.Quarantine.PerSourceHour, DefaultQuarantinePerSourceHour)
	setDuration(&g.Quarantine.AlertInterval, DefaultQuarantineAlertInterval)
	if g.Limits.MessageBytes == 0 {
		g.Limits.MessageBytes = DefaultMessageBytes
	}
	setDuration(&g.Console.IdleTimeout, DefaultConsoleIdleTimeout)
	setDuration(&g.Queue.RetryMin, DefaultRetryMin)
	setDuration(&g.Queue.RetryMax, DefaultRetryMax)
	setDuration(&g.Queue.MaxAge, DefaultMaxAge)
	setInt(&g.Queue.Workers, DefaultWorkers)
	setDuration(&g.Queue.ReceiptGather, DefaultReceiptGather)
	setInt(&g.Queue.ReceiptBatch, DefaultReceiptBatch)
	if g.Keys.Backend == BackendVault {
		v := &g.Vault
		if v.Mount == "" {
			v.Mount = DefaultVaultMount
		}
		if v.Path == "" {
			v.Path = DefaultVaultPath
		}
		if v.Auth.Mount == "" {
			v.Auth.Mount = v.Auth.Method
		}
		if v.Transit != nil && v.Transit.Mount == "" {
			v.Transit.Mount = DefaultVaultTransitMount
		}
		setDuration(&v.Timeout, DefaultVaultTimeout)
		setInt(&v.MaxRetries, DefaultVaultMaxRetries)
		setDuration(&v.RetryWait, DefaultVaultRetryWait)
		v.CheckInterval = g.Keys.CheckInterval
		if v.Renew == nil {
			renew := true
			v.Renew = &renew
		}
	}
}

func setDuration(d *Duration, def time.Duration) {
	if *d == 0 {
		*d = Duration(def)
	}
}

func setInt(v *int, def int) {
	if *v == 0 {
		*v = def
	}
}
