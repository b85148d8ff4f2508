package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/gateway/receipts"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/testbed"
)

// TestReceiptsOfManyDeliveriesShareEnvelopes: a burst of escalations to
// the prison is receipted in fewer envelopes than packages (the prison's
// batcher gathers them for two seconds here), and every package's
// acknowledgement clock is stopped by its entry.
func TestReceiptsOfManyDeliveriesShareEnvelopes(t *testing.T) {
	b := newBed(t, testbed.Options{ReceiptGather: "2s"}, "northshire-pio", "hmp-northgate", "rpiu-north-east")
	ctx := context.Background()
	const n = 8
	var pkgs []string
	for i := range n {
		resp, err := b.Submit(ctx, "northshire-pio", []string{mailboxOf(t, b, "hmp-northgate")},
			e2eMessage(e2eLabel, fmt.Sprintf("Escape planned %d", i), "Conduit-Risk: escape"))
		tcheck(t, err, "submit")
		pkgs = append(pkgs, packageOf(t, resp))
	}
	cfg := b.Nodes["northshire-pio"].Config
	if !testbed.WaitFor(ctx, 60*time.Second, func() bool {
		return !strings.Contains(mustRun(t, b.Dir, nil, nil, conduitBin, "deadlines", "--config", cfg), "acknowledge")
	}) {
		t.Fatalf("acknowledgement clocks still open:\n%s\n%s", mustRun(t, b.Dir, nil, nil, conduitBin, "deadlines", "--config", cfg),
			b.Tail("northshire-pio", 10))
	}
	snd := readPromises(t, b, "northshire-pio")
	for _, p := range pkgs {
		if !snd.receipts[p] {
			t.Errorf("no receipt recorded for %s", p)
		}
		if done, ok := snd.clocks[clockKey{p, "acknowledge", "hmp-northgate"}]; !ok || !done {
			t.Errorf("%s: the prison's acknowledgement clock: present %v, stopped %v", p, ok, done)
		}
	}
	items, err := b.Queue(ctx, "hmp-northgate", store.Filter{Destination: "northshire-pio"})
	tcheck(t, err, "queue")
	envelopes, batches := 0, 0
	for _, it := range items {
		if it.Size > 0 {
			envelopes++
		}
		if strings.HasPrefix(it.PackageID, "rcpts-") {
			batches++
		}
	}
	if envelopes >= n || batches == 0 {
		t.Fatalf("%d receipt envelopes (%d batches) for %d packages; want fewer envelopes than packages:\n%s", envelopes, batches, n, describeItems(items))
	}
	// Each receipt is on record at the prison as sent, as it was when
	// every receipt travelled alone.
	for _, p := range pkgs {
		its, err := b.Queue(ctx, "hmp-northgate", store.Filter{PackageID: store.ReceiptID(p)})
		tcheck(t, err, "queue")
		if len(its) != 1 || its[0].State != store.Sent {
			t.Errorf("the prison's record of the receipt for %s: %s", p, describeItems(its))
		}
	}
}

// forgeReceiptList seals, with the prison's real key, a receipt listing
// entries, as the prison's batcher would.
func forgeReceiptList(t *testing.T, b *testbed.Bed, id string, entries []receipts.Body) []byte {
	t.Helper()
	signer := bedIdentity(t, b, "hmp-northgate")
	l, err := envelope.ParseLabel(strings.Replace(e2eLabel, "originator=northshire-pio", "originator=hmp-northgate", 1) +
		`; created="` + time.Now().UTC().Format(time.RFC3339) + `"`)
	tcheck(t, err, "label")
	ctype, body, err := receipts.Encode(entries)
	tcheck(t, err, "encode")
	msg := "From: <conduit@hmp-northgate.example>\r\nTo: <pio@northshire-pio.example>\r\nSubject: Receipts\r\n" +
		"Content-Type: " + ctype + "\r\n\r\n" + string(body) + "\r\n"
	var buf bytes.Buffer
	_, err = envelope.Seal(context.Background(), &buf, strings.NewReader(msg), envelope.SealParams{
		Signer: signer, Recipients: []*keys.Cert{bedCert(t, b, "northshire-pio")}, Label: l, PackageID: id,
		Manifest: &envelope.Manifest{From: "hmp-northgate", To: []string{"northshire-pio"}, Kind: envelope.KindReceipt},
		Profile:  keys.ProfileOf(signer.Entity), Now: time.Now,
	})
	tcheck(t, err, "seal receipt")
	return buf.Bytes()
}

// TestAReceiptListIsTakenWholeOrQuarantinedWhole: the originator checks
// every entry of a receipt list as it checks a receipt alone. A list with
// one entry for a package never sent to the prison is quarantined whole,
// and records nothing of its good entries; a list of good entries is
// recorded in one go. (The prison's own receipts wait an hour to be
// gathered here, so that only the forged ones arrive.)
func TestAReceiptListIsTakenWholeOrQuarantinedWhole(t *testing.T) {
	b := newE2EBed(t, testbed.Options{ReceiptGather: "1h"}, "northshire-pio", "hmp-northgate")
	ctx := context.Background()
	var pkgs []string
	for i := range 2 {
		resp, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(e2eLabel, fmt.Sprintf("Report %d", i), "Conduit-Topic: security"))
		tcheck(t, err, "submit")
		pkg := packageOf(t, resp)
		if _, ok := waitQueue(t, b, "northshire-pio", pkg, 30*time.Second, allSent); !ok {
			t.Fatalf("%s not sent", pkg)
		}
		pkgs = append(pkgs, pkg)
	}
	entry := func(pkg string) receipts.Body {
		return receipts.Body{Package: pkg, Agency: "hmp-northgate", Mailboxes: []string{ngIntel}, Delivered: time.Now().UTC()}
	}
	never := "cdt-aaaaaaaaaaaaaaaaaaaaaaaa"
	_, err := b.InjectAs(ctx, "northshire-pio", "hmp-northgate", "conduit@hmp-northgate.example",
		[]string{"pio@northshire-pio.example"}, forgeReceiptList(t, b, "rcpts-forged-1", []receipts.Body{entry(pkgs[0]), entry(never)}))
	if code, text := smtpCode(err); code != 550 || !strings.Contains(text, never+" (entry 2 of 2), which was not sent to them") {
		t.Fatalf("a receipt list with an entry for a package never sent: %v; want 550, quarantined naming the entry", err)
	}
	qs, err := b.Quarantined(ctx, "northshire-pio")
	tcheck(t, err, "quarantine")
	if len(qs) != 1 || qs[0].Check != "receipt-unknown" {
		t.Fatalf("quarantine %+v", qs)
	}
	if snd := readPromises(t, b, "northshire-pio"); snd.receipts[pkgs[0]] {
		t.Fatalf("the good entry of a quarantined receipt list was recorded")
	}
	resp, err := b.InjectAs(ctx, "northshire-pio", "hmp-northgate", "conduit@hmp-northgate.example",
		[]string{"pio@northshire-pio.example"}, forgeReceiptList(t, b, "rcpts-forged-2", []receipts.Body{entry(pkgs[0]), entry(pkgs[1])}))
	if err != nil || !strings.Contains(resp, "Receipts for 2 packages recorded") {
		t.Fatalf("a good receipt list: %q, %v", resp, err)
	}
	snd := readPromises(t, b, "northshire-pio")
	for _, p := range pkgs {
		if !snd.receipts[p] || !snd.events[p][audit.Receipt] {
			t.Errorf("%s: receipt recorded %v, audited %v", p, snd.receipts[p], snd.events[p][audit.Receipt])
		}
	}
}
