package submission

import (
	"bytes"
	"context"
	"io"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
)

// deliverBounce delivers a bounce of the agency's own mail server (a null
// sender, from the relay account) to the agency's mailboxes it is
// addressed to: the sender of a package the gateway refused after the mail
// server had accepted it learns why in their mailbox. It never leaves the
// agency, and its content is not logged.
func (srv *Server) deliverBounce(ctx context.Context, u *config.User, rcpts []string, r io.Reader) error {
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(&smtpserver.StrictCRLF{R: r}, srv.cfg.Limits.MessageBytes+1))
	if err != nil {
		io.Copy(io.Discard, r)
		return smtpserver.DataErr(err)
	}
	if n > srv.cfg.Limits.MessageBytes {
		io.Copy(io.Discard, r)
		return smtpserver.ErrTooBig
	}
	id := "bounce-" + envelope.NewPackageID()
	for _, rc := range rcpts {
		if err := srv.deliver.Deliver(ctx, rc, srv.cfg.Agency, id, []byte("Conduit-Delivered-To: "+rc+"\r\n"), buf.Bytes()); err != nil {
			srv.log.Error("bounce not delivered; the mail server retries", "user", u.Name, "mailbox", rc, "err", err)
			return smtpserver.Reply(451, smtp.EnhancedCode{4, 3, 0}, "Temporary failure delivering the bounce to "+rc+"; try again shortly")
		}
	}
	srv.audit.Append(ctx, audit.Event{Kind: audit.Delivered, Package: id, Actor: u.Name,
		Detail: "bounce from the agency's mail server to " + strings.Join(rcpts, ", ")})
	srv.log.Info("bounce delivered", "user", u.Name, "mailboxes", rcpts, "id", id)
	return smtpserver.Reply(250, smtp.EnhancedCode{2, 0, 0}, "Bounce delivered to "+strings.Join(rcpts, ", "))
}
