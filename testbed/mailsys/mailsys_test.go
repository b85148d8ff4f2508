package mailsys

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

func requireTools(t *testing.T) { RequireTools(t, os.Getenv("CI") == "true") }

// Dovecot takes a message by LMTP for a user it knows, refuses one it
// does not with a permanent error, and serves the message over IMAP.
func TestDovecotLMTPAndIMAP(t *testing.T) {
	requireTools(t)
	ctx := context.Background()
	d, err := StartDovecot(ctx, "postmaster@hmp-northgate.example", map[string]string{"intake@hmp-northgate.example": "pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	conn, err := net.Dial("tcp", d.LMTP)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClientLMTP(conn)
	defer c.Close()
	if err := c.Hello("gw.localhost"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("sender@northshire-pio.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("intake@hmp-northgate.example", nil); err != nil {
		t.Fatal(err)
	}
	err = c.Rcpt("nobody@hmp-northgate.example", nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code/100 != 5 {
		t.Fatalf("unknown user: %v, want a permanent refusal", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: hello\r\n\r\nbody text\r\n"))
	if _, err := w.CloseWithLMTPResponse(); err != nil {
		t.Fatal(err)
	}
	msgs, err := d.Fetch(ctx, "intake@hmp-northgate.example", "pw")
	if err != nil {
		t.Fatalf("%v\n%s", err, d.Log())
	}
	if len(msgs) != 1 || !bytes.Contains(msgs[0], []byte("body text")) || !strings.Contains(string(msgs[0]), "Return-Path: <sender@northshire-pio.example>") {
		t.Fatalf("IMAP gave %q", msgs)
	}
}
