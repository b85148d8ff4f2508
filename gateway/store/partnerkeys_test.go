package store

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// TestPartnerKeyChangesWaitForADecision: a key offered with a new
// fingerprint is pending until an administrator decides; a rejected key
// offered again stays rejected; approving a change supersedes the key in
// force; every change moves the version a running gateway watches.
func TestPartnerKeyChangesWaitForADecision(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	v0, err := s.PartnerKeysVersion(ctx)
	tcheck(t, err, "version")

	old := PartnerKey{Agency: "hmp-northgate", Fingerprint: "AAAA", Replaces: "AAAA", Cert: []byte("cert-a"), State: KeyApproved, Source: "directory", DecidedBy: "automatic", Reason: "pinned"}
	if _, isNew, err := s.OfferPartnerKey(ctx, old); err != nil || !isNew {
		t.Fatalf("first offer: new=%v err=%v", isNew, err)
	}
	change := PartnerKey{Agency: "hmp-northgate", Fingerprint: "BBBB", Replaces: "AAAA", Cert: []byte("cert-b"), Source: "notice from hmp-northgate"}
	k, isNew, err := s.OfferPartnerKey(ctx, change)
	if err != nil || !isNew || k.State != KeyPending {
		t.Fatalf("change: %+v new=%v err=%v", k, isNew, err)
	}
	if _, isNew, _ := s.OfferPartnerKey(ctx, change); isNew {
		t.Error("the same change offered twice was recorded twice")
	}
	pending, err := s.ListPartnerKeys(ctx, "", KeyPending)
	if err != nil || len(pending) != 1 || pending[0].Fingerprint != "BBBB" {
		t.Fatalf("pending: %+v %v", pending, err)
	}

	for _, tc := range []struct {
		name        string
		fp          string
		state       KeyState
		by, reason  string
		wantErr     error
		wantErrText string
	}{
		{"no reason", "BBBB", KeyApproved, "admin", " ", ErrNoReason, ""},
		{"not a decision", "BBBB", KeyPending, "admin", "x", nil, "not a decision"},
		{"unknown key", "CCCC", KeyApproved, "admin", "x", ErrKeyNotPending, ""},
		{"the key in force is not pending", "AAAA", KeyRejected, "admin", "x", ErrKeyNotPending, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.DecidePartnerKey(ctx, "hmp-northgate", tc.fp, tc.state, tc.by, tc.reason)
			if err == nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("want %v, got %v", tc.wantErr, err)
			}
		})
	}

	if _, err := s.DecidePartnerKey(ctx, "hmp-northgate", "BBBB", KeyApproved, "admin", "confirmed by phone with the Northgate duty governor"); err != nil {
		t.Fatal(err)
	}
	approved, _ := s.ListPartnerKeys(ctx, "hmp-northgate", KeyApproved)
	if len(approved) != 1 || approved[0].Fingerprint != "BBBB" || approved[0].DecidedBy != "admin" {
		t.Fatalf("approved after the change: %+v", approved)
	}
	if rej, _ := s.ListPartnerKeys(ctx, "hmp-northgate", KeyRejected); len(rej) != 1 || rej[0].Fingerprint != "AAAA" {
		t.Fatalf("the superseded key: %+v", rej)
	}
	// Offered again (an old directory copy), the superseded key stays out.
	if k, _, _ := s.OfferPartnerKey(ctx, old); k.State != KeyRejected {
		t.Errorf("a superseded key offered again is %s", k.State)
	}
	// An update signed by the approved key replaces its certificate.
	upd := PartnerKey{Agency: "hmp-northgate", Fingerprint: "BBBB", Cert: []byte("cert-b2"), State: KeyApproved, Source: "notice", DecidedBy: "automatic", Reason: "update"}
	if k, _, err := s.OfferPartnerKey(ctx, upd); err != nil || string(k.Cert) != "cert-b2" {
		t.Fatalf("update: %+v %v", k, err)
	}
	v1, _ := s.PartnerKeysVersion(ctx)
	if v1 <= v0 {
		t.Errorf("version did not move: %d -> %d", v0, v1)
	}
}

func TestHoldAndResealKeepTheItem(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	idsOut, err := s.Enqueue(ctx, []Item{item("cdt-1", "hmp-northgate")})
	tcheck(t, err, "enqueue")
	id := idsOut[0]
	if err := s.HoldItem(ctx, id, ""); !errors.Is(err, ErrNoReason) {
		t.Fatalf("hold without a reason: %v", err)
	}
	tcheck(t, s.HoldItem(ctx, id, "partner-key: hmp-northgate's key expired"), "hold")
	it, err := s.Get(ctx, id)
	tcheck(t, err, "get")
	if it.State != OnHold || it.Reason == "" {
		t.Fatalf("held item: %s %q", it.State, it.Reason)
	}
	if c, _ := s.Claim(ctx, s.now().Add(1e12), 10, 1e9); len(c) != 0 {
		t.Fatal("a held item was claimed for delivery")
	}
	tcheck(t, s.ResealItem(ctx, id, []byte("new ciphertext"), "sealed again to the approved key"), "reseal")
	it, err = s.Get(ctx, id)
	tcheck(t, err, "get")
	if it.State != Queued || string(it.Envelope) != "new ciphertext" || it.Size != int64(len("new ciphertext")) {
		t.Fatalf("resealed item: %s %q size %d", it.State, it.Envelope, it.Size)
	}
	var raw []byte
	tcheck(t, s.r.QueryRowContext(ctx, `SELECT data FROM queue_chunk WHERE item_id = ? AND seq = 0`, id).Scan(&raw), "raw")
	if bytes.Contains(raw, []byte("new ciphertext")) {
		t.Fatal("the resealed envelope is stored without its data key (retention could not shred it)")
	}
	tcheck(t, s.MarkSent(ctx, id, "Q1"), "sent")
	if err := s.ResealItem(ctx, id, []byte("x"), "n"); !errors.Is(err, ErrWrongState) {
		t.Errorf("resealing a sent item: %v", err)
	}
}
