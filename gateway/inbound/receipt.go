package inbound

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
func (srv *Server) sealReceipt(ctx context.Context, o *envelope.Opened, mailboxes []string) (*queuedReceipt, error) {
	to := o.Label.Originator
	if to == srv.cfg.Agency {
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
	body, err := json.Marshal(receiptBody{Package: o.PackageID, Agency: srv.cfg.Agency, Mailboxes: mailboxes, Delivered: srv.now().UTC()})
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
		event: audit.Event{Kind: audit.Receipt, Package: o.PackageID, Destination: to, Detail: "receipt sent for " + strings.Join(mailboxes, ", ")},
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
	// Queued counts: the receiver queues its receipt before its 250 reaches
	// us, so the receipt may arrive before the relay records the item sent.
	// A held, dropped or failed item was never delivered: its receipt is
	// suspect.
	if !slices.ContainsFunc(items, func(it store.Item) bool { return it.State == store.Sent || it.State == store.Queued }) {
		return srv.quarantine(ctx, m, "receipt-unknown", fmt.Sprintf("a receipt from %s for package %s, which was not sent to them", rb.Agency, rb.Package))
	}
	ev := audit.Event{Kind: audit.Receipt, Package: rb.Package, Destination: rb.Agency, Actor: o.Signer.Agency,
		Detail: "receipt received: delivered to " + strings.Join(rb.Mailboxes, ", ")}
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
	srv.log.Info("receipt recorded", "package", rb.Package, "agency", rb.Agency, "mailboxes", len(rb.Mailboxes))
	return outcome{delivered: true, reply: smtpserver.Reply(250, smtp.EnhancedCode{2, 0, 0}, "Receipt for package "+rb.Package+" recorded")}
}
