package keys_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/keys"
)

func mustGen(t *testing.T, agency string, p keys.Profile, at time.Time, life time.Duration) *keys.Identity {
	t.Helper()
	id, err := keys.GenerateFor(agency, "conduit@"+agency+".example", p, at, life)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mustPublic(t *testing.T, id *keys.Identity) *keys.Cert {
	t.Helper()
	c, err := id.Public()
	if err != nil {
		t.Fatal(err)
	}
	// Through the armored form, as a partner receives it.
	var b bytes.Buffer
	if err := keys.WritePublic(&b, c.Entity); err != nil {
		t.Fatal(err)
	}
	c, err = keys.ReadCert(&b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const body = "From: a@met.example\r\nTo: b@northgate.example\r\nSubject: s\r\n\r\nVisits intelligence for the rotation test.\r\n"

func seal(t *testing.T, from *keys.Identity, to *keys.Cert) []byte {
	t.Helper()
	l, err := envelope.ParseLabel(`v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; subjects=suspected; purpose=prison-security; sanitised=yes; originator=` + from.Agency + `; reference=R-1; created=2026-11-23T10:00:00Z`)
	if err != nil {
		t.Fatal(err)
	}
	l.Created = time.Now().UTC().Truncate(time.Second)
	var buf bytes.Buffer
	if _, err := envelope.Seal(context.Background(), &buf, strings.NewReader(body), envelope.SealParams{
		Signer: from, Recipients: []*keys.Cert{to}, Label: l, PackageID: envelope.NewPackageID(),
		Manifest: &envelope.Manifest{From: from.Agency, To: []string{to.Agency}}, Profile: keys.ProfileOf(from.Entity),
	}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func open(t *testing.T, env []byte, me *keys.Identity, from *keys.Cert) error {
	t.Helper()
	ps := keys.NewPartners()
	if err := ps.Add(from, "", ""); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, err := envelope.Open(context.Background(), &out, bytes.NewReader(env), envelope.OpenParams{Identity: me, Partners: ps, SpoolDir: t.TempDir()})
	if err == nil && !strings.Contains(out.String(), "Visits intelligence") {
		t.Fatalf("opened, but the body is not there")
	}
	return err
}

// TestRotationKeepsTheFingerprintAndOldPackagesOpen: a rotation adds an
// encryption subkey under the same primary key, so the partners' pins stay
// valid, partners with the new certificate encrypt to the new subkey, and
// a package sealed to the old certificate (in flight during the rotation)
// still opens.
func TestRotationKeepsTheFingerprintAndOldPackagesOpen(t *testing.T) {
	for _, p := range []keys.Profile{keys.ProfileRFC4880, keys.ProfileRFC9580} {
		t.Run(string(p), func(t *testing.T) {
			now := time.Now()
			met := mustGen(t, "met-pio", p, now.Add(-time.Hour), 0)
			ng := mustGen(t, "hmp-northgate", p, now.Add(-time.Hour), 0)
			oldCert := mustPublic(t, ng)
			inFlight := seal(t, met, oldCert)

			rotated, err := keys.Rotate(ng, now, 0)
			if err != nil {
				t.Fatal(err)
			}
			if rotated.Fingerprint() != ng.Fingerprint() {
				t.Fatalf("rotation changed the fingerprint: %s -> %s", ng.Fingerprint(), rotated.Fingerprint())
			}
			if len(ng.Entity.Subkeys) != 1 {
				t.Fatalf("Rotate changed the identity in use: %d subkeys", len(ng.Entity.Subkeys))
			}
			newCert := mustPublic(t, rotated)
			st := keys.StatusOf(newCert.Entity, now)
			if len(st.Subkeys) != 2 || st.Subkeys[0].Current || !st.Subkeys[1].Current {
				t.Fatalf("after rotation want the second of two subkeys current: %+v", st.Subkeys)
			}
			afterwards := seal(t, met, newCert)
			// The relay reads whom an envelope is sealed to without
			// decrypting it.
			for env, sk := range map[*[]byte]int{&inFlight: 0, &afterwards: 1} {
				ids, err := envelope.RecipientKeyIDs(context.Background(), bytes.NewReader(*env))
				want := rotated.Entity.Subkeys[sk].PublicKey.KeyId
				if err != nil || len(ids) != 1 || ids[0] != want {
					t.Errorf("RecipientKeyIDs: %x, %v; want [%x]", ids, err, want)
				}
				if !newCert.HasValidSubkey(want, now) {
					t.Errorf("subkey %d of the rotated certificate is not valid", sk)
				}
			}
			if err := open(t, afterwards, ng, mustPublic(t, met)); err == nil {
				t.Fatal("the old identity opened a package sealed to the new subkey")
			}
			for name, env := range map[string][]byte{"sealed before": inFlight, "sealed after": afterwards} {
				if err := open(t, env, rotated, mustPublic(t, met)); err != nil {
					t.Errorf("%s the rotation: %v", name, err)
				}
			}
			// A partner's pinned copy takes the update: same fingerprint.
			up, err := keys.UpdateCert(oldCert, newCert)
			if err != nil || len(up.Entity.Subkeys) != 2 {
				t.Fatalf("UpdateCert: %v", err)
			}
		})
	}
}

func TestRevokedSubkeyIsNoLongerEncryptedTo(t *testing.T) {
	now := time.Now()
	ng := mustGen(t, "hmp-northgate", keys.ProfileRFC4880, now.Add(-2*time.Hour), 0)
	first := keys.StatusOf(ng.Entity, now).Subkeys[0]
	if _, err := keys.RevokeSubkey(ng, first.Fingerprint, "laptop stolen", false, now); !errors.Is(err, keys.ErrNoEncryptTo) {
		t.Fatalf("revoking the only subkey: want ErrNoEncryptTo, got %v", err)
	}
	rotated, err := keys.Rotate(ng, now.Add(-time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := keys.RevokeSubkey(rotated, first.KeyID, "laptop stolen", false, now)
	if err != nil {
		t.Fatal(err)
	}
	cert := mustPublic(t, revoked)
	st := keys.StatusOf(cert.Entity, now)
	if !st.Subkeys[0].Revoked || st.Subkeys[1].Revoked || !st.Subkeys[1].Current || st.Usable != nil {
		t.Fatalf("status after revoking the old subkey: %+v", st)
	}
	oldID := ng.Entity.Subkeys[0].PublicKey.KeyId
	if cert.HasValidSubkey(oldID, now) {
		t.Error("the revoked subkey still counts as valid")
	}
	if !cert.HasValidSubkey(rotated.Entity.Subkeys[1].PublicKey.KeyId, now) {
		t.Error("the new subkey does not count as valid")
	}
	// An older copy without the revocation does not undo it.
	up, err := keys.UpdateCert(cert, mustPublic(t, rotated))
	if err != nil {
		t.Fatal(err)
	}
	if up.HasValidSubkey(oldID, now) {
		t.Error("an older certificate undid a subkey revocation")
	}
}

// TestExpiredAndRevokedKeysAreReadButNotUsable: a partner's expired or
// revoked certificate is still read (so that it can be shown and the
// deliveries held with the reason) but is never usable, and the reason names
// the date or the revocation text.
func TestExpiredAndRevokedKeysAreReadButNotUsable(t *testing.T) {
	now := time.Now()
	expired := mustGen(t, "hmp-eastmoor", keys.ProfileRFC4880, now.Add(-48*time.Hour), 24*time.Hour)
	live := mustGen(t, "hmp-northgate", keys.ProfileRFC4880, now.Add(-time.Hour), 0)
	revoked, err := keys.Revoke(live, "agency merged", false, now)
	if err != nil {
		t.Fatal(err)
	}
	soon := mustGen(t, "probation-ne", keys.ProfileRFC9580, now.Add(-time.Hour), 30*24*time.Hour)
	for _, tc := range []struct {
		name string
		id   *keys.Identity
		want error
		text string
	}{
		{"expired", expired, keys.ErrKeyExpired, "expired on " + now.Add(-24*time.Hour).UTC().Format("2006-01-02")},
		{"revoked", revoked, keys.ErrKeyRevoked, "agency merged"},
		{"valid, expiring in 30 days", soon, nil, ""},
		{"valid", live, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustPublic(t, tc.id)
			err := c.Usable(now)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Usable: want %v, got %v", tc.want, err)
			}
			if err != nil && !strings.Contains(err.Error(), tc.text) {
				t.Errorf("reason %q does not say %q", err, tc.text)
			}
		})
	}
	if st := keys.StatusOf(soon.Entity, now); st.Expires.IsZero() || st.Expires.Sub(now) > 30*24*time.Hour {
		t.Errorf("expiry of a 30-day key: %v", st.Expires)
	}
	// A revocation is never undone by an older copy of the certificate.
	up, err := keys.UpdateCert(mustPublic(t, revoked), mustPublic(t, live))
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(up.Usable(now), keys.ErrKeyRevoked) {
		t.Error("an unrevoked copy undid a revocation")
	}
	other := mustGen(t, "hmp-northgate", keys.ProfileRFC4880, now, 0)
	if _, err := keys.UpdateCert(mustPublic(t, live), mustPublic(t, other)); !errors.Is(err, keys.ErrFingerprintMismatch) {
		t.Errorf("a different key for the same agency: want ErrFingerprintMismatch, got %v", err)
	}
	if _, err := keys.Rotate(revoked, now, 0); !errors.Is(err, keys.ErrKeyRevoked) {
		t.Errorf("rotating a revoked key: want ErrKeyRevoked, got %v", err)
	}
}

func TestFileBackendStoresAtomicallyAndKeepsThePrevious(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := &keys.File{Path: dir + "/agency.key", Passphrase: []byte("correct horse")}
	id := mustGen(t, "met-pio", keys.ProfileRFC4880, time.Now(), 0)
	if err := f.Check(ctx); !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("Check before the key exists: %v", err)
	}
	if err := f.Store(ctx, id); err != nil {
		t.Fatal(err)
	}
	rotated, err := keys.Rotate(id, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Store(ctx, rotated); err != nil {
		t.Fatal(err)
	}
	got, err := f.Identity(ctx)
	if err != nil || len(got.Entity.Subkeys) != 2 || got.Fingerprint() != id.Fingerprint() {
		t.Fatalf("after a stored rotation: %v", err)
	}
	prev, err := (&keys.File{Path: f.Path + ".prev", Passphrase: f.Passphrase}).Identity(ctx)
	if err != nil || len(prev.Entity.Subkeys) != 1 {
		t.Fatalf("previous key not kept: %v", err)
	}
	if err := f.Check(ctx); err != nil {
		t.Fatal(err)
	}
}
