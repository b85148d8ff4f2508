package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddr is where the admin listener listens when Server.Addr is
// empty: loopback only. /metrics has no authentication; put it behind a
// reverse proxy or a firewall before binding it elsewhere.
const DefaultAddr = "127.0.0.1:9425"

// DefaultCheckTimeout bounds each readiness check.
const DefaultCheckTimeout = 2 * time.Second

// Check is a readiness check: nil when the dependency answers.
type Check func(ctx context.Context) error

// Server is the admin HTTP listener:
//
//	/metrics  the Prometheus metrics of Metrics (text or protobuf exposition)
//	/healthz  200 while the process answers
//	/readyz   200 when every registered check passes, else 503 naming each
//	          check that failed and why
type Server struct {
	// Addr is the listen address (host:port); empty is DefaultAddr.
	Addr string
	// Metrics is what /metrics serves; nil serves an empty registry.
	Metrics *Metrics
	// CheckTimeout bounds each check; zero is DefaultCheckTimeout.
	CheckTimeout time.Duration
	// Log (nil: slog.Default) gets the listener's errors.
	Log *slog.Logger

	mu     sync.Mutex
	checks map[string]Check
}

// AddCheck registers a readiness check under name ("store", "keys"); a
// second check of the same name replaces the first. Checks may be added
// while the server runs.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.checks == nil {
		s.checks = map[string]Check{}
	}
	s.checks[name] = c
}

func (s *Server) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// Handler serves the three paths; Run uses it, and a gateway may mount
// it elsewhere.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	if s.Metrics != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.Metrics.reg, promhttp.HandlerOpts{
			ErrorHandling: promhttp.ContinueOnError, // one failing collector does not blank the rest
			ErrorLog:      slog.NewLogLogger(s.logger().Handler(), slog.LevelWarn),
			Timeout:       ScrapeTimeout + time.Second,
		}))
	} else {
		mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		})
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	return mux
}

// readyz runs every check at once, each under its own timeout.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	names := make([]string, 0, len(s.checks))
	checks := make([]Check, 0, len(s.checks))
	for n := range s.checks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		checks = append(checks, s.checks[n])
	}
	s.mu.Unlock()

	timeout := s.CheckTimeout
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = runCheck(r.Context(), c, timeout)
		}()
	}
	wg.Wait()

	var b strings.Builder
	ready := true
	for i, n := range names {
		if errs[i] != nil {
			ready = false
			fmt.Fprintf(&b, "%s: failed: %s\n", n, oneLine(errs[i].Error()))
		} else {
			fmt.Fprintf(&b, "%s: ok\n", n)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "not ready\n"+b.String())
		return
	}
	fmt.Fprint(w, "ready\n"+b.String())
}

// runCheck runs c under timeout; a check that ignores its context still
// answers the request in time (its goroutine finishes on its own).
func runCheck(ctx context.Context, c Check, timeout time.Duration) (err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("check panicked: %v", p)
			}
		}()
		done <- c(ctx)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no answer within %s", timeout)
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Listen opens the listener on Addr (DefaultAddr when empty), for Serve.
func (s *Server) Listen() (net.Listener, error) {
	addr := s.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok && !a.IP.IsLoopback() {
		s.logger().Warn("admin listener is not on loopback: /metrics and /readyz have no authentication", "addr", ln.Addr().String())
	}
	return ln, nil
}

// Serve answers on ln until ctx is done, then shuts down: it stops
// accepting, lets requests in flight finish (up to 5 seconds) and
// returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.logger().Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin listener: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("admin listener shutdown: %w", err)
	}
	return nil
}

// Run listens on Addr and serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	ln, err := s.Listen()
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}
