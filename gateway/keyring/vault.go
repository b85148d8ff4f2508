package keyring

import (
	"log/slog"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/keys"
)

// VaultConfig turns the config's vault section into the backend's
// settings. token, when set, replaces the config's login: an operator's,
// for the key commands (`conduit keys generate|vault-import|rotate`) whose
// writes the gateway's own read-only policy does not allow.
func VaultConfig(cfg *config.Config, token string, log *slog.Logger) keys.VaultConfig {
	v := cfg.Vault
	retries := max(v.MaxRetries, 0) // -1 in the config: none
	vc := keys.VaultConfig{
		Address: v.Address, CAFile: v.CAFile, Namespace: v.Namespace, Mount: v.Mount, Path: v.Path,
		Auth: keys.VaultAuth{Method: v.Auth.Method, TokenFile: v.Auth.TokenFile, RoleID: v.Auth.RoleID,
			SecretIDFile: v.Auth.SecretIDFile, Mount: v.Auth.Mount},
		Timeout:    time.Duration(v.Timeout),
		MaxRetries: retries,
		RetryWait:  time.Duration(v.RetryWait),
		NoRenew:    !*v.Renew,
		Token:      token,
		Log:        log,
	}
	if v.Transit != nil {
		vc.Transit = &keys.TransitConfig{Mount: v.Transit.Mount, Key: v.Transit.Key}
	}
	return vc
}

// OpenBackend returns the backend the config names for this gateway's
// own secret key. vaultToken, when set, replaces the config's Vault login.
func OpenBackend(cfg *config.Config, pass []byte, vaultToken string, log *slog.Logger) (keys.Backend, error) {
	if cfg.Keys.KeyBackend() == config.BackendVault {
		return keys.NewVault(VaultConfig(cfg, vaultToken, log))
	}
	return &keys.File{Path: cfg.Keys.Secret, Passphrase: pass}, nil
}
