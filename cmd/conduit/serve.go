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

	"github.com/conduit-gateway/conduit/console"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/metrics"
	"github.com/conduit-gateway/conduit/policy"
	"github.com/conduit-gateway/conduit/preflight"
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
of received packages to local Maildirs. SIGHUP reloads the config, the
directory and the policy together, or refuses the whole change (logged and
audited with the reason) and keeps what is in force; listen addresses, the
store, the TLS key pair's paths, the key backend and the agency need a
restart. SIGINT or SIGTERM stop it cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logFormat, logLevel)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			slog.SetDefault(log)
			gcDefault()
			if stop, err := cpuProfile(log); err != nil {
				return err
			} else {
				defer stop()
			}
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
			// Make the folders it writes, check what it reads, and name
			// each problem with what to do, before anything starts.
			warnings, err := preflight.Check(cfg, time.Now(), os.Getenv(passphraseEnv) != "")
			for _, w := range warnings {
				log.Warn("admin alert: "+w.Problem, "what", w.What, "fix", w.Fix)
			}
			if err != nil {
				return &exitError{exitUsage, fmt.Errorf("%s: %w", cfgPath, err)}
			}
			key, err := auditKey(cfg, "")
			if err != nil {
				return err
			}
			// The store and the audit trail on one database (one SQLite
			// file, or one PostgreSQL pool), closed last.
			be, err := openServeBackend(ctx, cfg, key)
			if err != nil {
				return err
			}
			defer be.close()
			st, trail := be.store, be.trail
			m := metrics.New(log)
			if be.pg != nil {
				m.PoolStatsFunc(poolStats(be.pg))
			}
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
			// SIGHUP (conduit policy reload, systemctl reload, conduit keys
			// rotate and revoke) reloads the config, the directory, the
			// policy and this gateway's own key (reload.go).
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			sv := &server{cfgPath: cfgPath, log: log, st: st, trail: trail, metrics: m, locks: be.locks,
				origin: fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())}
			if err := sv.start(ctx, cfg, pol); err != nil {
				return &exitError{exitUsage, err}
			}
			// A reload on one gateway of the agency reaches the others
			// (PostgreSQL NOTIFY): each reloads its own copy of the
			// config, directory and policy, as on SIGHUP.
			if be.pg != nil {
				sv.notify = func(ctx context.Context) {
					if err := be.pg.NotifyPolicyReload(ctx, sv.origin); err != nil {
						log.Warn("the other gateways were not told of the reload", "err", err)
					}
				}
				go func() {
					for from := range be.pg.PolicyReloads(ctx, time.Second) {
						if from == sv.origin {
							continue
						}
						// Reloaded as on SIGHUP, and not announced again.
						sv.fromPeer.Store(true)
						select {
						case hup <- syscall.SIGHUP:
						default:
						}
					}
				}()
			}
			if cfg.PIDFile != "" {
				if err := os.WriteFile(cfg.PIDFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
					return fmt.Errorf("pid file: %w", err)
				}
				defer os.Remove(cfg.PIDFile)
			}
			if cfg.Listen.Admin != "" {
				admin := &metrics.Server{Addr: cfg.Listen.Admin, Metrics: m, Log: log}
				// Ready only when the store answers and the key backend
				// still holds the agency's key.
				// The store answers and takes writes (a PostgreSQL
				// database that is down or read-only is not ready).
				admin.AddCheck("store", st.(store.Pinger).Ping)
				// Not ready while nothing can be sealed or opened (the
				// key gate: Vault sealed, unreachable, token refused).
				admin.AddCheck("keys", sv.keysReady)
				ln, err := admin.Listen()
				if err != nil {
					return err
				}
				go admin.Serve(ctx, ln)
			}
			if cfg.Listen.Console != "" {
				// The console works with the gateway in force, whichever a
				// reload has put there. Uploads are spooled beside the
				// SQLite file, or beside the config on PostgreSQL.
				spool := filepath.Dir(cfg.Store.Path)
				if cfg.Store.Path == "" {
					spool = filepath.Dir(cfg.File)
				}
				con, err := console.New(console.Options{Config: cfg, Gateway: liveGateway{sv}, Store: st.(console.Store), Trail: trail, Log: log,
					Now: sv.now, SpoolDir: spool})
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
			err = sv.run(ctx, hup)
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
