package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/sqlschema"
)

// Tx is one write transaction of the store: every write a state change
// makes, and the audit events that record it, commit together or not at
// all. A caller gets one from Store.Update or Store.Bookkeep and must not
// keep it past the function it was given to.
//
// Each method is atomic on its own too (a savepoint in SQL terms): a
// method that fails leaves nothing of itself behind, so a caller may
// handle the error and go on with the transaction, or return it and roll
// the whole transaction back.
type Tx interface {
	// Enqueue stores items. An item whose (PackageID, Destination) is
	// already stored, in whatever state, is not stored again; its existing
	// id is returned instead. An item given State OnHold is stored held,
	// with its Reason; any other is queued.
	Enqueue(items []Item) ([]int64, error)
	// MarkSent records the destination's acceptance.
	MarkSent(id int64, remoteID string) error
	// MarkRetry schedules the next attempt after a temporary failure.
	MarkRetry(id int64, next time.Time, lastErr string) error
	// MarkFailed gives up on an item (maximum age reached, or a permanent
	// refusal by the destination).
	MarkFailed(id int64, reason string) error
	// MarkDeliveredLate records that a failed item was delivered after
	// all (the destination released it from its quarantine and sent a
	// signed receipt): it becomes sent, the note saying how.
	MarkDeliveredLate(id int64, note string) error
	// RetryNow makes a queued (or failed) item due at once.
	RetryNow(id int64) error
	// Drop removes an item from delivery; the reason is required and kept.
	Drop(id int64, reason string) error
	// Release queues a held item for delivery now; the reason (who
	// released it and why) is required and kept.
	Release(id int64, reason string) error
	// HoldItem puts a queued item on hold with a reason (a partner key
	// that cannot be used); it is neither sent nor dropped.
	HoldItem(id int64, reason string) error
	// ResealItem replaces a held or queued item's envelope (sealed again
	// to the partner's current key) and queues it.
	ResealItem(id int64, envelope []byte, note string) error
	// ShredEnvelopes destroys the envelopes of a package's finished items
	// (retention) and says how many.
	ShredEnvelopes(packageID string) (int, error)

	// RecordDelivered adds a package to the replay cache once it has been
	// delivered; recording it twice is not an error.
	RecordDelivered(originator, packageID, messageID string, date time.Time) error
	// RecordReceipt keeps a destination's receipt for a package we sent;
	// recording it twice changes nothing.
	RecordReceipt(r Receipt) error

	// AddPendingReceipt records a receipt to send for a package just
	// delivered (receipts.go); the same (originator, package) once.
	AddPendingReceipt(p PendingReceipt) error
	// BatchReceipts removes the pending receipts ids, which the queued
	// item whose package id is batch carries, and remembers which batch
	// carries each when it lists more than one. When one of them is gone
	// it fails with ErrReceiptsTaken and removes nothing.
	BatchReceipts(batch string, ids []int64) error

	// RecordDecided keeps one decision's routing metadata for dry runs
	// (DecisionLog) and forgets the oldest beyond keep.
	RecordDecided(d Decided, keep int) error

	// AddDeadline starts a clock; the same (package, kind, agency) once.
	AddDeadline(d Deadline) error
	// CompleteDeadlines stops a package's open clocks of one kind (of one
	// agency unless agency is empty) and says how many it stopped.
	CompleteDeadlines(packageID, kind, agency string, at time.Time, note string) (int, error)
	// MarkAlerted records an overdue alert.
	MarkAlerted(id int64, at time.Time) error

	// Quarantine keeps a message that failed a check and returns its id.
	Quarantine(q QItem) (int64, error)
	// SetQuarantineState moves a held message to Released or Purged with
	// a note (who and why, required). Purging destroys Raw.
	SetQuarantineState(id int64, state QState, note string) error

	// OfferPartnerKey records a certificate offered for an agency. A key
	// already known keeps its state (a rejected key stays rejected); an
	// approved key's certificate is replaced by the newer copy when
	// state is KeyApproved (an update signed by the key itself). It
	// returns the record as stored and whether it was new.
	OfferPartnerKey(k PartnerKey) (PartnerKey, bool, error)
	// DecidePartnerKey approves or rejects a pending key, with who and
	// why (both required). Approving one supersedes (rejects) the other
	// approved keys of the agency.
	DecidePartnerKey(agency, fingerprint string, state KeyState, by, reason string) (PartnerKey, error)

	// Audit writes events (complete: agency, kind, time...) to the audit
	// outbox, in this transaction: the change is never durable without
	// its events, and the events never without the change. The gateway's
	// audit writer moves them into the hash chain (audit.Writer).
	Audit(es ...audit.Event) error
}

// Update runs f in one write transaction and commits it fully synced:
// when Update returns nil, every write f made is on disk. It is the
// transaction behind every promise (a 250 to a client, an administrator's
// action). When f returns an error nothing f wrote is kept.
func (s *SQLite) Update(ctx context.Context, f func(Tx) error) error {
	return s.txSync(ctx, sqlschema.SyncFull, f)
}

// Bookkeep is Update for the delivery bookkeeping (claims and leases,
// sent and retry marks, receipts, deadlines) that a crash of the process
// cannot lose but that need not be synced to disk by itself (WAL,
// synchronous=NORMAL: the commit is in the operating system's hands). A
// power cut could only roll it back to an earlier, consistent state, which
// the next durable commit (WAL is written in order) or a redelivery
// repairs. Its audit events are exactly as durable as its change: both or
// neither.
func (s *SQLite) Bookkeep(ctx context.Context, f func(Tx) error) error {
	return s.txSync(ctx, sqlschema.SyncNormal, f)
}

// sqliteTx is the SQLite store's Tx.
type sqliteTx struct {
	ctx   context.Context
	s     *SQLite
	tx    *sql.Tx
	after []func() // run once the transaction has committed
}

// atomic runs one method's writes under a savepoint, so that a method
// that fails leaves nothing of itself in the transaction.
//
// Every savepoint has the same name: ROLLBACK TO and RELEASE act on the
// latest savepoint of a name, so nested ones still unwind as a stack, and
// the three statements are compiled once and kept (a name of its own for
// each, m1, m2..., was a statement text parsed anew for every method of
// every package in a group commit).
func (t *sqliteTx) atomic(f func(*sql.Tx) error) error {
	if _, err := t.tx.ExecContext(t.ctx, "SAVEPOINT m"); err != nil {
		return err
	}
	if err := f(t.tx); err != nil {
		// A failed rollback leaves the transaction unusable, and the
		// caller's commit fails: nothing half-done is ever kept.
		t.tx.ExecContext(t.ctx, "ROLLBACK TO m")
		t.tx.ExecContext(t.ctx, "RELEASE m")
		return err
	}
	_, err := t.tx.ExecContext(t.ctx, "RELEASE m")
	return err
}

// afterCommit runs f once the transaction has committed (a WAL
// checkpoint after a purge).
func (t *sqliteTx) afterCommit(f func()) { t.after = append(t.after, f) }

// Audit implements Tx.
func (t *sqliteTx) Audit(es ...audit.Event) error {
	if len(es) == 0 {
		return nil
	}
	return t.atomic(func(tx *sql.Tx) error {
		for _, e := range es {
			b, err := json.Marshal(e)
			if err != nil {
				return fmt.Errorf("audit outbox: %w", err)
			}
			if _, err := tx.ExecContext(t.ctx, `INSERT INTO audit_outbox (event) VALUES (?)`, string(b)); err != nil {
				return fmt.Errorf("audit outbox: %w", err)
			}
		}
		return nil
	})
}

// withTx runs f in a fully synced write transaction of its own, for the
// store's own multi-statement writes that are not Tx methods.
func (s *SQLite) withTx(ctx context.Context, f func(*sql.Tx) error) error {
	return s.txSync(ctx, sqlschema.SyncFull, func(t Tx) error { return f(t.(*sqliteTx).tx) })
}

// withLightTx is withTx for bookkeeping (see Bookkeep).
func (s *SQLite) withLightTx(ctx context.Context, f func(*sql.Tx) error) error {
	return s.txSync(ctx, sqlschema.SyncNormal, func(t Tx) error { return f(t.(*sqliteTx).tx) })
}
