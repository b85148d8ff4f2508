package receipts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/keyring"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
)

const (
	// lease is how long claimed pending receipts are kept from other
	// batchers: far longer than a seal, short enough that the receipts of
	// a batcher that died (or could not seal: keys unavailable) are taken
	// again soon.
	lease = 30 * time.Second
	// maxSleep bounds the batcher's sleep when nothing is pending: a
	// backstop for a receipt recorded where no nudge reaches (another
	// process, when the store cannot report changes).
	maxSleep = time.Minute
)

// Store is the store as the batcher uses it.
type Store interface {
	ClaimReceipts(ctx context.Context, gather time.Duration, most int, lease time.Duration) ([]store.PendingReceipt, time.Duration, error)
	Bookkeep(ctx context.Context, f func(store.Tx) error) error
}

// Keys is the key ring as the batcher seals with it.
type Keys interface {
	Ready(ctx context.Context) error
	Identity() *keys.Identity
	SealTarget(agency string) (cert *keys.Cert, holdReason string, ok bool)
}

// Options are what a batcher works with.
type Options struct {
	Agency    string
	Directory *config.Directory
	Hostname  string
	// Gather is how long the oldest pending receipt of a group waits for
	// others; Most is the most one envelope lists (1: every receipt alone).
	Gather time.Duration
	Most   int
	Store  Store
	Keys   Keys
	Log    *slog.Logger
	Now    func() time.Time
	// Queued is told that receipt envelopes were queued (the relay wakes).
	Queued func()
}

// Batcher seals the pending receipts, one envelope per group.
type Batcher struct {
	o    Options
	wake chan struct{}
}

// New returns a batcher; Run starts it.
func New(o Options) *Batcher {
	if o.Most <= 0 {
		o.Most = 1
	}
	if o.Queued == nil {
		o.Queued = func() {}
	}
	return &Batcher{o: o, wake: make(chan struct{}, 1)}
}

// Nudge tells the batcher that a receipt may have been recorded.
func (b *Batcher) Nudge() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Run seals pending receipts until ctx is done. It asks the store for a
// group that is due; when none is, it sleeps until one will be, or until
// nudged. While it waits for a group it knows of, a nudge only counts (a
// new receipt cannot make any group due sooner, unless there are enough
// of them to fill a batch): the store is asked again when the first group
// falls due, or when a batch's worth of nudges has come.
func (b *Batcher) Run(ctx context.Context) {
	timer := time.NewTimer(maxSleep)
	defer timer.Stop()
	for {
		batch, wait, err := b.o.Store.ClaimReceipts(ctx, b.o.Gather, b.o.Most, lease)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			b.o.Log.Error("pending receipts not claimed; trying again shortly", "err", err)
			wait = time.Second
		}
		if len(batch) > 0 {
			if err := b.send(ctx, batch); err != nil && ctx.Err() == nil {
				// Left pending under their lease: taken again when it runs
				// out, never lost.
				b.o.Log.Error("receipts not sealed; they stay pending and are tried again", "agency", batch[0].Originator,
					"receipts", len(batch), "err", err)
			}
			continue
		}
		armed := wait > 0
		if !armed {
			wait = maxSleep
		}
		timer.Reset(wait)
		for nudges := 0; ; {
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			case <-b.wake:
				if nudges++; armed && nudges < b.o.Most {
					continue
				}
				timer.Stop() // Go 1.23 timers: no stale tick after Stop or Reset
			}
			break
		}
	}
}

// send seals one envelope for a batch of pending receipts of one group,
// then queues it and removes the pending receipts in one transaction.
func (b *Batcher) send(ctx context.Context, batch []store.PendingReceipt) error {
	it, err := b.Seal(ctx, batch)
	if err != nil {
		return err
	}
	ids := make([]int64, len(batch))
	for i, p := range batch {
		ids[i] = p.ID
	}
	// Bookkeeping, not a promise of its own: the pending receipts were
	// made durable with their deliveries, and a commit lost here (a power
	// cut) leaves them pending, to be sealed again.
	err = b.o.Store.Bookkeep(ctx, func(tx store.Tx) error {
		if _, err := tx.Enqueue([]store.Item{it}); err != nil {
			return err
		}
		return tx.BatchReceipts(it.PackageID, ids)
	})
	if errors.Is(err, store.ErrReceiptsTaken) {
		b.o.Log.Info("receipts batched meanwhile by another gateway; this batch is not queued", "agency", it.Destination)
		return nil
	}
	if err != nil {
		return fmt.Errorf("queue receipts: %w", err)
	}
	b.o.Queued()
	b.o.Log.Info("receipts queued", "agency", it.Destination, "package", it.PackageID, "receipts", len(batch))
	return nil
}

// Seal seals one receipt envelope for pending receipts of one group (one
// destination, one label group), as a queue item: alone, exactly the
// receipt a gateway has always sent (its id ReceiptID, the package's own
// label with this agency as originator, the single body); several, a list
// under the group's label, with a reference and id of the batch's own.
func (b *Batcher) Seal(ctx context.Context, batch []store.PendingReceipt) (store.Item, error) {
	if len(batch) == 0 {
		return store.Item{}, errors.New("no receipt to seal")
	}
	to := batch[0].Originator
	for _, p := range batch[1:] {
		if p.Originator != to || p.Group != batch[0].Group {
			return store.Item{}, errors.New("receipts of different destinations or label groups in one batch")
		}
	}
	if err := b.o.Keys.Ready(ctx); err != nil {
		return store.Item{}, err
	}
	cert, hold, ok := b.o.Keys.SealTarget(to)
	if !ok {
		return store.Item{}, fmt.Errorf("no pinned certificate for %s", to)
	}
	a := b.o.Directory.Agency(to)
	if a == nil || len(a.Mailboxes) == 0 {
		return store.Item{}, fmt.Errorf("%s has no mailbox in the directory", to)
	}
	rcpt := a.Mailboxes[0].Address
	if mb := a.Mailbox("intake"); mb != nil {
		rcpt = mb.Address
	}
	l, err := envelope.ParseLabel(batch[0].Label)
	if err != nil {
		return store.Item{}, fmt.Errorf("the label of package %s: %w", batch[0].PackageID, err)
	}
	bodies := make([]Body, len(batch))
	for i, p := range batch {
		bodies[i] = Body{Package: p.PackageID, Agency: b.o.Agency, Mailboxes: p.Mailboxes, Delivered: p.Delivered, Released: p.Released}
	}
	ctype, body, err := Encode(bodies)
	if err != nil {
		return store.Item{}, err
	}
	now := b.o.Now()
	id, subject := store.ReceiptID(batch[0].PackageID), "Receipt for package "+batch[0].PackageID
	if len(batch) > 1 {
		// The group's label, which every package in it carries but for
		// its reference: the batch is referred to by its own id.
		id = BatchID(batch[0].PackageID)
		l.Reference = id
		subject = fmt.Sprintf("Receipts for %d packages", len(batch))
	}
	l.Originator, l.Created = b.o.Agency, now.UTC().Truncate(time.Second)
	from := keyring.Address(b.o.Keys.Identity())
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@%s>\r\nContent-Type: %s\r\n\r\n%s\r\n",
		from, rcpt, subject, now.Format(time.RFC1123Z), id, b.o.Hostname, ctype, body)
	var buf bytes.Buffer
	if _, err := envelope.Seal(ctx, &buf, strings.NewReader(msg), envelope.SealParams{
		Signer: b.o.Keys.Identity(), Recipients: []*keys.Cert{cert}, Label: l, PackageID: id, Now: b.o.Now,
		Manifest: &envelope.Manifest{From: b.o.Agency, To: []string{to}, Kind: envelope.KindReceipt},
	}); err != nil {
		return store.Item{}, err
	}
	return store.Item{
		PackageID: id, Destination: to, Recipients: []string{rcpt}, MailFrom: from,
		Marking: l.Marking(), Envelope: buf.Bytes(), Priority: store.Normal, State: keyring.HoldState(hold), Reason: hold,
	}, nil
}
