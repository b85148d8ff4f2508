package vaulttest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/testbed"
	"github.com/conduit-gateway/conduit/vaulttest/vaultsrv"
)

// vaultConfig turns a testbed node's config into one with the Vault
// backend (an AppRole with the gateway policy), plus extra lines in the
// vault section.
func vaultConfig(t *testing.T, s *vaultsrv.Server, n *testbed.Node, role, extra string) {
	t.Helper()
	roleID, secretID := s.AppRole(t, role, time.Hour, 2*time.Hour)
	cfg, err := os.ReadFile(n.Config)
	tcheck(t, err, "read config")
	out := strings.Replace(string(cfg), "keys: {secret: keys/"+n.ID+".key, partners: ../certs}", "keys: {backend: vault, partners: ../certs}", 1)
	if out == string(cfg) {
		t.Fatal("the testbed's keys line changed; update this test")
	}
	out += fmt.Sprintf("vault:\n  address: %s\n  ca-file: %s\n  mount: %s\n  path: %s\n  auth: {method: approle, role-id: %s, secret-id-file: %s}\n  timeout: 3s\n  max-retries: 1\n  retry-wait: 100ms\n  check-interval: 1s\n%s",
		s.Addr, s.CAFile, vaultsrv.KVMount, vaultsrv.KVPath, roleID, s.WriteFile(t, role+".secret-id", secretID), extra)
	tcheck(t, os.WriteFile(n.Config, []byte(out), 0o600), "write the vault config")
}

// conduit runs the binary with an operator token; it returns stdout,
// stderr and the exit code.
func conduit(t *testing.T, bin, token string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "CONDUIT_VAULT_TOKEN="+token)
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("conduit %v: %v", args, err)
	}
	return so.String(), se.String(), code
}

func TestKeyCommandsPutTheKeyInVault(t *testing.T) {
	bin := buildConduit(t)
	bed, err := testbed.Create(t.TempDir(), bin, testbed.Options{})
	tcheck(t, err, "testbed")
	n := bed.Nodes[receiver]
	keyFile := filepath.Join(n.Dir, "keys", receiver+".key")

	t.Run("vault-import moves a file key in, once", func(t *testing.T) {
		s := vaultsrv.Start(t)
		vaultConfig(t, s, n, "cli", "")
		op := s.Token(t, vaultsrv.TokenOpts{Policy: vaultsrv.OperatorPolicy})
		out, errOut, code := conduit(t, bin, op, "keys", "vault-import", "--config", n.Config, "--secret", keyFile)
		if code != 0 || !strings.Contains(out, "stored as version 1") {
			t.Fatalf("vault-import: exit %d, %q %q", code, out, errOut)
		}
		fpr := strings.Fields(out)[1]
		if _, errOut, code := conduit(t, bin, op, "keys", "vault-import", "--config", n.Config, "--secret", keyFile); code != 2 || !strings.Contains(errOut, "a key is stored already") {
			t.Fatalf("second import: exit %d, %q; want 2 and a refusal", code, errOut)
		}
		out, errOut, code = conduit(t, bin, op, "keys", "vault-versions", "--config", n.Config)
		if code != 0 || !strings.HasPrefix(out, "1\t") || !strings.Contains(out, fpr) {
			t.Fatalf("vault-versions: exit %d, %q %q", code, out, errOut)
		}
		out, errOut, code = conduit(t, bin, op, "keys", "export", "--config", n.Config)
		if code != 0 || !strings.Contains(errOut, fpr) || !strings.Contains(out, "BEGIN PGP PUBLIC KEY BLOCK") || strings.Contains(out, "PRIVATE") {
			t.Fatalf("export: exit %d, %q %q", code, out, errOut)
		}
		// The gateway's own role cannot import: writing is an operator's.
		gw := s.Token(t, vaultsrv.TokenOpts{Policy: vaultsrv.GatewayPolicy})
		if _, _, code := conduit(t, bin, gw, "keys", "vault-import", "--config", n.Config, "--secret", keyFile, "--new-version"); code == 0 {
			t.Fatal("the gateway policy could store a key")
		}
	})
	t.Run("generate --config makes a Transit-signed key in Vault, nothing on disk", func(t *testing.T) {
		s := vaultsrv.Start(t)
		cfg, err := os.ReadFile(n.Config)
		tcheck(t, err, "read")
		// Back to the file layout, then to this server with Transit.
		i := strings.Index(string(cfg), "vault:\n")
		base := strings.Replace(string(cfg[:i]), "keys: {backend: vault, partners: ../certs}", "keys: {secret: keys/"+n.ID+".key, partners: ../certs}", 1)
		tcheck(t, os.WriteFile(n.Config, []byte(base), 0o600), "reset config")
		vaultConfig(t, s, n, "gen", "  transit: {mount: "+vaultsrv.TransitMount+", key: "+vaultsrv.TransitKey+"}\n")
		op := s.Token(t, vaultsrv.TokenOpts{Policy: vaultsrv.OperatorPolicy})
		dir := t.TempDir()
		out, errOut, code := conduit(t, bin, op, "keys", "generate", "--config", n.Config, "--email", "conduit@hmp-northgate.example", "--out", filepath.Join(dir, "ng"))
		if code != 0 || !strings.Contains(out, "vault version 1") {
			t.Fatalf("generate --config: exit %d, %q %q", code, out, errOut)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 || entries[0].Name() != "ng.pub.asc" {
			t.Fatalf("generate --config wrote %v; want the public certificate only", entries)
		}
		fpr := strings.Fields(out)[2]
		_, errOut, code = conduit(t, bin, op, "keys", "export", "--config", n.Config)
		if code != 0 || !strings.Contains(errOut, fpr) {
			t.Fatalf("export after generate: exit %d, %q", code, errOut)
		}
	})
}
