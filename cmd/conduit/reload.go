package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway"
	"github.com/conduit-gateway/conduit/gateway/authlimit"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/metrics"
	"github.com/conduit-gateway/conduit/policy"
	"github.com/conduit-gateway/conduit/preflight"
)

// server is the running daemon: the gateway in force, and what outlives a
// reload (the store, the audit trail, the metrics).
type server struct {
	cfgPath string
	log     *slog.Logger
	st      store.Store
	trail   audit.Trail
	metrics *metrics.Metrics
	// locks keeps login lockouts across reloads and restarts.
	locks authlimit.LockStore

	// notify, when set, tells the agency's other gateways (sharing a
	// PostgreSQL store) that this one reloaded; origin names this process
	// in that notification, and fromPeer marks a reload another gateway
	// asked for, which is not announced again.
	notify   func(ctx context.Context)
	origin   string
	fromPeer atomic.Bool

	// now is the gateways' clock (a test's moved clock, or nil).
	now func() time.Time

	cfg *config.Config
	// digest is sources(cfg) when it was put in force.
	digest string
	g      atomic.Pointer[gateway.Gateway]
}

// start builds the gateway for a config and policy.
func (sv *server) start(ctx context.Context, cfg *config.Config, pol *policy.Policy) error {
	digest := sources(cfg)
	opt := gatewayOptions(gateway.Options{Store: sv.st, Audit: sv.trail, Metrics: sv.metrics, Policy: pol, Log: sv.log, Locks: sv.locks})
	sv.now = opt.Now
	g, err := gateway.New(ctx, cfg, opt)
	if err != nil {
		return err
	}
	g.Policy().OnReload = func(rerr error) {
		if rerr != nil {
			sv.audit(ctx, "reload refused, the policy in force stays: "+rerr.Error())
			return
		}
		sv.audit(ctx, "policy reloaded")
		sv.announce(ctx)
	}
	sv.cfg, sv.digest = cfg, digest
	sv.g.Store(g)
	return nil
}

// announce tells the agency's other gateways of a reload done here (not
// one they asked for).
func (sv *server) announce(ctx context.Context) {
	if sv.fromPeer.Swap(false) || sv.notify == nil {
		return
	}
	sv.notify(ctx)
}

func (sv *server) keysReady(ctx context.Context) error { return sv.g.Load().KeysReady(ctx) }

func (sv *server) audit(ctx context.Context, detail string) {
	actor := "gateway"
	if sv.fromPeer.Load() {
		actor = "another gateway of the agency"
	}
	e := audit.Event{Agency: sv.cfg.Agency, Kind: audit.PolicyReload, Actor: actor, Detail: detail}
	if _, err := sv.trail.Append(ctx, e); err != nil {
		sv.log.Error("admin alert: audit trail not written", "err", err)
	}
}

// run serves until ctx is done. On SIGHUP it reloads: this gateway's own
// key first (conduit keys rotate and revoke signal it), then the config,
// the directory and the policy. A change to the policy alone is swapped in
// at once; a change to the config or the directory (or to the files they
// name: certificates, partner keys) restarts the gateway's parts within the
// process, as Postfix's reload does: listeners close, sessions under way
// finish (or are answered 4xx, nothing promised), and the new parts start
// on the same store. Anything invalid refuses the whole change, with the
// reason in the log and the audit trail, and what is in force stays.
func (sv *server) run(ctx context.Context, hup <-chan os.Signal) error {
	for {
		g := sv.g.Load()
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- g.Run(runCtx) }()
		restart := false
		for !restart {
			select {
			case err := <-done:
				cancel()
				g.Close()
				return err
			case <-hup:
				if _, err := g.ReloadIdentity(ctx); err != nil {
					sv.log.Error("admin alert: own key not reloaded; the key in force stays", "err", err)
				}
				cfg, pol, whole, err := sv.prepare()
				if err != nil {
					sv.log.Error("admin alert: reload refused; the configuration, directory and policy in force stay", "err", err)
					sv.audit(ctx, "reload refused, the configuration, directory and policy in force stay: "+err.Error())
					continue
				}
				if !whole {
					g.Policy().Reload(func() (*policy.Policy, error) { return pol, nil })
					continue
				}
				// Stop the parts, then build them anew; a gateway that
				// cannot be built from the new config (it was checked,
				// but a key or Vault may still fail) is built again from
				// the old one.
				cancel()
				if err := <-done; err != nil {
					g.Close()
					return err
				}
				g.Close()
				old, oldPol := sv.cfg, g.Policy().Policy()
				if err := sv.start(ctx, cfg, pol); err != nil {
					sv.log.Error("admin alert: reload refused; the configuration in force stays", "err", err)
					if rerr := sv.start(ctx, old, oldPol); rerr != nil {
						return fmt.Errorf("reload failed (%v) and the configuration in force could not be started again: %w", err, rerr)
					}
					sv.audit(ctx, "reload refused, the configuration in force stays: "+err.Error())
				} else {
					sv.log.Info("configuration, directory and policy reloaded", "agencies", len(cfg.Directory.Agencies))
					sv.audit(ctx, "configuration, directory and policy reloaded")
					sv.announce(ctx)
				}
				restart = true
			}
		}
	}
}

// prepare loads and checks the config, the directory and the policy as a
// start would. whole is false when only the policy file changed.
func (sv *server) prepare() (*config.Config, *policy.Policy, bool, error) {
	pol, cfg, err := policy.Load(sv.cfgPath)
	if err != nil {
		return nil, nil, false, err
	}
	if fixed := restartOnly(sv.cfg, cfg); len(fixed) > 0 {
		return nil, nil, false, fmt.Errorf("these settings change only with a restart (systemctl restart conduit): %v; undo them or restart", fixed)
	}
	warnings, err := preflight.Check(cfg, time.Now(), os.Getenv(passphraseEnv) != "")
	for _, w := range warnings {
		sv.log.Warn("admin alert: "+w.Problem, "what", w.What, "fix", w.Fix)
	}
	if err != nil {
		return nil, nil, false, err
	}
	return cfg, pol, sources(cfg) != sv.digest, nil
}

// restartOnly names the settings that differ between two configs and that
// a running process cannot change: its listeners, its database, its own
// identity and key backend, the agency it is.
func restartOnly(old, new *config.Config) []string {
	var out []string
	for _, f := range []struct {
		name     string
		old, new string
	}{
		{"agency", old.Agency, new.Agency},
		{"listen.submission", old.Listen.Submission, new.Listen.Submission},
		{"listen.submission-tls", old.Listen.SubmissionTLS, new.Listen.SubmissionTLS},
		{"listen.inbound", old.Listen.Inbound, new.Listen.Inbound},
		{"listen.admin", old.Listen.Admin, new.Listen.Admin},
		{"store.path", old.Store.Path, new.Store.Path},
		{"store.audit-key-file", old.Store.AuditKeyFile, new.Store.AuditKeyFile},
		{"pid-file", old.PIDFile, new.PIDFile},
		{"keys.backend", old.Keys.KeyBackend(), new.Keys.KeyBackend()},
		{"vault.address", old.Vault.Address, new.Vault.Address},
	} {
		if f.old != f.new {
			out = append(out, f.name)
		}
	}
	return out
}

// sources is a digest of what a config is made of besides its policy: the
// config and directory files, and the files they name (TLS certificate,
// key and CA, the partner certificates; its own key is reloaded apart, by
// ReloadIdentity). Equal digests
// mean a reload changes only the policy.
func sources(cfg *config.Config) string {
	h := sha256.New()
	files := []string{cfg.File, cfg.DirectoryFile, cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.CA}
	if cfg.Keys.Partners != "" {
		certs, _ := filepath.Glob(filepath.Join(cfg.Keys.Partners, "*"))
		sort.Strings(certs)
		files = append(files, certs...)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			b = nil
		}
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// liveGateway is the gateway in force, for what outlives a reload (the
// console): each call goes to the gateway the last reload put in force.
type liveGateway struct{ sv *server }

func (l liveGateway) Submit(ctx context.Context, user *config.User, rcpts []string, msg io.Reader) (string, string, error) {
	return l.sv.g.Load().Submit(ctx, user, rcpts, msg)
}

func (l liveGateway) Explain(ctx context.Context, m *envelope.Manifest) policy.Decision {
	return l.sv.g.Load().Explain(ctx, m)
}

func (l liveGateway) Rectify(ctx context.Context, user *config.User, pkgID string, text io.Reader) (string, []string, error) {
	return l.sv.g.Load().Rectify(ctx, user, pkgID, text)
}

func (l liveGateway) ReloadPolicy() error                 { return l.sv.g.Load().ReloadPolicy() }
func (l liveGateway) Policy() *policy.Engine              { return l.sv.g.Load().Policy() }
func (l liveGateway) KeysReady(ctx context.Context) error { return l.sv.g.Load().KeysReady(ctx) }
