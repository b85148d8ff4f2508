package inbound

import (
	"context"
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
	"github.com/conduit-gateway/conduit/gateway/keyring"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/metrics"
)

// TestInboundFailsClosedWhileTheKeysAreGone: with the real key ring over
// the real file backend, a partner's package while the key file is gone is
// answered 451 (the sender's system keeps it and retries), and nothing is
// opened.
func TestInboundFailsClosedWhileTheKeysAreGone(t *testing.T) {
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
	defer st.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	aud := audit.NewWriter(nil, cfg.Agency, time.Now, log, nil)
	ring, err := keyring.New(ctx, cfg, &keys.File{Path: path}, keyring.Options{Store: st, Audit: aud,
		Deliver: delivery.New(dir, "", "northshire-pio.example"), Log: log, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv := New(cfg, Options{Keys: ring, Store: st, Audit: aud, Deliver: delivery.New(dir, "", "x.example"), Metrics: metrics.New(log), Log: log, Now: time.Now})
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	if err := ring.Check(ctx); err == nil {
		t.Fatal("the gate did not see the key file gone")
	}
	if reply := srv.process(ctx, received{}).reply; reply != smtpserver.ErrKeysUnavailable {
		t.Errorf("inbound with the backend gone answered %v, want the 451 of ErrKeysUnavailable", reply)
	}
	if e := smtpserver.ErrKeysUnavailable; e.Code != 451 || e.EnhancedCode[0] != 4 {
		t.Errorf("reply %v is not a temporary failure", e)
	}
}
