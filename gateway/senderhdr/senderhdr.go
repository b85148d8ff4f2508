// Package senderhdr is in charge of what a submitted message's header
// section may claim, so that the gateway vouches only for what it
// checked: the author is the authenticated member of staff, a reply goes
// only to a mailbox in the agency directory, and no header that only a
// gateway may write (Conduit-*) comes from a sender.
//
// Postfix's smtpd_sender_login_maps with reject_sender_login_mismatch and
// mox's submission checks refuse a From that is not the account's, rather
// than rewrite it: a rewritten From would silently change what the author
// meant to say, and the author's mail client would show one thing while
// the receiver sees another. This package does the same, and sets From
// only when it is missing.
package senderhdr

import (
	"fmt"
	"net/mail"
	"strings"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"
)

// Prefix is the prefix of the header fields only a gateway writes.
const Prefix = "Conduit-"

// IsGatewayField reports whether a field name is one only a gateway may
// write (case-insensitive, RFC 5322 section 1.2.2).
func IsGatewayField(name string) bool {
	return len(name) >= len(Prefix) && strings.EqualFold(name[:len(Prefix)], Prefix)
}

// StripGatewayFields removes every Conduit-* field except those named in
// keep, and returns the names it removed (for the log: names only, never
// values).
func StripGatewayFields(h *textproto.Header, keep ...string) []string {
	var removed []string
	for f := h.Fields(); f.Next(); {
		k := f.Key()
		if !IsGatewayField(k) {
			continue
		}
		kept := false
		for _, n := range keep {
			if strings.EqualFold(k, n) {
				kept = true
				break
			}
		}
		if !kept {
			removed = append(removed, k)
			f.Del()
		}
	}
	return removed
}

// Rules are what a submission's header section is checked against.
type Rules struct {
	// Address is the authenticated account's own mailbox.
	Address string
	// InDirectory reports whether an address is a mailbox in the agency
	// directory (a Reply-To may point only there).
	InDirectory func(addr string) bool
}

func refuse(code int, ec smtp.EnhancedCode, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: msg}
}

// CheckSubmission checks and fixes a submitted header section in place:
//   - every Conduit-* field is removed (the routing facts a sender may
//     give in Conduit-Risk and the like are read before this is called);
//   - From must name the account's address alone (display names are the
//     sender's own), and is set to it when missing; Sender, when present,
//     must be the account's address (RFC 5322 section 3.6.2);
//   - every Reply-To address must be a mailbox in the directory or the
//     account's own;
//   - Date is removed: the signed date inside the envelope, which the
//     receiver checks against its clock window, is this gateway's clock,
//     never the sender's.
//
// A refusal is an RFC 3463 553 5.7.1 naming the field.
func CheckSubmission(h *textproto.Header, r Rules) (removed []string, err error) {
	removed = StripGatewayFields(h)
	own := func(a *mail.Address) bool { return strings.EqualFold(a.Address, r.Address) }
	froms := h.Values("From")
	switch {
	case len(froms) == 0:
		h.Set("From", "<"+r.Address+">")
	case len(froms) > 1:
		return removed, refuse(553, smtp.EnhancedCode{5, 7, 1}, "The message has more than one From: header; give one, with your own address "+r.Address)
	default:
		list, perr := mail.ParseAddressList(froms[0])
		if perr != nil {
			return removed, refuse(553, smtp.EnhancedCode{5, 7, 1}, fmt.Sprintf("The From: header cannot be read (%v); it must be your own address %s", perr, r.Address))
		}
		if len(list) != 1 || !own(list[0]) {
			return removed, refuse(553, smtp.EnhancedCode{5, 7, 1}, "The From: header must be your own address "+r.Address+" alone; this gateway does not send in anyone else's name")
		}
	}
	for _, v := range h.Values("Sender") {
		a, perr := mail.ParseAddress(v)
		if perr != nil || !own(a) {
			return removed, refuse(553, smtp.EnhancedCode{5, 7, 1}, "The Sender: header must be your own address "+r.Address+", or left out")
		}
	}
	for _, v := range h.Values("Reply-To") {
		list, perr := mail.ParseAddressList(v)
		if perr != nil {
			return removed, refuse(553, smtp.EnhancedCode{5, 7, 1}, fmt.Sprintf("The Reply-To: header cannot be read (%v)", perr))
		}
		for _, a := range list {
			if !own(a) && (r.InDirectory == nil || !r.InDirectory(a.Address)) {
				return removed, refuse(553, smtp.EnhancedCode{5, 7, 1}, "The Reply-To: header names "+a.Address+", which is not a mailbox in the agency directory; replies may go only to partner mailboxes or to you")
			}
		}
	}
	h.Del("Date")
	return removed, nil
}
