package main

// End-to-end tests: separate `conduit serve` processes (the binary built in
// TestMain) on 127.0.0.1, talking real SMTP with real TLS, laid out by the
// testbed package.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/tlsroute"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/testbed"
)

func newBed(t *testing.T, opt testbed.Options, start ...string) *testbed.Bed {
	t.Helper()
	b, err := testbed.Create(t.TempDir(), conduitBin, opt)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(func() {
		b.StopAll()
		if t.Failed() {
			for _, id := range start {
				t.Logf("log of %s:\n%s", id, b.Tail(id, 15))
			}
		}
	})
	if err := b.StartAll(context.Background(), start...); err != nil {
		t.Fatal(err)
	}
	// Security invariant 2, for every end-to-end test: no package body and
	// no subject identity in any gateway's log, store or audit trail
	// (registered after StopAll, so it runs first... and again at the end).
	t.Cleanup(func() { b.StopAll(); noPlaintextAtRest(t, b, e2eBody, e2eSubjectID) })
	return b
}

// e2eSubjectID is a subject identity every e2e package carries.
const e2eSubjectID = "A9876ZZ-CANARY"

const e2eBody = "A member of staff on wing C is conveying phones; the source is reliable."

func e2eMessage(label, subject string, extra ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: pio@northshire-pio.example\r\nTo: intake@hmp-northgate.example\r\nSubject: %s\r\n", subject)
	fmt.Fprintf(&b, "Message-ID: <%d@northshire-pio.example>\r\nDate: %s\r\n", time.Now().UnixNano(), time.Now().Format(time.RFC1123Z))
	if label != "" {
		fmt.Fprintf(&b, "Handling-Label: %s\r\n", label)
	}
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	b.WriteString("Conduit-Subject: role=other; id=" + e2eSubjectID + "\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n" + e2eBody + "\r\n")
	return []byte(b.String())
}

const e2eLabel = `v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; subjects=suspected; purpose=corruption-prison; sanitised=yes; originator=northshire-pio; reference=NP-2026-0001`

func mailboxOf(t *testing.T, b *testbed.Bed, agency string) string {
	a := b.Directory.Agency(agency)
	if a == nil || len(a.Mailboxes) == 0 {
		t.Fatalf("no mailbox for %s", agency)
	}
	return a.Mailboxes[0].Address
}

func TestRoutineDisseminationArrivesOpenedAndVerified(t *testing.T) {
	b := newBed(t, testbed.Options{}, "northshire-pio", "hmp-northgate", "rpiu-north-east")
	ctx := context.Background()
	to := mailboxOf(t, b, "hmp-northgate")
	resp, err := b.Submit(ctx, "northshire-pio", []string{to}, e2eMessage(e2eLabel, "Conveyance on wing C", "Conduit-Topic: corruption"))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	t.Logf("250 %s", resp)
	ok := testbed.WaitFor(ctx, 20*time.Second, func() bool { return len(b.AllDelivered("hmp-northgate")) > 0 })
	if !ok {
		t.Fatalf("nothing delivered at hmp-northgate")
	}
	for box, files := range b.AllDelivered("hmp-northgate") {
		data, _ := os.ReadFile(files[0])
		s := string(data)
		t.Logf("delivered to %s", box)
		for _, want := range []string{e2eBody, "Conduit-Verified: signer=northshire-pio", "Subject: [OFFICIAL-SENSITIVE] Conveyance on wing C", "Handling-Label: v=1"} {
			if !strings.Contains(s, want) {
				t.Errorf("delivered message lacks %q:\n%s", want, s)
			}
		}
	}
}

func TestReleasedQuarantineIsReprocessedWithEveryCheck(t *testing.T) {
	b, err := testbed.Create(t.TempDir(), conduitBin, testbed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.StopAll)
	ctx := context.Background()
	// HMP Northgate does not have the PIO's certificate yet.
	certPath := b.Dir + "/certs/northshire-pio.pub.asc"
	cert, err := os.ReadFile(certPath)
	tcheck(t, err, "read cert")
	tcheck(t, os.Remove(certPath), "remove cert")
	tcheck(t, b.StartAll(ctx, "hmp-northgate"), "start prison")
	tcheck(t, os.WriteFile(certPath, cert, 0o644), "restore cert for the sender's side")
	tcheck(t, b.StartAll(ctx, "northshire-pio", "rpiu-north-east"), "start PIO")

	_, err = b.Submit(ctx, "northshire-pio", []string{mailboxOf(t, b, "hmp-northgate")}, e2eMessage(e2eLabel, "Awaiting a pinned key"))
	tcheck(t, err, "submit")
	cfg := b.Nodes["hmp-northgate"].Config
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool {
		return strings.Contains(run(t, b.Dir, nil, nil, conduitBin, "quarantine", "list", "--config", cfg).stdout, "signer-not-pinned")
	}) {
		t.Fatalf("not quarantined:\n%s", b.Tail("hmp-northgate", 10))
	}
	if n := len(b.AllDelivered("hmp-northgate")); n != 0 {
		t.Fatalf("%d delivered before release", n)
	}
	// The administrator pins the certificate (the directory already holds
	// its fingerprint; the file was missing), restarts, and releases.
	tcheck(t, b.Stop("hmp-northgate"), "stop")
	tcheck(t, b.Start(ctx, "hmp-northgate"), "restart")
	mustRun(t, b.Dir, nil, nil, conduitBin, "quarantine", "release", "1", "--reason", "sender certificate installed", "--config", cfg)
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool { return len(b.AllDelivered("hmp-northgate")) > 0 }) {
		t.Fatalf("released message not delivered:\n%s", b.Tail("hmp-northgate", 10))
	}
	show := mustRun(t, b.Dir, nil, nil, conduitBin, "quarantine", "show", "1", "--config", cfg)
	if !strings.Contains(show, "re-processed") {
		t.Errorf("quarantine record after release:\n%s", show)
	}
}

func tcheck(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestHeldPackageWaitsForAReleaseThenGoes: 5x5x5 handling code 5 is held
// for the originator (handling-code rule; NIM grading, MoU Annex A): the
// sender is told so, nothing leaves, and an administrator's release sends
// the envelope sealed at submission.
func TestHeldPackageWaitsForAReleaseThenGoes(t *testing.T) {
	b := newBed(t, testbed.Options{}, "northshire-pio", "hmp-northgate", "rpiu-north-east")
	ctx := context.Background()
	label := strings.Replace(e2eLabel, "handling=1", "handling=5", 1)
	resp, err := b.Submit(ctx, "northshire-pio", []string{mailboxOf(t, b, "hmp-northgate")}, e2eMessage(label, "Refer to originator"))
	tcheck(t, err, "submit")
	if !strings.Contains(resp, "held") || !strings.Contains(resp, "handling-code") {
		t.Fatalf("250 text does not say it is held: %s", resp)
	}
	cfg := b.Nodes["northshire-pio"].Config
	list := mustRun(t, b.Dir, nil, nil, conduitBin, "queue", "list", "--state", "held", "--config", cfg)
	if !strings.Contains(list, "hmp-northgate") {
		t.Fatalf("held item not listed:\n%s", list)
	}
	if n := len(b.AllDelivered("hmp-northgate")); n != 0 {
		t.Fatalf("%d delivered while held", n)
	}
	r := run(t, b.Dir, nil, nil, conduitBin, "queue", "release", "1", "--config", cfg)
	if r.code == 0 {
		t.Fatal("release without a reason was accepted")
	}
	mustRun(t, b.Dir, nil, nil, conduitBin, "queue", "release", "1", "--reason", "originator consulted, consent NP-C-7", "--config", cfg)
	if q := mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--kind", "released", "--config", cfg); !strings.Contains(q, "consent NP-C-7") {
		t.Errorf("the release is not in the audit trail:\n%s", q)
	}
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool { return len(b.AllDelivered("hmp-northgate")) > 0 }) {
		t.Fatalf("released package not delivered:\n%s", b.Tail("northshire-pio", 10))
	}
}

// TestMutualTLSRouteNeedsTheSendersClientCertificate: with the PIO's route
// configured for mutual TLS, its gateway's deliveries (which present its
// client certificate) arrive, and the same package brought by anyone
// without that certificate is quarantined.
func TestMutualTLSRouteNeedsTheSendersClientCertificate(t *testing.T) {
	b := newBed(t, testbed.Options{Directory: func(_ *testbed.Bed, d *config.Directory) {
		d.Agency("northshire-pio").MutualTLS = true
	}}, "northshire-pio", "hmp-northgate", "rpiu-north-east")
	ctx := context.Background()
	to := mailboxOf(t, b, "hmp-northgate")
	_, err := b.Submit(ctx, "northshire-pio", []string{to}, e2eMessage(e2eLabel, "Over mutual TLS"))
	tcheck(t, err, "submit")
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool { return len(b.AllDelivered("hmp-northgate")) > 0 }) {
		t.Fatalf("not delivered over mutual TLS:\n%s", b.Tail("hmp-northgate", 8))
	}
	// A genuine PIO envelope, brought without the PIO's client certificate.
	env := sealAs(t, b, "northshire-pio", "hmp-northgate", "Replayed by a third party")
	_, err = b.Inject(ctx, "hmp-northgate", "conduit@northshire-pio.example", []string{to}, env)
	if err == nil || !strings.Contains(err.Error(), "requires mutual TLS") {
		t.Fatalf("without a client certificate: %v", err)
	}
}

// TestPinnedTLSKeyIsTheOnlyOneAccepted: a route pinned to a TLS key that is
// not the destination's sends nothing, though the certificate verifies
// against the CA; with the right pin it goes.
func TestPinnedTLSKeyIsTheOnlyOneAccepted(t *testing.T) {
	for _, right := range []bool{false, true} {
		b := newBed(t, testbed.Options{Directory: func(b *testbed.Bed, d *config.Directory) {
			pin := strings.Repeat("ab", 32)
			if right {
				pin = pinOf(t, b.Dir+"/hmp-northgate/gw.crt")
			}
			d.Agency("hmp-northgate").TLSPin = pin
		}}, "northshire-pio", "hmp-northgate", "rpiu-north-east")
		ctx := context.Background()
		_, err := b.Submit(ctx, "northshire-pio", []string{mailboxOf(t, b, "hmp-northgate")}, e2eMessage(e2eLabel, "Pinned"))
		tcheck(t, err, "submit")
		cfg := b.Nodes["northshire-pio"].Config
		if right {
			if !testbed.WaitFor(ctx, 20*time.Second, func() bool { return len(b.AllDelivered("hmp-northgate")) > 0 }) {
				t.Fatalf("not delivered with the right pin:\n%s", b.Tail("northshire-pio", 8))
			}
			continue
		}
		if !testbed.WaitFor(ctx, 20*time.Second, func() bool {
			return strings.Contains(run(t, b.Dir, nil, nil, conduitBin, "queue", "list", "--destination", "hmp-northgate", "--config", cfg).stdout, "not the one pinned")
		}) {
			t.Fatalf("the wrong pin did not stop delivery:\n%s", b.Tail("northshire-pio", 8))
		}
		if n := len(b.AllDelivered("hmp-northgate")); n != 0 {
			t.Fatalf("%d delivered to a gateway whose key is not the pinned one", n)
		}
	}
}

func pinOf(t *testing.T, certFile string) string {
	data, err := os.ReadFile(certFile)
	tcheck(t, err, "read cert")
	blk, _ := pem.Decode(data)
	c, err := x509.ParseCertificate(blk.Bytes)
	tcheck(t, err, "parse cert")
	return tlsroute.SPKIPin(c)
}

// sealAs seals a package with an agency's key from the bed, to another.
func sealAs(t *testing.T, b *testbed.Bed, from, to, subject string) []byte {
	id, err := (&keys.File{Path: b.Dir + "/" + from + "/keys/" + from + ".key"}).Identity(context.Background())
	tcheck(t, err, "key")
	f, err := os.Open(b.Dir + "/certs/" + to + ".pub.asc")
	tcheck(t, err, "cert")
	defer f.Close()
	c, err := keys.ReadCert(f)
	tcheck(t, err, "read cert")
	l, err := envelope.ParseLabelPartial(e2eLabel)
	tcheck(t, err, "label")
	var out bytes.Buffer
	_, err = envelope.Seal(context.Background(), &out, bytes.NewReader(e2eMessage("", subject)), envelope.SealParams{
		Signer: id, Recipients: []*keys.Cert{c}, Label: l,
	})
	tcheck(t, err, "seal")
	return out.Bytes()
}

// TestDeliveredPackageIsReceipted: the receiving gateway sends the
// originator a signed receipt naming the package and the mailboxes it went
// to; the originator records it and `conduit queue show` says when and to
// whom.
func TestDeliveredPackageIsReceipted(t *testing.T) {
	b := newBed(t, testbed.Options{}, "northshire-pio", "hmp-northgate", "rpiu-north-east")
	ctx := context.Background()
	to := mailboxOf(t, b, "hmp-northgate")
	_, err := b.Submit(ctx, "northshire-pio", []string{to}, e2eMessage(e2eLabel, "Receipt please"))
	tcheck(t, err, "submit")
	cfg := b.Nodes["northshire-pio"].Config
	var show string
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool {
		show = run(t, b.Dir, nil, nil, conduitBin, "queue", "show", "1", "--config", cfg).stdout
		return strings.Contains(show, "receipt:       delivered")
	}) {
		t.Fatalf("no receipt recorded:\n%s\nPIO log:\n%s\nprison log:\n%s", show, b.Tail("northshire-pio", 6), b.Tail("hmp-northgate", 6))
	}
	if !strings.Contains(show, to) {
		t.Errorf("the receipt does not name the mailbox %s:\n%s", to, show)
	}
	// The receipt itself is not delivered to anyone's mailbox.
	if n := len(b.AllDelivered("northshire-pio")); n != 0 {
		t.Errorf("%d messages delivered at the originator; a receipt is recorded, not delivered", n)
	}
}

// TestTriageClockGoesOverdueWithAMovedClock: a corruption report received
// by the regional CCU starts the 72-hour triage clock (MoU 6.1 prison
// responsibilities); with the CCU's clock moved 73 hours ahead the report
// not triaged raises an alert to the escalation contacts, and the one
// recorded with `conduit triage done` does not.
func TestTriageClockGoesOverdueWithAMovedClock(t *testing.T) {
	b := newBed(t, testbed.Options{}, "northshire-pio", "ccu-north", "rpiu-north-east")
	ctx := context.Background()
	gov := "Conduit-Subject: role=governing-governor; establishment=hmp-northgate"
	send := func(subject, ref string) {
		label := strings.Replace(e2eLabel, "NP-2026-0001", ref, 1)
		_, err := b.Submit(ctx, "northshire-pio", []string{mailboxOf(t, b, "hmp-northgate")}, e2eMessage(label, subject, "Conduit-Topic: corruption", gov))
		tcheck(t, err, "submit "+subject)
	}
	send("Report one", "NP-T-1")
	send("Report two", "NP-T-2")
	ccuCfg := b.Nodes["ccu-north"].Config
	var list string
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool {
		list = run(t, b.Dir, nil, nil, conduitBin, "deadlines", "--config", ccuCfg).stdout
		return strings.Count(list, "triage") == 2
	}) {
		t.Fatalf("two triage clocks not started at the CCU:\n%s\n%s", list, b.Tail("ccu-north", 6))
	}
	var first string
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, "triage") {
			first = strings.Fields(line)[0]
			break
		}
	}
	mustRun(t, b.Dir, nil, nil, conduitBin, "triage", "done", first, "--note", "assessed, band 2", "--config", ccuCfg)
	tcheck(t, b.MoveClock("ccu-north", 73*time.Hour), "move clock")
	contact := b.Directory.Agency("ccu-north").Escalation[0].Address
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool { return len(b.Delivered("ccu-north", contact)) > 0 }) {
		t.Fatalf("no overdue alert to %s:\n%s", contact, b.Tail("ccu-north", 8))
	}
	files := b.Delivered("ccu-north", contact)
	if len(files) != 1 {
		t.Fatalf("%d alerts, want 1 (the triaged report raises none)", len(files))
	}
	alert, _ := os.ReadFile(files[0])
	if !strings.Contains(string(alert), "Overdue: triage") || strings.Contains(string(alert), first) {
		t.Errorf("alert:\n%s", alert)
	}
}

// TestUnacknowledgedEscalationRaisesItsAlert: an escape risk goes to the
// prison immediately with a one-hour acknowledgement clock (example
// policy); the prison's gateway is down, so no receipt comes, and with the
// PIO's clock moved two hours ahead its escalation contact is alerted.
func TestUnacknowledgedEscalationRaisesItsAlert(t *testing.T) {
	b := newBed(t, testbed.Options{}, "northshire-pio", "rpiu-north-east")
	ctx := context.Background()
	_, err := b.Submit(ctx, "northshire-pio", []string{mailboxOf(t, b, "hmp-northgate")}, e2eMessage(e2eLabel, "Escape planned", "Conduit-Risk: escape"))
	tcheck(t, err, "submit")
	tcheck(t, b.MoveClock("northshire-pio", 2*time.Hour), "move clock")
	contact := b.Directory.Agency("northshire-pio").Escalation[0].Address
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool { return len(b.Delivered("northshire-pio", contact)) > 0 }) {
		t.Fatalf("no alert for the unacknowledged escalation:\n%s", b.Tail("northshire-pio", 8))
	}
	alert, _ := os.ReadFile(b.Delivered("northshire-pio", contact)[0])
	if !strings.Contains(string(alert), "hmp-northgate has not acknowledged the immediate escalation") {
		t.Errorf("alert:\n%s", alert)
	}
}

// TestReceiptStopsTheAcknowledgementClock: the prison's signed receipt
// acknowledges the immediate escalation, so its clock closes.
func TestReceiptStopsTheAcknowledgementClock(t *testing.T) {
	b := newBed(t, testbed.Options{}, "northshire-pio", "hmp-northgate", "rpiu-north-east")
	ctx := context.Background()
	_, err := b.Submit(ctx, "northshire-pio", []string{mailboxOf(t, b, "hmp-northgate")}, e2eMessage(e2eLabel, "Escape planned", "Conduit-Risk: escape"))
	tcheck(t, err, "submit")
	cfg := b.Nodes["northshire-pio"].Config
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool {
		return strings.Contains(run(t, b.Dir, nil, nil, conduitBin, "queue", "show", "1", "--config", cfg).stdout, "receipt:       delivered")
	}) {
		t.Fatalf("no receipt:\n%s", b.Tail("northshire-pio", 6))
	}
	if out := mustRun(t, b.Dir, nil, nil, conduitBin, "deadlines", "--config", cfg); strings.Contains(out, "acknowledge") {
		t.Fatalf("the acknowledgement clock is still open after the receipt:\n%s", out)
	}
	// The clock existed and the receipt is what stopped it.
	if !testbed.WaitFor(ctx, 10*time.Second, func() bool {
		return strings.Contains(b.Tail("northshire-pio", 50), `"immediate escalation acknowledged"`)
	}) {
		t.Fatalf("no acknowledgement recorded:\n%s", b.Tail("northshire-pio", 10))
	}
}

// TestRectificationReachesEveryEarlierRecipientAndIsReceipted: the
// originator's rectification fans out to every agency the package went to
// (the prison, and the RPIU that the example policy copies in), each gets
// it in a mailbox, and each receipts it (MoU Annex A, Accuracy).
func TestRectificationReachesEveryEarlierRecipientAndIsReceipted(t *testing.T) {
	b := newBed(t, testbed.Options{}, "northshire-pio", "hmp-northgate", "rpiu-north-east")
	ctx := context.Background()
	_, err := b.Submit(ctx, "northshire-pio", []string{mailboxOf(t, b, "hmp-northgate")},
		e2eMessage(e2eLabel, "Wing C conveyance", "Conduit-Topic: corruption"))
	tcheck(t, err, "submit")
	cfg := b.Nodes["northshire-pio"].Config
	var pkgID string
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool {
		out := run(t, b.Dir, nil, nil, conduitBin, "queue", "list", "--state", "sent", "--config", cfg).stdout
		if strings.Count(out, "cdt-") < 2 {
			return false
		}
		for _, f := range strings.Fields(out) {
			if strings.HasPrefix(f, "cdt-") {
				pkgID = f
			}
		}
		return true
	}) {
		t.Fatalf("package not sent to both:\n%s", b.Tail("northshire-pio", 6))
	}
	textFile := b.Dir + "/rectification.txt"
	tcheck(t, os.WriteFile(textFile, []byte("The date of the visit was 14 November, not 4 November.\n"), 0o600), "text")
	out := mustRun(t, b.Dir, nil, nil, conduitBin, "notice", "send", "--config", cfg, "--kind", "rectification",
		"--package", pkgID, "--text", textFile, "--label", strings.Replace(e2eLabel, "NP-2026-0001", "NP-2026-0001-R1", 1))
	if !strings.Contains(out, "hmp-northgate") || !strings.Contains(out, "rpiu-north-east") {
		t.Fatalf("notice not fanned out to both recipients: %s", out)
	}
	noticeID := strings.Fields(out)[1]
	for _, agency := range []string{"hmp-northgate", "rpiu-north-east"} {
		if !testbed.WaitFor(ctx, 30*time.Second, func() bool {
			for _, files := range b.AllDelivered(agency) {
				for _, f := range files {
					if data, _ := os.ReadFile(f); strings.Contains(string(data), "Conduit-Notice: rectification; package="+pkgID) {
						return true
					}
				}
			}
			return false
		}) {
			t.Fatalf("%s did not receive the rectification:\n%s", agency, b.Tail(agency, 6))
		}
	}
	// Each fan-out is receipted.
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool {
		list := run(t, b.Dir, nil, nil, conduitBin, "queue", "list", "--package", noticeID, "--json", "--config", cfg).stdout
		ids := []string{}
		for _, line := range strings.Split(list, "\n") {
			if i := strings.Index(line, `"id": `); i >= 0 {
				ids = append(ids, strings.Trim(strings.TrimSpace(line[i+6:]), ","))
			}
		}
		if len(ids) != 2 {
			return false
		}
		for _, id := range ids {
			if !strings.Contains(run(t, b.Dir, nil, nil, conduitBin, "queue", "show", id, "--config", cfg).stdout, "receipt:       delivered") {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the notice's fan-out was not receipted by both:\n%s", run(t, b.Dir, nil, nil, conduitBin, "queue", "list", "--package", noticeID, "--config", cfg).stdout)
	}
}

// TestRetentionDestroysStoredCopiesAndAuditsIt: when the retention period
// (the example policy: 2190 days) has run out, the receiver's delivered
// copy and the sender's queued envelope are destroyed, the records stay,
// and the audit trail shows the purge (MoU Annex A, Description of method
// of sharing). `conduit purge --dry-run` first says what would go.
func TestRetentionDestroysStoredCopiesAndAuditsIt(t *testing.T) {
	b := newBed(t, testbed.Options{}, "northshire-pio", "hmp-northgate", "rpiu-north-east")
	ctx := context.Background()
	_, err := b.Submit(ctx, "northshire-pio", []string{mailboxOf(t, b, "hmp-northgate")}, e2eMessage(e2eLabel, "Kept six years"))
	tcheck(t, err, "submit")
	pioCfg, ngCfg := b.Nodes["northshire-pio"].Config, b.Nodes["hmp-northgate"].Config
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool {
		return strings.Contains(run(t, b.Dir, nil, nil, conduitBin, "queue", "show", "1", "--config", pioCfg).stdout, "receipt:       delivered")
	}) {
		t.Fatal("not delivered and receipted")
	}
	if n := len(b.AllDelivered("hmp-northgate")); n != 1 {
		t.Fatalf("%d delivered copies", n)
	}
	// A tampered envelope, quarantined at the prison: kept whole, until its
	// own retention period ends too.
	env := bytes.Replace(sealAs(t, b, "northshire-pio", "hmp-northgate", "Tampered"),
		[]byte("SIO-Label: marking=OFFICIAL-SENSITIVE"), []byte("SIO-Label: marking=OFFICIAL"), 1)
	if _, err := b.Inject(ctx, "hmp-northgate", "conduit@northshire-pio.example", []string{mailboxOf(t, b, "hmp-northgate")}, env); err == nil {
		t.Fatal("tampered envelope accepted")
	}
	// Stop the prison, look at what a purge would do 2191 days from now.
	tcheck(t, b.Stop("hmp-northgate"), "stop")
	if out := mustRun(t, b.Dir, nil, nil, conduitBin, "purge", "--dry-run", "--config", ngCfg); !strings.Contains(out, "nothing has reached") {
		t.Fatalf("dry run before the period ends: %s", out)
	}
	later := 2191 * 24 * time.Hour
	tcheck(t, b.MoveClock("hmp-northgate", later), "move prison clock")
	tcheck(t, b.MoveClock("northshire-pio", later), "move PIO clock")
	tcheck(t, b.Start(ctx, "hmp-northgate"), "restart")
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool { return len(b.AllDelivered("hmp-northgate")) == 0 }) {
		t.Fatalf("the delivered copy was not destroyed:\n%s", b.Tail("hmp-northgate", 8))
	}
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool {
		return strings.Contains(run(t, b.Dir, nil, nil, conduitBin, "queue", "show", "1", "--config", pioCfg).stdout, "envelope:      0 bytes")
	}) {
		t.Fatalf("the sender's envelope was not destroyed:\n%s", run(t, b.Dir, nil, nil, conduitBin, "queue", "show", "1", "--config", pioCfg).stdout)
	}
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool {
		return strings.Contains(run(t, b.Dir, nil, nil, conduitBin, "quarantine", "list", "--state", "purged", "--config", ngCfg).stdout, "marking-mismatch")
	}) {
		t.Fatalf("the quarantined message was not purged:\n%s", run(t, b.Dir, nil, nil, conduitBin, "quarantine", "list", "--config", ngCfg).stdout)
	}
	for _, cfg := range []string{pioCfg, ngCfg} {
		q := mustRun(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--kind", "purged", "--config", cfg)
		if !strings.Contains(q, "retention") {
			t.Errorf("no purge in the audit trail of %s:\n%s", cfg, q)
		}
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestAdminListenerShowsMetricsAndReadiness: the admin listener's
// /metrics counts what the gateway did (deliveries, refusals per rule,
// seal latency, queue depth), and /readyz is ready only while the store and
// the key answer.
func TestAdminListenerShowsMetricsAndReadiness(t *testing.T) {
	b := newBed(t, testbed.Options{}, "northshire-pio", "hmp-northgate", "rpiu-north-east")
	ctx := context.Background()
	to := mailboxOf(t, b, "hmp-northgate")
	_, err := b.Submit(ctx, "northshire-pio", []string{to}, e2eMessage(e2eLabel, "Counted"))
	tcheck(t, err, "submit")
	_, err = b.Submit(ctx, "northshire-pio", []string{to}, e2eMessage(strings.Replace(e2eLabel, "sanitised=yes", "sanitised=no", 1), "Refused"))
	if err == nil {
		t.Fatal("unsanitised package accepted")
	}
	admin := "http://" + b.Nodes["northshire-pio"].Admin
	var body string
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool {
		_, body = httpGet(t, admin+"/metrics")
		return strings.Contains(body, `destination="hmp-northgate",outcome="sent"`)
	}) {
		t.Fatalf("no sent delivery in /metrics:\n%s", body)
	}
	for _, want := range []string{`conduit_refusals_total{rule="sanitised-to-disseminate"} 1`, "conduit_seal_duration_seconds_count 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code, _ := httpGet(t, admin+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, body := httpGet(t, admin+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d: %s", code, body)
	}
	key := b.Dir + "/northshire-pio/keys/northshire-pio.key"
	tcheck(t, os.Rename(key, key+".away"), "take the key away")
	code, body := httpGet(t, admin+"/readyz")
	if code != 503 || !strings.Contains(body, "keys") {
		t.Fatalf("/readyz without the key = %d: %s", code, body)
	}
	tcheck(t, os.Rename(key+".away", key), "restore the key")
	if code, body := httpGet(t, admin+"/readyz"); code != 200 {
		t.Fatalf("/readyz after recovery = %d: %s", code, body)
	}
}
