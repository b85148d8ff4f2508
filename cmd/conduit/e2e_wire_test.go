package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/testbed"
)

// wireTap is a TLS-capable SMTP peer holding the prison's real certificate:
// it stands on the prison's address and keeps what the sending gateway
// puts on the wire.
type wireTap struct {
	mu   sync.Mutex
	msgs [][]byte
	tls  []uint16
}

func (w *wireTap) NewSession(c *smtp.Conn) (smtp.Session, error) { return &tapSession{w, c}, nil }

type tapSession struct {
	w *wireTap
	c *smtp.Conn
}

func (s *tapSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *tapSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *tapSession) Reset()                               {}
func (s *tapSession) Logout() error                        { return nil }
func (s *tapSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	st, _ := s.c.TLSConnectionState()
	s.w.mu.Lock()
	s.w.msgs = append(s.w.msgs, b)
	s.w.tls = append(s.w.tls, st.Version)
	s.w.mu.Unlock()
	return nil
}

func (w *wireTap) seen() ([][]byte, []uint16) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([][]byte(nil), w.msgs...), append([]uint16(nil), w.tls...)
}

// TestE2EWireCarriesOnlyCiphertext shows what a relayed package reveals on
// the wire, inside TLS: a PGP/MIME encrypted envelope whose outer headers
// carry the marking and an opaque package id, and nothing of the content,
// the real subject, the label's details or the routing facts (security
// invariant 1).
func TestE2EWireCarriesOnlyCiphertext(t *testing.T) {
	b, err := testbed.Create(t.TempDir(), conduitBin, testbed.Options{Policy: e2ePolicy(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.StopAll(); noPlaintextAtRest(t, b, e2eBody) })
	ng := b.Nodes["hmp-northgate"]
	cert, err := tls.LoadX509KeyPair(filepath.Join(ng.Dir, "gw.crt"), filepath.Join(ng.Dir, "gw.key"))
	if err != nil {
		t.Fatal(err)
	}
	tap := &wireTap{}
	srv := smtp.NewServer(tap)
	srv.Domain = "tap.localhost"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	l, err := net.Listen("tcp", ng.Inbound)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	ctx := context.Background()
	if err := b.Start(ctx, "northshire-pio"); err != nil {
		t.Fatal(err)
	}
	const subject = "Conveyance on wing C by an officer"
	resp, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(e2eLabel, subject,
		"Conduit-Topic: security", "Conduit-Subject: role=staff; establishment=hmp-northgate"))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	pkg := packageOf(t, resp)
	var msgs [][]byte
	var versions []uint16
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool { msgs, versions = tap.seen(); return len(msgs) > 0 }) {
		t.Fatalf("nothing reached the wire:\n%s", b.Tail("northshire-pio", 10))
	}
	wire := msgs[0]
	if versions[0] < tls.VersionTLS12 {
		t.Errorf("sent over TLS version %#x; want 1.2 or later", versions[0])
	}
	hdr, body, _ := bytes.Cut(wire, []byte("\r\n\r\n"))
	for _, want := range []string{
		"Content-Type: multipart/encrypted", `protocol="application/pgp-encrypted"`,
		"SIO-Label: marking=OFFICIAL-SENSITIVE", "Conduit-Package: " + pkg,
		"Subject: [OFFICIAL-SENSITIVE] Conduit package " + pkg,
	} {
		if !bytes.Contains(hdr, []byte(want)) {
			t.Errorf("the outer header lacks %q:\n%s", want, hdr)
		}
	}
	if !bytes.Contains(body, []byte("-----BEGIN PGP MESSAGE-----")) {
		t.Errorf("the body is not an OpenPGP message")
	}
	for _, secret := range []string{e2eBody, subject, "Handling-Label", "NP-2026-0001", "purpose=", "Conduit-Subject", "role=staff", "Conduit-Topic", "pio@northshire-pio.example"} {
		if bytes.Contains(wire, []byte(secret)) {
			t.Errorf("the wire reveals %q", secret)
		}
	}
	t.Logf("on the wire (TLS %#x), outer header:\n%s", versions[0], strings.TrimSpace(string(hdr)))
}
