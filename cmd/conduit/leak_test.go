package main

// The commands that open a gateway or its store run in process and must
// leave nothing running behind them: an administrator's command that
// left a goroutine holding the database would, in a long-lived caller
// (a test, a supervisor embedding the CLI), keep the store open and its
// writes unflushed.

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/testbed"
)

func TestCLICommandsLeaveNoGoroutineBehind(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := testbed.Create(dir, "", testbed.Options{})
	tcheck(t, err, "test bed")
	pio := b.Nodes["northshire-pio"]
	cfg, err := config.Load(pio.Config)
	tcheck(t, err, "load config")
	trail, err := openTrail(ctx, cfg)
	tcheck(t, err, "create the audit trail")
	tcheck(t, trail.Close(), "close the audit trail")

	// A partner's new key, offered out of band and then approved.
	nid, err := keys.Generate("hmp-northgate", "conduit@hmp-northgate.example", keys.ProfileRFC4880, time.Now().Add(-time.Minute))
	tcheck(t, err, "new partner key")
	cert := writeCert(t, nid)
	var armored bytes.Buffer
	tcheck(t, keys.WritePublic(&armored, nid.Entity), "armor the partner key")
	// The database a gateway that has run would have, with the partner's
	// new key pending (as keys offer leaves it).
	st, err := b.OpenStore(ctx, "northshire-pio")
	tcheck(t, err, "create the store")
	_, _, err = st.OfferPartnerKey(ctx, store.PartnerKey{Agency: "hmp-northgate", Fingerprint: nid.Fingerprint(),
		Replaces: b.Directory.Agency("hmp-northgate").Fingerprint, Cert: armored.Bytes(), State: store.KeyPending, Source: "test", Seen: time.Now()})
	tcheck(t, err, "a pending partner key")
	tcheck(t, st.Close(), "close the store")
	text := filepath.Join(dir, "breach.txt")
	tcheck(t, os.WriteFile(text, []byte("A copy of the package was sent to the wrong mailbox.\n"), 0o600), "notice text")

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"policy check", []string{"policy", "check", "--config", pio.Config}, "OK"},
		{"config show", []string{"config", "show", "--config", pio.Config}, "workers:"},
		{"queue list", []string{"queue", "list", "--config", pio.Config}, ""},
		{"deadlines", []string{"deadlines", "--config", pio.Config}, "no open clocks"},
		{"audit verify", []string{"audit", "verify", "--config", pio.Config}, ""},
		{"keys offer", []string{"keys", "offer", cert, "--config", pio.Config}, "pending"},
		{"keys pending", []string{"keys", "pending", "--config", pio.Config}, nid.Fingerprint()},
		{"keys approve", []string{"keys", "approve", "hmp-northgate", nid.Fingerprint(), "--reason", "read back by phone", "--config", pio.Config}, "approved"},
		{"keys list", []string{"keys", "list", "--config", pio.Config}, nid.Fingerprint()},
		{"notice send", []string{"notice", "send", "--config", pio.Config, "--kind", "breach", "--package", "cdt-leakcheck", "--originator", "hmp-northgate",
			"--text", text, "--label", strings.Replace(e2eLabel, "NP-2026-0001", "NP-2026-0001-B1", 1)}, "queued for hmp-northgate",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Whatever ran before (other tests' processes and readers) is
			// not this command's doing.
			before := goleak.IgnoreCurrent()
			out, err := runCLI(t, tc.args...)
			if err != nil {
				t.Fatalf("conduit %s: %v\n%s", strings.Join(tc.args, " "), err, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("conduit %s: output lacks %q:\n%s", tc.name, tc.want, out)
			}
			if err := goleak.Find(before); err != nil {
				t.Errorf("conduit %s left goroutines running: %v", tc.name, err)
			}
		})
	}
}
