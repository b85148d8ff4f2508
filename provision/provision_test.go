package provision

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/config"
)

// Init refuses what the directory would refuse, before writing anything,
// naming the flag to give.
func TestInitRefusesWithTheFlagToGive(t *testing.T) {
	ok := Options{Agency: "hmp-northgate", Kind: config.Prison, Region: "north-east", Host: "gw.hmp-northgate.example",
		Mailboxes: []string{"intake@hmp-northgate.example", "governing-governor=gov@hmp-northgate.example"}}
	for _, tc := range []struct {
		name  string
		shape func(*Options)
		says  string
	}{
		{"no mailbox", func(o *Options) { o.Mailboxes = nil }, "--mailbox intel@"},
		{"prison without governor", func(o *Options) { o.Mailboxes = o.Mailboxes[:1] }, "--mailbox governing-governor=ADDRESS"},
		{"prison without region", func(o *Options) { o.Region = "" }, "needs --region"},
		{"bad agency id", func(o *Options) { o.Agency = "HMP Northgate" }, "is not an agency id"},
		{"bad kind", func(o *Options) { o.Kind = "jail" }, "allowed: police-force"},
		{"host with underscore", func(o *Options) { o.Host = "gw_1.example" }, "--host"},
		{"CA certificate without key", func(o *Options) { o.CACert = "ca.crt" }, "both --ca-cert and --ca-key"},
		{"bad training date", func(o *Options) { o.Trained = "last spring" }, "--trained"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			o.Mailboxes = append([]string(nil), ok.Mailboxes...)
			o.Dir = filepath.Join(t.TempDir(), "gw")
			tc.shape(&o)
			_, err := Init(o)
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("got %v, want an error saying %q", err, tc.says)
			}
			if _, err := os.Stat(o.Dir); !os.IsNotExist(err) {
				t.Errorf("something was written to %s", o.Dir)
			}
		})
	}
}

func TestInitNeverWritesOverAFolder(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "conduit.yaml"), []byte("keep me"), 0o600)
	_, err := Init(Options{Dir: dir, Agency: "pas", Kind: config.PAS, Host: "gw.pas.example", Mailboxes: []string{"pas@pas.example"}})
	if err == nil || !strings.Contains(err.Error(), "is not empty") {
		t.Fatalf("got %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "conduit.yaml")); string(b) != "keep me" {
		t.Errorf("the existing config was changed")
	}
}

// The folder init makes loads as a config, the key opens with the
// passphrase written beside it, and the entry is a directory entry.
func TestInitMakesAConfigThatLoads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gw")
	r, err := Init(Options{Dir: dir, Agency: "pas", Kind: config.PAS, Host: "gw.pas.example", Inbound: "127.0.0.1:2525",
		Mailboxes: []string{"pas@pas.example"}, RelayUser: "postfix"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(r.Config)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if c.Self().Gateway != "gw.pas.example:2525" || c.Self().Fingerprint != r.Fingerprint || c.Self().TLSPin != r.TLSPin {
		t.Errorf("entry %+v, result %+v", c.Self(), r)
	}
	if len(c.Users) != 2 || !c.Users[1].Relay || c.Users[1].Name != "postfix" {
		t.Errorf("users %+v", c.Users)
	}
	for path, mode := range map[string]os.FileMode{"keys/passphrase": 0o600, "keys/pas.key": 0o600, "tls/gateway.key": 0o600, "passwords": 0o600, "keys": 0o700 | os.ModeDir} {
		st, err := os.Stat(filepath.Join(dir, path))
		if err != nil || st.Mode() != mode {
			t.Errorf("%s: %v %v, want mode %v", path, st.Mode(), err, mode)
		}
	}
	if r.CSR == "" || r.Cert != "" {
		t.Errorf("without a CA init writes a CSR: %+v", r)
	}
	if !strings.Contains(strings.Join(r.Steps, "\n"), "gateway.csr signed by the agencies' CA") {
		t.Errorf("the steps do not say to have the CSR signed: %v", r.Steps)
	}
}

// With Vault, the config names the Vault backend and loads; the key file
// stays for the one import the steps say to run.
func TestInitWithVaultMakesAConfigThatLoads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gw")
	r, err := Init(Options{Dir: dir, Agency: "pas", Kind: config.PAS, Host: "gw.pas.example",
		Mailboxes: []string{"pas@pas.example"}, VaultAddress: "https://vault.pas.example:8200"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(r.Config)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if c.Keys.KeyBackend() != config.BackendVault || c.Vault.Address != "https://vault.pas.example:8200" {
		t.Errorf("keys %+v vault %+v", c.Keys, c.Vault)
	}
	if !strings.Contains(strings.Join(r.Steps, "\n"), "conduit keys vault-import --config") {
		t.Errorf("the steps do not say to import the key into Vault: %v", r.Steps)
	}
}
