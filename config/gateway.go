package config

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Gateway is what `conduit serve` needs beyond the directory and the
// policy: where it listens, its TLS identity, its keys, its store, the
// staff who may submit, and where received packages are delivered. The
// sections are optional for `conduit policy check|explain`; Serve checks
// them whole with RequireGateway.
type Gateway struct {
	Keys     Keys     `yaml:"keys,omitempty"`
	TLS      TLS      `yaml:"tls,omitempty"`
	Listen   Listen   `yaml:"listen,omitempty"`
	Store    Store    `yaml:"store,omitempty"`
	Users    []User   `yaml:"users,omitempty"`
	Delivery Delivery `yaml:"delivery,omitempty"`
	Limits   Limits   `yaml:"limits,omitempty"`
	Queue    Queue    `yaml:"queue,omitempty"`
	Alerts   Alerts   `yaml:"alerts,omitempty"`
	// Auth throttles failed logins on the submission listeners.
	Auth Auth `yaml:"auth,omitempty"`
	// Quarantine bounds what strangers and careless partners can make
	// the gateway keep.
	Quarantine Quarantine `yaml:"quarantine,omitempty"`
	// Vault is the Vault key backend's section (keys.backend: vault).
	Vault Vault `yaml:"vault,omitempty"`
	// ShutdownTimeout bounds a clean stop (default 30s).
	ShutdownTimeout Duration `yaml:"shutdown-timeout,omitempty"`
	// HousekeepingInterval is how often work that falls due by itself
	// (overdue clocks, retention, key expiry) is looked for (default 1m).
	HousekeepingInterval Duration `yaml:"housekeeping-interval,omitempty"`
	// Console tunes the web console (listen.console starts it).
	Console Console `yaml:"console,omitempty"`
}

// Console is the web console's section. It is served over HTTPS only,
// with the gateway's own TLS certificate unless Cert and Key name another.
type Console struct {
	Cert string `yaml:"cert,omitempty"`
	Key  string `yaml:"key,omitempty"`
	// IdleTimeout signs a user out after this long without a request
	// (default 15m).
	IdleTimeout Duration `yaml:"idle-timeout,omitempty"`
}

// Roles of the console's users. A user's role decides, on the server,
// every page and API call they may use.
const (
	RoleSender        = "sender"        // composes and sends packages, follows them
	RoleReceiver      = "receiver"      // sees what arrived, marks triage done
	RoleSupervisor    = "supervisor"    // releases or drops held packages
	RoleAdministrator = "administrator" // routing policy, directory, keys, queue, audit
)

// Roles lists the roles.
var Roles = []string{RoleSender, RoleReceiver, RoleSupervisor, RoleAdministrator}

// RoleOr returns the user's role; a user without one is a sender, as
// every user was before roles existed.
func (u User) RoleOr() string {
	if u.Role == "" {
		return RoleSender
	}
	return u.Role
}

// Alerts says who is told, by mail, of what needs an administrator: a
// partner key change waiting for approval, a key about to expire, a key
// that can no longer be used.
type Alerts struct {
	// Administrators are local mailbox addresses (delivered like
	// packages, to the Maildir or by LMTP).
	Administrators []string `yaml:"administrators,omitempty"`
}

// Keys: this agency's OpenPGP identity and its partners' certificates.
type Keys struct {
	// Backend is where the secret key lives: file (default, Secret) or
	// vault (the vault: section).
	Backend string `yaml:"backend,omitempty"`
	// Secret is the armored secret key file (conduit keys generate).
	Secret string `yaml:"secret,omitempty"`
	// PassphraseFile holds the passphrase that decrypts Secret;
	// CONDUIT_PASSPHRASE overrides it.
	PassphraseFile string `yaml:"passphrase-file,omitempty"`
	// Partners is a folder of partner certificates, one AGENCY.pub.asc per
	// agency; each is used only if its fingerprint is the directory's pin.
	Partners string `yaml:"partners"`
	// Profile is rfc4880 (default) or rfc9580.
	Profile string `yaml:"profile,omitempty"`
	// ExpiryWarning is how long before a key (this agency's or a
	// partner's) expires that administrators are warned, daily until it
	// is rotated or extended (default 30 days).
	ExpiryWarning Duration `yaml:"expiry-warning,omitempty"`
	// CheckInterval is how often the gateway checks that its key backend
	// answers and whether the key was rotated (default 5s; with the Vault
	// backend, vault.check-interval says the same).
	CheckInterval Duration `yaml:"check-interval,omitempty"`
}

// TLS is the gateway's TLS identity, used by the submission and inbound
// listeners and as the client certificate when relaying.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// CA verifies partner gateways' certificates; the system roots are
	// never used for partner gateways.
	CA string `yaml:"ca"`
}

// Listen holds the listener addresses; an empty one is not started.
type Listen struct {
	// Submission is for the agency's own staff: STARTTLS (port 587 style).
	Submission string `yaml:"submission,omitempty"`
	// SubmissionTLS is submission with implicit TLS (port 465 style).
	SubmissionTLS string `yaml:"submission-tls,omitempty"`
	// Inbound is for partner gateways: STARTTLS required before MAIL.
	Inbound string `yaml:"inbound,omitempty"`
	// Admin serves /metrics (Prometheus), /healthz and /readyz over HTTP;
	// keep it on loopback or a management network.
	Admin string `yaml:"admin,omitempty"`
	// Console serves the web console and its JSON API over HTTPS.
	Console string `yaml:"console,omitempty"`
}

// Store is the durable store of the queue, the replay cache and the
// quarantine.
type Store struct {
	// Path is the SQLite database file (the queue, the replay cache, the
	// quarantine and the audit trail): the embedded default, for one
	// gateway process.
	Path string `yaml:"path,omitempty"`
	// Postgres is a PostgreSQL connection string ("postgres://user@host/db"
	// or "host=... dbname=..."), instead of Path, for several gateway
	// processes of one agency sharing one database. Keep the password out
	// of it: PostgresFile, the PGPASSWORD environment variable or a
	// ~/.pgpass file give it. The environment variable
	// CONDUIT_STORE_POSTGRES overrides it.
	Postgres string `yaml:"postgres,omitempty"`
	// PostgresFile is a file (mode 0600) holding the connection string,
	// password included, instead of Postgres.
	PostgresFile string `yaml:"postgres-file,omitempty"`
	// AuditKeyFile, when set, holds the key that makes the audit chain an
	// HMAC chain: someone who can rewrite the database cannot recompute it
	// without the key. Keep it off the gateway's disk backups.
	AuditKeyFile string `yaml:"audit-key-file,omitempty"`
}

// User is a member of staff who may submit packages.
type User struct {
	Name string `yaml:"name"`
	// Address is the mailbox the user sends as; it must be a mailbox of
	// this gateway's own agency (security invariant 5).
	Address string `yaml:"address"`
	// PasswordHash is a bcrypt hash ($2a$/$2b$...). A relay account
	// that authenticates by TLS client certificate only may leave it out.
	PasswordHash string `yaml:"password-hash,omitempty"`
	// Relay marks the account of the agency's own mail server (Postfix
	// relaying through the gateway as its smarthost): it may submit for
	// any mailbox of this agency, each message's From checked against the
	// directory, and its bounces (a null sender) are delivered to the
	// staff mailbox they are addressed to.
	Relay bool `yaml:"relay,omitempty"`
	// ClientCert, for a relay account, is the CN of the TLS client
	// certificate (verified by tls.ca) with which the mail server may log
	// in instead of a password (SASL EXTERNAL).
	ClientCert string `yaml:"client-cert,omitempty"`
	// Role is the user's role in the web console: sender (default),
	// receiver, supervisor or administrator.
	Role string `yaml:"role,omitempty"`
}

// Delivery says where received packages go: one of Maildir or LMTP.
type Delivery struct {
	// Maildir is a folder holding one Maildir per local mailbox address.
	Maildir string `yaml:"maildir,omitempty"`
	// LMTP hands each package to the agency's own mail store (Dovecot,
	// Cyrus...) by LMTP: "unix:/run/dovecot/lmtp" or host:port on a
	// loopback or internal address.
	LMTP string `yaml:"lmtp,omitempty"`
}

// Limits bound what one client may do.
type Limits struct {
	// MessageBytes bounds one message (default DefaultMessageBytes).
	MessageBytes int64 `yaml:"message-bytes,omitempty"`
	// Recipients bounds one submission's RCPTs (default DefaultRecipients).
	Recipients int `yaml:"recipients,omitempty"`
	// Connections bounds concurrent connections per listener (default
	// DefaultConnections).
	Connections int `yaml:"connections,omitempty"`
	// Commands bounds the commands of one SMTP session (default
	// DefaultCommands).
	Commands int `yaml:"commands,omitempty"`
	// ConnectionsPerAddress bounds the connections one client address
	// (IPv4, or IPv6 /64) holds before it has proved who it is (default
	// DefaultConnectionsPerAddress).
	ConnectionsPerAddress int `yaml:"connections-per-address,omitempty"`
	// PartnerSlots of Connections are kept for clients that proved who
	// they are: a partner gateway's verified client certificate, a member
	// of staff's AUTH (default DefaultPartnerSlots).
	PartnerSlots int `yaml:"partner-slots,omitempty"`
	// PreAuthTimeout bounds each wait for a command, and the TLS
	// handshake, before a client has proved who it is (default
	// DefaultPreAuthTimeout).
	PreAuthTimeout Duration `yaml:"pre-auth-timeout,omitempty"`
	// PreAuthTotal bounds the whole time before a client has proved who
	// it is (default DefaultPreAuthTotal).
	PreAuthTotal Duration `yaml:"pre-auth-total,omitempty"`
}

// Auth throttles failed logins (after Dovecot's auth_penalty and mox's
// per-account and per-address limits).
type Auth struct {
	// Penalty is the delay after the first failure from an address; it
	// doubles with each failure up to MaxPenalty.
	Penalty    Duration `yaml:"penalty,omitempty"`
	MaxPenalty Duration `yaml:"max-penalty,omitempty"`
	// AccountFailures and AddressFailures within Window lock the account
	// or the address out for Lockout (`conduit user unlock` lifts it).
	AccountFailures int      `yaml:"account-failures,omitempty"`
	AddressFailures int      `yaml:"address-failures,omitempty"`
	Window          Duration `yaml:"window,omitempty"`
	Lockout         Duration `yaml:"lockout,omitempty"`
	// SessionFailures closes the connection after that many failures.
	SessionFailures int `yaml:"session-failures,omitempty"`
}

// Quarantine bounds the quarantine.
type Quarantine struct {
	// QuotaBytes bounds the quarantine's stored messages; past it a
	// message that fails a check is refused with a temporary error
	// (the sender keeps it) instead of being stored.
	QuotaBytes int64 `yaml:"quota-bytes,omitempty"`
	// PerSourceHour bounds the messages one client address may have
	// quarantined per hour; past it they are refused the same way.
	PerSourceHour int `yaml:"per-source-hour,omitempty"`
	// AlertInterval groups quarantine alerts: the first is raised at once,
	// those that follow within the interval in one summary at its end.
	AlertInterval Duration `yaml:"alert-interval,omitempty"`
}

// Queue tunes delivery retries.
type Queue struct {
	// RetryMin is the first retry delay (default 30s); it doubles, with
	// jitter, up to RetryMax (default 30m).
	RetryMin Duration `yaml:"retry-min,omitempty"`
	RetryMax Duration `yaml:"retry-max,omitempty"`
	// MaxAge is how long a package is retried before the sender gets a
	// failure notice (default 72h).
	MaxAge Duration `yaml:"max-age,omitempty"`
	// Workers is the number of concurrent deliveries the relay starts
	// with (default 4); while a backlog lasts it grows, up to eight times
	// that, and halves when a delivery is deferred (gateway/relay/adapt.go).
	Workers int `yaml:"workers,omitempty"`
	// ReceiptGather is how long the receipt batcher waits for more
	// receipts to the same partner before it seals one envelope for them
	// (default 200ms): long enough to gather a burst, short against the
	// hours of an acknowledgement clock.
	ReceiptGather Duration `yaml:"receipt-gather,omitempty"`
	// ReceiptBatch is the most receipts one receipt envelope lists
	// (default 200). 1 seals every receipt alone, in the single form a
	// gateway older than receipt lists reads.
	ReceiptBatch int `yaml:"receipt-batch,omitempty"`
}

// Duration is a time.Duration written as "30s", "72h".
type Duration time.Duration

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes a Go duration as people write it: "72h", "30m",
// not "72h0m0s".
func (d Duration) MarshalText() ([]byte, error) {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return []byte(s), nil
}

// EnvStorePostgres, when set, is the PostgreSQL connection string of the
// store, overriding store.postgres and store.postgres-file.
const EnvStorePostgres = "CONDUIT_STORE_POSTGRES"

// PostgresDSN is the store's PostgreSQL connection string, or "" when the
// store is SQLite.
func (s Store) PostgresDSN() (string, error) {
	if v := os.Getenv(EnvStorePostgres); v != "" {
		return v, nil
	}
	if s.PostgresFile != "" {
		b, err := os.ReadFile(s.PostgresFile)
		if err != nil {
			return "", fmt.Errorf("store.postgres-file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return s.Postgres, nil
}

// checkGateway resolves the gateway sections' paths and checks what is
// given; RequireGateway checks that what serve needs is there.
func (c *Config) checkGateway(doc *Doc) error {
	g := &c.Gateway
	for _, p := range []*string{&g.Keys.Secret, &g.Keys.PassphraseFile, &g.Keys.Partners,
		&g.TLS.Cert, &g.TLS.Key, &g.TLS.CA, &g.Console.Cert, &g.Console.Key, &g.Store.Path, &g.Store.PostgresFile, &g.Store.AuditKeyFile, &g.Delivery.Maildir} {
		if *p != "" {
			*p = resolve(c.File, *p)
		}
	}
	if g.Keys.Profile != "" && g.Keys.Profile != "rfc4880" && g.Keys.Profile != "rfc9580" {
		return doc.Errorf("$.keys.profile", "%q is not a profile; allowed: rfc4880, rfc9580", g.Keys.Profile)
	}
	if err := c.checkVault(doc); err != nil {
		return err
	}
	if k, v := g.Keys.CheckInterval, g.Vault.CheckInterval; k != 0 && v != 0 && k != v {
		return doc.Errorf("$.vault.check-interval", "%s differs from keys.check-interval %s: give one", time.Duration(v), time.Duration(k))
	}
	for name, addr := range map[string]string{"submission": g.Listen.Submission, "submission-tls": g.Listen.SubmissionTLS, "inbound": g.Listen.Inbound, "admin": g.Listen.Admin, "console": g.Listen.Console} {
		if addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(addr); err != nil {
			return doc.Errorf("$.listen."+name, "%q is not host:port: %v", addr, err)
		} else if _, err := strconv.Atoi(port); err != nil {
			return doc.Errorf("$.listen."+name, "%q has no numeric port", addr)
		}
	}
	if (g.Console.Cert == "") != (g.Console.Key == "") {
		return doc.Errorf("$.console", "give console.cert and console.key together (or neither: the console then uses tls.cert and tls.key)")
	}
	self := c.Self()
	seen := map[string]bool{}
	for i, u := range g.Users {
		at := "$.users[" + strconv.Itoa(i) + "]"
		if u.Name == "" {
			return doc.Errorf(at, "name is missing")
		}
		if seen[u.Name] {
			return doc.Errorf(at+".name", "user %q is listed twice", u.Name)
		}
		seen[u.Name] = true
		if !self.HasMailbox(u.Address) {
			return doc.Errorf(at+".address", "%q is not a mailbox of this gateway's agency %s: staff may send only as their own agency", u.Address, c.Agency)
		}
		if u.ClientCert != "" && !u.Relay {
			return doc.Errorf(at+".client-cert", "only a relay account (relay: true) may log in by client certificate")
		}
		if u.Role != "" && !slices.Contains(Roles, u.Role) {
			return doc.Errorf(at+".role", "%q is not a role; allowed: %s", u.Role, strings.Join(Roles, ", "))
		}
		if u.PasswordHash == "" && u.ClientCert != "" {
			continue
		}
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			return doc.Errorf(at+".password-hash", "not a bcrypt hash (make one with `conduit user hash`): %v", err)
		}
	}
	if g.Delivery.Maildir != "" && g.Delivery.LMTP != "" {
		return doc.Errorf("$.delivery", "give maildir or lmtp, not both")
	}
	if l := g.Delivery.LMTP; l != "" && !strings.HasPrefix(l, "unix:") {
		if _, _, err := net.SplitHostPort(l); err != nil {
			return doc.Errorf("$.delivery.lmtp", "%q is neither unix:/path nor host:port", l)
		}
	}
	for i, a := range g.Alerts.Administrators {
		if at := strings.LastIndexByte(a, '@'); at < 1 || at == len(a)-1 || strings.ContainsAny(a, " <>\t") {
			return doc.Errorf("$.alerts.administrators["+strconv.Itoa(i)+"]", "%q is not a mailbox address (name@domain)", a)
		}
	}
	for path, d := range map[string]Duration{"$.keys.expiry-warning": g.Keys.ExpiryWarning, "$.keys.check-interval": g.Keys.CheckInterval, "$.queue.retry-min": g.Queue.RetryMin,
		"$.queue.retry-max": g.Queue.RetryMax, "$.queue.max-age": g.Queue.MaxAge, "$.queue.receipt-gather": g.Queue.ReceiptGather, "$.shutdown-timeout": g.ShutdownTimeout,
		"$.housekeeping-interval": g.HousekeepingInterval} {
		if d < 0 {
			return doc.Errorf(path, "must not be negative")
		}
	}
	if g.Queue.RetryMin > 0 && g.Queue.RetryMax > 0 && g.Queue.RetryMax < g.Queue.RetryMin {
		return doc.Errorf("$.queue.retry-max", "%s is shorter than retry-min %s", time.Duration(g.Queue.RetryMax), time.Duration(g.Queue.RetryMin))
	}
	if g.Queue.Workers < 0 {
		return doc.Errorf("$.queue.workers", "must not be negative")
	}
	if g.Queue.ReceiptBatch < 0 {
		return doc.Errorf("$.queue.receipt-batch", "must not be negative")
	}
	if g.Limits.MessageBytes < 0 || g.Limits.Recipients < 0 || g.Limits.Connections < 0 || g.Limits.Commands < 0 {
		return doc.Errorf("$.limits", "limits must not be negative")
	}
	for path, v := range map[string]int64{"$.limits.connections-per-address": int64(g.Limits.ConnectionsPerAddress),
		"$.limits.partner-slots": int64(g.Limits.PartnerSlots), "$.auth.account-failures": int64(g.Auth.AccountFailures),
		"$.auth.address-failures": int64(g.Auth.AddressFailures), "$.auth.session-failures": int64(g.Auth.SessionFailures),
		"$.quarantine.quota-bytes": g.Quarantine.QuotaBytes, "$.quarantine.per-source-hour": int64(g.Quarantine.PerSourceHour),
		"$.limits.pre-auth-timeout": int64(g.Limits.PreAuthTimeout), "$.limits.pre-auth-total": int64(g.Limits.PreAuthTotal),
		"$.auth.penalty": int64(g.Auth.Penalty), "$.auth.max-penalty": int64(g.Auth.MaxPenalty), "$.auth.window": int64(g.Auth.Window),
		"$.auth.lockout": int64(g.Auth.Lockout), "$.quarantine.alert-interval": int64(g.Quarantine.AlertInterval)} {
		if v < 0 {
			return doc.Errorf(path, "must not be negative")
		}
	}
	if conns := g.Limits.Connections; conns > 0 && g.Limits.PartnerSlots >= conns || conns == 0 && g.Limits.PartnerSlots >= DefaultConnections {
		return doc.Errorf("$.limits.partner-slots", "%d leaves no slot for anyone else out of limits.connections; keep it below", g.Limits.PartnerSlots)
	}
	if a, t := g.Limits.PreAuthTimeout, g.Limits.PreAuthTotal; a > 0 && t > 0 && t < a {
		return doc.Errorf("$.limits.pre-auth-total", "%s is shorter than pre-auth-timeout %s", time.Duration(t), time.Duration(a))
	}
	return nil
}

// HasMailbox reports whether an address is one of the agency's mailboxes
// or escalation contacts.
func (a *Agency) HasMailbox(addr string) bool {
	for _, m := range append(append([]Mailbox{}, a.Mailboxes...), a.Escalation...) {
		if equalFoldASCII(m.Address, addr) {
			return true
		}
	}
	return false
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// MissingForServe lists what `conduit serve` needs that the config lacks,
// as YAML paths with a reason; empty when the gateway can start.
func (c *Config) MissingForServe() []string {
	g := c.Gateway
	var out []string
	need := func(ok bool, what string) {
		if !ok {
			out = append(out, what)
		}
	}
	need(g.Keys.Secret != "" || g.Keys.KeyBackend() == BackendVault, "keys.secret: the agency's secret key file (or keys.backend: vault)")
	need(g.Keys.Partners != "", "keys.partners: the folder of partner certificates")
	need(g.TLS.Cert != "" && g.TLS.Key != "", "tls.cert and tls.key: the gateway's TLS certificate")
	need(g.TLS.CA != "", "tls.ca: the CA that signs partner gateways' certificates")
	need(g.Store.Path != "" || g.Store.Postgres != "" || g.Store.PostgresFile != "" || os.Getenv(EnvStorePostgres) != "",
		"store.path (the SQLite database) or store.postgres (a PostgreSQL database)")
	need(g.Listen.Inbound != "" || g.Listen.Submission != "" || g.Listen.SubmissionTLS != "", "listen: at least one listener")
	need(g.Listen.Inbound == "" || g.Delivery.Maildir != "" || g.Delivery.LMTP != "", "delivery.maildir or delivery.lmtp: where received packages are delivered")
	return out
}
