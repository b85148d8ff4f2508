package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/envelope"
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
func (g *Gateway) sealReceipt(ctx context.Context, o *envelope.Opened, mailboxes []string) (*queuedReceipt, error) {
	to := o.Label.Originator
	if to == g.cfg.Agency || o.Plain {
		// A partner without Conduit has no use for a receipt.
		return nil, nil
	}
	if err := g.keysReady(ctx); err != nil {
		return nil, errKeysUnavailable
	}
	cert, hold, ok := g.sealTarget(to)
	if !ok {
		return nil, fmt.Errorf("no pinned certificate for %s", to)
	}
	a := g.cfg.Directory.Agency(to)
	if a == nil || len(a.Mailboxes) == 0 {
		return nil, fmt.Errorf("%s has no mailbox in the directory", to)
	}
	rcpt := a.Mailboxes[0].Address
	if mb := a.Mailbox("intake"); mb != nil {
		rcpt = mb.Address
	}
	body, err := json.Marshal(receiptBody{Package: o.PackageID, Agency: g.cfg.Agency, Mailboxes: mailboxes, Delivered: g.Now().UTC()})
	if err != nil {
		return nil, err
	}
	l := o.Label
	l.Originator, l.Created = g.cfg.Agency, g.Now().UTC().Truncate(time.Second)
	id := receiptID(o.PackageID)
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: Receipt for package %s\r\nDate: %s\r\nMessage-ID: <%s@%s>\r\nContent-Type: %s\r\n\r\n%s\r\n",
		emailOfIdentity(g.identity()), rcpt, o.PackageID, g.Now().Format(time.RFC1123Z), id, g.hostname(), ReceiptType, body)
	var buf bytes.Buffer
	if _, err := envelope.Seal(ctx, &buf, strings.NewReader(msg), envelope.SealParams{
		Signer: g.identity(), Recipients: []*keys.Cert{cert}, Label: l, PackageID: id, Now: g.Now,
		Manifest: &envelope.Manifest{From: g.cfg.Agency, To: []string{to}, Kind: envelope.KindReceipt},
	}); err != nil {
		return nil, err
	}
	return &queuedReceipt{
		item: store.Item{
			PackageID: id, Destination: to, Recipients: []string{rcpt}, MailFrom: emailOfIdentity(g.identity()),
			Marking: l.Marking(), Envelope: buf.Bytes(), Priority: store.Normal, State: heldIf(hold), Reason: hold,
		},
		event: audit.Event{Kind: audit.Receipt, Package: o.PackageID, Destination: to, Detail: "receipt sent for " + strings.Join(mailboxes, ", ")},
	}, nil
}

// receiptID is the package id of the receipt this gateway seals for a
// package it received.
func receiptID(pkgID string) string { return "rcpt-" + pkgID }

// takeReceipt records a verified receipt for a package this gateway sent.
// It is accepted only from the agency the package was sent to, and only
// for a package that was sent there.
func (g *Gateway) takeReceipt(ctx context.Context, m received, o *envelope.Opened, opened []byte) outcome {
	_, content, ok := bytes.Cut(opened, []byte("\r\n\r\n"))
	var rb receiptBody
	if !ok || json.Unmarshal(bytes.TrimSpace(content), &rb) != nil || rb.Package == "" {
		return g.quarantine(ctx, m, "receipt-invalid", "a receipt whose body is not a receipt")
	}
	if rb.Agency != o.Signer.Agency {
		return g.quarantine(ctx, m, "receipt-invalid", fmt.Sprintf("a receipt signed by %s speaks for %s", o.Signer.Agency, rb.Agency))
	}
	items, err := g.store.List(ctx, store.Filter{PackageID: rb.Package, Destination: rb.Agency})
	if err != nil {
		return outcome{reply: errTempStore}
	}
	// Queued counts: the receiver queues its receipt before its 250 reaches
	// us, so the receipt may arrive before the relay records the item sent.
	// A held, dropped or failed item was never delivered: its receipt is
	// suspect.
	if !slices.ContainsFunc(items, func(it store.Item) bool { return it.State == store.Sent || it.State == store.Queued }) {
		return g.quarantine(ctx, m, "receipt-unknown", fmt.Sprintf("a receipt from %s for package %s, which was not sent to them", rb.Agency, rb.Package))
	}
	ev := audit.Event{Kind: audit.Receipt, Package: rb.Package, Destination: rb.Agency, Actor: o.Signer.Agency,
		Detail: "receipt received: delivered to " + strings.Join(rb.Mailboxes, ", ")}
	// The receipt, its replay record and the acknowledgement clock it
	// stops, in one transaction, synced before the 250.
	var acked int
	if err := g.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.RecordReceipt(store.Receipt{PackageID: rb.Package, Agency: rb.Agency, Mailboxes: rb.Mailboxes,
			Delivered: rb.Delivered, Signer: o.Signer.Fingerprint}); err != nil {
			return err
		}
		if err := tx.RecordDelivered(o.Label.Originator, o.PackageID, o.MessageID, o.Date); err != nil {
			return err
		}
		var err error
		if acked, err = tx.CompleteDeadlines(rb.Package, policy.DeadlineAcknowledge, rb.Agency, g.Now(), "receipt signed by "+o.Signer.Fingerprint); err != nil {
			return err
		}
		return g.stage(tx, ev)
	}); err != nil {
		g.log.Error("receipt not recorded", "package", rb.Package, "err", err)
		return outcome{reply: errTempStore}
	}
	g.kickAudit()
	if acked > 0 {
		g.log.Info("immediate escalation acknowledged", "package", rb.Package, "agency", rb.Agency)
	}
	g.log.Info("receipt recorded", "package", rb.Package, "agency", rb.Agency, "mailboxes", len(rb.Mailboxes))
	return outcome{delivered: true, reply: reply(250, smtp.EnhancedCode{2, 0, 0}, "Receipt for package "+rb.Package+" recorded")}
}
