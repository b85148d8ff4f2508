// Package submission is in charge of the staff side of a gateway: the
// submission listener (STARTTLS or implicit TLS, AUTH, the submitter may
// send only as their own address to mailboxes in the directory), the
// intake that reads a submitted package's marking and manifest facts, asks
// the sharing policy, seals one envelope per destination agency and stores
// them, with every clock and audit event, in one transaction before the
// 250; and triage replies, by which staff stop a received report's triage
// clock.
package submission

import (
	"context"
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/authlimit"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/metrics"
	"github.com/conduit-gateway/conduit/policy"
)

// Keys is the key ring as intake uses it.
type Keys interface {
	Ready(ctx context.Context) error
	Down(ctx context.Context) bool
	Identity() *keys.Identity
	SealTarget(agency string) (cert *keys.Cert, holdReason string, ok bool)
	Sync(ctx context.Context) bool
}

// Store is the store as intake uses it.
type Store interface {
	Update(ctx context.Context, f func(store.Tx) error) error
	PackagesByMessageID(ctx context.Context, messageID string) ([]string, error)
}

// Auditor is the audit trail as intake writes it.
type Auditor interface {
	Append(ctx context.Context, es ...audit.Event)
	Stage(tx audit.Stager, es ...audit.Event) error
	Fill(e *audit.Event)
	Kick()
}

// Deliverer hands messages to the agency's own mailboxes: the outcome
// notices of staff's packages, and the bounces of the agency's mail server.
type Deliverer interface {
	Deliver(ctx context.Context, mailbox, originator, pkgID string, extraHeader, msg []byte) error
}

// Options are the parts a submission server works with.
type Options struct {
	Engine  *policy.Engine
	Keys    Keys
	Store   Store
	Audit   Auditor
	Deliver Deliverer
	Metrics *metrics.Metrics
	Log     *slog.Logger
	Now     func() time.Time
	// Queued is told that items and clocks were stored (the relay and the
	// clock keeper wake).
	Queued func()
	// Hostname is the name in the greeting.
	Hostname string
	TLS      *tls.Config
	// Throttle counts failed logins; nil keeps lockouts in memory only.
	Throttle *authlimit.Throttle
}

// Server is the staff submission front end of one gateway.
type Server struct {
	cfg      *config.Config
	self     *config.Agency
	engine   *policy.Engine
	keys     Keys
	store    Store
	audit    Auditor
	deliver  Deliverer
	metrics  *metrics.Metrics
	log      *slog.Logger
	now      func() time.Time
	queued   func()
	hostname string
	tls      *tls.Config
	handlers smtpserver.Handlers
	throttle *authlimit.Throttle
	accounts *authlimit.Accounts
	// maxMessage is the submission size limit: what the smallest
	// partner limit leaves once armored (MessageLimit).
	maxMessage int64
}

// New returns a submission server for cfg's agency.
func New(cfg *config.Config, o Options) *Server {
	q := o.Queued
	if q == nil {
		q = func() {}
	}
	th := o.Throttle
	if th == nil {
		th = authlimit.New(ThrottleConfig(cfg.Auth), nil)
	}
	var accts []authlimit.Account
	for _, u := range cfg.Users {
		accts = append(accts, authlimit.Account{Name: u.Name, Hash: u.PasswordHash})
	}
	return &Server{cfg: cfg, self: cfg.Self(), engine: o.Engine, keys: o.Keys, store: o.Store, audit: o.Audit,
		deliver: o.Deliver, metrics: o.Metrics, log: o.Log, now: o.Now, queued: q, hostname: o.Hostname, tls: o.TLS,
		throttle: th, accounts: authlimit.NewAccounts(accts), maxMessage: MessageLimit(cfg)}
}

// ThrottleConfig is the login throttle's configuration from the auth
// section.
func ThrottleConfig(a config.Auth) authlimit.Config {
	return authlimit.Config{
		Penalty: time.Duration(a.Penalty), MaxPenalty: time.Duration(a.MaxPenalty),
		AccountLimit: a.AccountFailures, AddressLimit: a.AddressFailures,
		Window: time.Duration(a.Window), Lockout: time.Duration(a.Lockout), SessionLimit: a.SessionFailures,
	}
}

// MessageLimit is the largest message staff may submit: the gateway's own
// limits.message-bytes, and no more than what the smallest partner limit
// in the directory (message-bytes) takes once the message is sealed and
// armored (about 1.375 times larger, envelope.SealedSize). A message over
// it would be accepted here and refused by the partner (552 5.3.4 after
// a 250): it is refused at DATA instead.
func MessageLimit(cfg *config.Config) int64 {
	limit := cfg.Limits.MessageBytes
	for _, a := range cfg.Directory.Agencies {
		if a.ID == cfg.Agency || a.MessageBytes <= 0 {
			continue
		}
		limit = min(limit, envelope.MaxPayload(a.MessageBytes))
	}
	return limit
}

// Stop cuts the message handlers still running (their context is
// cancelled: they answer 4xx) and waits for every one to return.
func (srv *Server) Stop() {
	srv.handlers.Cut()
	srv.handlers.Wait()
}

// SMTP builds the listener's SMTP server; each listener (STARTTLS,
// implicit TLS) has its own.
func (srv *Server) SMTP() *smtp.Server {
	lim := srv.cfg.Limits
	lim.MessageBytes = srv.maxMessage
	return smtpserver.New(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &subSession{srv: srv, conn: c}, nil
	}), smtpserver.Options{Hostname: srv.hostname, TLS: srv.tls, Limits: lim, Log: srv.log})
}
