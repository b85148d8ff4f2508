package keys

import (
	"strings"
	"testing"
)

func TestVaultRefusesToSkipCertificateVerification(t *testing.T) {
	cfg := VaultConfig{Address: "https://vault.example:8200", Mount: "conduit", Path: "agency-identity",
		Auth: VaultAuth{Method: "token", TokenFile: "token"}}
	if _, err := NewVault(cfg); err != nil {
		t.Fatalf("a complete config without VAULT_SKIP_VERIFY: %v", err)
	}
	t.Setenv("VAULT_SKIP_VERIFY", "true")
	_, err := NewVault(cfg)
	if err == nil || !strings.Contains(err.Error(), "VAULT_SKIP_VERIFY") {
		t.Fatalf("VAULT_SKIP_VERIFY in the environment: %v, want a refusal naming it", err)
	}
}
