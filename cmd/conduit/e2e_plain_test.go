package main

// A partner without Conduit, over real SMTP with STARTTLS: the real gpg
// and sq play the Northshire PIO unit, whose directory entry says
// envelope: pgp-mime and pins the key the tool made (an ordinary user ID).
// HMP Northgate's gateway is the real conduit serve.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/testbed"
)

// tlsSink is the partner's mail server: SMTP with STARTTLS (the agencies'
// CA certificate the testbed issued for it), keeping what it is sent.
type tlsSink struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (s *tlsSink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }

type sinkSession struct{ s *tlsSink }

func (x *sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (x *sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (x *sinkSession) Reset()                               {}
func (x *sinkSession) Logout() error                        { return nil }
func (x *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	x.s.mu.Lock()
	x.s.msgs = append(x.s.msgs, b)
	x.s.mu.Unlock()
	return nil
}

func (s *tlsSink) received() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.msgs...)
}

func startTLSSink(t *testing.T, addr, certDir string) *tlsSink {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, "gw.crt"), filepath.Join(certDir, "gw.key"))
	if err != nil {
		t.Fatal(err)
	}
	sink := &tlsSink{}
	srv := smtp.NewServer(sink)
	srv.Addr, srv.Domain = addr, "partner.localhost"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.ReadTimeout, srv.WriteTimeout = 30*time.Second, 30*time.Second
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			t.Logf("sink: %v", err)
		}
	}()
	t.Cleanup(func() { srv.Close() })
	return sink
}

// swaksSend delivers a raw message to a gateway's inbound port with swaks
// (STARTTLS, the agencies' CA verified), as the partner's MTA would.
func swaksSend(t *testing.T, b *testbed.Bed, id string, msg []byte) string {
	swaks := requireTool(t, "swaks")
	f := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(f, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(b.Nodes[id].Inbound, ":")
	return run(t, "", nil, nil, swaks, "--server", "127.0.0.1", "--port", port, "--tls",
		"--tls-verify", "--tls-ca-path", filepath.Join(b.Dir, "ca.crt"), "--helo", "partner.localhost",
		"--from", "pio@northshire-pio.example", "--to", ngIntel, "--data", "@"+f).stdout
}

func TestPlainPGPMIMEPartnerOverSMTP(t *testing.T) {
	requireTool(t, "swaks")
	for _, tool := range []string{"gpg", "sq"} {
		t.Run(tool, func(t *testing.T) {
			keyDir := t.TempDir()
			const uid = "Northshire Police PIO Unit <pio@northshire-pio.example>"
			var pk partnerKey
			if tool == "gpg" {
				pk = gpgPartnerKey(t, keyDir, uid, "partner.asc")
			} else {
				pk = sqPartnerKey(t, keyDir, uid, "partner.asc")
			}
			b := newE2EBed(t, testbed.Options{Directory: func(b *testbed.Bed, d *config.Directory) {
				a := d.Agency("northshire-pio")
				a.Envelope, a.Fingerprint = config.EnvelopePGPMIME, pk.fpr
				cert, err := os.ReadFile(filepath.Join(keyDir, pk.cert))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(b.Dir, "certs", "northshire-pio.pub.asc"), cert, 0o644); err != nil {
					t.Fatal(err)
				}
			}}, "hmp-northgate")
			ctx := context.Background()
			ng := b.Nodes["hmp-northgate"]
			ngCert := filepath.Join(b.Dir, "certs", "hmp-northgate.pub.asc")
			ngFpr := b.Directory.Agency("hmp-northgate").Fingerprint
			sink := startTLSSink(t, b.Nodes["northshire-pio"].Inbound, b.Nodes["northshire-pio"].Dir)

			// Conduit to the partner: an escape risk, escalated, to the PIO.
			label := strings.NewReplacer("originator=northshire-pio", "originator=hmp-northgate", "reference=NP-2026-0001", "reference=NG-2026-0042").Replace(e2eLabel)
			// Sent by the prison's own account: its From: is the account's
			// address (a gateway refuses another author).
			msg := bytes.Replace(e2eMessage(label, "Escape plan on wing C", "Conduit-Risk: escape", "Conduit-Topic: risk-information"),
				[]byte("From: pio@northshire-pio.example"), []byte("From: "+ng.Address), 1)
			resp, err := b.Submit(ctx, "hmp-northgate", []string{"pio@northshire-pio.example"}, msg)
			if err != nil {
				t.Fatalf("submit: %v", err)
			}
			pkg := packageOf(t, resp)
			if !testbed.WaitFor(ctx, 30*time.Second, func() bool { return len(sink.received()) > 0 }) {
				t.Fatalf("nothing reached the partner's mail server\n%s", b.Tail("hmp-northgate", 20))
			}
			got := string(sink.received()[0])
			if !strings.Contains(got, `multipart/encrypted; protocol="application/pgp-encrypted"`) {
				t.Errorf("not RFC 3156 PGP/MIME:\n%.500s", got)
			}
			plain := pk.decrypt(t, keyDir, armorRE.FindString(got), ngCert, ngFpr)
			for _, want := range []string{e2eBody, "Handling-Label: v=1; classification=OFFICIAL-SENSITIVE", "Subject: [OFFICIAL-SENSITIVE] Escape plan on wing C"} {
				if !strings.Contains(plain, want) {
					t.Errorf("the partner's plaintext lacks %q", want)
				}
			}
			if strings.Contains(plain, "conduit-manifest.json") {
				t.Error("a manifest part went to a partner without Conduit")
			}
			if !testbed.WaitFor(ctx, 10*time.Second, func() bool {
				out := run(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--package", pkg, "--config", ng.Config).stdout
				return strings.Contains(out, "sent, no receipt expected")
			}) {
				t.Errorf("the delivery is not recorded as sent with no receipt expected")
			}
			if out := mustRun(t, b.Dir, nil, nil, conduitBin, "deadlines", "--config", ng.Config); !strings.Contains(out, pkg) || !strings.Contains(out, "acknowledge") {
				t.Fatalf("no acknowledgement clock for the escalation:\n%s", out)
			}

			// The partner's signed reply, standard PGP/MIME made by its own
			// tool, over SMTP with STARTTLS: delivered, attributed through
			// the pin, and it stops the acknowledgement clock.
			host := strings.TrimSuffix(strings.SplitN(got[strings.Index(got, "Message-ID: <"):], "@", 2)[1], "\r\n")
			host = host[:strings.IndexByte(host, '>')]
			reply := strings.Replace(string(plainMessage("Re: [OFFICIAL-SENSITIVE] Escape plan on wing C", e2eLabel, time.Now().Add(-time.Second).Truncate(time.Second))),
				"Subject:", "In-Reply-To: <"+pkg+"@"+host+">\r\nSubject:", 1)
			out := swaksSend(t, b, "hmp-northgate", plainPGPMIME(pk.signEncrypt(t, keyDir, []byte(reply), ngCert, ngFpr)))
			if !strings.Contains(out, "<~  250 ") {
				t.Fatalf("the partner's reply was not accepted:\n%s", out)
			}
			if !testbed.WaitFor(ctx, 10*time.Second, func() bool { return len(b.Delivered("hmp-northgate", ngIntel)) > 0 }) {
				t.Fatal("the partner's message was not delivered")
			}
			delivered, _ := os.ReadFile(b.Delivered("hmp-northgate", ngIntel)[0])
			if !strings.Contains(string(delivered), "Conduit-Verified: signer=northshire-pio; fingerprint="+pk.fpr+"; label=valid; format=pgp-mime") {
				t.Errorf("delivered message:\n%.600s", delivered)
			}
			if out := mustRun(t, b.Dir, nil, nil, conduitBin, "deadlines", "--config", ng.Config); strings.Contains(out, "acknowledge") {
				t.Errorf("the signed reply did not stop the acknowledgement clock:\n%s", out)
			}

			// Unsigned, and signed by a key that is not the pinned one:
			// refused and quarantined, nothing delivered.
			env := gnupgHome(t)
			gpg := requireTool(t, "gpg")
			mustRun(t, keyDir, env, nil, gpg, "--batch", "--import", ngCert)
			unsigned := mustRun(t, keyDir, env, plainMessage("[OFFICIAL-SENSITIVE] x", e2eLabel, time.Now().Truncate(time.Second)), gpg,
				"--batch", "--trust-model", "always", "--armor", "--encrypt", "--recipient", ngFpr)
			if out := swaksSend(t, b, "hmp-northgate", plainPGPMIME(unsigned)); !strings.Contains(out, " 550 5.7.1 Package refused and quarantined") || !strings.Contains(out, "not signed") {
				t.Errorf("unsigned message:\n%s", out)
			}
			other := gpgPartnerKey(t, keyDir, "Someone Else <x@northshire-pio.example>", "other.asc")
			forged := other.signEncrypt(t, keyDir, plainMessage("[OFFICIAL-SENSITIVE] y", e2eLabel, time.Now().Truncate(time.Second)), ngCert, ngFpr)
			if out := swaksSend(t, b, "hmp-northgate", plainPGPMIME(forged)); !strings.Contains(out, " 550 5.7.1 Package refused and quarantined") || !strings.Contains(out, "pinned") {
				t.Errorf("message signed by an unpinned key:\n%s", out)
			}
			if n := len(b.Delivered("hmp-northgate", ngIntel)); n != 1 {
				t.Errorf("%d messages delivered; want only the signed reply", n)
			}
		})
	}
}
