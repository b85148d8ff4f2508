package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/keys"
)

// keyGate is the fail-closed gate in front of the key backend (docs/design.md,
// Keys: "Vault unreachable: fail closed"). Every seal (intake, receipts,
// notices) and every open (inbound) asks it first; while the backend does
// not answer, nothing is sealed or opened: submission and inbound answer
// 451, so the work waits in the sender's queue and drains when the backend
// returns. Envelopes already sealed are still relayed: relaying needs no
// key.
//
// A background loop checks the backend every interval; the answer is
// cached, so a session asks no more than a lookup. The loop raises the
// alert (log, metric, audit event) when the backend goes and when it comes
// back, and reloads the identity when the backend's version changes (a
// rotation written by `conduit keys rotate`).
type keyGate struct {
	g        *Gateway
	backend  keys.Backend
	interval time.Duration

	mu      sync.Mutex
	checked time.Time // zero: never
	err     error     // nil: up
	version int       // the backend version the gateway's identity is
}

// versioned is a backend that numbers its versions (Vault KV v2), so the
// gate can see a rotation.
type versioned interface {
	CurrentVersion(ctx context.Context) (int, error)
	LoadedVersion() int
}

// errKeysUnavailable answers a submission or a partner while the key
// backend is unavailable (RFC 3463 4.3.0: a temporary system failure).
var errKeysUnavailable = reply(451, smtp.EnhancedCode{4, 3, 0},
	"Temporary failure: this gateway cannot reach its key store, so it can neither seal nor open packages. "+
		"Nothing was accepted; your system keeps the message and tries again")

func newKeyGate(g *Gateway, b keys.Backend, interval time.Duration) *keyGate {
	kg := &keyGate{g: g, backend: b, interval: interval}
	if v, ok := b.(versioned); ok {
		kg.version = v.LoadedVersion()
	}
	return kg
}

// ready reports whether the backend answered at its last check. When no
// loop keeps the answer fresh (a short-lived gateway of the CLI, or the
// loop stalled), it checks now.
func (kg *keyGate) ready(ctx context.Context) error {
	kg.mu.Lock()
	fresh := !kg.checked.IsZero() && time.Since(kg.checked) < 2*kg.interval
	err := kg.err
	kg.mu.Unlock()
	if fresh {
		return err
	}
	return kg.check(ctx)
}

// run checks the backend every interval until ctx is done.
func (kg *keyGate) run(ctx context.Context) {
	t := time.NewTicker(kg.interval)
	defer t.Stop()
	for {
		kg.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check asks the backend, records the answer, raises the alert on a
// change, and reloads the identity after a rotation.
func (kg *keyGate) check(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, max(kg.interval*3, 10*time.Second))
	defer cancel()
	var err error
	current := 0
	if v, ok := kg.backend.(versioned); ok {
		current, err = v.CurrentVersion(cctx)
	} else {
		err = kg.backend.Check(cctx)
	}
	if ctx.Err() != nil {
		return err // shutting down: not the backend's fault
	}
	if err != nil && !errors.Is(err, keys.ErrUnavailable) {
		err = fmt.Errorf("%w: %w", keys.ErrUnavailable, err)
	}
	if err == nil && current != 0 {
		err = kg.reload(cctx, current)
	}
	kg.mu.Lock()
	was, first := kg.err, kg.checked.IsZero()
	kg.err, kg.checked = err, time.Now()
	kg.mu.Unlock()
	kg.g.metrics.KeyBackendUp(err == nil)
	switch {
	case err != nil && (was == nil || first):
		kg.g.log.Error("admin alert: key backend unavailable; no package is sealed or opened until it returns, work waits in the queues", "err", err)
		kg.g.audit(ctx, audit.Event{Kind: audit.Alert, Rule: "key-backend", Detail: "key backend unavailable: nothing is sealed or opened until it returns: " + err.Error()})
	case err == nil && was != nil && !first:
		kg.g.log.Warn("key backend available again; sealing and opening resume")
		kg.g.audit(ctx, audit.Event{Kind: audit.Alert, Rule: "key-backend", Detail: "key backend available again"})
		kg.g.nudge()
	}
	return err
}

// reload loads the identity again when the backend's version moved on
// (a rotation). The new identity must be the same agency and keep the
// pinned fingerprint; one that does not is refused and the gateway fails
// closed until an administrator sorts it out.
func (kg *keyGate) reload(ctx context.Context, current int) error {
	kg.mu.Lock()
	same := current == kg.version
	kg.mu.Unlock()
	if same {
		return nil
	}
	id, err := kg.backend.Identity(ctx)
	if err != nil {
		return fmt.Errorf("reload the rotated key (version %d): %w", current, err)
	}
	if _, err := kg.g.adoptIdentity(ctx, id, fmt.Sprintf("key backend version %d", current)); err != nil {
		return fmt.Errorf("%w: the key stored as version %d is refused: %w", keys.ErrUnavailable, current, err)
	}
	kg.mu.Lock()
	kg.version = current
	if v, ok := kg.backend.(versioned); ok {
		kg.version = v.LoadedVersion()
	}
	kg.mu.Unlock()
	return nil
}

// keysReady is what the seal and open paths ask; nil when they may go on.
func (g *Gateway) keysReady(ctx context.Context) error {
	if g.gate == nil {
		return nil
	}
	return g.gate.ready(ctx)
}

// keysDown checks the backend now, after a seal failed: true when the
// failure was the backend's (Transit unreachable mid-seal).
func (g *Gateway) keysDown(ctx context.Context) bool {
	return g.gate != nil && g.gate.check(ctx) != nil
}

// KeysReady is the readiness check of the admin listener (`keys`): it
// checks the backend now (not the cached answer), so /readyz tells the
// truth at once, and an error means nothing can be sealed or opened.
func (g *Gateway) KeysReady(ctx context.Context) error {
	if g.gate == nil {
		return nil
	}
	return g.gate.check(ctx)
}

// acceptIdentity checks that an identity is this gateway's: its agency,
// and the fingerprint the directory pins.
func (g *Gateway) acceptIdentity(id *keys.Identity) error {
	if id.Agency != g.cfg.Agency {
		return fmt.Errorf("keys: the stored key is the key of %q, this gateway is %q", id.Agency, g.cfg.Agency)
	}
	if pin := g.cfg.Self().Fingerprint; pin != "" && keys.NormalizeFingerprint(pin) != id.Fingerprint() {
		return fmt.Errorf("keys: this gateway's key %s is not the one the directory pins for %s (%s)", id.Fingerprint(), g.cfg.Agency, keys.NormalizeFingerprint(pin))
	}
	return nil
}
