package keyring

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/examples"
	"github.com/conduit-gateway/conduit/gateway/delivery"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
)

// TestKeyGateFailsClosedWhileTheBackendIsGone drives the gate with the
// real file backend and the real store: its key file gone is the backend
// unavailable; the gate says so, and says it is back once the file is.
// (The front ends' 451 while it is gone: submission and inbound tests.)
func TestKeyGateFailsClosedWhileTheBackendIsGone(t *testing.T) {
	ctx := context.Background()
	r, path := testRing(t)
	if err := r.gate.check(ctx); err != nil {
		t.Fatalf("gate with the key present: %v", err)
	}
	if err := r.Ready(ctx); err != nil {
		t.Fatalf("ready with the key present: %v", err)
	}
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	if err := r.gate.check(ctx); !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("gate without the key: %v, want ErrUnavailable", err)
	}
	if err := r.Ready(ctx); !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("ready without the key: %v, want ErrUnavailable", err)
	}
	if !r.Down(ctx) {
		t.Error("Down says the backend is there")
	}
	if err := os.Rename(path+".away", path); err != nil {
		t.Fatal(err)
	}
	if err := r.gate.check(ctx); err != nil {
		t.Fatalf("gate with the key back: %v", err)
	}
	if err := r.Ready(ctx); err != nil {
		t.Fatalf("ready with the key back: %v", err)
	}
}

// testRing is northshire-pio's key ring over a key file (returned) and a
// store in a temporary folder; the gate runs no loop, so each check is
// explicit.
func testRing(t *testing.T) (*Ring, string) {
	t.Helper()
	dir := t.TempDir()
	d, err := config.LoadDirectory("directory.yaml", examples.Directory)
	if err != nil {
		t.Fatal(err)
	}
	d.Agency("northshire-pio").Fingerprint = ""
	cfg := &config.Config{Agency: "northshire-pio", Directory: d}
	cfg.Keys.Partners = dir
	cfg.Keys.CheckInterval = config.Duration(time.Hour)
	path := filepath.Join(dir, "k.key")
	id, err := keys.Generate("northshire-pio", "conduit@northshire-pio.example", keys.ProfileRFC4880, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fb := &keys.File{Path: path}
	if err := fb.Store(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := New(context.Background(), cfg, fb, Options{Store: st, Audit: audit.NewWriter(nil, cfg.Agency, time.Now, log, nil),
		Deliver: delivery.New(dir, "", "northshire-pio.example"), Log: log, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	return r, path
}
