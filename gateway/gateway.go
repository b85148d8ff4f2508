// Package gateway is in charge of one agency's gateway daemon: the
// submission listener for the agency's own staff, the inbound listener for
// partner gateways, the intake that reads a submitted package's marking,
// asks the sharing policy and seals one envelope per destination, the relay
// that delivers queued envelopes over SMTP with mandatory TLS, and the
// receiving side that opens envelopes, applies the inbound policy, delivers
// to local Maildirs, and quarantines whatever fails a check.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/metrics"
	"github.com/conduit-gateway/conduit/policy"
)

// Gateway is one running agency gateway.
type Gateway struct {
	cfg  *config.Config
	self *config.Agency
	// id and partnerSet are swapped whole when a key changes (a
	// rotation, an approved partner key change): readers take one
	// snapshot per use.
	id         atomic.Pointer[keys.Identity]
	keys       keys.Backend
	gate       *keyGate // fail closed while the key backend is unavailable
	partnerSet atomic.Pointer[keys.Partners]
	keyWatch   keyWatch
	engine     *policy.Engine
	store      store.Store
	auditor    Auditor
	auditCh    chan auditReq // group commit, when the auditor can batch
	// auditKick tells the audit writer that events were staged.
	auditKick chan struct{}
	metrics   *metrics.Metrics // nil: none
	log       *slog.Logger

	serverTLS *tls.Config
	clientTLS *tls.Config

	// Now is the clock; tests and the demo may move it.
	Now func() time.Time

	wake chan struct{} // nudges the relay after an enqueue
	// housekeep nudges housekeeping after a clock was started, so that
	// it sleeps until the earliest one.
	housekeep chan struct{}

	mu      sync.Mutex
	servers []closer
}

type closer interface{ Close() error }

// Options are what New needs besides the config.
type Options struct {
	Store store.Store
	// Audit receives the audit trail; nil writes none (tests of parts).
	Audit Auditor
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
}

// New checks the configuration, loads the keys and TLS identity, and
// returns a gateway ready to Run.
func New(ctx context.Context, cfg *config.Config, opt Options) (*Gateway, error) {
	if missing := cfg.MissingForServe(); len(missing) > 0 {
		return nil, fmt.Errorf("%s: the gateway cannot start without: %s", cfg.File, strings.Join(missing, "; "))
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
	backend, err := OpenKeyBackend(ctx, cfg, pass, opt.VaultToken, log)
	if err != nil {
		return nil, err
	}
	id, err := backend.Identity(ctx)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	serverTLS, clientTLS, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	if opt.Policy == nil {
		return nil, errors.New("gateway: no policy")
	}
	g := &Gateway{
		cfg: cfg, self: cfg.Self(), keys: backend,
		engine: policy.NewEngine(opt.Policy, log), store: opt.Store, auditor: opt.Audit, metrics: opt.Metrics, log: log,
		serverTLS: serverTLS, clientTLS: clientTLS,
		Now:  time.Now,
		wake: make(chan struct{}, 1), housekeep: make(chan struct{}, 1),
	}
	if opt.Now != nil {
		g.Now = opt.Now
	}
	if err := g.acceptIdentity(id); err != nil {
		return nil, err
	}
	g.id.Store(id)
	g.gate = newKeyGate(g, backend, time.Duration(cfg.Keys.CheckInterval))
	if err := g.loadPartners(ctx); err != nil {
		return nil, err
	}
	if b, ok := opt.Audit.(batchAuditor); ok {
		// The writer lives as long as the process: the CLI's short-lived
		// gateways (notice send) use it too.
		g.auditCh = make(chan auditReq, maxAuditBatch)
		g.auditKick = make(chan struct{}, 1)
		go g.runAuditWriter(b)
	}
	return g, nil
}

// OpenKeyBackend returns the backend the config names for this gateway's
// own secret key. vaultToken, when set, replaces the config's Vault login.
func OpenKeyBackend(ctx context.Context, cfg *config.Config, pass []byte, vaultToken string, log *slog.Logger) (keys.Backend, error) {
	if cfg.Keys.KeyBackend() == config.BackendVault {
		return keys.NewVault(VaultConfig(cfg, vaultToken, log))
	}
	return &keys.File{Path: cfg.Keys.Secret, Passphrase: pass}, nil
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

// Run serves until ctx is done, then shuts everything down.
func (g *Gateway) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
	start := func(name, addr string, implicitTLS bool, srv smtpServer) error {
		if addr == "" {
			return nil
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen %s %s: %w", name, addr, err)
		}
		l = limitListener(l, g.cfg.Limits.Connections)
		if implicitTLS {
			// TLS on top of the limiter, never under it: go-smtp tells a
			// TLS connection by conn.(*tls.Conn), which a wrapper around
			// the TLS connection would hide (AUTH would answer 538).
			l = tls.NewListener(l, g.serverTLS)
		}
		g.mu.Lock()
		g.servers = append(g.servers, srv)
		g.mu.Unlock()
		g.log.Info("listening", "listener", name, "addr", l.Addr().String())
		go func() { errc <- srv.Serve(l) }()
		return nil
	}
	if err := start("submission", g.cfg.Listen.Submission, false, g.newSubmissionServer()); err != nil {
		return err
	}
	if err := start("submission-tls", g.cfg.Listen.SubmissionTLS, true, g.newSubmissionServer()); err != nil {
		return err
	}
	if err := start("inbound", g.cfg.Listen.Inbound, false, g.newInboundServer()); err != nil {
		return err
	}
	gateDone := make(chan struct{})
	go func() { g.gate.run(ctx); close(gateDone) }()
	relayDone := make(chan struct{})
	go func() { g.runRelay(ctx); close(relayDone) }()
	releasesDone := make(chan struct{})
	go func() { g.runReleases(ctx); close(releasesDone) }()
	deadlinesDone := make(chan struct{})
	go func() { g.runDeadlines(ctx); close(deadlinesDone) }()
	keysDone := make(chan struct{})
	go func() { g.runKeyWatch(ctx); close(keysDone) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	g.mu.Lock()
	for _, s := range g.servers {
		s.Close()
	}
	g.mu.Unlock()
	cancel()
	<-relayDone
	<-releasesDone
	<-deadlinesDone
	<-keysDone
	<-gateDone
	return err
}

type smtpServer interface {
	Serve(net.Listener) error
	Close() error
}

// identity is this gateway's own key as it stands now.
func (g *Gateway) identity() *keys.Identity { return g.id.Load() }

// partners are the partner certificates in force now.
func (g *Gateway) partners() *keys.Partners { return g.partnerSet.Load() }

// Policy is the engine in force, for reloads.
func (g *Gateway) Policy() *policy.Engine { return g.engine }

func (g *Gateway) nudge() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

func (g *Gateway) kickHousekeeping() {
	select {
	case g.housekeep <- struct{}{}:
	default:
	}
}

// limitListener bounds concurrent connections: the next Accept waits for a
// free slot, so an excess client waits in the kernel's backlog rather than
// being refused outright.
func limitListener(l net.Listener, n int) net.Listener {
	return &limited{Listener: l, sem: make(chan struct{}, n)}
}

type limited struct {
	net.Listener
	sem chan struct{}
}

func (l *limited) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// openParams are the envelope checks' parameters for this gateway.
func (g *Gateway) openParams(replay envelope.ReplayChecker) envelope.OpenParams {
	return envelope.OpenParams{
		Identity: g.identity(), Partners: g.partners(), Replay: replay, Now: g.Now,
		Legacy: g.cfg.Legacy(), MaxSize: g.cfg.Limits.MessageBytes * 2,
	}
}
