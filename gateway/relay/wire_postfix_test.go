package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/testbed/mailsys"
)

// A partner's mail server is often Postfix (a partner without Conduit
// receives standard PGP/MIME from the relay). The relay's client sends to
// a real Postfix that demands STARTTLS: pipelined with BDAT when Postfix
// offers PIPELINING and CHUNKING, one command at a time with DATA when it
// is told not to. Postfix queues each message (its relay host is not
// there), and its queue shows it whole.
func TestWireToPostfix(t *testing.T) {
	mailsys.RequireTools(t, os.Getenv("CI") == "true")
	ca := newTestCA(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	tcheck(t, ca.WriteFiles(filepath.Join(dir, "mx"), "partner.example", []string{"127.0.0.1"}, time.Now()), "certificate")
	caFile := filepath.Join(dir, "ca.pem")
	tcheck(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o644), "CA file")
	nowhere, err := mailsys.FreeAddr()
	tcheck(t, err, "address")
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, tc := range []struct {
		name    string
		discard string
	}{
		{"pipelining and chunking", ""},
		{"neither offered", "pipelining, chunking"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			pf, err := mailsys.StartPostfix(ctx, mailsys.PostfixOptions{Hostname: "mx.partner.example", Domain: "partner.example",
				Relayhost: nowhere, CAFile: caFile, TLSName: "127.0.0.1", RelayUser: "x", RelayPassword: "x",
				SMTPDCert: filepath.Join(dir, "mx.crt"), SMTPDKey: filepath.Join(dir, "mx.key"), DiscardEHLO: tc.discard})
			tcheck(t, err, "postfix")
			defer pf.Close()
			conn, err := net.Dial("tcp", pf.SMTP)
			tcheck(t, err, "dial")
			c, err := dialWire(ctx, conn, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}, "relay.example", time.Minute)
			if err != nil {
				t.Fatalf("STARTTLS with Postfix: %v\n%s", err, pf.Log())
			}
			defer c.Close()
			if got := c.has("PIPELINING") && c.has("CHUNKING"); got != (tc.discard == "") {
				t.Fatalf("Postfix offers %v", c.ext)
			}
			msg := "From: <a@conduit.example>\r\nTo: <b@partner.example>\r\nSubject: relay to Postfix\r\n\r\n.a dot line\r\nWIRE-MARKER\r\n"
			var ids []string
			for i := 0; i < 3; i++ {
				rcpts := []string{"b@partner.example"}
				if i == 2 {
					rcpts = append(rcpts, "c@partner.example")
				}
				text, before, err := c.transaction(ctx, "a@conduit.example", rcpts, []byte(msg), time.Minute)
				if err != nil || before {
					t.Fatalf("transaction %d: %v (before=%v)\n%s", i, err, before, pf.Log())
				}
				f := strings.Fields(text)
				ids = append(ids, f[len(f)-1])
			}
			tcheck(t, c.Quit(5*time.Second), "QUIT")
			q := pf.Queue(ctx)
			for _, id := range ids {
				if !strings.Contains(q, id) {
					t.Errorf("queue ID %s is not in Postfix's queue:\n%s", id, q)
				}
			}
			// The message as Postfix stored it: whole, its dot line
			// unstuffed (DATA) or never stuffed (BDAT).
			out, err := exec.CommandContext(ctx, "postcat", "-c", pf.Conf, "-bq", ids[0]).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "\n.a dot line\n") || !strings.Contains(string(out), "WIRE-MARKER") {
				t.Errorf("postcat %s: %v\n%s", ids[0], err, out)
			}
			if !strings.Contains(q, "c@partner.example") {
				t.Errorf("the second recipient is not queued:\n%s", q)
			}
		})
	}
}
