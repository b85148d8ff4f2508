package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
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
				text, before, err := c.transaction(ctx, "a@conduit.example", rcpts, bytesMessage([]byte(msg)), time.Minute)
				if err != nil || before {
					t.Fatalf("transaction %d: %v (before=%v)\n%s", i, err, before, pf.Log())
				}
				f := strings.Fields(text)
				ids = append(ids, f[len(f)-1])
			}
			// A message of several BDAT pieces (pipelined, when Postfix
			// offers it), or DATA streamed and dot-stuffed as it goes.
			big := bigMessage()
			text, before, err := c.transaction(ctx, "a@conduit.example", []string{"b@partner.example"}, bytesMessage(big), time.Minute)
			if err != nil || before {
				t.Fatalf("large transaction: %v (before=%v)\n%s", err, before, pf.Log())
			}
			f := strings.Fields(text)
			bigID := f[len(f)-1]
			tcheck(t, c.Quit(5*time.Second), "QUIT")
			// A message that fails to read part way leaves nothing in
			// Postfix's queue: its session is cut before its end.
			conn, err = net.Dial("tcp", pf.SMTP)
			tcheck(t, err, "dial")
			c, err = dialWire(ctx, conn, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}, "relay.example", time.Minute)
			tcheck(t, err, "STARTTLS again")
			cut := message{size: int64(len(big)), open: func() (io.ReadCloser, error) {
				return io.NopCloser(io.MultiReader(bytes.NewReader(big[:len(big)/2]), iotest.ErrReader(errors.New("the store failed")))), nil
			}}
			before0 := len(queuedFor(pf.Queue(ctx), "b@partner.example"))
			if _, _, err := c.transaction(ctx, "a@conduit.example", []string{"b@partner.example"}, cut, time.Minute); err == nil || !strings.Contains(err.Error(), "the store failed") {
				t.Fatalf("a message cut short: %v", err)
			}
			q := pf.Queue(ctx)
			if n := len(queuedFor(q, "b@partner.example")); n != before0 {
				t.Errorf("Postfix queued %d messages for b@ after a message cut short, had %d:\n%s", n, before0, q)
			}
			out, err := exec.CommandContext(ctx, "postcat", "-c", pf.Conf, "-bq", bigID).CombinedOutput()
			if err != nil || strings.Count(string(out), "\nLINE-") != bigLines || !strings.Contains(string(out), "\n.LAST-LINE\n") {
				t.Errorf("postcat %s: %v; %d of %d lines", bigID, err, strings.Count(string(out), "\nLINE-"), bigLines)
			}
			for _, id := range ids {
				if !strings.Contains(q, id) {
					t.Errorf("queue ID %s is not in Postfix's queue:\n%s", id, q)
				}
			}
			// The message as Postfix stored it: whole, its dot line
			// unstuffed (DATA) or never stuffed (BDAT).
			out, err = exec.CommandContext(ctx, "postcat", "-c", pf.Conf, "-bq", ids[0]).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "\n.a dot line\n") || !strings.Contains(string(out), "WIRE-MARKER") {
				t.Errorf("postcat %s: %v\n%s", ids[0], err, out)
			}
			if !strings.Contains(q, "c@partner.example") {
				t.Errorf("the second recipient is not queued:\n%s", q)
			}
		})
	}
}

// bigLines is how many numbered lines bigMessage holds: over three BDAT
// pieces.
const bigLines = 3*bdatPiece/80 + 100

// bigMessage is a message of several BDAT pieces whose last line starts
// with a dot.
func bigMessage() []byte {
	var b bytes.Buffer
	b.WriteString("From: <a@conduit.example>\r\nTo: <b@partner.example>\r\nSubject: large\r\n\r\n")
	for i := range bigLines {
		fmt.Fprintf(&b, "LINE-%06d %s\r\n", i, strings.Repeat("x", 66))
	}
	b.WriteString(".LAST-LINE\r\n")
	return b.Bytes()
}

// queuedFor is the queue IDs of the messages a Postfix queue listing
// (postqueue -p) shows for addr. Counted by ID, not by line: a message
// that moves between Postfix's queues while they are listed can be shown
// twice in one listing.
func queuedFor(listing, addr string) map[string]bool {
	ids := map[string]bool{}
	id := ""
	for line := range strings.Lines(listing) {
		switch {
		case line == "" || line[0] == '-' || line[0] == ' ' || line[0] == '\t' || line[0] == '(' || line[0] == '\n':
			// the heading, the totals, an entry's later lines, blank lines
		default:
			id = strings.TrimRight(strings.Fields(line)[0], "*!")
		}
		if id != "" && strings.Contains(line, addr) {
			ids[id] = true
		}
		if strings.TrimSpace(line) == "" {
			id = ""
		}
	}
	return ids
}
