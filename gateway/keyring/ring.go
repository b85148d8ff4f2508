// Package keyring is in charge of the keys a gateway uses: its own (from
// the key backend: a file or Vault, behind a fail-closed gate), and its
// partners' certificates, pinned by fingerprint in the directory. It
// decides what a package for an agency is sealed to (the key in force, or
// this gateway's own with a hold reason when the partner's key cannot be
// used), records partner key changes for an administrator's decision,
// lifts key holds when a usable key is in force, reseals held items, warns
// ahead of expiry, and announces this gateway's own key changes to the
// partners.
package keyring

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/metrics"
)

// Store is what the key ring keeps in the gateway's store: the record of
// partner keys, and the queue items it holds and reseals.
type Store interface {
	PartnerKeysVersion(ctx context.Context) (int64, error)
	ListPartnerKeys(ctx context.Context, agency string, state store.KeyState) ([]store.PartnerKey, error)
	List(ctx context.Context, f store.Filter) ([]store.Item, error)
	// OpenEnvelope streams a queued item's envelope: the relay's last
	// look reads only its key packets, a reseal opens it as it streams.
	OpenEnvelope(ctx context.Context, id, size int64) (io.ReadCloser, error)
	Update(ctx context.Context, f func(store.Tx) error) error
}

// Auditor is the audit trail as the key ring writes it.
type Auditor interface {
	Append(ctx context.Context, es ...audit.Event)
	Stage(tx audit.Stager, es ...audit.Event) error
	Kick()
}

// Deliverer hands administrators' alerts to their local mailboxes.
type Deliverer interface {
	Deliver(ctx context.Context, mailbox, originator, pkgID string, extraHeader, msg []byte) error
}

// Ring is a gateway's keys.
type Ring struct {
	cfg     *config.Config
	backend keys.Backend
	gate    *keyGate // fail closed while the key backend is unavailable
	// id and partnerSet are swapped whole when a key changes (a
	// rotation, an approved partner key change): readers take one
	// snapshot per use.
	id         atomic.Pointer[keys.Identity]
	partnerSet atomic.Pointer[keys.Partners]
	watch      keyWatch

	store   Store
	audit   Auditor
	deliver Deliverer
	metrics *metrics.Metrics
	log     *slog.Logger
	now     func() time.Time
	nudge   func()
	// housekeeper: this gateway raises the agency's key-expiry warnings.
	housekeeper func() bool
}

// Options are the parts the key ring works with.
type Options struct {
	Store   Store
	Audit   Auditor
	Deliver Deliverer
	Metrics *metrics.Metrics // nil: none
	Log     *slog.Logger
	Now     func() time.Time
	// Nudge tells the relay that items may be due (a hold lifted, the
	// backend back).
	Nudge func()
	// Housekeeper says whether this gateway holds the agency's
	// housekeeping lease; only that one raises key-expiry warnings (nil:
	// always, one gateway).
	Housekeeper func() bool
}

// New loads this gateway's own key from backend, checks it is the one the
// directory pins, and loads the partners' certificates in force.
func New(ctx context.Context, cfg *config.Config, backend keys.Backend, o Options) (*Ring, error) {
	if o.Store == nil || o.Audit == nil || o.Deliver == nil || o.Now == nil || o.Log == nil {
		return nil, errors.New("keyring: store, audit, delivery, clock and log are required")
	}
	r := &Ring{cfg: cfg, backend: backend, store: o.Store, audit: o.Audit, deliver: o.Deliver,
		metrics: o.Metrics, log: o.Log, now: o.Now, nudge: o.Nudge, housekeeper: o.Housekeeper}
	if r.housekeeper == nil {
		r.housekeeper = func() bool { return true }
	}
	if r.nudge == nil {
		r.nudge = func() {}
	}
	id, err := backend.Identity(ctx)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	if err := r.accept(id); err != nil {
		return nil, err
	}
	r.id.Store(id)
	r.gate = newKeyGate(r, backend, time.Duration(cfg.Keys.CheckInterval))
	if err := r.Load(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Identity is this gateway's own key as it stands now.
func (r *Ring) Identity() *keys.Identity { return r.id.Load() }

// Partners are the partner certificates in force now.
func (r *Ring) Partners() *keys.Partners { return r.partnerSet.Load() }

// Backend is where this gateway's own key is kept.
func (r *Ring) Backend() keys.Backend { return r.backend }

// RunGate keeps the key gate's answer fresh until ctx is done.
func (r *Ring) RunGate(ctx context.Context) { r.gate.run(ctx) }

// Address is the mail address a key names (the gateway's own address
// for its own key): the first user ID with an address.
func Address(id *keys.Identity) string {
	for _, i := range id.Entity.Identities {
		if i.UserId != nil && i.UserId.Email != "" {
			return i.UserId.Email
		}
	}
	return "conduit@" + id.Agency + ".invalid"
}
