package store

import (
	"context"
	"time"
)

// transactor is a store that runs write transactions.
type transactor interface {
	Update(ctx context.Context, f func(Tx) error) error
	Bookkeep(ctx context.Context, f func(Tx) error) error
}

// Writes are a store's single writes, each in a transaction of its own,
// for the command line and for tests; the gateway writes through Update.
// Both stores embed them, over their own transactions.
type Writes struct{ s transactor }

// Enqueue is Tx.Enqueue in a transaction of its own.
func (w Writes) Enqueue(ctx context.Context, items []Item) ([]int64, error) {
	var out []int64
	err := w.s.Update(ctx, func(tx Tx) error {
		var err error
		out, err = tx.Enqueue(items)
		return err
	})
	return out, err
}

// MarkSent is Tx.MarkSent in a transaction of its own.
func (w Writes) MarkSent(ctx context.Context, id int64, remoteID string) error {
	return w.s.Bookkeep(ctx, func(tx Tx) error { return tx.MarkSent(id, remoteID) })
}

// MarkRetry is Tx.MarkRetry in a transaction of its own.
func (w Writes) MarkRetry(ctx context.Context, id int64, next time.Time, lastErr string) error {
	return w.s.Bookkeep(ctx, func(tx Tx) error { return tx.MarkRetry(id, next, lastErr) })
}

// MarkFailed is Tx.MarkFailed in a transaction of its own.
func (w Writes) MarkFailed(ctx context.Context, id int64, reason string) error {
	return w.s.Bookkeep(ctx, func(tx Tx) error { return tx.MarkFailed(id, reason) })
}

// RetryNow is Tx.RetryNow in a transaction of its own.
func (w Writes) RetryNow(ctx context.Context, id int64) error {
	return w.s.Update(ctx, func(tx Tx) error { return tx.RetryNow(id) })
}

// Release is Tx.Release in a transaction of its own.
func (w Writes) Release(ctx context.Context, id int64, reason string) error {
	return w.s.Update(ctx, func(tx Tx) error { return tx.Release(id, reason) })
}

// Drop is Tx.Drop in a transaction of its own.
func (w Writes) Drop(ctx context.Context, id int64, reason string) error {
	return w.s.Update(ctx, func(tx Tx) error { return tx.Drop(id, reason) })
}

// RecordDelivered is Tx.RecordDelivered in a transaction of its own.
func (w Writes) RecordDelivered(ctx context.Context, originator, packageID, messageID string, date time.Time) error {
	return w.s.Update(ctx, func(tx Tx) error { return tx.RecordDelivered(originator, packageID, messageID, date) })
}

// RecordReceipt is Tx.RecordReceipt in a transaction of its own.
func (w Writes) RecordReceipt(ctx context.Context, r Receipt) error {
	return w.s.Bookkeep(ctx, func(tx Tx) error { return tx.RecordReceipt(r) })
}

// ShredEnvelopes is Tx.ShredEnvelopes in a transaction of its own.
func (w Writes) ShredEnvelopes(ctx context.Context, packageID string) (int, error) {
	var out int
	err := w.s.Update(ctx, func(tx Tx) error {
		var err error
		out, err = tx.ShredEnvelopes(packageID)
		return err
	})
	return out, err
}

// AddDeadline is Tx.AddDeadline in a transaction of its own.
func (w Writes) AddDeadline(ctx context.Context, d Deadline) error {
	return w.s.Bookkeep(ctx, func(tx Tx) error { return tx.AddDeadline(d) })
}

// CompleteDeadlines is Tx.CompleteDeadlines in a transaction of its own.
func (w Writes) CompleteDeadlines(ctx context.Context, packageID, kind, agency string, at time.Time, note string) (int, error) {
	var out int
	err := w.s.Bookkeep(ctx, func(tx Tx) error {
		var err error
		out, err = tx.CompleteDeadlines(packageID, kind, agency, at, note)
		return err
	})
	return out, err
}

// MarkAlerted is Tx.MarkAlerted in a transaction of its own.
func (w Writes) MarkAlerted(ctx context.Context, id int64, at time.Time) error {
	return w.s.Bookkeep(ctx, func(tx Tx) error { return tx.MarkAlerted(id, at) })
}

// Quarantine is Tx.Quarantine in a transaction of its own.
func (w Writes) Quarantine(ctx context.Context, q QItem) (int64, error) {
	var out int64
	err := w.s.Update(ctx, func(tx Tx) error {
		var err error
		out, err = tx.Quarantine(q)
		return err
	})
	return out, err
}

// SetQuarantineState is Tx.SetQuarantineState in a transaction of its own.
func (w Writes) SetQuarantineState(ctx context.Context, id int64, state QState, note string) error {
	return w.s.Update(ctx, func(tx Tx) error { return tx.SetQuarantineState(id, state, note) })
}

// HoldItem is Tx.HoldItem in a transaction of its own.
func (w Writes) HoldItem(ctx context.Context, id int64, reason string) error {
	return w.s.Update(ctx, func(tx Tx) error { return tx.HoldItem(id, reason) })
}

// ResealItem is Tx.ResealItem in a transaction of its own.
func (w Writes) ResealItem(ctx context.Context, id int64, envelope []byte, note string) error {
	return w.s.Update(ctx, func(tx Tx) error { return tx.ResealItem(id, envelope, note) })
}

// OfferPartnerKey is Tx.OfferPartnerKey in a transaction of its own.
func (w Writes) OfferPartnerKey(ctx context.Context, k PartnerKey) (out PartnerKey, isNew bool, err error) {
	err = w.s.Update(ctx, func(tx Tx) error {
		out, isNew, err = tx.OfferPartnerKey(k)
		return err
	})
	return out, isNew, err
}

// DecidePartnerKey is Tx.DecidePartnerKey in a transaction of its own.
func (w Writes) DecidePartnerKey(ctx context.Context, agency, fingerprint string, state KeyState, by, reason string) (out PartnerKey, err error) {
	err = w.s.Update(ctx, func(tx Tx) error {
		out, err = tx.DecidePartnerKey(agency, fingerprint, state, by, reason)
		return err
	})
	return out, err
}
