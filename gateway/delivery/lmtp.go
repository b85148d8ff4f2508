// Package delivery is in charge of handing opened packages, notices and
// alerts to the agency's own mailboxes: into a Maildir (each step synced,
// under a name that makes a repeated delivery a no-op), or to the agency's
// mail store by LMTP (RFC 2033).
package delivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// Deliverer delivers to the agency's mailboxes, by LMTP when an LMTP
// address is set, else into Maildirs under a root folder.
type Deliverer struct {
	maildir  string
	lmtp     string // "host:port" or "unix:/path"
	hostname string // the name given in LHLO
	// returnPath gives the LMTP MAIL FROM, the delivered copy's
	// Return-Path: this gateway's own address, so that anything the mail
	// store sends back (a vacation reply, a filter's bounce) comes to the
	// gateway and never goes out to the originator by other means.
	returnPath func() string

	// mailboxes remembers, per mailbox folder, that its tmp/new/cur
	// exist and what its cur/ holds (maildir.go), so that a delivery
	// costs a few lookups by name rather than a read of the whole folder.
	mailboxes mailboxCache
}

// RefusedError is a mailbox the agency's mail store refused for good (an
// LMTP 5xx, such as Dovecot's "550 5.1.1 User doesn't exist"): delivering
// it again cannot help, so it is a permanent failure for that mailbox.
type RefusedError struct {
	Mailbox string
	Reply   *smtp.SMTPError
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the mail store refused %s permanently: %d %d.%d.%d %s", e.Mailbox,
		e.Reply.Code, e.Reply.EnhancedCode[0], e.Reply.EnhancedCode[1], e.Reply.EnhancedCode[2], e.Reply.Message)
}

// SetReturnPath sets where the address of the delivered copies' Return-Path
// comes from (called once, before the first delivery).
func (d *Deliverer) SetReturnPath(f func() string) { d.returnPath = f }

// New returns a deliverer: into Maildirs under maildir, or, when lmtp is
// set, to the mail store listening there.
func New(maildir, lmtp, hostname string) *Deliverer {
	return &Deliverer{maildir: maildir, lmtp: lmtp, hostname: hostname}
}

// Maildir is the Maildir root ("" when delivering by LMTP).
func (d *Deliverer) Maildir() string {
	if d.lmtp != "" {
		return ""
	}
	return d.maildir
}

// Deliver hands an opened package to a local mailbox: into its Maildir,
// or to the agency's mail store by LMTP.
func (d *Deliverer) Deliver(ctx context.Context, mailbox, originator, pkgID string, extraHeader, msg []byte) error {
	if d.lmtp != "" {
		return d.deliverLMTP(ctx, mailbox, extraHeader, msg)
	}
	return d.deliverMaildir(mailbox, originator, pkgID, extraHeader, msg)
}

// deliverLMTP delivers one message to one mailbox of the agency's mail
// store (RFC 2033). The store's per-recipient reply is the outcome: a 4xx
// is a temporary failure (the partner retries), a 5xx is reported as one
// too, unless the mail store refuses the mailbox for good (5xx): that is a
// *RefusedError, a permanent failure for that mailbox, which the caller
// reports (the package itself is kept). Unlike the Maildir, LMTP cannot tell a repeated
// delivery after a crash between the store's 250 and the replay record;
// the delivered message's Message-ID and Conduit-Package let the store
// or its user drop the duplicate.
func (d *Deliverer) deliverLMTP(ctx context.Context, mailbox string, extraHeader, msg []byte) error {
	network, addr := "tcp", d.lmtp
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", p
	}
	dialer := net.Dialer{Timeout: 20 * time.Second}
	conn, err := dialer.DialContext(ctx, network, addr)
	if err != nil {
		return fmt.Errorf("lmtp: %w", err)
	}
	c := smtp.NewClientLMTP(conn)
	defer c.Close()
	c.CommandTimeout = time.Minute
	c.SubmissionTimeout = 5 * time.Minute
	if err := c.Hello(d.hostname); err != nil {
		return fmt.Errorf("lmtp: %w", err)
	}
	from := ""
	if d.returnPath != nil {
		from = d.returnPath()
	}
	if err := c.Mail(from, nil); err != nil {
		return fmt.Errorf("lmtp: %w", err)
	}
	if err := c.Rcpt(mailbox, nil); err != nil {
		return refused(mailbox, fmt.Errorf("lmtp: %w", err))
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("lmtp: %w", err)
	}
	if _, err := w.Write(append(bytes.Clone(extraHeader), msg...)); err != nil {
		return fmt.Errorf("lmtp: %w", err)
	}
	// One recipient, so the per-recipient reply is the outcome.
	if _, err := w.CloseWithLMTPResponse(); err != nil {
		return refused(mailbox, fmt.Errorf("lmtp %s: %w", mailbox, err))
	}
	return c.Quit()
}

// refused makes a 5xx reply about the mailbox a *RefusedError; anything
// else stays a temporary failure.
func refused(mailbox string, err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 500 && se.Code < 600 {
		return &RefusedError{Mailbox: mailbox, Reply: se}
	}
	return err
}
