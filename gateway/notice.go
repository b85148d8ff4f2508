package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/keyring"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/policy"
)

// NoticeHeader names the notice kind and the package it concerns, inside
// the envelope: "rectification; package=cdt-...".
const NoticeHeader = "Conduit-Notice"

// Notice is a notice an administrator or analyst sends about a package
// already exchanged (MoU Annex A: Accuracy, Data loss, Subject rights).
type Notice struct {
	Kind       string // policy.NoticeRectification, NoticeBreach, NoticeSubjectAccess, NoticeUnlawful
	PackageID  string // the package it concerns
	Originator string // the package's originator (this agency for a rectification it issues)
	Label      envelope.Label
	Text       io.Reader // what the people at the other end read; sealed, never logged
	Sender     string    // the address that sends it, for receipts and failure notices
}

// SendNotice decides where a notice goes, seals it for each destination
// and queues it; the running gateway's relay sends it and each
// destination receipts it. It returns the notice's id and its
// destination agencies.
func (g *Gateway) SendNotice(ctx context.Context, n Notice) (string, []string, error) {
	if err := g.keys.Ready(ctx); err != nil {
		return "", nil, fmt.Errorf("notice not sealed: %w", err)
	}
	var recipients []string
	if n.Originator == g.cfg.Agency {
		// Every agency this gateway sent the package to.
		items, err := g.store.List(ctx, store.Filter{PackageID: n.PackageID})
		if err != nil {
			return "", nil, err
		}
		for _, it := range items {
			if it.State == store.Sent && !slices.Contains(recipients, it.Destination) {
				recipients = append(recipients, it.Destination)
			}
		}
		if len(recipients) == 0 && n.Kind == policy.NoticeRectification {
			return "", nil, fmt.Errorf("package %s was not sent anywhere from here: nobody to notify", n.PackageID)
		}
	}
	dec := g.engine.Policy().DecideNotice(ctx, policy.Notice{Kind: n.Kind, From: g.cfg.Agency, Originator: n.Originator,
		Reference: n.Label.Reference, Recipients: recipients})
	if len(dec.Deliveries) == 0 {
		return "", nil, fmt.Errorf("notice refused: %s", smtpserver.Refusal(dec).Error())
	}
	text, err := io.ReadAll(io.LimitReader(n.Text, g.cfg.Limits.MessageBytes/2))
	if err != nil {
		return "", nil, err
	}
	l := n.Label
	l.Originator = g.cfg.Agency
	if l.Created.IsZero() {
		l.Created = g.now().UTC().Truncate(time.Second)
	}
	if err := l.Validate(); err != nil {
		return "", nil, fmt.Errorf("notice label: %w", err)
	}
	id := envelope.NewPackageID()
	from := n.Sender
	if !strings.Contains(from, "@") {
		from, n.Sender = keyring.Address(g.keys.Identity()), ""
	}
	var items []store.Item
	var dests []string
	for _, d := range dec.Deliveries {
		if slices.Contains(dests, d.Agency) {
			continue
		}
		cert, hold, ok := g.keys.SealTarget(d.Agency)
		if !ok {
			return "", nil, fmt.Errorf("no pinned certificate for %s; nothing was sent", d.Agency)
		}
		msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: Conduit notice: %s of package %s\r\nDate: %s\r\n%s: %s; package=%s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
			from, d.Mailbox, n.Kind, n.PackageID, g.now().Format(time.RFC1123Z), NoticeHeader, n.Kind, n.PackageID)
		var buf bytes.Buffer
		if _, err := envelope.Seal(ctx, &buf, io.MultiReader(strings.NewReader(msg), bytes.NewReader(text)), envelope.SealParams{
			Signer: g.keys.Identity(), Recipients: []*keys.Cert{cert}, Label: l, PackageID: id, Now: g.now,
			Manifest: &envelope.Manifest{From: g.cfg.Agency, To: []string{d.Agency}, Kind: envelope.KindNotice}, Plain: g.keys.PlainFor(d.Agency),
		}); err != nil {
			return "", nil, err
		}
		prio := store.Normal
		if d.Priority == policy.Immediate {
			prio = store.Immediate
		}
		items = append(items, store.Item{PackageID: id, Destination: d.Agency, Recipients: []string{d.Mailbox},
			MailFrom: keyring.Address(g.keys.Identity()), Submitter: n.Sender, Marking: l.Marking(), Envelope: buf.Bytes(), Priority: prio, State: keyring.HoldState(hold), Reason: hold})
		dests = append(dests, d.Agency)
	}
	if len(items) == 0 {
		return "", nil, errors.New("notice: no destination")
	}
	var events []audit.Event
	for _, d := range dests {
		events = append(events, audit.Event{Kind: audit.Queued, Package: id, Destination: d, Rule: "notices", Actor: n.Sender,
			Detail: fmt.Sprintf("%s notice about package %s", n.Kind, n.PackageID)})
	}
	if err := g.store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Enqueue(items); err != nil {
			return err
		}
		return g.audit.Stage(tx, events...)
	}); err != nil {
		return "", nil, err
	}
	g.audit.Kick()
	g.relay.Nudge()
	return id, dests, nil
}
