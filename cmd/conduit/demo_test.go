package main

import (
	"strings"
	"testing"
)

// TestDemoRunsWithNoSetup runs the README's first command as a user would:
// the built binary, no configuration, exit status 0.
func TestEnvelopeDemoRunsWithNoSetup(t *testing.T) {
	r := run(t, t.TempDir(), nil, nil, conduitBin, "demo", "--envelope-only")
	if r.code != 0 {
		t.Fatalf("conduit demo: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"every check passed", "signature: valid, by met-pio", "refused: outer marking disagrees",
		"refused: envelope was not signed by the pinned key", "refused: envelope is a replay"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if strings.Contains(strings.SplitN(r.stdout, "3. Opened", 2)[0], "mobile phones") {
		t.Error("the demo's wire view shows plaintext")
	}
}

// TestGatewayDemoRunsWithNoSetup runs `conduit demo` as the README says: it
// starts seven gateway processes, sends real packages over SMTP with TLS,
// checks every outcome itself, and exits 0 only if each package went where
// the policy says and nowhere else.
func TestGatewayDemoRunsWithNoSetup(t *testing.T) {
	if testing.Short() {
		t.Skip("starts seven gateway processes")
	}
	r := run(t, t.TempDir(), nil, nil, conduitBin, "demo")
	if r.code != 0 {
		t.Fatalf("conduit demo: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{
		"queued for ccu-north (governor-to-regional-ccu)",
		"(addressed, immediate, imminent-risk-escalation)",
		"refused: SMTP error 550: Package refused, nothing was sent: SECRET",
		"(sanitised-to-disseminate)",
		"quarantined as Q1 at hmp-northgate",
		"hmp-eastmoor     delivered to governor@eastmoor.hmpps.example",
		"[Conduit] Overdue: triage",
		"northshire-pio   ",
		"chain intact",
		"every audit chain is intact",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo output lacks %q\n%s", want, r.stdout)
		}
	}
}
