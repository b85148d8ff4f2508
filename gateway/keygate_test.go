package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/metrics"
)

// TestKeyGateFailsClosedWhileTheBackendIsGone drives the gate with the
// real file backend: its key file gone is the backend unavailable. Intake
// and inbound answer 451 then, and work again once the file is back.
func TestKeyGateFailsClosedWhileTheBackendIsGone(t *testing.T) {
	g := testGateway(t)
	g.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	g.metrics = metrics.New(g.log)
	dir := t.TempDir()
	path := filepath.Join(dir, "k.key")
	id, err := keys.Generate("northshire-pio", "conduit@northshire-pio.example", keys.ProfileRFC4880, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fb := &keys.File{Path: path}
	if err := fb.Store(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	g.id.Store(id)
	g.gate = newKeyGate(g, fb, time.Hour) // no loop: each check below is explicit
	ctx := context.Background()

	if err := g.gate.check(ctx); err != nil {
		t.Fatalf("gate with the key present: %v", err)
	}
	if err := g.keysReady(ctx); err != nil {
		t.Fatalf("ready with the key present: %v", err)
	}
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	if err := g.gate.check(ctx); !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("gate without the key: %v, want ErrUnavailable", err)
	}
	for name, reply := range map[string]error{
		"intake":  g.intake(ctx, submission{}),
		"inbound": g.process(ctx, received{}).reply,
	} {
		if reply != errKeysUnavailable {
			t.Errorf("%s with the backend gone answered %v, want the 451 of errKeysUnavailable", name, reply)
		}
	}
	if errKeysUnavailable.Code != 451 || errKeysUnavailable.EnhancedCode[0] != 4 {
		t.Errorf("reply %v is not a temporary failure", errKeysUnavailable)
	}
	if err := os.Rename(path+".away", path); err != nil {
		t.Fatal(err)
	}
	if err := g.gate.check(ctx); err != nil {
		t.Fatalf("gate with the key back: %v", err)
	}
	if err := g.keysReady(ctx); err != nil {
		t.Fatalf("ready with the key back: %v", err)
	}
}
