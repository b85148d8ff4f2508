package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/keys"
)

// policy check looks at the partner certificate folder as the gateway
// will: a user ID naming another agency than the pin's is a warning (the
// pin decides), and a damaged file is a warning that packages for that
// partner will be held; neither stops the check.
func TestPolicyCheckWarnsAboutPartnerCertificates(t *testing.T) {
	dir := t.TempDir()
	id, err := keys.Generate("hmp-ravensby", "x@ravensby.example", keys.ProfileRFC4880, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var pub bytes.Buffer
	if err := keys.WritePublic(&pub, id.Entity); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "partners"), 0o700)
	os.WriteFile(filepath.Join(dir, "partners", "hmp-northgate.pub.asc"), pub.Bytes(), 0o644)
	os.WriteFile(filepath.Join(dir, "partners", "pas.pub.asc"), []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n-----END PGP PUBLIC KEY BLOCK-----\n"), 0o644)
	src, err := os.ReadFile("../../examples/directory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The directory pins the Ravensby-named key for HMP Northgate.
	src = bytes.Replace(src, []byte("615A5072E14F9178DE9B28FD894531FF5E6AE049"), []byte(id.Fingerprint()), 1)
	os.WriteFile(filepath.Join(dir, "directory.yaml"), src, 0o644)
	pol, _ := filepath.Abs("../../examples/policy.yaml")
	cfg := filepath.Join(dir, "conduit.yaml")
	os.WriteFile(cfg, []byte("agency: northshire-pio\ndirectory: directory.yaml\npolicy: "+pol+"\nkeys: {partners: partners}\n"), 0o600)
	out, err := runCLI(t, "policy", "check", "--config", cfg)
	if err != nil {
		t.Fatalf("policy check: %v\n%s", err, out)
	}
	for _, want := range []string{
		"warning: " + filepath.Join(dir, "partners", "hmp-northgate.pub.asc") + ": certificate " + id.Fingerprint() + ` is pinned for hmp-northgate but its user ID names "hmp-ravensby"`,
		"pas.pub.asc: read certificate", "packages for pas will be held",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}
