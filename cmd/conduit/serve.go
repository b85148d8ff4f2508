package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/console"
	"github.com/conduit-gateway/conduit/gateway"
	"github.com/conduit-gateway/conduit/gateway/authlimit"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/metrics"
	"github.com/conduit-gateway/conduit/policy"
	"github.com/conduit-gateway/conduit/sqlschema"
)

// newServeCmd builds `conduit serve`.
func newServeCmd() *cobra.Command {
	var cfgPath, logFormat, logLevel string
	c := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "Run this agency's gateway",
		Long: `Serve runs one agency's gateway: the submission listener for the agency's
staff (AUTH only after TLS), the inbound listener for partner gateways
(STARTTLS required), the relay that delivers queued packages, and delivery
of received packages to local Maildirs. SIGHUP reloads the sharing policy
(an invalid one is refused and the one in force stays); SIGINT or SIGTERM
stop it cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logFormat, logLevel)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			slog.SetDefault(log)
			if err := disableCoreDumps(); err != nil {
				// Fail closed: a gateway that could dump its keys does
				// not start.
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			pol, cfg, err := policy.Load(cfgPath)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			// One database file, one writer: the store and the audit
			// trail share its connections, closed last.
			db, err := sqlschema.OpenDB(cfg.Store.Path, store.StorePragmas...)
			if err != nil {
				return fmt.Errorf("open store %s: %w", cfg.Store.Path, err)
			}
			defer db.Close()
			st, err := store.NewSQLite(ctx, db)
			if err != nil {
				return fmt.Errorf("open store %s: %w", cfg.Store.Path, err)
			}
			key, err := auditKey(cfg, "")
			if err != nil {
				return err
			}
			trail, err := audit.NewSQLite(ctx, db, key)
			if err != nil {
				return fmt.Errorf("open audit log %s: %w", cfg.Store.Path, err)
			}
			locks, err := authlimit.NewSQLLocks(ctx, db)
			if err != nil {
				return fmt.Errorf("open login lockouts %s: %w", cfg.Store.Path, err)
			}
			m := metrics.New(log)
			m.QueueDepthFunc(st.Depth)
			m.OverdueFunc(func(ctx context.Context) (map[string]int, error) {
				// By kind, each an index range: a scrape does not read the
				// retention clocks every package has.
				out := map[string]int{}
				for _, kind := range []string{policy.DeadlineAcknowledge, policy.DeadlineTriage, policy.DeadlineHold} {
					ds, err := st.DueDeadlines(ctx, kind, time.Now(), 100000)
					if err != nil {
						return nil, err
					}
					if len(ds) > 0 {
						out[kind] = len(ds)
					}
				}
				return out, nil
			})
			gopt := gatewayOptions(gateway.Options{Store: st, Audit: trail, Metrics: m, Policy: pol, Log: log, Locks: locks})
			g, err := gateway.New(ctx, cfg, gopt)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			// The audit writer stops before the trail and the store close
			// (deferred above, so they run after this).
			defer g.Close()
			g.Policy().OnReload = func(rerr error) {
				e := audit.Event{Agency: cfg.Agency, Kind: audit.PolicyReload, Actor: "gateway", Detail: "policy reloaded"}
				if rerr != nil {
					e.Detail = "reload refused, the policy in force stays: " + rerr.Error()
				}
				if _, err := trail.Append(ctx, e); err != nil {
					log.Error("admin alert: audit trail not written", "err", err)
				}
			}
			if cfg.PIDFile != "" {
				if err := os.WriteFile(cfg.PIDFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
					return fmt.Errorf("pid file: %w", err)
				}
				defer os.Remove(cfg.PIDFile)
			}
			g.Policy().WatchSIGHUP(ctx, cfgPath)
			// SIGHUP also re-reads this gateway's own key (conduit keys
			// rotate and revoke signal it), and announces a change.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						if _, err := g.ReloadIdentity(ctx); err != nil {
							log.Error("admin alert: own key not reloaded; the key in force stays", "err", err)
						}
					}
				}
			}()
			if cfg.Listen.Admin != "" {
				admin := &metrics.Server{Addr: cfg.Listen.Admin, Metrics: m, Log: log}
				// Ready only when the store answers and the key backend
				// still holds the agency's key.
				admin.AddCheck("store", func(ctx context.Context) error { _, err := st.Depth(ctx); return err })
				// Not ready while nothing can be sealed or opened (the
				// key gate: Vault sealed, unreachable, token refused).
				admin.AddCheck("keys", g.KeysReady)
				ln, err := admin.Listen()
				if err != nil {
					return err
				}
				go admin.Serve(ctx, ln)
			}
			if cfg.Listen.Console != "" {
				con, err := console.New(console.Options{Config: cfg, Gateway: g, Store: st, Trail: trail, Log: log,
					Now: gopt.Now, SpoolDir: filepath.Dir(cfg.Store.Path)})
				if err != nil {
					return err
				}
				ln, err := net.Listen("tcp", cfg.Listen.Console)
				if err != nil {
					return fmt.Errorf("listen console %s: %w", cfg.Listen.Console, err)
				}
				// The console stops with the gateway, and before the store
				// and the audit trail close under it.
				cctx, stopConsole := context.WithCancel(ctx)
				done := make(chan struct{})
				go func() {
					defer close(done)
					if err := con.Serve(cctx, ln); err != nil {
						log.Error("console stopped", "err", err)
					}
				}()
				defer func() { stopConsole(); <-done }()
			}
			log.Info("gateway starting", "agency", cfg.Agency)
			err = g.Run(ctx)
			log.Info("gateway stopped")
			return err
		},
	}
	c.Flags().StringVar(&cfgPath, "config", "", "the gateway's config file")
	c.Flags().StringVar(&logFormat, "log-format", "json", "json or text")
	c.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	c.MarkFlagRequired("config")
	return c
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use json or text", format)
}
