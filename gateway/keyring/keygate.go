package keyring

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

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
	r        *Ring
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

func newKeyGate(r *Ring, b keys.Backend, interval time.Duration) *keyGate {
	kg := &keyGate{r: r, backend: b, interval: interval}
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
	kg.r.metrics.KeyBackendUp(err == nil)
	switch {
	case err != nil && (was == nil || first):
		kg.r.log.Error("admin alert: key backend unavailable; no package is sealed or opened until it returns, work waits in the queues", "err", err)
		kg.r.audit.Append(ctx, audit.Event{Kind: audit.Alert, Rule: "key-backend", Detail: "key backend unavailable: nothing is sealed or opened until it returns: " + err.Error()})
	case err == nil && was != nil && !first:
		kg.r.log.Warn("key backend available again; sealing and opening resume")
		kg.r.audit.Append(ctx, audit.Event{Kind: audit.Alert, Rule: "key-backend", Detail: "key backend available again"})
		kg.r.nudge()
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
	if _, err := kg.r.adoptIdentity(ctx, id, fmt.Sprintf("key backend version %d", current)); err != nil {
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

// Ready is what the seal and open paths ask; nil when they may go on.
func (r *Ring) Ready(ctx context.Context) error {
	if r.gate == nil {
		return nil
	}
	return r.gate.ready(ctx)
}

// Down checks the backend now, after a seal failed: true when the
// failure was the backend's (Transit unreachable mid-seal).
func (r *Ring) Down(ctx context.Context) bool {
	return r.gate != nil && r.gate.check(ctx) != nil
}

// Check is the readiness check of the admin listener (`keys`): it
// checks the backend now (not the cached answer), so /readyz tells the
// truth at once, and an error means nothing can be sealed or opened.
func (r *Ring) Check(ctx context.Context) error {
	if r.gate == nil {
		return nil
	}
	return r.gate.check(ctx)
}

// accept checks that an identity is this gateway's: its agency,
// and the fingerprint the directory pins.
func (r *Ring) accept(id *keys.Identity) error {
	if id.Agency != r.cfg.Agency {
		return fmt.Errorf("keys: the stored key is the key of %q, this gateway is %q", id.Agency, r.cfg.Agency)
	}
	if pin := r.cfg.Self().Fingerprint; pin != "" && keys.NormalizeFingerprint(pin) != id.Fingerprint() {
		return fmt.Errorf("keys: this gateway's key %s is not the one the directory pins for %s (%s)", id.Fingerprint(), r.cfg.Agency, keys.NormalizeFingerprint(pin))
	}
	return nil
}
