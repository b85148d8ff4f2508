package inbound

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/receipts"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/policy"
)

// pendingReceipt is the receipt of a package about to be delivered, to be
// recorded with its delivery.
type pendingReceipt struct {
	p     store.PendingReceipt
	event audit.Event
}

// pendingReceipt makes the receipt for a package about to be delivered,
// for the originating gateway; nil when the originator is this agency. It
// is recorded with the delivery (the replay record, clocks and events) in
// one transaction before the 250, and sealed by the receipt batcher
// (gateway/receipts) with the others due to the same partner under the
// same label. What sealing needs is checked here, so that a package whose
// receipt could not be sealed is not delivered (the sender retries), as
// when each receipt was sealed before delivery.
func (srv *Server) pendingReceipt(ctx context.Context, o *envelope.Opened, mailboxes []string, released string) (*pendingReceipt, error) {
	to := o.Label.Originator
	if to == srv.cfg.Agency || o.Plain {
		// A partner without Conduit has no use for a receipt.
		return nil, nil
	}
	if err := srv.keys.Ready(ctx); err != nil {
		return nil, smtpserver.ErrKeysUnavailable
	}
	if _, _, ok := srv.keys.SealTarget(to); !ok {
		return nil, fmt.Errorf("no pinned certificate for %s", to)
	}
	if a := srv.cfg.Directory.Agency(to); a == nil || len(a.Mailboxes) == 0 {
		return nil, fmt.Errorf("%s has no mailbox in the directory", to)
	}
	return &pendingReceipt{
		p: store.PendingReceipt{Originator: to, PackageID: o.PackageID, Label: o.Label.Canonical(), Group: receipts.Group(o.Label),
			Mailboxes: mailboxes, Delivered: srv.now().UTC(), Released: released},
		event: audit.Event{Kind: audit.Receipt, Package: o.PackageID, Destination: to, Detail: receiptSentDetail(mailboxes, released)},
	}, nil
}

// takeReceipt records a verified receipt for packages this gateway sent:
// one package (the single form) or several (a list, sealed by the
// receiver's batcher). Every entry is checked as a receipt alone always
// was: accepted only from the agency the package was sent to, only for a
// package that was sent there, naming only that agency's mailboxes. The
// receipt is taken whole or not at all: one entry that fails a check
// quarantines the whole receipt (kept, alerted, releasable), and one
// whose package is still waiting to be sent defers it whole (451: the
// receiver tries again), so that a bad entry never lets the others through
// unseen. The entries are recorded in one transaction.
func (srv *Server) takeReceipt(ctx context.Context, m received, o *envelope.Opened, opened []byte) outcome {
	_, content, ok := bytes.Cut(opened, []byte("\r\n\r\n"))
	var entries []receipts.Body
	var err error
	if ok {
		entries, err = receipts.Decode(content)
	}
	if !ok || err != nil {
		return srv.quarantine(ctx, m, "receipt-invalid", "a receipt whose body is not a receipt")
	}
	// what names the entry in a reason: the package, and its place in a list.
	what := func(i int, rb receipts.Body) string {
		if len(entries) == 1 {
			return "package " + rb.Package
		}
		return fmt.Sprintf("package %s (entry %d of %d)", rb.Package, i+1, len(entries))
	}
	type taken struct {
		rb       receipts.Body
		late     *store.Item
		lateNote string
		ev       audit.Event
	}
	var take []taken
	for i, rb := range entries {
		if rb.Agency != o.Signer.Agency {
			return srv.quarantine(ctx, m, "receipt-invalid", fmt.Sprintf("a receipt signed by %s speaks for %s (%s)", o.Signer.Agency, rb.Agency, what(i, rb)))
		}
		items, err := srv.store.List(ctx, store.Filter{PackageID: rb.Package, Destination: rb.Agency})
		if err != nil {
			return outcome{reply: smtpserver.ErrTempStore}
		}
		// Every mailbox the receipt names must be one of the receiving
		// agency's in the directory (its inbound policy may choose among
		// them, and add its escalation contacts, but no other).
		dest := srv.cfg.Directory.Agency(rb.Agency)
		if len(rb.Mailboxes) == 0 || dest == nil {
			return srv.quarantine(ctx, m, "receipt-invalid", fmt.Sprintf("a receipt from %s for %s names no mailbox", rb.Agency, what(i, rb)))
		}
		for _, mb := range rb.Mailboxes {
			if !dest.HasMailbox(mb) {
				return srv.quarantine(ctx, m, "receipt-invalid", fmt.Sprintf("a receipt from %s for %s names %s, not a mailbox of %s", rb.Agency, what(i, rb), mb, rb.Agency))
			}
		}
		// Sent counts, and a queued item the relay is delivering right
		// now (the receiver records its receipt before its 250 reaches
		// us, so the receipt may arrive before the relay records the
		// item sent). For a queued item not in flight the receipt waits
		// (4xx: the receiver retries it) until the item is sent: it must
		// not stop an escalation clock for a package not yet delivered.
		// A held or dropped item was never delivered: its receipt is
		// suspect. A failed one is a late delivery only when the receipt
		// says the receiver released it from its quarantine.
		var late *store.Item
		known, waiting := false, false
		for i, it := range items {
			switch {
			case it.State == store.Sent, it.State == store.Queued && srv.inFlight(it.ID):
				known = true
			case it.State == store.Queued:
				waiting = true
			case it.State == store.Failed && rb.Released != "":
				late = &items[i]
			}
		}
		if !known && late == nil && waiting {
			srv.log.Info("receipt for a package not yet sent: deferred", "package", rb.Package, "agency", rb.Agency, "entries", len(entries))
			return outcome{reply: smtpserver.Reply(451, smtp.EnhancedCode{4, 3, 0},
				"Receipt for package "+rb.Package+" deferred: it has not been sent to "+rb.Agency+" yet; try again later")}
		}
		if !known && late == nil {
			return srv.quarantine(ctx, m, "receipt-unknown", fmt.Sprintf("a receipt from %s for %s, which was not sent to them", rb.Agency, what(i, rb)))
		}
		t := taken{rb: rb, ev: audit.Event{Kind: audit.Receipt, Package: rb.Package, Destination: rb.Agency, Actor: o.Signer.Agency,
			Detail: "receipt received: delivered to " + strings.Join(rb.Mailboxes, ", ")}}
		if late != nil && !known {
			// One truth on both sides: the receiver delivered what it had
			// refused, after a release; the item becomes sent, the audit
			// trail says so beside the earlier failure, and the submitter,
			// who was told "Undelivered", is told it arrived after all.
			t.late = late
			t.lateNote = fmt.Sprintf("delivered late: %s released it from its quarantine (%s) after refusing it; receipt signed by %s",
				rb.Agency, rb.Released, o.Signer.Fingerprint)
			t.ev.Detail = "receipt received: " + t.lateNote + "; delivered to " + strings.Join(rb.Mailboxes, ", ")
		}
		take = append(take, t)
	}
	// The receipts, the envelope's replay record and the acknowledgement
	// clocks they stop, in one transaction, synced before the 250.
	acked := make([]int, len(take))
	if err := srv.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.RecordDelivered(o.Label.Originator, o.PackageID, o.MessageID, o.Date); err != nil {
			return err
		}
		for i, t := range take {
			if err := tx.RecordReceipt(store.Receipt{PackageID: t.rb.Package, Agency: t.rb.Agency, Mailboxes: t.rb.Mailboxes,
				Delivered: t.rb.Delivered, Signer: o.Signer.Fingerprint}); err != nil {
				return err
			}
			if t.lateNote != "" {
				if err := tx.MarkDeliveredLate(t.late.ID, t.lateNote); err != nil {
					return err
				}
			}
			var err error
			if acked[i], err = tx.CompleteDeadlines(t.rb.Package, policy.DeadlineAcknowledge, t.rb.Agency, srv.now(), "receipt signed by "+o.Signer.Fingerprint); err != nil {
				return err
			}
			if err := srv.audit.Stage(tx, t.ev); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		srv.log.Error("receipt not recorded", "package", o.PackageID, "entries", len(take), "err", err)
		return outcome{reply: smtpserver.ErrTempStore}
	}
	srv.audit.Kick()
	for i, t := range take {
		if acked[i] > 0 {
			srv.log.Info("immediate escalation acknowledged", "package", t.rb.Package, "agency", t.rb.Agency)
		}
		if t.lateNote != "" {
			srv.log.Warn("late delivery: a package refused by its destination was released there and delivered", "package", t.rb.Package, "agency", t.rb.Agency)
			srv.noticeLateDelivery(ctx, *t.late, t.rb)
		}
		srv.log.Info("receipt recorded", "package", t.rb.Package, "agency", t.rb.Agency, "mailboxes", len(t.rb.Mailboxes))
	}
	text := "Receipt for package " + take[0].rb.Package + " recorded"
	if len(take) > 1 {
		text = fmt.Sprintf("Receipts for %d packages recorded", len(take))
	}
	return outcome{delivered: true, reply: smtpserver.Reply(250, smtp.EnhancedCode{2, 0, 0}, text)}
}

// receiptSentDetail is the receiving side's audit detail for a receipt.
func receiptSentDetail(mailboxes []string, released string) string {
	d := "receipt sent for " + strings.Join(mailboxes, ", ")
	if released != "" {
		d += "; delivered after release from quarantine " + released
	}
	return d
}

// noticeLateDelivery tells the submitter of a package they were told had
// failed that it was delivered after all (a notice in their mailbox, as
// the failure notice was; it names the package, never its content).
func (srv *Server) noticeLateDelivery(ctx context.Context, it store.Item, rb receipts.Body) {
	if it.Submitter == "" {
		return
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Conduit gateway <%s>\r\nTo: <%s>\r\nSubject: [%s] Delivered after all: package %s to %s\r\n",
		it.MailFrom, it.Submitter, it.Marking, it.PackageID, it.Destination)
	fmt.Fprintf(&b, "Date: %s\r\nAuto-Submitted: auto-replied\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", srv.now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "You were told that your package %s could not be delivered to %s.\r\n\r\n", it.PackageID, it.Destination)
	fmt.Fprintf(&b, "%s has since released it from its quarantine and delivered it, on %s, to: %s.\r\n",
		it.Destination, rb.Delivered.UTC().Format(time.RFC1123), strings.Join(rb.Mailboxes, ", "))
	fmt.Fprintf(&b, "Its signed receipt is recorded; the earlier notice no longer stands. Do not send it again.\r\n")
	if err := srv.deliver.Deliver(ctx, it.Submitter, srv.cfg.Agency, "late-"+it.PackageID+"-"+it.Destination, nil, b.Bytes()); err != nil {
		srv.log.Error("late delivery notice not delivered", "package", it.PackageID, "err", err)
	}
}
