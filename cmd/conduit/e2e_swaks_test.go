package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/testbed"
)

// TestSwaksSubmissionArrivesOpenedAndVerified submits a marked message with
// the real swaks client (STARTTLS with the agencies' CA verified, AUTH
// PLAIN) to the PIO's submission port; it must arrive at the prison opened,
// verified and marked.
func TestSwaksSubmissionArrivesOpenedAndVerified(t *testing.T) {
	swaks := requireTool(t, "swaks")
	b := newE2EBed(t, testbed.Options{}, "northshire-pio", "hmp-northgate")
	n := b.Nodes["northshire-pio"]
	_, port, _ := strings.Cut(n.Submission, ":")
	const body = "Swaks test: a visitor is passing packages in the visits hall."
	t.Cleanup(func() { noPlaintextAtRest(t, b, body) })
	out := mustRun(t, "", nil, nil, swaks,
		"--server", "127.0.0.1", "--port", port, "--tls",
		"--tls-verify", "--tls-ca-path", filepath.Join(b.Dir, "ca.crt"),
		"--auth", "PLAIN", "--auth-user", n.User, "--auth-password", n.Password,
		"--from", n.Address, "--to", ngIntel, "--helo", "swaks.localhost",
		"--header", "Subject: Visits hall",
		"--header", "Handling-Label: "+e2eLabel,
		"--body", body)
	if !strings.Contains(out, "<~  250 ") || !strings.Contains(out, "queued for hmp-northgate") {
		t.Fatalf("swaks did not get the 250 for the package:\n%s", out)
	}
	var pkg string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "queued for") {
			pkg = packageOf(t, line)
		}
	}
	ctx := context.Background()
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool { return len(b.Delivered("hmp-northgate", ngIntel)) > 0 }) {
		t.Fatalf("nothing delivered to %s", ngIntel)
	}
	got := readDelivered(t, b, "hmp-northgate")[ngIntel]
	if len(got) != 1 {
		t.Fatalf("%d messages delivered; want 1", len(got))
	}
	for _, want := range []string{
		"Conduit-Verified: signer=northshire-pio", "package=" + pkg, "label=valid",
		"Subject: [OFFICIAL-SENSITIVE] Visits hall", "Handling-Label: v=1; classification=OFFICIAL-SENSITIVE",
		"X-Mailer: swaks", body,
	} {
		if !strings.Contains(got[0], want) {
			t.Errorf("the delivered message lacks %q", want)
		}
	}
}
