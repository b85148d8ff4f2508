package gateway

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// deliver hands an opened package to a local mailbox: into its Maildir,
// or to the agency's mail store by LMTP, as the config says.
func (g *Gateway) deliver(ctx context.Context, mailbox, originator, pkgID string, extraHeader, msg []byte) error {
	if g.cfg.Delivery.LMTP != "" {
		return g.deliverLMTP(ctx, mailbox, extraHeader, msg)
	}
	return g.deliverMaildir(mailbox, originator, pkgID, extraHeader, msg)
}

// deliverLMTP delivers one message to one mailbox of the agency's mail
// store (RFC 2033). The store's per-recipient reply is the outcome: a 4xx
// is a temporary failure (the partner retries), a 5xx is reported as one
// too, since the package is already verified and must not be lost for a
// local misconfiguration. Unlike the Maildir, LMTP cannot tell a repeated
// delivery after a crash between the store's 250 and the replay record;
// the delivered message's Message-ID and Conduit-Package let the store
// or its user drop the duplicate.
func (g *Gateway) deliverLMTP(ctx context.Context, mailbox string, extraHeader, msg []byte) error {
	network, addr := "tcp", g.cfg.Delivery.LMTP
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", p
	}
	d := net.Dialer{Timeout: 20 * time.Second}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return fmt.Errorf("lmtp: %w", err)
	}
	c := smtp.NewClientLMTP(conn)
	defer c.Close()
	c.CommandTimeout = time.Minute
	c.SubmissionTimeout = 5 * time.Minute
	if err := c.Hello(g.hostname()); err != nil {
		return fmt.Errorf("lmtp: %w", err)
	}
	if err := c.Mail("", nil); err != nil {
		return fmt.Errorf("lmtp: %w", err)
	}
	if err := c.Rcpt(mailbox, nil); err != nil {
		return fmt.Errorf("lmtp: %w", err)
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
		return fmt.Errorf("lmtp %s: %w", mailbox, err)
	}
	return c.Quit()
}
