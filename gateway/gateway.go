// Package gateway is in charge of one agency's gateway daemon as a whole:
// it builds the daemon's parts from the configuration and wires them
// together, starts them and stops them cleanly. The parts, each a package
// named for what it owns:
//
//   - submission: the staff front end, intake and triage replies;
//   - inbound: the partner front end, opening, delivery, receipts,
//     key-change notices and the quarantine;
//   - relay: the outbound queue's delivery to partner gateways;
//   - receipts: the receipts recorded at delivery, sealed per partner
//     and label, several to an envelope, and queued for the relay;
//   - delivery: Maildir and LMTP hand-over to the agency's mailboxes;
//   - keyring: this gateway's key, partner keys, the fail-closed key gate;
//   - clocks: the policy's deadlines, overdue alerts and retention;
//   - smtpserver and tlsroute: what the front ends and the relay share;
//   - store: the durable state, written one transaction per state change.
//
// The audit trail's group-commit writer is audit.Writer. Each part takes
// the smallest interfaces it needs, declared where it uses them; this
// package is the only one that knows them all (docs/design.md, "The
// daemon's parts").
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway/admission"
	"github.com/conduit-gateway/conduit/gateway/authlimit"
	"github.com/conduit-gateway/conduit/gateway/clocks"
	"github.com/conduit-gateway/conduit/gateway/delivery"
	"github.com/conduit-gateway/conduit/gateway/inbound"
	"github.com/conduit-gateway/conduit/gateway/keyring"
	"github.com/conduit-gateway/conduit/gateway/receipts"
	"github.com/conduit-gateway/conduit/gateway/relay"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/gateway/submission"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/metrics"
	"github.com/conduit-gateway/conduit/policy"
)

// Gateway is one agency gateway: its parts, wired.
type Gateway struct {
	cfg     *config.Config
	self    *config.Agency
	engine  *policy.Engine
	store   store.Store
	trail   audit.Appender // nil: no trail (tests of parts)
	audit   *audit.Writer
	metrics *metrics.Metrics // nil: none
	log     *slog.Logger
	now     func() time.Time

	serverTLS *tls.Config
	clientTLS *tls.Config

	keys       *keyring.Ring
	deliver    *delivery.Deliverer
	submission *submission.Server
	inbound    *inbound.Server
	relay      *relay.Relay
	receipts   *receipts.Batcher
	clocks     *clocks.Keeper

	// housekeeper: this gateway holds the agency's housekeeping lease.
	housekeeper atomic.Bool

	closeOnce sync.Once
}

// Options are what New needs besides the config.
type Options struct {
	Store store.Store
	// Audit receives the audit trail (audit.SQLite); nil writes none
	// (tests of parts).
	Audit audit.Appender
	// Metrics counts what the gateway does; nil counts nothing.
	Metrics *metrics.Metrics
	Policy  *policy.Policy
	Log     *slog.Logger
	// Passphrase decrypts the secret key; nil reads the config's
	// passphrase file. The caller reads any override from its
	// environment: this package reads none.
	Passphrase []byte
	// VaultToken, when set, replaces the config's Vault login (an
	// operator's token for the key commands).
	VaultToken string
	// Now is the clock; nil is time.Now. Only tests and the demo move it.
	Now func() time.Time
	// Locks keeps login lockouts (authlimit.NewSQLLocks on the store's
	// database); nil keeps them in memory, for as long as the process.
	Locks authlimit.LockStore
}

// New checks the configuration, loads the keys and TLS identity, and
// builds the gateway's parts. Close releases what New started (the audit
// writer) whether or not Run was called.
func New(ctx context.Context, cfg *config.Config, opt Options) (*Gateway, error) {
	if missing := cfg.MissingForServe(); len(missing) > 0 {
		return nil, fmt.Errorf("%s: the gateway cannot start without: %s", cfg.File, strings.Join(missing, "; "))
	}
	if opt.Policy == nil {
		return nil, errors.New("gateway: no policy")
	}
	if opt.Store == nil {
		return nil, errors.New("gateway: no store")
	}
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("agency", cfg.Agency)
	pass := opt.Passphrase
	if pass == nil {
		var err error
		if pass, err = passphrase(cfg.Keys.PassphraseFile); err != nil {
			return nil, err
		}
	}
	backend, err := keyring.OpenBackend(cfg, pass, opt.VaultToken, log)
	if err != nil {
		return nil, err
	}
	serverTLS, clientTLS, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	g := &Gateway{
		cfg: cfg, self: cfg.Self(), engine: policy.NewEngine(opt.Policy, log), store: opt.Store, trail: opt.Audit,
		metrics: opt.Metrics, log: log, now: time.Now, serverTLS: serverTLS, clientTLS: clientTLS,
	}
	if opt.Now != nil {
		g.now = opt.Now
	}
	g.audit = audit.NewWriter(opt.Audit, cfg.Agency, g.now, log, g.metrics.AuditFailed)
	hostname := smtpserver.Hostname(g.self, cfg.Agency)
	g.deliver = delivery.New(cfg.Delivery.Maildir, cfg.Delivery.LMTP, hostname)
	g.keys, err = keyring.New(ctx, cfg, backend, keyring.Options{
		Store: g.store, Audit: g.audit, Deliver: g.deliver, Metrics: g.metrics, Log: log, Now: g.now,
		Nudge: func() { g.relay.Nudge() }, Housekeeper: g.housekeeper.Load,
	})
	if err != nil {
		return nil, err
	}
	g.deliver.SetReturnPath(func() string { return keyring.Address(g.keys.Identity()) })
	g.relay = relay.New(relay.Config{Agency: cfg.Agency, Queue: cfg.Queue, Directory: cfg.Directory, Hostname: hostname, ClientTLS: clientTLS},
		g.store, g.keys, g.audit, g.deliver, g.metrics, log, g.now)
	g.clocks = clocks.NewKeeper(cfg, clocks.Options{
		Store: g.store, Trail: drainer(opt.Audit), Audit: g.audit, Deliver: g.deliver, Metrics: g.metrics, Log: log, Now: g.now,
		From:      func() string { return keyring.Address(g.keys.Identity()) },
		Retention: func() time.Duration { return time.Duration(g.engine.Policy().Params.Retention.Days) * 24 * time.Hour },
	})
	g.receipts = receipts.New(receipts.Options{
		Agency: cfg.Agency, Directory: cfg.Directory, Hostname: hostname,
		Gather: time.Duration(cfg.Queue.ReceiptGather), Most: cfg.Queue.ReceiptBatch,
		Store: g.store, Keys: g.keys, Log: log, Now: g.now, Queued: g.relay.Nudge,
	})
	queued := func() { g.relay.Nudge(); g.clocks.Kick() }
	// Lockouts after failed logins live in the gateway's database (the
	// caller's Locks), so that a restart keeps them and `conduit user
	// unlock` can lift them.
	throttle := authlimit.New(submission.ThrottleConfig(cfg.Auth), opt.Locks)
	g.submission = submission.New(cfg, submission.Options{Engine: g.engine, Keys: g.keys, Store: g.store, Audit: g.audit, Deliver: g.deliver,
		Metrics: g.metrics, Log: log, Now: g.now, Queued: queued, Hostname: hostname, TLS: serverTLS, Throttle: throttle})
	g.inbound = inbound.New(cfg, inbound.Options{Engine: g.engine, Keys: g.keys, Store: g.store, Audit: g.audit, Deliver: g.deliver,
		Metrics: g.metrics, Log: log, Now: g.now, Queued: queued, Receipts: g.receipts.Nudge, Hostname: hostname, TLS: serverTLS,
		InFlight: g.relay.Delivering})
	g.audit.Start()
	return g, nil
}

func drainer(a audit.Appender) clocks.TrailDrainer {
	if d, ok := a.(clocks.TrailDrainer); ok {
		return d
	}
	return nil
}

// Close stops what New started (the audit writer, after it has written
// every event waiting). It does not close the store or the trail: they are
// the caller's, closed after.
func (g *Gateway) Close() error {
	var err error
	g.closeOnce.Do(func() {
		g.inbound.Close()
		err = g.audit.Close()
	})
	return err
}

func passphrase(file string) ([]byte, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("keys: passphrase file: %w", err)
	}
	return []byte(strings.TrimRight(string(b), "\r\n")), nil
}

func loadTLS(cfg *config.Config) (server, client *tls.Config, err error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: %w", err)
	}
	pool, err := loadCA(cfg.TLS.CA)
	if err != nil {
		return nil, nil, err
	}
	// Security invariant 4: TLS 1.2 at least, between gateways and for
	// submission.
	server = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// A partner may present its certificate; it is checked against the
		// partners' CA when it does (mutual TLS routes).
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  pool,
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
	}
	return server, client, nil
}

// Run serves until ctx is done, then stops: the listeners stop accepting,
// sessions under way get the configured shutdown-timeout to finish (a
// submission mid-DATA is answered, or cut and retried by its client:
// nothing is acknowledged that is not stored), the relay cuts its
// transactions (each item stays queued and is retried), and every
// goroutine has returned when Run does. A listener that cannot be opened
// stops the start: what was opened before it is closed.
func (g *Gateway) Run(ctx context.Context) error {
	type listener struct {
		name string
		srv  *smtp.Server
		l    net.Listener
	}
	var ls []listener
	open := func(name, addr string, implicitTLS bool, srv *smtp.Server) error {
		if addr == "" {
			return nil
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen %s %s: %w", name, addr, err)
		}
		// Admission before any SMTP work: a per-address cap, slots kept
		// for proven clients (a partner's client certificate, staff after
		// AUTH), short deadlines until then.
		lim := g.cfg.Limits
		al := admission.Wrap(l, admission.Config{
			Max: lim.Connections, PerAddress: lim.ConnectionsPerAddress, Reserved: lim.PartnerSlots,
			PreAuthIdle: time.Duration(lim.PreAuthTimeout), PreAuthTotal: time.Duration(lim.PreAuthTotal),
		})
		al.OnRefuse = func(r admission.Reason, _ netip.Addr) { g.metrics.ConnectionRefused(name, r.String()) }
		l = al
		if implicitTLS {
			// TLS on top of the limiter, never under it: go-smtp tells a
			// TLS connection by conn.(*tls.Conn), which a wrapper around
			// the TLS connection would hide (AUTH would answer 538).
			l = tls.NewListener(l, g.serverTLS)
		}
		ls = append(ls, listener{name, srv, l})
		return nil
	}
	for _, o := range []struct {
		name, addr string
		tls        bool
		srv        func() *smtp.Server
	}{
		{"submission", g.cfg.Listen.Submission, false, g.submission.SMTP},
		{"submission-tls", g.cfg.Listen.SubmissionTLS, true, g.submission.SMTP},
		{"inbound", g.cfg.Listen.Inbound, false, g.inbound.SMTP},
	} {
		if err := open(o.name, o.addr, o.tls, o.srv()); err != nil {
			for _, l := range ls {
				l.l.Close()
			}
			return err
		}
	}

	// The parts' work runs on its own context, cancelled once the
	// listeners have stopped (or the shutdown timeout ran out).
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	var wg sync.WaitGroup
	wg.Go(func() { g.keys.RunGate(work) })
	wg.Go(func() { g.relay.Run(work) })
	wg.Go(func() { g.receipts.Run(work) })
	wg.Go(func() { g.inbound.RunReleases(work) })
	wg.Go(func() { g.runHousekeeping(work) })
	wg.Go(func() { g.keys.RunWatch(work) })
	wg.Go(func() { g.watchStore(work) })

	errc := make(chan error, len(ls))
	var serving sync.WaitGroup
	for _, l := range ls {
		g.log.Info("listening", "listener", l.name, "addr", l.l.Addr().String())
		serving.Go(func() {
			if err := l.srv.Serve(l.l); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
				errc <- fmt.Errorf("%s: %w", l.name, err)
			}
		})
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	timeout := time.Duration(g.cfg.ShutdownTimeout)
	g.log.Info("stopping", "shutdown_timeout", timeout.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	// Sessions first: they may still be storing what they will promise.
	// A session that outlives the timeout is closed under it; whatever it
	// had not been told 250 for, its client sends again.
	var shut sync.WaitGroup
	for _, l := range ls {
		shut.Go(func() {
			if serr := l.srv.Shutdown(sctx); serr != nil {
				g.log.Warn("sessions cut at the shutdown timeout", "listener", l.name, "err", serr)
				l.srv.Close()
			}
		})
	}
	shut.Wait()
	serving.Wait()
	// Whatever handler is still at work (a session closed under it at the
	// timeout) is cut and waited for: none outlives Run, so none finds the
	// store closed under it.
	g.submission.Stop()
	g.inbound.Stop()
	stopWork()
	wg.Wait()
	g.log.Info("stopped")
	return err
}

// housekeepingRetry is how often a gateway that does not hold the
// housekeeping lease tries to take it: a gateway that dies hands
// housekeeping on within about this long.
const housekeepingRetry = 5 * time.Second

// runHousekeeping runs the clocks (overdue alerts, retention, purges) on
// one gateway of the agency at a time: the store's lease (an advisory lock
// on PostgreSQL; always this gateway on SQLite).
func (g *Gateway) runHousekeeping(ctx context.Context) {
	run := func(ctx context.Context) {
		g.housekeeper.Store(true)
		defer g.housekeeper.Store(false)
		g.clocks.Run(ctx)
	}
	l, ok := g.store.(store.Leader)
	if !ok {
		run(ctx)
		return
	}
	l.Lead(ctx, "housekeeping", housekeepingRetry, run)
}

// watchStore wakes the parts when the store changes where no call of
// theirs could tell them: an administrator's release, retry, drop or key
// decision made with the command line in another process, a receipt
// recorded by another gateway sharing the store.
func (g *Gateway) watchStore(ctx context.Context) {
	w, ok := g.store.(interface {
		Changes(ctx context.Context, every time.Duration) <-chan struct{}
	})
	if !ok {
		return
	}
	for range w.Changes(ctx, time.Second) {
		g.relay.Nudge()
		g.receipts.Nudge()
		g.inbound.KickReleases()
	}
}

// Policy is the engine in force, for reloads.
func (g *Gateway) Policy() *policy.Engine { return g.engine }

// Store is the gateway's store, for the command line.
func (g *Gateway) Store() store.Store { return g.store }

// KeysReady is the readiness check of the admin listener (`keys`): it
// checks the key backend now (not the cached answer), so /readyz tells the
// truth at once, and an error means nothing can be sealed or opened.
func (g *Gateway) KeysReady(ctx context.Context) error { return g.keys.Check(ctx) }

// ReloadIdentity reads this gateway's key from its backend again (after
// conduit keys rotate or revoke, on SIGHUP) and reports whether it changed.
func (g *Gateway) ReloadIdentity(ctx context.Context) (bool, error) {
	return g.keys.ReloadIdentity(ctx)
}

// AnnounceKey queues cert's certificate to every partner, signed by the
// key in force.
func (g *Gateway) AnnounceKey(ctx context.Context, cert *keys.Identity, why string) ([]string, error) {
	return g.keys.AnnounceKey(ctx, cert, why)
}

// KeysInForce lists this gateway's own public certificate, then the
// partner certificates in force.
func (g *Gateway) KeysInForce() []*keys.Cert { return g.keys.KeysInForce() }

// PartnersUnusable lists the partners whose certificate cannot be used,
// with the reason (packages for them are held), for conduit keys list.
func (g *Gateway) PartnersUnusable() map[string]string { return g.keys.Unusable() }

// OfferPartnerCert takes a partner certificate an operator received out of
// band (conduit keys offer).
func (g *Gateway) OfferPartnerCert(ctx context.Context, c *keys.Cert, source string) (store.PartnerKey, error) {
	return g.keys.OfferPartnerCert(ctx, c, source)
}

// PurgeExpired is clocks.PurgeExpired, for the command line.
var PurgeExpired = clocks.PurgeExpired

// Purged is what retention destroyed for one package.
type Purged = clocks.Purged

// VaultConfig turns the config's vault section into the backend's
// settings (keyring.VaultConfig).
var VaultConfig = keyring.VaultConfig

// OpenKeyBackend returns the backend the config names for this gateway's
// own secret key (keyring.OpenBackend).
func OpenKeyBackend(_ context.Context, cfg *config.Config, pass []byte, vaultToken string, log *slog.Logger) (keys.Backend, error) {
	return keyring.OpenBackend(cfg, pass, vaultToken, log)
}
