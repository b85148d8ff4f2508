package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/testbed"
)

// One partner's unusable certificate must not stop the gateway: it starts,
// serves the other partners, and holds what is for that partner with the
// reason (DESIGN.md security invariant 6: kept, never dropped).
func TestGatewayWithOneBadPartnerCertificateServesTheOthers(t *testing.T) {
	b, err := testbed.Create(t.TempDir(), conduitBin, testbed.Options{Policy: e2ePolicy(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.StopAll)
	// The RPIU's certificate file is damaged (truncated in transit).
	bad := filepath.Join(b.Dir, "certs", "rpiu-north-east.pub.asc")
	if err := os.WriteFile(bad, []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBGV\n-----END PGP PUBLIC KEY BLOCK-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.StartAll(context.Background(), "northshire-pio", "hmp-northgate"); err != nil {
		t.Fatalf("a gateway with one bad partner certificate did not start: %v", err)
	}
	ctx := context.Background()
	// corruption-to-rpiu (examples/policy.yaml) copies this to the RPIU.
	resp, err := b.Submit(ctx, "northshire-pio", []string{mailboxOf(t, b, "hmp-northgate")},
		e2eMessage(e2eLabel, "Conveyance on wing C", "Conduit-Topic: corruption"))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if !strings.Contains(resp, "held for rpiu-north-east") {
		t.Errorf("the 250 does not say the RPIU's copy is held: %s", resp)
	}
	if !testbed.WaitFor(ctx, 20*time.Second, func() bool { return len(b.AllDelivered("hmp-northgate")) > 0 }) {
		t.Fatal("the other partner was not served")
	}
	items, err := b.Queue(ctx, "northshire-pio", store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var held bool
	for _, it := range items {
		if it.Destination == "rpiu-north-east" && it.State == store.OnHold && strings.Contains(it.Reason, "certificate file") {
			held = true
		}
	}
	if !held {
		t.Errorf("nothing held for the RPIU with the reason: %s", describeItems(items))
	}
	if log := b.Tail("northshire-pio", 200); !strings.Contains(log, "admin alert: partner certificate not usable") {
		t.Errorf("no alert in the log:\n%s", log)
	}
	if out := run(t, b.Dir, nil, nil, conduitBin, "keys", "list", "--config", b.Nodes["northshire-pio"].Config).stdout; !strings.Contains(out, "warning: rpiu-north-east has no usable key") {
		t.Errorf("keys list does not warn about the damaged certificate:\n%s", out)
	}
}
