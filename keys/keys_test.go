package keys

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func tcheck(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func TestSecretKeyIsEncryptedAtRestWithAPassphrase(t *testing.T) {
	for _, p := range []Profile{ProfileRFC4880, ProfileRFC9580} {
		t.Run(string(p), func(t *testing.T) {
			id, err := Generate("met-pio", "conduit@met.example", p, time.Now())
			tcheck(t, err, "generate")
			if ProfileOf(id.Entity) != p {
				t.Fatalf("profile of a %s key is %s", p, ProfileOf(id.Entity))
			}
			var enc, clear bytes.Buffer
			tcheck(t, id.WriteSecret(&enc, []byte("correct horse")), "write encrypted")
			tcheck(t, id.WriteSecret(&clear, nil), "write unencrypted")
			if bytes.Equal(enc.Bytes(), clear.Bytes()) {
				t.Fatal("the passphrase changed nothing")
			}
			// The in-memory identity stays usable after writing an
			// encrypted copy.
			if id.Entity.PrivateKey.Encrypted {
				t.Fatal("WriteSecret encrypted the identity in memory")
			}
			_, err = ReadIdentity(bytes.NewReader(enc.Bytes()), nil)
			if !errors.Is(err, ErrNeedPassphrase) {
				t.Fatalf("no passphrase: %v", err)
			}
			_, err = ReadIdentity(bytes.NewReader(enc.Bytes()), []byte("wrong"))
			if !errors.Is(err, ErrPassphrase) {
				t.Fatalf("wrong passphrase: %v", err)
			}
			back, err := ReadIdentity(bytes.NewReader(enc.Bytes()), []byte("correct horse"))
			tcheck(t, err, "read with passphrase")
			if back.Fingerprint() != id.Fingerprint() || back.Agency != "met-pio" {
				t.Fatalf("read back %s %s, want %s met-pio", back.Fingerprint(), back.Agency, id.Fingerprint())
			}
		})
	}
}

func TestFileBackendLoadsTheIdentity(t *testing.T) {
	id, err := Generate("hmp-northgate", "conduit@ng.example", ProfileRFC4880, time.Now())
	tcheck(t, err, "generate")
	path := filepath.Join(t.TempDir(), "ng.key")
	var b bytes.Buffer
	tcheck(t, id.WriteSecret(&b, []byte("pw")), "write")
	tcheck(t, os.WriteFile(path, b.Bytes(), 0o600), "save")
	got, err := (&File{Path: path, Passphrase: []byte("pw")}).Identity(context.Background())
	tcheck(t, err, "load")
	if got.Fingerprint() != id.Fingerprint() {
		t.Fatal("loaded another key")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (&File{Path: path}).Identity(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
}

func TestCertificatesArePinnedByFingerprint(t *testing.T) {
	met, err := Generate("met-pio", "conduit@met.example", ProfileRFC4880, time.Now())
	tcheck(t, err, "generate")
	other, err := Generate("met-pio", "conduit@met.example", ProfileRFC4880, time.Now())
	tcheck(t, err, "generate impostor")
	var pub bytes.Buffer
	tcheck(t, WritePublic(&pub, other.Entity), "export")
	c, err := ReadCert(&pub)
	tcheck(t, err, "read cert")
	ps := NewPartners()
	// A certificate naming met-pio, but not the key the directory pins.
	err = ps.Add(c, "met-pio", strings.ToLower(met.Fingerprint()))
	if !errors.Is(err, ErrFingerprintMismatch) {
		t.Fatalf("impostor certificate: %v", err)
	}
	if _, ok := ps.Get("met-pio"); ok {
		t.Fatal("a certificate that failed its pin was kept")
	}
	// The right key, with the fingerprint as people copy it (spaces).
	pub.Reset()
	tcheck(t, WritePublic(&pub, met.Entity), "export")
	good, err := ReadCert(&pub)
	tcheck(t, err, "read")
	fp := met.Fingerprint()
	spaced := fp[:4] + " " + fp[4:8] + " " + fp[8:]
	tcheck(t, ps.Add(good, "met-pio", spaced), "pin")
	if a, ok := ps.AgencyOf(met.Entity.PrimaryKey.Fingerprint); !ok || a != "met-pio" {
		t.Fatalf("AgencyOf = %q, %v", a, ok)
	}
	// The pin, not the user ID, binds a key to an agency: an
	// administrator who pins met-pio's key for hmp-northgate gets it, with
	// a warning to show, and AgencyOf answers by the pin.
	other2 := NewPartners()
	tcheck(t, other2.Add(good, "hmp-northgate", fp), "pin for another agency")
	if a, _ := other2.AgencyOf(met.Entity.PrimaryKey.Fingerprint); a != "hmp-northgate" {
		t.Fatalf("AgencyOf by pin = %q", a)
	}
	got, _ := other2.Get("hmp-northgate")
	if w := got.NameWarning("hmp-northgate"); !strings.Contains(w, `"met-pio"`) {
		t.Errorf("no warning for a user ID naming another agency: %q", w)
	}
	if good.Agency != "met-pio" {
		t.Errorf("pinning changed the caller's certificate: %q", good.Agency)
	}
	// Nothing to bind to: no agency given and none claimed.
	anon := *good
	anon.Agency, anon.Claimed = "", ""
	if err := NewPartners().Add(&anon, "", ""); !errors.Is(err, ErrNotAgencyKey) {
		t.Fatalf("pinned for no agency: %v", err)
	}
}

func TestReadCertDropsSecretKeyMaterial(t *testing.T) {
	id, err := Generate("pas", "conduit@pas.example", ProfileRFC4880, time.Now())
	tcheck(t, err, "generate")
	var sec bytes.Buffer
	tcheck(t, id.WriteSecret(&sec, nil), "write secret")
	c, err := ReadCert(&sec)
	tcheck(t, err, "read a secret key as a certificate")
	if c.Entity.PrivateKey != nil {
		t.Fatal("secret key material kept in a partner certificate")
	}
	for _, s := range c.Entity.Subkeys {
		if s.PrivateKey != nil {
			t.Fatal("secret subkey material kept in a partner certificate")
		}
	}
}

func TestParseProfile(t *testing.T) {
	for in, want := range map[string]Profile{"": ProfileRFC4880, "rfc4880": ProfileRFC4880, "rfc9580": ProfileRFC9580} {
		if got, err := ParseProfile(in); err != nil || got != want {
			t.Errorf("ParseProfile(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseProfile("pgp2"); err == nil {
		t.Error("unknown profile accepted")
	}
}
