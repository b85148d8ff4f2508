package gateway_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/examples"
	"github.com/conduit-gateway/conduit/gateway/delivery"
	"github.com/conduit-gateway/conduit/testbed"
)

const (
	benchSender, benchReceiver = "northshire-pio", "hmp-northgate"
	benchRcpt                  = "intel@northgate.hmpps.example"
)

// benchMessage is a marked 16 KiB package, its body incompressible.
func benchMessage(from string, i int) []byte {
	raw := make([]byte, 12<<10)
	rand.Read(raw)
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: Bench %d\r\nDate: %s\r\nMessage-ID: <bench-%d-%d@northshire-pio.example>\r\n", from, benchRcpt, i,
		time.Now().Format(time.RFC1123Z), i, time.Now().UnixNano())
	b.WriteString("Handling-Label: v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; " +
		"subjects=suspected; purpose=prison-security; sanitised=yes; originator=northshire-pio; reference=BENCH\r\n")
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(raw)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	return b.Bytes()
}

// benchSubmitter keeps one authenticated submission session, as a mail
// client does, and opens another before the gateway's command limit.
type benchSubmitter struct {
	b    *testbed.Bed
	c    *smtp.Client
	sent int
}

var pkgIDRE = regexp.MustCompile(`cdt-[0-9a-z]+`)

func (s *benchSubmitter) submit(tb testing.TB, msg []byte) string {
	tb.Helper()
	n := s.b.Nodes[benchSender]
	if s.c == nil || s.sent == 50 {
		if s.c != nil {
			s.c.Quit()
		}
		c, err := smtp.DialStartTLS(n.Submission, s.b.ClientTLS())
		if err != nil {
			tb.Fatal(err)
		}
		if err := c.Auth(sasl.NewPlainClient("", n.User, n.Password)); err != nil {
			tb.Fatal(err)
		}
		s.c, s.sent = c, 0
	}
	s.sent++
	if err := s.c.Mail(n.Address, nil); err != nil {
		tb.Fatal(err)
	}
	if err := s.c.Rcpt(benchRcpt, nil); err != nil {
		tb.Fatal(err)
	}
	w, err := s.c.Data()
	if err != nil {
		tb.Fatal(err)
	}
	w.Write(msg)
	resp, err := w.CloseWithResponse()
	if err != nil {
		tb.Fatal(err)
	}
	return pkgIDRE.FindString(resp.StatusText)
}

func benchBed(b *testing.B) *testbed.Bed {
	pol := bytes.Replace(examples.Policy, []byte("valid-days: 365"), []byte("valid-days: 36500"), 1)
	bed, err := testbed.Create(b.TempDir(), "", testbed.Options{Policy: pol})
	if err != nil {
		b.Fatal(err)
	}
	return bed
}

// BenchmarkSubmissionIntake is a package's way to its 250 on the sending
// gateway, in process: the SMTP transaction, the marking and the sharing
// policy, the seal, and the transaction that makes it durable (fsync)
// with its clocks and audit events. The receiving gateway is not running,
// so nothing else competes.
func BenchmarkSubmissionIntake(b *testing.B) {
	bed := benchBed(b)
	runNode(b, bed, benchSender)
	s := &benchSubmitter{b: bed}
	msgs := make([][]byte, 64)
	for i := range msgs {
		msgs[i] = benchMessage(bed.Nodes[benchSender].Address, i)
	}
	b.SetBytes(int64(len(msgs[0])))
	i := 0
	for b.Loop() {
		if s.submit(b, msgs[i%len(msgs)]) == "" {
			b.Fatal("no package id in the 250")
		}
		i++
	}
	if s.c != nil {
		s.c.Quit()
	}
}

// BenchmarkPackageToMaildir is one package at a time from the start of
// its submission to its file in the receiving Maildir: intake, relay
// (pipelined over a kept TLS session), opening and verifying, the
// receiver's durable transaction and the Maildir write. Both gateways run
// in this process. Its inverse is the latency of an unloaded pair.
func BenchmarkPackageToMaildir(b *testing.B) {
	bed := benchBed(b)
	runNode(b, bed, benchReceiver)
	runNode(b, bed, benchSender)
	s := &benchSubmitter{b: bed}
	from := bed.Nodes[benchSender].Address
	box := filepath.Join(bed.Nodes[benchReceiver].Maildir, delivery.MailboxDir(benchRcpt), "new")
	i := 0
	for b.Loop() {
		id := s.submit(b, benchMessage(from, i))
		name := filepath.Join(box, delivery.Name(benchSender, id, benchRcpt))
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := os.Stat(name); err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("package %d (%s) not delivered", i, id)
			}
			time.Sleep(100 * time.Microsecond)
		}
		i++
	}
	if s.c != nil {
		s.c.Quit()
	}
}
