package clocks

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway/delivery"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/policy"
)

// Purged is what retention destroyed (or, in a dry run, would destroy)
// for one package, or for one quarantined message (Quarantine set).
type Purged struct {
	PackageID  string
	Due        time.Time
	Envelopes  int      // queued envelopes destroyed
	Files      []string // delivered Maildir copies destroyed
	Quarantine int64    // a quarantined message whose bytes were destroyed
	// Pending counts the package's queue items still queued or held: its
	// period has run out but nothing is destroyed until they leave the
	// queue (sent, failed or dropped).
	Pending int
}

// PurgeExpired destroys the stored copies of every package whose
// retention clock has run out (retention rule; MoU Annex A, Description of
// method of sharing: kept only as long as necessary, then destroyed
// securely): the envelopes of its finished queue items, and its delivered
// Maildir copies; and every quarantined message kept longer than the
// retention period (quarantine, the policy's retention days). Metadata
// stays (the queue and quarantine records, the replay cache, the audit
// trail, which records the purge). With dry set it only reports.
//
// The queued and quarantined copies are crypto-shredded: each is stored
// under a data key of its own (store.SQLite, datakey.go), and the purge
// destroys the key, then the bytes, in one transaction, with secure_delete
// on and the WAL checkpointed and truncated after it. The delivered Maildir
// copies are the hand-over to the agency's own mail system, not a copy the
// gateway keeps (it keeps no delivered archive): they are removed at the
// end of the period as well, since the Maildir is this gateway's delivery
// store until the agency's mail system takes them.
func PurgeExpired(ctx context.Context, cfg *config.Config, st store.Store, trail TrailDrainer, now time.Time, quarantine time.Duration, dry bool) ([]Purged, error) {
	var out []Purged
	if quarantine > 0 {
		// By an index on the received time of the messages still kept:
		// only those whose period ran out are read.
		qs, err := st.QuarantinedBefore(ctx, now.Add(-quarantine), purgeBatch)
		if err != nil {
			return out, err
		}
		for _, q := range qs {
			due := q.Received.Add(quarantine)
			out = append(out, Purged{PackageID: q.PackageID, Due: due, Quarantine: q.ID})
			if dry {
				continue
			}
			ev := audit.Event{Agency: cfg.Agency, Kind: audit.Purged, Package: q.PackageID, Rule: "retention",
				Actor: "gateway", Time: now.UTC(), Detail: fmt.Sprintf("Q%d: retention ran out %s; crypto-shredded (data key and bytes destroyed)", q.ID, due.UTC().Format(time.RFC3339))}
			if err := st.Update(ctx, func(tx store.Tx) error {
				if err := tx.SetQuarantineState(q.ID, store.Purged, "retention: kept the retention period"); err != nil {
					return err
				}
				return tx.Audit(ev)
			}); err != nil {
				return out, err
			}
		}
	}
	ds, err := st.DueDeadlines(ctx, policy.DeadlineRetention, now, purgeBatch)
	if err != nil {
		return out, err
	}
	for _, d := range ds {
		p := Purged{PackageID: d.PackageID, Due: d.Due}
		p.Files = maildirCopies(cfg, d.Agency, d.PackageID)
		items, err := st.List(ctx, store.Filter{PackageID: d.PackageID})
		if err != nil {
			return out, err
		}
		receipts, err := st.List(ctx, store.Filter{PackageID: ReceiptID(d.PackageID)})
		if err != nil {
			return out, err
		}
		// A receipt sent with others travelled in a batch envelope: it is
		// destroyed with the first of its packages to run out (they were
		// delivered within a gathering time of each other), once sent.
		shred := []string{d.PackageID, ReceiptID(d.PackageID)}
		batch, err := st.ReceiptBatch(ctx, d.PackageID)
		if err != nil {
			return out, err
		}
		if batch != "" {
			its, err := st.List(ctx, store.Filter{PackageID: batch})
			if err != nil {
				return out, err
			}
			receipts = append(receipts, its...)
			shred = append(shred, batch)
		}
		pending := 0
		for _, it := range append(items, receipts...) {
			switch it.State {
			case store.Sent, store.Failed, store.Dropped:
				p.Envelopes++
			default:
				pending++
			}
		}
		if pending > 0 {
			// Still queued or held (a hold nobody decided): its copies
			// wait until it is sent, fails or is dropped, so that the
			// clock is not closed with an envelope left behind.
			p.Pending, p.Envelopes = pending, 0
			out = append(out, p)
			continue
		}
		if dry {
			out = append(out, p)
			continue
		}
		for _, f := range p.Files {
			if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
				return out, fmt.Errorf("retention: %w", err)
			}
		}
		// The package's envelopes, and the receipt this gateway sealed for
		// it (inbound/receipt.go): a receipt is kept as long as its package. The
		// keys are destroyed, the clock closed and the purge audited in one
		// transaction.
		err = st.Update(ctx, func(tx store.Tx) error {
			p.Envelopes = 0
			for _, id := range shred {
				n, err := tx.ShredEnvelopes(id)
				if err != nil {
					return err
				}
				p.Envelopes += n
			}
			if _, err := tx.CompleteDeadlines(d.PackageID, policy.DeadlineRetention, d.Agency, now, "purged"); err != nil {
				return err
			}
			return tx.Audit(audit.Event{Agency: cfg.Agency, Kind: audit.Purged, Package: d.PackageID, Rule: "retention",
				Actor: "gateway", Time: now.UTC(),
				Detail: fmt.Sprintf("retention ran out %s: %d envelope(s) crypto-shredded (data keys destroyed) and %d delivered copy(ies) removed", d.Due.UTC().Format(time.RFC3339), p.Envelopes, len(p.Files))})
		})
		if err != nil {
			return out, err
		}
		out = append(out, p)
	}
	if trail != nil && len(out) > 0 && !dry {
		if _, err := trail.Drain(ctx); err != nil {
			return out, err
		}
	}
	return out, nil
}

// purgeBatch bounds what one purge round reads; what is left is taken by
// the next round.
const purgeBatch = 1000

// maildirCopies finds a package's delivered copies in this agency's
// Maildirs by the names delivery gives them.
func maildirCopies(cfg *config.Config, originator, pkgID string) []string {
	if cfg.Delivery.Maildir == "" || cfg.Delivery.LMTP != "" {
		return nil
	}
	self := cfg.Self()
	var boxes []string
	for _, mb := range append(append([]config.Mailbox{}, self.Mailboxes...), self.Escalation...) {
		boxes = append(boxes, mb.Address)
	}
	return delivery.Copies(cfg.Delivery.Maildir, boxes, originator, pkgID)
}

// ReceiptID is the package id of the receipt a gateway seals for a package
// it received: a receipt is kept as long as its package.
func ReceiptID(pkgID string) string { return store.ReceiptID(pkgID) }
