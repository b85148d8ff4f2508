package submission

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/gateway/keyring/keyringtest"
	"github.com/conduit-gateway/conduit/gateway/smtpserver"
	"github.com/conduit-gateway/conduit/metrics"
)

// TestIntakeFailsClosedWhileTheKeysAreGone: with the real key ring over
// the real file backend, a submission while the key file is gone is
// answered 451 (the sender's system keeps it and retries), and nothing is
// sealed.
func TestIntakeFailsClosedWhileTheKeysAreGone(t *testing.T) {
	ctx := context.Background()
	b := keyringtest.New(t)
	ring, path := b.Ring, b.KeyFile
	srv := New(b.Config, Options{Keys: b.Ring, Store: b.Store, Audit: b.Audit, Metrics: metrics.New(b.Log), Log: b.Log, Now: time.Now})
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	if err := ring.Check(ctx); err == nil {
		t.Fatal("the gate did not see the key file gone")
	}
	if reply := srv.intake(ctx, submission{}); reply != smtpserver.ErrKeysUnavailable {
		t.Errorf("intake with the backend gone answered %v, want the 451 of ErrKeysUnavailable", reply)
	}
	if e := smtpserver.ErrKeysUnavailable; e.Code != 451 || e.EnhancedCode[0] != 4 {
		t.Errorf("reply %v is not a temporary failure", e)
	}
}
