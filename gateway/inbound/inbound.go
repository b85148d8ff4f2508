package inbound

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/clocks"
	"github.com/conduit-gateway/conduit/gateway/delivery"
	"github.com/conduit-gateway/conduit/gateway/qguard"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/gateway/tlsroute"
	"github.com/conduit-gateway/conduit/metrics"
	"github.com/conduit-gateway/conduit/policy"
)

// inSession is one SMTP session of a partner gateway.
type inSession struct {
	srv   *Server
	conn  *smtp.Conn
	from  string
	rcpts []string
	cmds  int
	// partner is the agency whose verified client certificate the
	// connection presented ("" for a client that presented none).
	partner string
}

func (s *inSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.cmds++; s.cmds > s.srv.cfg.Limits.Commands {
		return smtpserver.ErrTooMany
	}
	// Security invariant 4: STARTTLS before MAIL FROM, always.
	if _, ok := s.conn.TLSConnectionState(); !ok {
		return smtpserver.ErrNeedTLS
	}
	s.from = from
	return nil
}

func (s *inSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.cmds++; s.cmds > s.srv.cfg.Limits.Commands {
		return smtpserver.ErrTooMany
	}
	if s.from == "" {
		return smtpserver.Reply(503, smtp.EnhancedCode{5, 5, 1}, "MAIL FROM first")
	}
	if !s.srv.self.HasMailbox(to) {
		return smtpserver.Reply(550, smtp.EnhancedCode{5, 1, 1}, to+" is not a mailbox of "+s.srv.cfg.Agency+" in the agency directory")
	}
	if slices.ContainsFunc(s.rcpts, func(r string) bool { return strings.EqualFold(r, to) }) {
		return smtpserver.ErrDuplicateRcpt(to)
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *inSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *inSession) Logout() error { return nil }

func (s *inSession) Data(r io.Reader) error {
	if s.cmds++; s.cmds > s.srv.cfg.Limits.Commands {
		io.Copy(io.Discard, r)
		return smtpserver.ErrTooMany
	}
	// Streamed to the encrypted spool (in memory up to 1 MiB, then an
	// unlinked file under a key held only in memory), never held whole:
	// a hundred 25 MiB messages in flight cost a hundred small buffers.
	sp, err := envelope.NewSpool("", s.srv.cfg.Limits.MessageBytes)
	if err != nil {
		io.Copy(io.Discard, r)
		return smtpserver.ErrTempStore
	}
	defer sp.Close()
	if _, err := io.Copy(sp, &smtpserver.StrictCRLF{R: r}); err != nil {
		io.Copy(io.Discard, r) // go-smtp needs the data consumed
		if errors.Is(err, envelope.ErrTooLarge) {
			return smtpserver.ErrTooBig
		}
		return smtpserver.DataErr(err)
	}
	if err := sp.Finish(); err != nil {
		return smtpserver.ErrTempStore
	}
	st, _ := s.conn.TLSConnectionState()
	ctx, done := s.srv.handlers.Begin()
	defer done()
	return s.srv.receive(ctx, received{
		remote: s.conn.Conn().RemoteAddr().String(), helo: s.conn.Hostname(),
		from: s.from, rcpts: s.rcpts, msg: sp, peer: st.PeerCertificates, live: true, partner: s.partner,
	})
}

// message is a received message: the spool a session wrote, or the bytes
// of a released quarantined message.
type message interface {
	Reader() (io.Reader, error)
	Size() int64
}

// rawMessage is a message held in memory (a released quarantined one).
type rawMessage []byte

func (r rawMessage) Reader() (io.Reader, error) { return bytes.NewReader(r), nil }
func (r rawMessage) Size() int64                { return int64(len(r)) }

func readAll(m message) ([]byte, error) {
	if r, ok := m.(rawMessage); ok {
		return r, nil
	}
	rd, err := m.Reader()
	if err != nil {
		return nil, err
	}
	buf := bytes.NewBuffer(make([]byte, 0, m.Size()))
	_, err = io.Copy(buf, rd)
	return buf.Bytes(), err
}

type received struct {
	remote, helo, from string
	rcpts              []string
	msg                message
	// partner is the agency whose verified client certificate the
	// connection presented, "" when none.
	partner string
	// peer is the client certificate chain the partner presented; live is
	// false for a quarantined message an administrator released, whose
	// connection is gone (the release stands in for the route check).
	peer []*x509.Certificate
	live bool
	// released names the quarantine release a re-processed message comes
	// from ("Q7, released by ..."), "" for a live one: the receipt says
	// so, and the originator then takes it as a late delivery of a
	// package it was told had been refused.
	released string
}

// replayCheck asks the store whether a package was already delivered. It
// only checks: the package is recorded once it has been delivered, so that
// a crash between the check and the delivery loses nothing (the sender
// retries, and the Maildir file names make the delivery happen once).
type replayCheck struct{ srv *Server }

func (rc replayCheck) CheckReplay(ctx context.Context, k envelope.ReplayKey) error {
	seen, err := rc.srv.store.Delivered(ctx, k.Originator, k.PackageID)
	if err != nil {
		return err
	}
	if seen {
		return envelope.ErrReplay
	}
	return nil
}

// outcome is what became of a received message.
type outcome struct {
	reply     error // the SMTP reply (a 250 *smtp.SMTPError on success)
	delivered bool
	qid       int64 // the quarantine id when it was quarantined
}

// receive opens a partner's envelope, applies the inbound policy and
// delivers it; anything that fails a check is quarantined, kept whole.
func (srv *Server) receive(ctx context.Context, m received) error { return srv.process(ctx, m).reply }

func (srv *Server) process(ctx context.Context, m received) outcome {
	if err := srv.keys.Ready(ctx); err != nil {
		return outcome{reply: smtpserver.ErrKeysUnavailable} // fail closed: the sender keeps it queued
	}
	var opened bytes.Buffer
	start := time.Now()
	o, err := srv.openReceived(ctx, &opened, m.msg, srv.openParams(replayCheck{srv}))
	srv.metrics.ObserveOpen(time.Since(start))
	if err != nil {
		var ce *envelope.CheckError
		if !errors.As(err, &ce) {
			srv.log.Error("open failed", "err", err)
			return outcome{reply: smtpserver.Reply(451, smtp.EnhancedCode{4, 3, 0}, "Temporary failure opening the package; try again shortly")}
		}
		if m.live && m.partner == "" && notAnEnvelopeForUs(err) && !errors.Is(err, errPlainFromConduitPartner) {
			// A client that proved no partner identity sent something
			// that cannot be a package for this gateway: refused, not
			// kept and not alerted one by one (postscreen refuses before
			// the real service does; the quarantine is for what might be
			// a partner's package). Counted; nothing of it is stored.
			srv.metrics.InboundRefused("not-envelope")
			srv.log.Info("refused a message that is no envelope for this gateway from a client without a partner certificate",
				"remote", m.remote, "check", checkName(err), "bytes", m.msg.Size())
			return outcome{reply: smtpserver.Reply(554, smtp.EnhancedCode{5, 6, 0},
				"Message refused and not kept: it is not a Conduit envelope for "+srv.cfg.Agency+" ("+checkName(err)+"), and this connection presented no partner gateway's certificate")}
		}
		if errors.Is(err, envelope.ErrReplay) {
			// Already delivered: the sender did not see our 250 (a crash,
			// a cut connection). Accept again without delivering twice.
			srv.log.Info("duplicate package acknowledged, not delivered again", "remote", m.remote, "detail", ce.Detail)
			return outcome{reply: smtpserver.Reply(250, smtp.EnhancedCode{2, 0, 0}, "Package already delivered; not delivered twice"), delivered: true}
		}
		return srv.quarantine(ctx, m, checkName(err), err.Error())
	}
	if m.live {
		if err := tlsroute.CheckClientCert(srv.cfg.Directory.Agency(o.Signer.Agency), m.peer); err != nil {
			return srv.quarantine(ctx, m, "mutual-tls", err.Error())
		}
	}
	// Gateways of one agency sharing a store: the same envelope arriving
	// at two of them at once is delivered by one. The second waits for
	// the first's lock, then finds its replay record.
	if l, ok := srv.store.(store.DeliveryLocker); ok {
		unlock, err := l.LockDelivery(ctx, o.Label.Originator, o.PackageID)
		if err != nil {
			srv.log.Error("delivery lock not taken; the sender retries", "package", o.PackageID, "err", err)
			return outcome{reply: smtpserver.ErrTempStore}
		}
		defer unlock()
		seen, err := srv.store.Delivered(ctx, o.Label.Originator, o.PackageID)
		if err != nil {
			return outcome{reply: smtpserver.ErrTempStore}
		}
		if seen {
			srv.log.Info("duplicate package acknowledged, not delivered again", "remote", m.remote, "package", o.PackageID)
			return outcome{reply: smtpserver.Reply(250, smtp.EnhancedCode{2, 0, 0}, "Package already delivered; not delivered twice"), delivered: true}
		}
	}
	srv.ackByReply(ctx, o)
	if o.Manifest.Kind == envelope.KindReceipt {
		// A gateway's statement about a package we sent: recorded, not
		// delivered to anyone, and not judged as intelligence.
		return srv.takeReceipt(ctx, m, o, opened.Bytes())
	}
	if o.Manifest.Kind == envelope.KindKeyChange {
		return srv.takeKeyChange(ctx, m, o, opened.Bytes())
	}
	dec := srv.engine.DecideInboundFor(ctx, &o.Manifest, o.Signer.Agency, m.rcpts)
	var mailboxes []string
	for _, d := range dec.Deliveries {
		if d.Agency == srv.cfg.Agency && d.Mailbox != "" {
			mailboxes = append(mailboxes, d.Mailbox)
		}
	}
	if dec.Decision == policy.Deny || len(mailboxes) == 0 {
		why := smtpserver.Refusal(dec).Message
		if dec.Decision != policy.Deny && len(dec.Holds) > 0 {
			// Held here: kept (in quarantine, whole and still encrypted)
			// until an administrator releases it, and the sender told it
			// arrived, so it does not report a failure.
			out := srv.quarantine(ctx, m, "held", strings.TrimPrefix(why, "Package refused, nothing was sent: "))
			if out.qid != 0 {
				out.reply = smtpserver.Reply(250, smtp.EnhancedCode{2, 0, 0}, fmt.Sprintf("Package accepted and held as Q%d at %s until an administrator releases it: %s",
					out.qid, srv.cfg.Agency, strings.TrimPrefix(why, "Package refused, nothing was sent: ")))
			}
			return out
		}
		return srv.quarantine(ctx, m, "inbound-policy", why)
	}
	// The receipt is made before anything is delivered (and what sealing
	// it needs checked), so that it is stored with the delivery record
	// below or the package is not delivered at all (the sender retries).
	receipt, err := srv.pendingReceipt(ctx, o, mailboxes, m.released)
	if err != nil {
		srv.log.Error("receipt cannot be sealed; package not delivered, the sender retries", "package", o.PackageID, "originator", o.Label.Originator, "err", err)
		if errors.Is(err, smtpserver.ErrKeysUnavailable) {
			return outcome{reply: smtpserver.ErrKeysUnavailable}
		}
		return outcome{reply: smtpserver.Reply(451, smtp.EnhancedCode{4, 3, 0}, "Temporary failure sealing the receipt; the package was not delivered, try again shortly")}
	}
	// Mail clients hide the headers that carry the label: the copy a
	// person reads starts with it in words.
	copyFor, err := envelope.WithBanner(opened.Bytes(), o.Label.Banner(o.PackageID, o.Signer.Agency))
	if err != nil {
		srv.log.Warn("banner not added; the package is delivered as opened", "package", o.PackageID, "err", err)
		copyFor = opened.Bytes()
	}
	var delivered []string
	var refused []*delivery.RefusedError
	for _, mb := range mailboxes {
		hdr := fmt.Sprintf("Conduit-Delivered-To: %s\r\nConduit-Decision: %s\r\n%s", mb, strings.Join(smtpserver.RuleIDs(dec), ", "), srv.triageHeader(o.PackageID, dec))
		err := srv.deliver.Deliver(ctx, mb, o.Label.Originator, o.PackageID, []byte(hdr), copyFor)
		var re *delivery.RefusedError
		if errors.As(err, &re) {
			// Refused for good by the mail store (the mailbox is not
			// there): retrying cannot help, so that mailbox fails now.
			refused = append(refused, re)
			continue
		}
		if err != nil {
			srv.log.Error("delivery failed", "package", o.PackageID, "mailbox", mb, "err", err)
			return outcome{reply: smtpserver.Reply(451, smtp.EnhancedCode{4, 3, 0}, "Temporary failure delivering the package; try again shortly")}
		}
		delivered = append(delivered, mb)
	}
	if len(refused) > 0 {
		if out, done := srv.mailboxesRefused(ctx, m, o, delivered, refused); done {
			return out
		}
		// Some mailboxes have it: the receipt names only those.
		if receipt, err = srv.pendingReceipt(ctx, o, delivered, m.released); err != nil {
			srv.log.Error("receipt cannot be sealed for the mailboxes reached; the sender retries", "package", o.PackageID, "err", err)
			return outcome{reply: smtpserver.Reply(451, smtp.EnhancedCode{4, 3, 0}, "Temporary failure sealing the receipt; try again shortly")}
		}
		mailboxes = delivered
	}
	// The replay record, the receipt, the clocks and the delivery's events
	// in one transaction, fully synced before the 250.
	events := []audit.Event{{Kind: audit.Received, Package: o.PackageID, Destination: o.Label.Originator, Actor: o.Signer.Agency,
		Detail: fmt.Sprintf("verified: signed by %s, %s, reference %s", o.Signer.Fingerprint, o.Label.Marking(), o.Label.Reference)}}
	for _, mb := range mailboxes {
		srv.metrics.Delivery(o.Label.Originator, metrics.Delivered)
		events = append(events, audit.Event{Kind: audit.Delivered, Package: o.PackageID, Destination: o.Label.Originator, Rule: strings.Join(smtpserver.RuleIDs(dec), ","), Detail: "to " + mb})
	}
	if receipt != nil {
		events = append(events, receipt.event)
	}
	now := srv.now()
	if err := srv.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.RecordDelivered(o.Label.Originator, o.PackageID, o.MessageID, o.Date); err != nil {
			return err
		}
		if receipt != nil {
			if err := tx.AddPendingReceipt(receipt.p); err != nil {
				return err
			}
		}
		if err := clocks.Add(tx, clocks.Inbound(now, o.PackageID, o.Label.Originator, dec),
			clocks.Retention(now, o.PackageID, o.Label.Originator, dec)); err != nil {
			return err
		}
		return srv.audit.Stage(tx, events...)
	}); err != nil {
		// Delivered, but not recorded: the sender is told to try again,
		// and the Maildir names keep the retry from delivering twice.
		srv.log.Error("delivery not recorded; the sender retries", "package", o.PackageID, "err", err)
		return outcome{reply: smtpserver.ErrTempStore}
	}
	srv.audit.Kick()
	srv.queued()
	if receipt != nil {
		srv.receipts()
	}
	srv.log.Info("package delivered", "package", o.PackageID, "originator", o.Label.Originator,
		"signer", o.Signer.Fingerprint, "mailboxes", mailboxes, "rules", smtpserver.RuleIDs(dec))
	text := "Package " + o.PackageID + " verified and delivered to " + strings.Join(mailboxes, ", ")
	for _, re := range refused {
		text += "; not to " + re.Mailbox + ", which this agency's mail store refused permanently (its administrators have been alerted)"
	}
	return outcome{reply: smtpserver.Reply(250, smtp.EnhancedCode{2, 0, 0}, text), delivered: true}
}

// mailboxesRefused reports mailboxes the mail store refused for good: an
// admin alert (log, audit trail, mail to the administrators) naming each.
// When no mailbox took the package, it is quarantined whole (kept, for
// release once the mailbox is put right) and the sending gateway is
// answered with a permanent failure naming the mailboxes, so that its
// sender is told at once instead of it being retried for days; done is
// then true.
func (srv *Server) mailboxesRefused(ctx context.Context, m received, o *envelope.Opened, delivered []string, refused []*delivery.RefusedError) (outcome, bool) {
	var names, reasons []string
	for _, re := range refused {
		names = append(names, re.Mailbox)
		reasons = append(reasons, re.Error())
	}
	why := strings.Join(reasons, "; ")
	srv.log.Error("admin alert: the mail store refused a package's mailbox permanently", "package", o.PackageID,
		"originator", o.Label.Originator, "mailboxes", names, "reason", why)
	srv.audit.Append(ctx, audit.Event{Kind: audit.Alert, Package: o.PackageID, Destination: o.Label.Originator, Rule: "delivery",
		Detail: "mailboxes refused permanently by the mail store: " + why})
	srv.keys.AlertAdmins(ctx, "Conduit: package "+o.PackageID+" refused by the mail store for "+strings.Join(names, ", "),
		fmt.Sprintf("This agency's mail store refused package %s from %s (reference %s) for these mailboxes, permanently:\r\n  %s\r\n\r\n"+
			"Make each mailbox exist in the mail store (or correct the directory), then release the quarantined copy if there is one (conduit quarantine list).\r\n",
			o.PackageID, o.Label.Originator, o.Label.Reference, strings.Join(reasons, "\r\n  ")))
	if len(delivered) > 0 {
		return outcome{}, false
	}
	out := srv.quarantine(ctx, m, "mailbox-refused", why)
	if out.qid != 0 {
		out.reply = smtpserver.Reply(550, smtp.EnhancedCode{5, 1, 1}, fmt.Sprintf(
			"Package %s verified but not delivered: %s. It is kept as Q%d at %s, whose administrators have been alerted",
			o.PackageID, why, out.qid, srv.cfg.Agency))
	}
	return out, true
}

// quarantine keeps a failed message whole and answers the sender with the
// reason. Security invariant 6: kept, never dropped.
func (srv *Server) quarantine(ctx context.Context, m received, check, reason string) outcome {
	if m.live {
		// The quarantine's quota and per-source rate: past them the
		// sender is told to try later (RFC 3463 4.3.1, mail system
		// full), so it keeps the message and nothing is lost.
		if err := srv.admitQuarantine(ctx, m); err != nil {
			var r *qguard.Refusal
			if errors.As(err, &r) {
				srv.metrics.InboundRefused(r.Reason)
				srv.log.Warn("quarantine limit: message not kept, the sender keeps it", "remote", m.remote, "check", check, "limit", r.Reason, "detail", r.Detail)
				return outcome{reply: smtpserver.Reply(452, smtp.EnhancedCode{4, 3, 1}, "Message not accepted: it failed a check ("+check+
					") and this gateway's quarantine is over its limit for now; nothing was kept, keep it and try again later")}
			}
			srv.log.Error("quarantine limit check failed", "err", err)
			return outcome{reply: smtpserver.ErrTempStore}
		}
	}
	raw, err := readAll(m.msg)
	if err != nil {
		srv.log.Error("quarantine failed: message not readable", "err", err)
		return outcome{reply: smtpserver.ErrTempStore}
	}
	q := store.QItem{
		Received: srv.now().UTC(), RemoteAddr: m.remote, Helo: m.helo, MailFrom: m.from, Recipients: m.rcpts,
		Check: check, Reason: reason, Raw: raw, Size: int64(len(raw)), State: store.Held,
		PackageID: outerPackageID(raw),
	}
	// Kept with its event in one transaction.
	var id int64
	err = srv.store.Update(ctx, func(tx store.Tx) error {
		var err error
		if id, err = tx.Quarantine(q); err != nil {
			return err
		}
		return srv.audit.Stage(tx, audit.Event{Kind: audit.Quarantined, Package: q.PackageID, Rule: check, Actor: m.remote,
			Detail: fmt.Sprintf("Q%d: %s", id, reason)})
	})
	if err != nil {
		srv.log.Error("quarantine failed", "err", err)
		return outcome{reply: smtpserver.ErrTempStore}
	}
	srv.audit.Kick()
	// Alerts are grouped: the first at once, those that follow within
	// quarantine.alert-interval in one summary (every one is audited).
	if srv.alerts.Add(check) {
		srv.log.Error("admin alert: package quarantined", "quarantine", id, "check", check, "reason", reason,
			"remote", m.remote, "package", q.PackageID)
	} else {
		srv.log.Warn("package quarantined (alert grouped)", "quarantine", id, "check", check, "remote", m.remote, "package", q.PackageID)
	}
	srv.metrics.Quarantined(check)
	return outcome{qid: id, reply: smtpserver.Reply(550, smtp.EnhancedCode{5, 7, 1}, fmt.Sprintf("Package refused and quarantined as Q%d at %s: %s", id, srv.cfg.Agency, reason))}
}

func outerPackageID(raw []byte) string {
	// Only the header section is read.
	h, err := textproto.ReadHeader(bufio.NewReader(io.LimitReader(bytes.NewReader(raw), 64<<10)))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(h.Get(envelope.PackageHeader))
}

// notAnEnvelopeForUs: the message is no PGP/MIME envelope at all, or
// not one encrypted to this gateway: nothing a partner would send.
func notAnEnvelopeForUs(err error) bool {
	return errors.Is(err, envelope.ErrMalformed) || errors.Is(err, envelope.ErrNotEncrypted) ||
		errors.Is(err, envelope.ErrNoKey) || errors.Is(err, envelope.ErrTruncated)
}

// admitQuarantine applies the quarantine's quota and per-source rate.
func (srv *Server) admitQuarantine(ctx context.Context, m received) error {
	held, err := srv.store.ListQuarantine(ctx, store.Held)
	if err != nil {
		return err
	}
	var used int64
	for _, q := range held {
		used += q.Size
	}
	var src netip.Addr
	if ap, err := netip.ParseAddrPort(m.remote); err == nil {
		src = ap.Addr()
	}
	return srv.qguard.Admit(src, m.msg.Size(), used)
}

// checkName is a short name for the failed envelope check.
func checkName(err error) string {
	for _, c := range []struct {
		err  error
		name string
	}{
		{envelope.ErrTampered, "tampered"}, {envelope.ErrNoIntegrity, "no-integrity"},
		{envelope.ErrSignerNotPinned, "signer-not-pinned"}, {envelope.ErrNotSigned, "not-signed"},
		{envelope.ErrBadSignature, "bad-signature"}, {envelope.ErrMarkingMismatch, "marking-mismatch"},
		{envelope.ErrLabelInvalid, "label-invalid"}, {envelope.ErrOutsideWindow, "outside-window"},
		{envelope.ErrNoKey, "not-for-us"}, {envelope.ErrNotEncrypted, "not-encrypted"},
		{envelope.ErrTruncated, "truncated"}, {envelope.ErrTooLarge, "too-large"},
		{envelope.ErrMalformed, "malformed"},
	} {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return "other"
}
