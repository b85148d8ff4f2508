package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/pki"
)

// The relay account of the agency's mail server may log in by its TLS
// client certificate (SASL EXTERNAL), send for any mailbox of its agency
// (and only those), and deliver its own bounces to the agency's mailboxes.
func TestRelayAccountByClientCertificate(t *testing.T) {
	root := t.TempDir()
	ca, err := pki.NewCA("Agencies' test CA", time.Now())
	tcheck(t, err, "CA")
	caKey, err := ca.KeyPEM()
	tcheck(t, err, "CA key")
	tcheck(t, os.WriteFile(filepath.Join(root, "ca.crt"), ca.PEM, 0o644), "ca.crt")
	tcheck(t, os.WriteFile(filepath.Join(root, "ca.key"), caKey, 0o600), "ca.key")
	pio := &initAgency{id: "northshire-pio", args: []string{"--kind", "pio", "--serves", "hmp-northgate",
		"--mailbox", "pio@northshire-pio.example", "--mailbox", "analyst=analyst@northshire-pio.example"}}
	prison := &initAgency{id: "hmp-northgate", args: []string{"--kind", "prison", "--region", "north-east",
		"--mailbox", "intake@hmp-northgate.example", "--mailbox", "governing-governor=governor@hmp-northgate.example"}}
	initFolder(t, root, pio)
	initFolder(t, root, prison)
	addPartner(t, pio, prison)
	cfg := filepath.Join(pio.dir, "conduit.yaml")
	c, err := os.ReadFile(cfg)
	tcheck(t, err, "config")
	c = append(c, "  - {name: mta, address: pio@northshire-pio.example, relay: true, client-cert: mail.northshire-pio.example}\n"...)
	tcheck(t, os.WriteFile(cfg, c, 0o640), "config")
	serveProcess(t, cfg, pio.submission)

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	clientCert := func(cn string) tls.Certificate {
		key, keyPEM, err := pki.NewKey()
		tcheck(t, err, "key")
		certPEM, err := ca.Sign(key.Public(), cn, []string{cn}, time.Now(), time.Hour)
		tcheck(t, err, "sign")
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		tcheck(t, err, "pair")
		return pair
	}
	dial := func(cert tls.Certificate) *smtp.Client {
		t.Helper()
		cl, err := smtp.DialStartTLS(pio.submission, &tls.Config{RootCAs: roots, ServerName: "localhost",
			Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		tcheck(t, err, "dial")
		t.Cleanup(func() { cl.Close() })
		tcheck(t, cl.Hello("mail.northshire-pio.example"), "EHLO")
		return cl
	}

	// A certificate no relay account names gets no EXTERNAL.
	other := dial(clientCert("someone-else.example"))
	if _, mechs := other.Extension("AUTH"); strings.Contains(mechs, "EXTERNAL") || !strings.Contains(mechs, "LOGIN") {
		t.Errorf("AUTH offered %q to an unknown certificate; want PLAIN and LOGIN only", mechs)
	}

	cl := dial(clientCert("mail.northshire-pio.example"))
	if _, mechs := cl.Extension("AUTH"); !slices.Contains(strings.Fields(mechs), "EXTERNAL") {
		t.Fatalf("AUTH offers %q, want EXTERNAL for the relay account's certificate", mechs)
	}
	tcheck(t, cl.Auth(sasl.NewExternalClient("")), "AUTH EXTERNAL")
	// Any mailbox of the agency may send through it (its From: the
	// member of staff's own, as the gateway requires of every sender)...
	msg := strings.Replace(string(e2eMessage(e2eLabel, "Conveyance")), "From: pio@northshire-pio.example", "From: analyst@northshire-pio.example", 1)
	tcheck(t, cl.SendMail("analyst@northshire-pio.example", []string{"intake@hmp-northgate.example"},
		strings.NewReader(msg)), "send as another member of staff")
	// ...and nobody else.
	var se *smtp.SMTPError
	if err := cl.Mail("root@northshire-pio.example", nil); !errors.As(err, &se) || se.Code != 553 || !strings.Contains(se.Message, "not a mailbox of northshire-pio") {
		t.Errorf("a sender outside the directory: %v, want 553 naming the directory", err)
	}
	cl.Reset()
	// Its bounce (a null sender) goes to the agency's own mailbox.
	bounce := "From: MAILER-DAEMON@mail.northshire-pio.example\r\nTo: analyst@northshire-pio.example\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\nyour message was refused\r\n"
	tcheck(t, cl.SendMail("", []string{"analyst@northshire-pio.example"}, strings.NewReader(bounce)), "send a bounce")
	files, _ := filepath.Glob(filepath.Join(pio.dir, "var", "maildir", "analyst@northshire-pio.example", "new", "*"))
	found := false
	for _, f := range files {
		b, _ := os.ReadFile(f)
		found = found || strings.Contains(string(b), "your message was refused")
	}
	if !found {
		t.Errorf("the bounce is not in analyst@'s Maildir (%d files)", len(files))
	}
	if err := cl.SendMail("", []string{"intake@hmp-northgate.example"}, strings.NewReader(bounce)); !errors.As(err, &se) || se.Code != 550 {
		t.Errorf("a bounce for another agency: %v, want 550", err)
	}
}
