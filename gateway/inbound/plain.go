package inbound

// Partners without Conduit (directory envelope: pgp-mime) write standard
// RFC 3156 PGP/MIME (GnuPG, Kleopatra, Thunderbird, a commercial gateway).
// What they send is opened with envelope.OpenPlain and judged by the
// inbound policy like any package; they are sealed no receipt, and their
// signed reply (In-Reply-To or References naming a package) stops the
// acknowledgement clock a receipt would have stopped.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-message/textproto"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/marking"
	"github.com/conduit-gateway/conduit/policy"
)

// plainFor reports whether an agency speaks standard PGP/MIME only.
func (srv *Server) plainFor(agency string) bool {
	a := srv.cfg.Directory.Agency(agency)
	return a != nil && a.PlainPGPMIME()
}

// errPlainFromConduitPartner: a standard PGP/MIME message signed by a
// partner the directory says speaks Conduit envelopes.
var errPlainFromConduitPartner = &envelope.CheckError{Check: envelope.ErrMalformed,
	Detail: "a plain PGP/MIME message from a partner that speaks Conduit envelopes (its directory entry has no envelope: pgp-mime)"}

// openReceived opens a received message: a Conduit envelope with
// envelope.Open, a standard PGP/MIME message (no Conduit-Package outside)
// with envelope.OpenPlain, accepted only from a partner whose directory
// entry says pgp-mime.
func (srv *Server) openReceived(ctx context.Context, w io.Writer, msg message, p envelope.OpenParams) (*envelope.Opened, error) {
	hr, err := msg.Reader()
	if err != nil {
		return nil, err
	}
	h, herr := textproto.ReadHeader(bufio.NewReader(io.LimitReader(hr, 256<<10)))
	body, err := msg.Reader()
	if err != nil {
		return nil, err
	}
	if herr != nil || !envelope.IsPlain(h) {
		return envelope.Open(ctx, w, body, p)
	}
	legacy := srv.cfg.Legacy()
	p.SubjectMarking = func(subject string) (envelope.Label, bool, error) {
		var l envelope.Label
		m, found, err := marking.FromSubject(subject, legacy)
		if err != nil || !found {
			return l, found, err
		}
		return l, true, m.Apply(&l)
	}
	// Opened into a buffer first: nothing reaches w before the signer is
	// known to be a plain PGP/MIME partner.
	var buf bytes.Buffer
	o, err := envelope.OpenPlain(ctx, &buf, body, p)
	if err != nil {
		return nil, err
	}
	if !srv.plainFor(o.Signer.Agency) {
		return nil, errPlainFromConduitPartner
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return nil, err
	}
	return o, nil
}

// ackByReply stops the acknowledgement clocks a plain PGP/MIME partner's
// signed reply answers: a package id named in its signed In-Reply-To or
// References (the outer Message-ID of what we sent is <package-id@host>).
func (srv *Server) ackByReply(ctx context.Context, o *envelope.Opened) {
	if !o.Plain {
		return
	}
	for _, ref := range o.References {
		pkg, _, ok := strings.Cut(strings.Trim(ref, "<>"), "@")
		if !ok || !strings.HasPrefix(pkg, "cdt-") {
			continue
		}
		var n int
		ev := audit.Event{Kind: audit.Receipt, Package: pkg, Destination: o.Signer.Agency, Actor: o.Signer.Agency,
			Rule: "imminent-risk-escalation", Detail: fmt.Sprintf("acknowledged by a signed PGP/MIME reply (signed by %s); no receipt expected from this partner", o.Signer.Fingerprint)}
		err := srv.store.Update(ctx, func(tx store.Tx) error {
			var err error
			if n, err = tx.CompleteDeadlines(pkg, policy.DeadlineAcknowledge, o.Signer.Agency, srv.now(), "signed reply from "+o.Signer.Fingerprint); err != nil || n == 0 {
				return err
			}
			return srv.audit.Stage(tx, ev)
		})
		if err != nil {
			srv.log.Error("acknowledgement by reply not recorded", "package", pkg, "agency", o.Signer.Agency, "err", err)
			continue
		}
		if n > 0 {
			srv.audit.Kick()
			srv.log.Info("immediate escalation acknowledged by a signed reply", "package", pkg, "agency", o.Signer.Agency)
		}
	}
}
