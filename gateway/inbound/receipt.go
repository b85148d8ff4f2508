package inbound

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/clocks"
	"github.com/conduit-gateway/conduit/gateway/keyring"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/policy"
)

// ReceiptType is the media type of a receipt's body.
const ReceiptType = "application/vnd.conduit.receipt+json"

// receiptBody is what a receiving gateway states, signed, to the
// originator: which package it delivered, where, and when. Nothing of the
// package's content.
type receiptBody struct {
	Package   string    `json:"package"`
	Agency    string    `json:"agency"`
	Mailboxes []string  `json:"mailboxes"`
	Delivered time.Time `json:"delivered"`
	// Released, when set, says the package was delivered after an
	// administrator released it from this gateway's quarantine, where it
	// had first been refused (the sending gateway had then been told
	// 550): the originator records a late delivery, not a contradiction.
	Released string `json:"released,omitempty"`
}

// queuedReceipt is a sealed receipt, ready to be queued with the delivery
// record of its package.
type queuedReceipt struct {
	item  store.Item
	event audit.Event
}

// sealReceipt seals a receipt for a package about to be delivered, for
// the originating gateway; nil when the originator is this agency. It
// carries the package's own label (the receipt is a record about that
// package, so it is marked and handled as it is) with this agency as its
// originator. Its id is derived from the package's, so the queue stores
// it once however often it is asked.
func (srv *Server) sealReceipt(ctx context.Context, o *envelope.Opened, mailboxes []string, released string) (*queuedReceipt, error) {
	to := o.Label.Originator
	if to == srv.cfg.Agency || o.Plain {
		// A partner without Conduit has no use for a receipt.
		return nil, nil
	}
	if err := srv.keys.Ready(ctx); err != nil {
		return nil, smtpserver.ErrKeysUnavailable
	}
	cert, hold, ok := srv.keys.SealTarget(to)
	if !ok {
		return nil, fmt.Errorf("no pinned certificate for %s", to)
	}
	a := srv.cfg.Directory.Agency(to)
	if a == nil || len(a.Mailboxes) == 0 {
		return nil, fmt.Errorf("%s has no mailbox in the directory", to)
	}
	rcpt := a.Mailboxes[0].Address
	if mb := a.Mailbox("intake"); mb != nil {
		rcpt = mb.Address
	}
	body, err := json.Marshal(receiptBody{Package: o.PackageID, Agency: srv.cfg.Agency, Mailboxes: mailboxes, Delivered: srv.now().UTC(), Released: released})
	if err != nil {
		return nil, err
	}
	l := o.Label
	l.Originator, l.Created = srv.cfg.Agency, srv.now().UTC().Truncate(time.Second)
	id := clocks.ReceiptID(o.PackageID)
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: Receipt for package %s\r\nDate: %s\r\nMessage-ID: <%s@%s>\r\nContent-Type: %s\r\n\r\n%s\r\n",
		keyring.Address(srv.keys.Identity()), rcpt, o.PackageID, srv.now().Format(time.RFC1123Z), id, srv.hostname, ReceiptType, body)
	var buf bytes.Buffer
	if _, err := envelope.Seal(ctx, &buf, strings.NewReader(msg), envelope.SealParams{
		Signer: srv.keys.Identity(), Recipients: []*keys.Cert{cert}, Label: l, PackageID: id, Now: srv.now,
		Manifest: &envelope.Manifest{From: srv.cfg.Agency, To: []string{to}, Kind: envelope.KindReceipt},
	}); err != nil {
		return nil, err
	}
	return &queuedReceipt{
		item: store.Item{
			PackageID: id, Destination: to, Recipients: []string{rcpt}, MailFrom: keyring.Address(srv.keys.Identity()),
			Marking: l.Marking(), Envelope: buf.Bytes(), Priority: store.Normal, State: keyring.HoldState(hold), Reason: hold,
		},
		event: audit.Event{Kind: audit.Receipt, Package: o.PackageID, Destination: to, Detail: receiptSentDetail(mailboxes, released)},
	}, nil
}

// takeReceipt records a verified receipt for a package this gateway sent.
// It is accepted only from the agency the package was sent to, and only
// for a package that was sent there.
func (srv *Server) takeReceipt(ctx context.Context, m received, o *envelope.Opened, opened []byte) outcome {
	_, content, ok := bytes.Cut(opened, []byte("\r\n\r\n"))
	var rb receiptBody
	if !ok || json.Unmarshal(bytes.TrimSpace(content), &rb) != nil || rb.Package == "" {
		return srv.quarantine(ctx, m, "receipt-invalid", "a receipt whose body is not a receipt")
	}
	if rb.Agency != o.Signer.Agency {
		return srv.quarantine(ctx, m, "receipt-invalid", fmt.Sprintf("a receipt signed by %s speaks for %s", o.Signer.Agency, rb.Agency))
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
		return srv.quarantine(ctx, m, "receipt-invalid", fmt.Sprintf("a receipt from %s for package %s names no mailbox", rb.Agency, rb.Package))
	}
	for _, mb := range rb.Mailboxes {
		if !dest.HasMailbox(mb) {
			return srv.quarantine(ctx, m, "receipt-invalid", fmt.Sprintf("a receipt from %s for package %s names %s, not a mailbox of %s", rb.Agency, rb.Package, mb, rb.Agency))
		}
	}
	// Sent counts, and a queued item the relay is delivering right now
	// (the receiver queues its receipt before its 250 reaches us, so the
	// receipt may arrive before the relay records the item sent). For a
	// queued item not in flight the receipt waits (4xx: the receiver
	// retries it) until the item is sent: it must not stop an escalation
	// clock for a package not yet delivered. A held or dropped item was
	// never delivered: its receipt is suspect. A failed one is a late
	// delivery only when the receipt says the receiver released it from
	// its quarantine.
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
		srv.log.Info("receipt for a package not yet sent: deferred", "package", rb.Package, "agency", rb.Agency)
		return outcome{reply: smtpserver.Reply(451, smtp.EnhancedCode{4, 3, 0},
			"Receipt for package "+rb.Package+" deferred: it has not been sent to "+rb.Agency+" yet; try again later")}
	}
	if !known && late == nil {
		return srv.quarantine(ctx, m, "receipt-unknown", fmt.Sprintf("a receipt from %s for package %s, which was not sent to them", rb.Agency, rb.Package))
	}
	ev := audit.Event{Kind: audit.Receipt, Package: rb.Package, Destination: rb.Agency, Actor: o.Signer.Agency,
		Detail: "receipt received: delivered to " + strings.Join(rb.Mailboxes, ", ")}
	var lateNote string
	if late != nil && !known {
		// One truth on both sides: the receiver delivered what it had
		// refused, after a release; the item becomes sent, the audit
		// trail says so beside the earlier failure, and the submitter,
		// who was told "Undelivered", is told it arrived after all.
		lateNote = fmt.Sprintf("delivered late: %s released it from its quarantine (%s) after refusing it; receipt signed by %s",
			rb.Agency, rb.Released, o.Signer.Fingerprint)
		ev.Detail = "receipt received: " + lateNote + "; delivered to " + strings.Join(rb.Mailboxes, ", ")
	}
	// The receipt, its replay record and the acknowledgement clock it
	// stops, in one transaction, synced before the 250.
	var acked int
	if err := srv.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.RecordReceipt(store.Receipt{PackageID: rb.Package, Agency: rb.Agency, Mailboxes: rb.Mailboxes,
			Delivered: rb.Delivered, Signer: o.Signer.Fingerprint}); err != nil {
			return err
		}
		if err := tx.RecordDelivered(o.Label.Originator, o.PackageID, o.MessageID, o.Date); err != nil {
			return err
		}
		if lateNote != "" {
			if err := tx.MarkDeliveredLate(late.ID, lateNote); err != nil {
				return err
			}
		}
		var err error
		if acked, err = tx.CompleteDeadlines(rb.Package, policy.DeadlineAcknowledge, rb.Agency, srv.now(), "receipt signed by "+o.Signer.Fingerprint); err != nil {
			return err
		}
		return srv.audit.Stage(tx, ev)
	}); err != nil {
		srv.log.Error("receipt not recorded", "package", rb.Package, "err", err)
		return outcome{reply: smtpserver.ErrTempStore}
	}
	srv.audit.Kick()
	if acked > 0 {
		srv.log.Info("immediate escalation acknowledged", "package", rb.Package, "agency", rb.Agency)
	}
	if lateNote != "" {
		srv.log.Warn("late delivery: a package refused by its destination was released there and delivered", "package", rb.Package, "agency", rb.Agency)
		srv.noticeLateDelivery(ctx, *late, rb)
	}
	srv.log.Info("receipt recorded", "package", rb.Package, "agency", rb.Agency, "mailboxes", len(rb.Mailboxes))
	return outcome{delivered: true, reply: smtpserver.Reply(250, smtp.EnhancedCode{2, 0, 0}, "Receipt for package "+rb.Package+" recorded")}
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
func (srv *Server) noticeLateDelivery(ctx context.Context, it store.Item, rb receiptBody) {
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
