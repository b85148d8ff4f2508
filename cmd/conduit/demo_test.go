package main

import (
	"strings"
	"testing"
)

// TestDemoRunsWithNoSetup runs the README's first command as a user would:
// the built binary, no configuration, exit status 0.
func TestDemoRunsWithNoSetup(t *testing.T) {
	r := run(t, t.TempDir(), nil, nil, conduitBin, "demo")
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
