package main

// End-to-end scenarios: each test lays out a bed, starts the
// gateways it needs as separate `conduit serve` processes on 127.0.0.1,
// and drives them over real SMTP with real TLS.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/pki"
	"github.com/conduit-gateway/conduit/testbed"
)

const (
	ngIntel = "intel@northgate.hmpps.example"
	pioFrom = "conduit@northshire-pio.example" // the PIO gateway's own address, as MAIL FROM on the relay
)

// smtpCode returns the reply code of an SMTP error (0 when err is not one).
func smtpCode(err error) (int, string) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code, se.Message
	}
	return 0, ""
}

func TestE2EGovernorSubjectGoesToRegionalCCUNotThePrison(t *testing.T) {
	b := newE2EBed(t, testbed.Options{}, "northshire-pio", "hmp-northgate", "ccu-north", "rpiu-north-east")
	ctx := context.Background()
	resp, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(e2eLabel, "Allegation concerning the governor",
		"Conduit-Topic: corruption", "Conduit-Subject: role=governing-governor; establishment=hmp-northgate"))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	pkg := packageOf(t, resp)
	items, ok := waitQueue(t, b, "northshire-pio", pkg, 30*time.Second, allSent)
	if !ok {
		t.Fatalf("not every envelope was sent:%s", describeItems(items))
	}
	dests := map[string]bool{}
	for _, it := range items {
		dests[it.Destination] = true
	}
	if !dests["ccu-north"] || dests["hmp-northgate"] {
		t.Errorf("queued for %v; want ccu-north and never hmp-northgate", dests)
	}
	got := readDelivered(t, b, "ccu-north")
	if len(got["rcca@ccu-north.hmpps.example"]) != 1 {
		t.Fatalf("ccu-north received %v; want one message for the regional analyst", keysOf(got))
	}
	msg := got["rcca@ccu-north.hmpps.example"][0]
	for _, want := range []string{"Conduit-Verified: signer=northshire-pio", "package=" + pkg, e2eBody} {
		if !strings.Contains(msg, want) {
			t.Errorf("the CCU's copy lacks %q", want)
		}
	}
	// Every envelope was accepted by its destination (state sent) before
	// this check, so an empty prison Maildir means the prison got nothing.
	if n := len(b.AllDelivered("hmp-northgate")); n != 0 {
		t.Errorf("the prison received %d mailboxes' worth of the package; it must get nothing", n)
	}
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestE2EEscapeRiskGoesImmediatelyWithEscalationCopies(t *testing.T) {
	b := newE2EBed(t, testbed.Options{}, "northshire-pio", "hmp-northgate")
	ctx := context.Background()
	label := strings.Replace(e2eLabel, "purpose=corruption-prison", "purpose=prison-security", 1)
	resp, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(label, "Escape planned from the works party",
		"Conduit-Risk: escape", "Conduit-Topic: security", "Conduit-Subject: role=staff; establishment=hmp-northgate"))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	pkg := packageOf(t, resp)
	items, ok := waitQueue(t, b, "northshire-pio", pkg, 30*time.Second, allSent)
	if !ok {
		t.Fatalf("not sent:%s", describeItems(items))
	}
	for _, it := range items {
		if it.Priority != store.Immediate {
			t.Errorf("queue item for %s has priority %s; an escape risk is immediate", it.Destination, it.Priority)
		}
	}
	got := readDelivered(t, b, "hmp-northgate")
	for _, box := range []string{ngIntel, "duty-governor@northgate.hmpps.example", "orderly-officer@northgate.hmpps.example"} {
		if len(got[box]) != 1 {
			t.Errorf("%s received %d copies; want 1 (delivered: %v)", box, len(got[box]), keysOf(got))
			continue
		}
		if !strings.Contains(got[box][0], "imminent-risk-escalation") || !strings.Contains(got[box][0], "package="+pkg) {
			t.Errorf("%s's copy does not cite imminent-risk-escalation for %s", box, pkg)
		}
	}
}

func TestE2ESecretAndUnsanitisedPackagesRefusedNothingQueued(t *testing.T) {
	b := newE2EBed(t, testbed.Options{}, "northshire-pio")
	ctx := context.Background()
	for _, c := range []struct{ name, label, rule string }{
		{"secret", strings.Replace(e2eLabel, "classification=OFFICIAL-SENSITIVE", "classification=SECRET", 1), "classification-ceiling"},
		{"unsanitised", strings.Replace(e2eLabel, "sanitised=yes", "sanitised=no", 1), "sanitised-to-disseminate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(c.label, "Conveyance on wing C"))
			code, text := smtpCode(err)
			if code != 550 || !strings.HasPrefix(text, "Package refused, nothing was sent:") || !strings.Contains(text, "("+c.rule+")") {
				t.Fatalf("got %v; want 550 5.7.1 Package refused, nothing was sent: ... (%s)", err, c.rule)
			}
			t.Logf("550 %s", text)
		})
	}
	items, err := b.Queue(ctx, "northshire-pio", store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 0 {
		t.Errorf("refused packages left %d queue items:%s", len(items), describeItems(items))
	}
}

var sioLabelRE = regexp.MustCompile(`(?m)^SIO-Label: [^\r\n]*\r\n`)

func TestE2ETamperedEnvelopeIsQuarantined(t *testing.T) {
	b := newE2EBed(t, testbed.Options{}, "hmp-northgate")
	ctx := context.Background()
	sealed, pkg := sealFor(t, b, "northshire-pio", "hmp-northgate", e2eLabel, e2eMessage("", "Conveyance on wing C"))
	// An attacker on the path lowers the outer marking, so that the
	// receiving mail system would handle the package as OFFICIAL.
	tampered := sioLabelRE.ReplaceAll(sealed, []byte("SIO-Label: marking=OFFICIAL\r\n"))
	if string(tampered) == string(sealed) {
		t.Fatal("the envelope has no SIO-Label to tamper with")
	}
	_, err := b.Inject(ctx, "hmp-northgate", pioFrom, []string{ngIntel}, tampered)
	code, text := smtpCode(err)
	if code != 550 || !strings.Contains(text, "quarantined as Q") || !strings.Contains(text, "at hmp-northgate") {
		t.Fatalf("got %v; want 550 5.7.1 Package refused and quarantined as Q<n> at hmp-northgate", err)
	}
	t.Logf("550 %s", text)
	qs, err := b.Quarantined(ctx, "hmp-northgate")
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 1 || qs[0].PackageID != pkg || qs[0].Size != int64(len(tampered)) {
		t.Fatalf("quarantine holds %+v; want the tampered package %s kept whole", qs, pkg)
	}
	// The administrator's view.
	out := mustRun(t, "", nil, nil, conduitBin, "quarantine", "list", "--config", b.Nodes["hmp-northgate"].Config)
	for _, want := range []string{pkg, "marking-mismatch", "held"} {
		if !strings.Contains(out, want) {
			t.Errorf("conduit quarantine list lacks %q:\n%s", want, out)
		}
	}
	t.Logf("conduit quarantine list:\n%s", out)
	if n := len(b.AllDelivered("hmp-northgate")); n != 0 {
		t.Errorf("a tampered package was delivered to %d mailboxes", n)
	}
}

func TestE2EReplayedEnvelopeIsNotDeliveredTwice(t *testing.T) {
	b := newE2EBed(t, testbed.Options{}, "hmp-northgate")
	ctx := context.Background()
	sealed, pkg := sealFor(t, b, "northshire-pio", "hmp-northgate", e2eLabel, e2eMessage("", "Conveyance on wing C"))
	first, err := b.Inject(ctx, "hmp-northgate", pioFrom, []string{ngIntel}, sealed)
	if err != nil {
		t.Fatalf("first delivery: %v", err)
	}
	t.Logf("first: 250 %s", first)
	second, err := b.Inject(ctx, "hmp-northgate", pioFrom, []string{ngIntel}, sealed)
	if err != nil {
		// Refusing a replay is as good as acknowledging it without
		// delivery, as long as nothing is delivered twice.
		t.Logf("second: %v", err)
	} else {
		t.Logf("second: 250 %s", second)
		if !strings.Contains(second, "already delivered") {
			t.Errorf("second copy accepted as %q; want it acknowledged as already delivered", second)
		}
	}
	per, _ := deliveredByPackage(b, "hmp-northgate")
	if per[pkg] != 1 || len(per) != 1 {
		t.Errorf("delivered per package: %v; want %s exactly once", per, pkg)
	}
}

func TestE2EDestinationDownThenUpDeliveredOnce(t *testing.T) {
	b := newE2EBed(t, testbed.Options{}, "northshire-pio") // the prison is down
	ctx := context.Background()
	resp, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(e2eLabel, "Conveyance on wing C"))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	pkg := packageOf(t, resp)
	items, ok := waitQueue(t, b, "northshire-pio", pkg, 20*time.Second, func(items []store.Item) bool {
		return len(items) == 1 && items[0].State == store.Queued && items[0].Attempts >= 1 && items[0].LastError != ""
	})
	if !ok {
		t.Fatalf("the queue does not hold the package with a delivery error:%s", describeItems(items))
	}
	t.Logf("waiting while the prison is down:%s", describeItems(items))
	if !strings.Contains(items[0].LastError, "connect") {
		t.Errorf("last error %q does not say the destination could not be reached", items[0].LastError)
	}
	// The administrator's view.
	out := mustRun(t, "", nil, nil, conduitBin, "queue", "list", "--config", b.Nodes["northshire-pio"].Config)
	for _, want := range []string{pkg, "hmp-northgate", "queued"} {
		if !strings.Contains(out, want) {
			t.Errorf("conduit queue list lacks %q:\n%s", want, out)
		}
	}
	t.Logf("conduit queue list:\n%s", out)
	if err := b.Start(ctx, "hmp-northgate"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of hmp-northgate:\n%s", b.Tail("hmp-northgate", 15))
		}
	})
	if items, ok := waitQueue(t, b, "northshire-pio", pkg, 30*time.Second, allSent); !ok {
		t.Fatalf("not sent after the prison came up:%s", describeItems(items))
	}
	// A few more relay cycles (the relay polls every second): a second
	// copy would show here.
	if testbed.WaitFor(ctx, 3*time.Second, func() bool { per, _ := deliveredByPackage(b, "hmp-northgate"); return per[pkg] > 1 }) {
		t.Fatalf("delivered more than once")
	}
	per, boxes := deliveredByPackage(b, "hmp-northgate")
	if per[pkg] != 1 || boxes[ngIntel] != 1 || len(per) != 1 {
		t.Errorf("delivered per package %v, per mailbox %v; want %s once in %s", per, boxes, pkg, ngIntel)
	}
}

func TestE2EPeerWithoutSTARTTLSIsSentNothing(t *testing.T) {
	b, err := testbed.Create(t.TempDir(), conduitBin, testbed.Options{Policy: e2ePolicy(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.StopAll(); noPlaintextAtRest(t, b, e2eBody) })
	// The prison's directory address answers, but without STARTTLS.
	fake := startFakeSMTP(t, b.Nodes["hmp-northgate"].Inbound)
	ctx := context.Background()
	if err := b.Start(ctx, "northshire-pio"); err != nil {
		t.Fatal(err)
	}
	resp, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(e2eLabel, "Conveyance on wing C"))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	pkg := packageOf(t, resp)
	items, ok := waitQueue(t, b, "northshire-pio", pkg, 20*time.Second, func(items []store.Item) bool {
		return len(items) == 1 && items[0].Attempts >= 2 && items[0].LastError != ""
	})
	if !ok {
		t.Fatalf("no failed attempt recorded:%s\n%s", describeItems(items), b.Tail("northshire-pio", 10))
	}
	it := items[0]
	if it.State != store.Queued || !strings.Contains(it.LastError, "STARTTLS") {
		t.Errorf("item %s, last error %q; want it waiting with an error that names STARTTLS", it.State, it.LastError)
	}
	conns, cmds := fake.seen()
	if conns == 0 {
		t.Fatal("the relay never connected to the fake peer")
	}
	for _, c := range cmds {
		if v := strings.ToUpper(c); strings.HasPrefix(v, "MAIL") || strings.HasPrefix(v, "RCPT") || strings.HasPrefix(v, "DATA") {
			t.Errorf("the relay sent %q to a peer without STARTTLS", c)
		}
	}
	if !strings.Contains(b.Tail("northshire-pio", 50), "admin alert") {
		t.Errorf("no admin alert in the sender's log")
	}
	t.Logf("%d connections, commands seen: %v; last error: %s", conns, cmds, it.LastError)
}

func TestE2EBadCertificatePeerIsSentNothing(t *testing.T) {
	b, err := testbed.Create(t.TempDir(), conduitBin, testbed.Options{Policy: e2ePolicy(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.StopAll()
		noPlaintextAtRest(t, b, e2eBody)
		if t.Failed() {
			t.Logf("log of northshire-pio:\n%s", b.Tail("northshire-pio", 15))
		}
	})
	// The prison's gateway presents a certificate from a CA the agencies
	// do not trust (an impostor on its address, or a mis-issued cert).
	rogue, err := pki.NewCA("Rogue CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := rogue.WriteFiles(filepath.Join(b.Nodes["hmp-northgate"].Dir, "gw"), "hmp-northgate", []string{"127.0.0.1", "localhost"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.StartAll(ctx, "northshire-pio", "hmp-northgate"); err != nil {
		t.Fatal(err)
	}
	resp, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(e2eLabel, "Conveyance on wing C"))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	pkg := packageOf(t, resp)
	items, ok := waitQueue(t, b, "northshire-pio", pkg, 20*time.Second, func(items []store.Item) bool {
		return len(items) == 1 && items[0].Attempts >= 2 && items[0].LastError != ""
	})
	if !ok {
		t.Fatalf("no failed attempt recorded:%s", describeItems(items))
	}
	it := items[0]
	if it.State != store.Queued || !strings.Contains(it.LastError, "certificate") {
		t.Errorf("item %s, last error %q; want it waiting with a certificate error", it.State, it.LastError)
	}
	if n := len(b.AllDelivered("hmp-northgate")); n != 0 {
		t.Errorf("the impostor received the package in %d mailboxes", n)
	}
	if qs, err := b.Quarantined(ctx, "hmp-northgate"); err != nil || len(qs) != 0 {
		t.Errorf("the impostor got a message (quarantine %v, %v)", qs, err)
	}
	t.Logf("last error: %s", it.LastError)
}

func TestE2ESubmissionRefusals(t *testing.T) {
	b := newE2EBed(t, testbed.Options{Extra: "limits: {message-bytes: 65536}\n"}, "northshire-pio")
	ctx := context.Background()
	n := b.Nodes["northshire-pio"]

	t.Run("over the size limit gets 552", func(t *testing.T) {
		big := e2eMessage(e2eLabel, "Conveyance on wing C", "X-Padding: "+strings.Repeat("a", 900))
		body := strings.Repeat(strings.Repeat("z", 998)+"\r\n", 80) // 80 KB
		big = append(big, body...)
		_, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, big)
		if code, text := smtpCode(err); code != 552 || !strings.Contains(text, "larger than") {
			t.Fatalf("got %v; want 552 5.3.4", err)
		}
	})
	t.Run("sending as another agency's mailbox gets 553", func(t *testing.T) {
		_, err := b.SubmitAs(ctx, "northshire-pio", "rpiu@rpiu-north-east.example", []string{ngIntel}, e2eMessage(e2eLabel, "Conveyance"))
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 553 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) {
			t.Fatalf("got %v; want 553 5.7.1", err)
		}
	})
	t.Run("a recipient not in the directory gets 550 5.1.1", func(t *testing.T) {
		_, err := b.Submit(ctx, "northshire-pio", []string{"someone@elsewhere.example"}, e2eMessage(e2eLabel, "Conveyance"))
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
			t.Fatalf("got %v; want 550 5.1.1", err)
		}
	})
	t.Run("AUTH before STARTTLS is refused and not offered", func(t *testing.T) {
		r := dialRaw(t, n.Submission)
		code, ehlo := r.cmd("EHLO e2e.localhost")
		if code != 250 || strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
			t.Errorf("EHLO in clear: %d %q; want STARTTLS offered and AUTH not", code, ehlo)
		}
		// The password below would cross the wire in clear: the gateway
		// must refuse it before looking at it.
		if code, text := r.cmd("AUTH PLAIN AG5vcnRoc2hpcmUtcGlvAHdyb25n"); code < 500 || !strings.Contains(text, "TLS") {
			t.Errorf("AUTH in clear: %d %s; want a 5xx that asks for TLS", code, text)
		}
		if code, text := r.cmd("MAIL FROM:<%s>", n.Address); code != 530 {
			t.Errorf("MAIL FROM in clear: %d %s; want 530 5.7.0", code, text)
		}
	})
	t.Run("MAIL FROM before STARTTLS on inbound gets 530", func(t *testing.T) {
		r := dialRaw(t, n.Inbound)
		r.cmd("EHLO e2e.localhost")
		code, text := r.cmd("MAIL FROM:<%s>", "conduit@hmp-northgate.example")
		if code != 530 || !strings.Contains(text, "STARTTLS") {
			t.Errorf("MAIL FROM in clear: %d %s; want 530 5.7.0 asking for STARTTLS", code, text)
		}
	})
	t.Run("inbound RCPT to a mailbox this agency does not hold gets 550 5.1.1", func(t *testing.T) {
		r := dialRaw(t, n.Inbound)
		r.cmd("EHLO e2e.localhost")
		r.startTLS(b.ClientTLS())
		if code, text := r.cmd("MAIL FROM:<%s>", "conduit@hmp-northgate.example"); code != 250 {
			t.Fatalf("MAIL: %d %s", code, text)
		}
		for _, rcpt := range []string{ngIntel, "nobody@northshire-pio.example"} {
			if code, text := r.cmd("RCPT TO:<%s>", rcpt); code != 550 || !strings.HasPrefix(text, "5.1.1 ") {
				t.Errorf("RCPT TO:<%s>: %d %s; want 550 5.1.1", rcpt, code, text)
			}
		}
	})
	t.Run("a bare LF gets 554 5.6.0", func(t *testing.T) {
		r := dialRaw(t, n.Submission)
		r.cmd("EHLO e2e.localhost")
		r.startTLS(b.ClientTLS())
		r.authPlain(n.User, n.Password)
		if code, text := r.cmd("MAIL FROM:<%s>", n.Address); code != 250 {
			t.Fatalf("MAIL: %d %s", code, text)
		}
		if code, text := r.cmd("RCPT TO:<%s>", ngIntel); code != 250 {
			t.Fatalf("RCPT: %d %s", code, text)
		}
		msg := e2eMessage(e2eLabel, "Conveyance on wing C")
		// A smuggled second message behind a bare LF line ending.
		msg = append(msg, "innocent line\n.\r\nMAIL FROM:<x@y>\r\n"...)
		code, text := r.data(msg)
		if code != 554 || !strings.Contains(text, "CRLF") {
			t.Errorf("bare LF: %d %s; want 554 5.6.0", code, text)
		}
	})
	t.Run("a bare LF in a BDAT chunk gets 554 5.6.0", func(t *testing.T) {
		// CHUNKING is offered; its chunks are not dot-terminated, so a
		// bare LF must be caught there too.
		r := dialRaw(t, n.Submission)
		r.cmd("EHLO e2e.localhost")
		r.startTLS(b.ClientTLS())
		r.authPlain(n.User, n.Password)
		if code, text := r.cmd("MAIL FROM:<%s>", n.Address); code != 250 {
			t.Fatalf("MAIL: %d %s", code, text)
		}
		if code, text := r.cmd("RCPT TO:<%s>", ngIntel); code != 250 {
			t.Fatalf("RCPT: %d %s", code, text)
		}
		msg := append(e2eMessage(e2eLabel, "Conveyance on wing C"), "innocent line\n.\r\n"...)
		if _, err := fmt.Fprintf(r.conn, "BDAT %d LAST\r\n", len(msg)); err != nil {
			t.Fatal(err)
		}
		if _, err := r.conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		if code, text := r.reply(); code != 554 || !strings.Contains(text, "CRLF") {
			t.Errorf("bare LF in BDAT: %d %s; want 554 5.6.0", code, text)
		}
	})
	t.Run("too many commands in one session gets 421", func(t *testing.T) {
		r := dialRaw(t, n.Submission)
		r.cmd("EHLO e2e.localhost")
		r.startTLS(b.ClientTLS())
		r.authPlain(n.User, n.Password)
		for i := 0; i < 300; i++ {
			code, text := r.cmd("MAIL FROM:<%s>", n.Address)
			if code == 421 {
				t.Logf("after %d MAIL commands: %d %s", i, code, text)
				return
			}
			r.cmd("RSET")
		}
		t.Errorf("300 MAIL commands in one session were all accepted")
	})
	items, err := b.Queue(ctx, "northshire-pio", store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 0 {
		t.Errorf("refused submissions left %d queue items:%s", len(items), describeItems(items))
	}
}

func TestE2EForgedSignerIsQuarantined(t *testing.T) {
	b := newE2EBed(t, testbed.Options{}, "hmp-northgate")
	ctx := context.Background()
	// A key that calls itself northshire-pio, but is not the one the
	// directory pins for it: a valid signature by the wrong key.
	forger, err := keys.Generate("northshire-pio", pioFrom, keys.ProfileRFC4880, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	l, err := envelope.ParseLabel(e2eLabel + `; created="` + time.Now().UTC().Format(time.RFC3339) + `"`)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	s, err := envelope.Seal(ctx, &buf, bytes.NewReader(e2eMessage("", "Conveyance on wing C")), envelope.SealParams{
		Signer: forger, Recipients: []*keys.Cert{bedCert(t, b, "hmp-northgate")}, Label: l,
		Profile: keys.ProfileRFC4880, Now: time.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Inject(ctx, "hmp-northgate", pioFrom, []string{ngIntel}, buf.Bytes())
	code, text := smtpCode(err)
	if code != 550 || !strings.Contains(text, "quarantined as Q") {
		t.Fatalf("got %v; want 550 5.7.1 Package refused and quarantined", err)
	}
	t.Logf("550 %s", text)
	qs, err := b.Quarantined(ctx, "hmp-northgate")
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 1 || qs[0].Check != "signer-not-pinned" || qs[0].PackageID != s.PackageID {
		t.Errorf("quarantine holds %+v; want %s as signer-not-pinned", qs, s.PackageID)
	}
	if n := len(b.AllDelivered("hmp-northgate")); n != 0 {
		t.Errorf("a forged package was delivered to %d mailboxes", n)
	}
}

func TestE2EUndeliverableAfterMaxAgeSenderIsTold(t *testing.T) {
	b := newE2EBed(t, testbed.Options{RetryMin: "200ms", RetryMax: "400ms", MaxAge: "2s"}, "northshire-pio") // the prison never comes up
	ctx := context.Background()
	resp, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(e2eLabel, "Conveyance on wing C"))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	pkg := packageOf(t, resp)
	items, ok := waitQueue(t, b, "northshire-pio", pkg, 20*time.Second, func(items []store.Item) bool {
		return len(items) == 1 && items[0].State == store.Failed
	})
	if !ok {
		t.Fatalf("the item did not fail after its maximum age:%s", describeItems(items))
	}
	if !strings.Contains(items[0].Reason, "not delivered within 2s") {
		t.Errorf("failure reason %q does not give the maximum age", items[0].Reason)
	}
	submitter := b.Nodes["northshire-pio"].Address
	if !testbed.WaitFor(ctx, 10*time.Second, func() bool { return len(b.Delivered("northshire-pio", submitter)) > 0 }) {
		t.Fatalf("no failure notice in %s's mailbox", submitter)
	}
	notice := readDelivered(t, b, "northshire-pio")[submitter][0]
	for _, want := range []string{"Undelivered: package " + pkg + " to hmp-northgate", "[OFFICIAL-SENSITIVE]", "could not be delivered"} {
		if !strings.Contains(notice, want) {
			t.Errorf("the notice lacks %q:\n%s", want, notice)
		}
	}
	if strings.Contains(notice, e2eBody) {
		t.Errorf("the failure notice repeats the package content")
	}
}
