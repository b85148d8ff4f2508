// Package keyringtest builds a real key ring for the tests of the parts
// that use one: northshire-pio's key in a key file (the file backend),
// over a real SQLite store, in a temporary folder.
package keyringtest

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/examples"
	"github.com/conduit-gateway/conduit/gateway/delivery"
	"github.com/conduit-gateway/conduit/gateway/keyring"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
)

// Bed is what a test works with.
type Bed struct {
	Dir     string
	Config  *config.Config
	KeyFile string // the backend: moved away, the backend is unavailable
	Store   *store.SQLite
	Audit   *audit.Writer // writes nothing
	Log     *slog.Logger
	Ring    *keyring.Ring
}

// New lays out the bed; the store closes when the test ends. The key
// gate runs no loop, so each check a test makes is explicit.
func New(t testing.TB) *Bed {
	t.Helper()
	ctx := context.Background()
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
	if err := (&keys.File{Path: path}).Store(ctx, id); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	aud := audit.NewWriter(nil, cfg.Agency, time.Now, log, nil)
	ring, err := keyring.New(ctx, cfg, &keys.File{Path: path}, keyring.Options{Store: st, Audit: aud,
		Deliver: delivery.New(dir, "", "northshire-pio.example"), Log: log, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &Bed{Dir: dir, Config: cfg, KeyFile: path, Store: st, Audit: aud, Log: log, Ring: ring}
}
