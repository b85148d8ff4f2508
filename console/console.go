// Package console is in charge of a gateway's web console and the JSON API
// it is a client of: signing in with the gateway's staff accounts (bcrypt,
// throttled), sessions with an idle timeout, CSRF tokens, a role per user
// enforced on the server for every page and API call, the compose form
// with the sharing policy's decision shown live before sending, the
// sender's packages with their receipts and clocks, what this gateway
// received, held packages, and the administrator's pages (routing policy
// with type-check, dry run, apply and restore; directory; queue;
// quarantine; partner key changes; deadlines; audit; health). Every
// action is audited with the signed-in user as actor.
//
// It needs no build step and fetches nothing at run time: templates and
// static files are embedded. It declares here the smallest interfaces it
// needs from the gateway, its store and its audit trail.
package console

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/policy"
)

// Gateway is what the console asks of the running gateway.
type Gateway interface {
	// Submit takes a message through the same intake as SMTP submission
	// and returns the package id and the accepted reply.
	Submit(ctx context.Context, user *config.User, rcpts []string, msg io.Reader) (pkgID, reply string, err error)
	// Explain decides a draft without sending or storing anything.
	Explain(ctx context.Context, m *envelope.Manifest) policy.Decision
	// Rectify sends a rectification notice about a package this
	// gateway sent to every agency it went to.
	Rectify(ctx context.Context, user *config.User, pkgID string, text io.Reader) (notice string, dests []string, err error)
	// ReloadPolicy reads the policy file again and puts it in force.
	ReloadPolicy() error
	// Policy is the engine in force (its rules, for listing and dry runs).
	Policy() *policy.Engine
	// KeysReady reports whether the key backend can seal and open now.
	KeysReady(ctx context.Context) error
}

// Store is what the console reads and changes in the gateway's store.
type Store interface {
	List(ctx context.Context, f store.Filter) ([]store.Item, error)
	Receipts(ctx context.Context, packageID string) ([]store.Receipt, error)
	Deadlines(ctx context.Context, now time.Time, overdue bool) ([]store.Deadline, error)
	// Update runs one write transaction: an action and its audit event
	// commit together or not at all.
	Update(ctx context.Context, f func(store.Tx) error) error
	Depth(ctx context.Context) (map[string]int, error)
	ListQuarantine(ctx context.Context, state store.QState) ([]store.QItem, error)
	ListPartnerKeys(ctx context.Context, agency string, state store.KeyState) ([]store.PartnerKey, error)
	RecentDecided(ctx context.Context, n int) ([]store.Decided, error)
}

// Trail is the audit trail.
type Trail interface {
	Append(ctx context.Context, e audit.Event) (audit.Event, error)
	Query(ctx context.Context, f audit.Filter) ([]audit.Event, error)
	Verify(ctx context.Context) (audit.VerifyResult, error)
	Export(ctx context.Context, w io.Writer, f audit.Filter) (int64, error)
}

// Options are what New needs.
type Options struct {
	Config  *config.Config
	Gateway Gateway
	Store   Store
	Trail   Trail
	Log     *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// SpoolDir holds uploaded attachments, encrypted (envelope.Spool);
	// "" is the system's temporary folder.
	SpoolDir string
	// DryRunRecent is how many of the last decided packages a dry run
	// replays (default 200).
	DryRunRecent int
}

// Server is the console.
type Server struct {
	opt   Options
	cfg   *config.Config
	log   *slog.Logger
	now   func() time.Time
	idle  time.Duration
	auth  *authenticator
	pages *pages
	mux   *http.ServeMux

	sessions sessions

	policyMu sync.Mutex // one policy change at a time
}

//go:embed templates static
var files embed.FS

// New builds the console.
func New(opt Options) (*Server, error) {
	if opt.Config == nil || opt.Gateway == nil || opt.Store == nil || opt.Trail == nil {
		return nil, errors.New("console: config, gateway, store and trail are all needed")
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.DryRunRecent <= 0 {
		opt.DryRunRecent = 200
	}
	s := &Server{opt: opt, cfg: opt.Config, log: opt.Log.With("part", "console"), now: opt.Now,
		idle: time.Duration(opt.Config.Console.IdleTimeout)}
	if s.idle <= 0 {
		s.idle = config.DefaultConsoleIdleTimeout
	}
	s.sessions.byID = map[string]*session{}
	var err error
	if s.auth, err = newAuthenticator(opt.Config.Users, opt.Now); err != nil {
		return nil, err
	}
	if s.pages, err = loadPages(); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

// ServeHTTP serves the console with its security headers.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// No inline script or style anywhere: the console's own files only.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Strict-Transport-Security", "max-age=31536000")
	h.Set("Cache-Control", "no-store")
	s.mux.ServeHTTP(w, r)
}

// TLSConfig is the console's TLS configuration: its own certificate when
// the config names one, the gateway's otherwise; TLS 1.2 at least.
func TLSConfig(cfg *config.Config) (*tls.Config, error) {
	certFile, keyFile := cfg.TLS.Cert, cfg.TLS.Key
	if cfg.Console.Cert != "" {
		certFile, keyFile = cfg.Console.Cert, cfg.Console.Key
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("console tls: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, nil
}

// Serve serves HTTPS on ln until ctx is done, then shuts down, letting
// requests under way finish for a few seconds.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	tc, err := TLSConfig(s.cfg)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		TLSConfig:         tc,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Idle sessions end, and their uploads are destroyed, even when
		// nobody signs in.
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for ctx.Err() == nil {
			select {
			case <-t.C:
				s.sweep()
			case <-ctx.Done():
			}
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		s.endAll()
	}()
	s.log.Info("console listening", "addr", "https://"+ln.Addr().String()+"/")
	err = hs.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		<-done
		return nil
	}
	return err
}

// spoolDir is where uploads are spooled (encrypted).
func (s *Server) spoolDir() string {
	if s.opt.SpoolDir != "" {
		return s.opt.SpoolDir
	}
	return os.TempDir()
}
