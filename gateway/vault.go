package gateway

import (
	"log/slog"
	"os"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/keys"
)

// VaultTokenEnv overrides the config's Vault auth with a token: an
// operator's, for the key commands (`conduit keys generate|vault-import|
// rotate`) whose writes the gateway's own read-only policy does not allow.
const VaultTokenEnv = "CONDUIT_VAULT_TOKEN"

// VaultConfig turns the config's vault section into the backend's
// settings.
func VaultConfig(cfg *config.Config, log *slog.Logger) keys.VaultConfig {
	v := cfg.Vault
	retries := v.MaxRetries
	switch {
	case retries == 0:
		retries = 2
	case retries < 0:
		retries = 0
	}
	vc := keys.VaultConfig{
		Address: v.Address, CAFile: v.CAFile, Namespace: v.Namespace, Mount: v.Mount, Path: v.Path,
		Auth: keys.VaultAuth{Method: v.Auth.Method, TokenFile: v.Auth.TokenFile, RoleID: v.Auth.RoleID,
			SecretIDFile: v.Auth.SecretIDFile, Mount: v.Auth.Mount},
		Timeout:    v.Timeout.Or(10 * time.Second),
		MaxRetries: retries,
		RetryWait:  v.RetryWait.Or(500 * time.Millisecond),
		NoRenew:    v.Renew != nil && !*v.Renew,
		Token:      os.Getenv(VaultTokenEnv),
		Log:        log,
	}
	if v.Transit != nil {
		vc.Transit = &keys.TransitConfig{Mount: v.Transit.Mount, Key: v.Transit.Key}
	}
	return vc
}

func openVault(cfg *config.Config, log *slog.Logger) (*keys.Vault, error) {
	return keys.NewVault(VaultConfig(cfg, log))
}
