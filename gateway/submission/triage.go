package submission

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/keyring"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/policy"
)

// Triage by reply (triage-72h; MoU 6.1 prison and probation
// responsibilities: corruption reports "analysed and triaged at a local
// level within 72 hours"). A member of the receiving agency's staff
// records the triage of a delivered report by replying to it, from their
// mail client through this gateway's submission port (STARTTLS, AUTH), to
// the gateway's own address, the triage address that the delivered copy's
// Conduit-Triage header names. The reply is not a package: it goes nowhere
// and its content is read only as far as its header, then discarded, never
// stored or logged. Its package is found by
//
//  1. a Conduit-Package header, or a package id (cdt-...) in the subject;
//  2. otherwise its In-Reply-To, the Message-ID of the delivered copy
//     (the replay cache keeps it), or the last of its References.
//
// Only an authenticated user of this gateway may do so, and the config
// holds only this agency's staff (each user's address must be one of its
// mailboxes): so only the agency that received the package can mark it. The
// clock is stopped and the triage audited with the user as its actor.

// packageIDRE finds a package id: "cdt-" and 24 base32 characters
// (envelope.NewPackageID).
var packageIDRE = regexp.MustCompile(`\bcdt-[a-z2-7]{24}\b`)

// triageAddress is where staff reply to record a triage: the gateway's
// own address.
func (srv *Server) triageAddress() string { return keyring.Address(srv.keys.Identity()) }

// isTriageAddress reports whether a recipient is the triage address.
func (srv *Server) isTriageAddress(addr string) bool {
	return strings.EqualFold(strings.TrimSpace(addr), srv.triageAddress())
}

// triageReply takes a reply sent to the triage address and stops the
// triage clock of the package it answers.
func (srv *Server) triageReply(ctx context.Context, user *config.User, r io.Reader) error {
	// Only the header is read; the rest is discarded unread (go-smtp needs
	// the data consumed).
	defer io.Copy(io.Discard, r)
	hdr, err := textproto.ReadHeader(bufio.NewReader(&smtpserver.StrictCRLF{R: r}))
	if err != nil {
		return smtpserver.Reply(554, smtp.EnhancedCode{5, 6, 0}, "Triage reply refused: its header cannot be read")
	}
	pkgs, err := srv.repliedPackages(ctx, hdr)
	if err != nil {
		srv.log.Error("triage reply: package lookup failed", "user", user.Name, "err", err)
		return smtpserver.ErrTempStore
	}
	if len(pkgs) == 0 {
		return smtpserver.Reply(554, smtp.EnhancedCode{5, 6, 0}, fmt.Sprintf(
			"Triage reply refused: it names no package received by %s. Reply to the delivered package itself (In-Reply-To), or put its id (cdt-...) in the subject", srv.cfg.Agency))
	}
	var done []string
	for _, pkg := range pkgs {
		ev := audit.Event{Kind: audit.Triaged, Package: pkg, Rule: "triage-72h", Actor: user.Address,
			Detail: "triaged: recorded by a reply to the triage address"}
		var n int
		err := srv.store.Update(ctx, func(tx store.Tx) error {
			var err error
			if n, err = tx.CompleteDeadlines(pkg, policy.DeadlineTriage, "", srv.now(), user.Address+": triaged by reply"); err != nil || n == 0 {
				return err
			}
			return srv.audit.Stage(tx, ev)
		})
		if err != nil {
			srv.log.Error("triage reply: clock not stopped", "package", pkg, "err", err)
			return smtpserver.ErrTempStore
		}
		if n > 0 {
			srv.audit.Kick()
			done = append(done, pkg)
			srv.log.Info("triage recorded by reply", "package", pkg, "user", user.Name)
		}
	}
	if len(done) == 0 {
		return smtpserver.Reply(550, smtp.EnhancedCode{5, 7, 1}, fmt.Sprintf(
			"Triage reply refused: package %s has no open triage clock at %s (already triaged, or not a report received here)", strings.Join(pkgs, ", "), srv.cfg.Agency))
	}
	return smtpserver.Reply(250, smtp.EnhancedCode{2, 0, 0}, fmt.Sprintf("Triage of package %s recorded; the 72-hour clock is stopped. Your reply was not kept or sent on", strings.Join(done, ", ")))
}

// repliedPackages finds the packages a reply answers (see above).
func (srv *Server) repliedPackages(ctx context.Context, h textproto.Header) ([]string, error) {
	ids, parent := replyRefs(h)
	if len(ids) > 0 || parent == "" {
		return ids, nil
	}
	return srv.store.PackagesByMessageID(ctx, parent)
}

// replyRefs reads what a reply says it answers: the package ids it names
// (Conduit-Package, the subject), or else the Message-ID it replies to.
func replyRefs(h textproto.Header) (ids []string, parent string) {
	add := func(id string) {
		for _, x := range ids {
			if x == id {
				return
			}
		}
		ids = append(ids, id)
	}
	for _, v := range h.Values(envelope.PackageHeader) {
		for _, id := range packageIDRE.FindAllString(strings.ToLower(v), -1) {
			add(id)
		}
	}
	for _, id := range packageIDRE.FindAllString(strings.ToLower(h.Get("Subject")), -1) {
		add(id)
	}
	if len(ids) > 0 {
		return ids, ""
	}
	parent = strings.TrimSpace(h.Get("In-Reply-To"))
	if parent == "" {
		if refs := strings.Fields(h.Get("References")); len(refs) > 0 {
			parent = refs[len(refs)-1]
		}
	}
	return nil, parent
}
