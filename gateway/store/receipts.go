package store

import (
	"errors"
	"time"
)

// Receipts to send, batched. A receiving gateway records a pending
// receipt in the transaction that records a delivery (before its 250), and
// the receipt batcher (gateway/receipts) later seals one envelope for the
// pending receipts of one partner that may travel under one label, queues
// it and removes the pending rows it covers in one transaction: a crash
// anywhere loses no receipt (the rows stay until their envelope is
// queued), and at worst sends one twice (the originator records a
// receipt once however often it comes).

// PendingReceipt is a receipt recorded at delivery and not yet sealed:
// metadata only, never content.
type PendingReceipt struct {
	ID int64
	// Originator is the agency the package came from, where its receipt
	// goes.
	Originator string
	PackageID  string
	// Label is the package's handling label in canonical form; the
	// receipt is marked and handled as its package is.
	Label string
	// Group is what receipts that may share one envelope have in common
	// (the label's handling fields); the batcher seals a group together.
	Group     string
	Mailboxes []string
	Delivered time.Time
	// Released names the quarantine release a late delivery came from.
	Released string
}

// ReceiptID is the package id of the receipt a gateway seals for one
// package it received (alone in its envelope, or recorded sent when the
// envelope that listed it was sent): a receipt is kept as long as its
// package.
func ReceiptID(pkgID string) string { return "rcpt-" + pkgID }

// ErrReceiptsTaken: a pending receipt a batch was to cover is gone
// (another gateway sharing the store batched it first); nothing of the
// batch is kept.
var ErrReceiptsTaken = errors.New("a pending receipt of the batch was taken meanwhile")

// receiptBatchSent is the note on the record of a receipt sent in a batch.
const receiptBatchSent = "sent in receipt batch "

// pendingGroup is one group of pending receipts not leased.
type pendingGroup struct {
	originator, group string
	count             int
	oldest            int64 // unix nanoseconds
}

// dueGroup picks, from the groups of pending receipts not leased, the
// first one due (its oldest receipt gathered for long enough, or as many
// as one batch takes), and otherwise says how long until one is (a
// leased receipt's lease running out counts: its batcher may have died);
// 0 with no group: nothing is pending.
func dueGroup(groups []pendingGroup, leasedUntil int64, now time.Time, gather time.Duration, most int) (*pendingGroup, time.Duration) {
	var next int64
	for i := range groups {
		g := &groups[i]
		due := g.oldest + int64(gather)
		if g.count >= most || due <= now.UnixNano() {
			return g, 0
		}
		if next == 0 || due < next {
			next = due
		}
	}
	if leasedUntil != 0 && (next == 0 || leasedUntil < next) {
		next = leasedUntil
	}
	if next == 0 {
		return nil, 0
	}
	return nil, max(time.Duration(next-now.UnixNano()), time.Millisecond)
}
