// Package store is in charge of what a gateway must not lose: the outbound
// queue of sealed envelopes (one item per destination agency), the replay
// cache of packages already delivered, and the quarantine of received
// messages that failed a check. Every write is durable when the call
// returns, so that the SMTP 250 that follows it is a promise kept across a
// crash. The embedded default is SQLite (WAL, synchronous=FULL); a
// PostgreSQL store implements the same interface for several gateway
// processes sharing one database.
//
// The store holds only ciphertext envelopes and metadata: never a decrypted
// package, a subject's identity or key material other than the per-copy
// data keys under which it encrypts what it keeps (crypto-shredding,
// datakey.go). It also holds the audit outbox (outbox.go).
package store

import (
	"context"
	"errors"
	"io"
	"time"
)

// Priority orders the queue: immediate items are claimed first (MoU 6.1,
// immediate escalation of major or imminent risk).
type Priority int

const (
	Normal    Priority = 0
	Immediate Priority = 1
)

func (p Priority) String() string {
	if p == Immediate {
		return "immediate"
	}
	return "normal"
}

// State of a queue item.
type State string

const (
	Queued  State = "queued"  // waiting for its next attempt
	Sent    State = "sent"    // the destination gateway accepted it (250)
	Failed  State = "failed"  // gave up after the maximum age; the sender was told
	Dropped State = "dropped" // removed by an administrator, with a reason
	// OnHold: sealed and kept, but not sent until an administrator
	// releases it (the policy held this destination: handling code 5, a
	// training record missing, an administrator's hold rule).
	OnHold State = "held"
)

// Item is one sealed envelope waiting to go to one destination gateway.
type Item struct {
	ID int64
	// PackageID is the envelope's opaque package id; with Destination it
	// is unique, so a package is queued at most once per destination.
	PackageID   string
	Destination string   // the destination agency's directory id
	Recipients  []string // RCPT TO at the destination gateway (mailbox addresses)
	MailFrom    string   // MAIL FROM at the relay: this gateway's address
	Submitter   string   // who submitted it, for delivery status notices
	Priority    Priority
	Marking     string // the outer marking, for listings
	// Envelope is the sealed envelope (ciphertext only), given to
	// Enqueue and filled in by Get; Claim and List leave it nil, and a
	// delivery streams it (Store.OpenEnvelope).
	Envelope []byte
	Size     int64 // the envelope's length, filled in by every read

	State       State
	Attempts    int
	NextAttempt time.Time
	LastError   string
	RemoteID    string // the destination's queue id from its 250 reply
	Reason      string // why it was dropped or failed
	Created     time.Time
	Updated     time.Time
}

// QState is the state of a quarantined message.
type QState string

const (
	Held     QState = "held"     // kept for an administrator
	Released QState = "released" // released: re-processed with every check
	Purged   QState = "purged"   // its content destroyed, the record kept
)

// QItem is a received message that failed a check, kept whole.
type QItem struct {
	ID         int64
	Received   time.Time
	RemoteAddr string
	Helo       string
	MailFrom   string
	Recipients []string
	// Check is the failed check's name ("signer-not-pinned", "tampered"...)
	// and Reason its one-line explanation; neither holds content.
	Check     string
	Reason    string
	PackageID string // when the outer header named one
	Raw       []byte // the message exactly as received (nil after purge)
	Size      int64
	State     QState
	// Note records who released or purged it and why.
	Note    string
	Updated time.Time
}

// Receipt is a destination gateway's signed statement that it delivered
// a package, and to which of its mailboxes.
type Receipt struct {
	PackageID string
	Agency    string   // the agency whose gateway delivered it
	Mailboxes []string // where it was delivered there
	Delivered time.Time
	Received  time.Time // when the receipt reached us
	Signer    string    // the fingerprint that signed the receipt
}

// Deadline is a clock the sharing policy started for a package: the
// acknowledgement of an immediate escalation by a destination, or the
// triage of a received report (MoU 6.1).
type Deadline struct {
	ID        int64
	PackageID string
	Kind      string // policy.DeadlineAcknowledge, DeadlineTriage, DeadlineHold, DeadlineRetention
	Agency    string // the other party: the destination that must acknowledge, the originator of what is triaged
	Started   time.Time
	Due       time.Time
	Done      time.Time // zero while open
	Alerted   time.Time // zero until an overdue alert was raised
	Note      string
}

// Filter selects queue items for List; zero fields match everything.
type Filter struct {
	State       State
	Destination string
	PackageID   string
	Limit       int
}

// Errors callers branch on.
var (
	ErrNotFound   = errors.New("no such item")
	ErrNoReason   = errors.New("a reason is required")
	ErrWrongState = errors.New("the item is not in a state that allows this")
)

// Store is the gateway's durable state. Every write goes through a
// transaction (Update, Bookkeep) that carries the change and its audit
// events together; the rest reads. A PostgreSQL store implements the same
// interface for several gateway processes sharing one database.
type Store interface {
	PartnerKeys
	// Update runs f in one write transaction, fully synced when it
	// returns nil: the transaction behind every promise.
	Update(ctx context.Context, f func(Tx) error) error
	// Bookkeep runs f in one write transaction that a crash of the
	// process cannot lose but that is not synced to disk by itself.
	Bookkeep(ctx context.Context, f func(Tx) error) error

	// Claim takes up to limit queued items whose NextAttempt is due,
	// immediate ones first, then the oldest, and leases them until
	// now+lease: no other claimer takes them before the lease runs out
	// or their outcome (MarkSent, MarkRetry, MarkFailed, HoldItem) is
	// recorded, which counts the attempt. The items come back with the
	// attempt counted and the lease's end as NextAttempt. A crash during
	// delivery leads to a retry, never to a loss. PostgreSQL writes the
	// lease and the count in the claim (several gateways share it);
	// SQLite keeps them in the relaying process (claims.go), and a second
	// process's claim fails with ErrClaimedElsewhere.
	Claim(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]Item, error)
	// NextDue is when the earliest queued item falls due (zero when none
	// is queued): the relay sleeps until then, or until work is added.
	NextDue(ctx context.Context) (time.Time, error)

	// List returns items without their Envelope bytes, newest first.
	List(ctx context.Context, f Filter) ([]Item, error)
	// Get returns one item with its Envelope, read whole (nil when it
	// has none: shredded, or a record without one). For the
	// administrator's tools, one item at a time; a delivery streams.
	Get(ctx context.Context, id int64) (Item, error)
	// OpenEnvelope streams item id's envelope, which the caller expects
	// to be size bytes (the claimed item's Size), a chunk at a time, each
	// read by a short statement of its own (chunk.go); the reader reads
	// the store with ctx. It fails with ErrEnvelopeChanged, rather than
	// give a mix or a part, when the stored envelope is not of that size
	// or its chunks are not of one write; with ErrNoEnvelope when there
	// is none.
	OpenEnvelope(ctx context.Context, id, size int64) (io.ReadCloser, error)
	// Depth counts queued items per destination.
	Depth(ctx context.Context) (map[string]int, error)

	// Delivered reports whether a package from an originator was already
	// delivered here (the replay cache).
	Delivered(ctx context.Context, originator, packageID string) (bool, error)
	// PackagesByMessageID returns the delivered packages whose signed
	// Message-ID is messageID (a reply's In-Reply-To).
	PackagesByMessageID(ctx context.Context, messageID string) ([]string, error)
	// Receipts returns the receipts for a package.
	Receipts(ctx context.Context, packageID string) ([]Receipt, error)

	// ClaimReceipts takes the pending receipts of the first group that
	// is due (its oldest gathered for gather, or most of them waiting),
	// up to most, oldest first, and leases them for lease in the same
	// transaction, so that two batchers never seal the same ones and a
	// batcher that dies leaves them to be taken again. With none due it
	// returns how long until one is, or 0 when nothing is pending.
	ClaimReceipts(ctx context.Context, gather time.Duration, most int, lease time.Duration) ([]PendingReceipt, time.Duration, error)
	// ReceiptBatch is the package id of the queued item that carries a
	// received package's receipt in a batch ("" when it went alone, or
	// has not been sealed yet).
	ReceiptBatch(ctx context.Context, packageID string) (string, error)

	// Deadlines lists open clocks, or only the overdue ones not yet alerted.
	Deadlines(ctx context.Context, now time.Time, overdue bool) ([]Deadline, error)
	// DueDeadlines lists the open clocks of one kind due at or before now,
	// by an index on (kind, due): housekeeping never scans every clock.
	DueDeadlines(ctx context.Context, kind string, now time.Time, limit int) ([]Deadline, error)
	// OverdueDeadlines lists up to limit open clocks due at or before now
	// that were not alerted yet, retention aside, oldest first.
	OverdueDeadlines(ctx context.Context, now time.Time, limit int) ([]Deadline, error)
	// NextDeadline is when the earliest open, unalerted clock falls due
	// (zero when none is open).
	NextDeadline(ctx context.Context) (time.Time, error)

	// ListQuarantine returns quarantined messages without Raw, newest first.
	ListQuarantine(ctx context.Context, state QState) ([]QItem, error)
	// QuarantinedBefore returns the held or released messages received
	// before t, oldest first, without Raw (retention of the quarantine).
	QuarantinedBefore(ctx context.Context, t time.Time, limit int) ([]QItem, error)
	// GetQuarantine returns one quarantined message with Raw.
	GetQuarantine(ctx context.Context, id int64) (QItem, error)

	// Changes receives after a commit to the store that this process may
	// not have seen (the command line, another gateway): the SQLite store
	// watches the database's data version, a PostgreSQL store listens for
	// a notification. It is closed when ctx is done.
	Changes(ctx context.Context, every time.Duration) <-chan struct{}

	Close() error
}
