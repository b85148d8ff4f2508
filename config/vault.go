package config

import (
	"net/url"
	"strings"
)

// Key backends: where the agency's secret key lives.
const (
	BackendFile  = "file"
	BackendVault = "vault"
)

// Vault is the `vault:` section: the Vault key backend (keys.backend:
// vault). The agency's secret key is a KV v2 secret; its signing key may
// be a Transit key instead, which never leaves Vault.
type Vault struct {
	// Address is Vault's URL; https unless it is on loopback.
	Address string `yaml:"address"`
	// CAFile verifies Vault's certificate (PEM); empty: the system roots.
	CAFile string `yaml:"ca-file,omitempty"`
	// Namespace is a Vault Enterprise namespace.
	Namespace string `yaml:"namespace,omitempty"`
	// Mount is the KV v2 mount (default "conduit"), Path the secret in it
	// (default "agency-identity"); docs/vault-policy.hcl uses both.
	Mount string    `yaml:"mount,omitempty"`
	Path  string    `yaml:"path,omitempty"`
	Auth  VaultAuth `yaml:"auth"`
	// Timeout bounds one Vault operation, retries included (default 10s).
	Timeout Duration `yaml:"timeout,omitempty"`
	// MaxRetries after a connection error or a 5xx (default 2; -1: none).
	MaxRetries int `yaml:"max-retries,omitempty"`
	// RetryWait is the first wait before a retry (default 500ms).
	RetryWait Duration `yaml:"retry-wait,omitempty"`
	// Transit, when given, signs with a Transit key.
	Transit *VaultTransit `yaml:"transit,omitempty"`
	// Renew renews the gateway's token before it expires (default true).
	Renew *bool `yaml:"renew,omitempty"`
	// CheckInterval is how often the gateway checks that Vault answers
	// and whether the key was rotated (default 5s).
	CheckInterval Duration `yaml:"check-interval,omitempty"`
}

// VaultAuth is how the gateway logs in to Vault.
type VaultAuth struct {
	// Method is token or approle.
	Method string `yaml:"method"`
	// TokenFile holds a token (method token), e.g. a Vault Agent sink.
	TokenFile string `yaml:"token-file,omitempty"`
	// RoleID and SecretIDFile are the AppRole credentials.
	RoleID       string `yaml:"role-id,omitempty"`
	SecretIDFile string `yaml:"secret-id-file,omitempty"`
	// Mount is the auth method's mount path (default: the method's name).
	Mount string `yaml:"mount,omitempty"`
}

// VaultTransit names the Transit key that signs for the agency.
type VaultTransit struct {
	Mount string `yaml:"mount,omitempty"` // default "transit"
	Key   string `yaml:"key"`
}

// KeyBackend is the configured key backend, file when unset (a Config
// not yet through SetDefaults: MissingForServe runs on either).
func (k Keys) KeyBackend() string {
	if k.Backend == "" {
		return BackendFile
	}
	return k.Backend
}

// checkVault resolves the vault section's paths and checks it, pointing
// at the offending line.
func (c *Config) checkVault(doc *Doc) error {
	g := &c.Gateway
	switch g.Keys.Backend {
	case "", BackendFile:
		return nil
	case BackendVault:
	default:
		return doc.Errorf("$.keys.backend", "%q is not a key backend; allowed: file, vault", g.Keys.Backend)
	}
	v := &g.Vault
	if doc.Node("$.vault") == nil {
		return doc.Errorf("$.keys.backend", "the vault backend needs a vault: section (address, auth)")
	}
	for _, p := range []*string{&v.CAFile, &v.Auth.TokenFile, &v.Auth.SecretIDFile} {
		if *p != "" {
			*p = resolve(c.File, *p)
		}
	}
	if v.Address == "" {
		return doc.Errorf("$.vault", "address is missing: Vault's URL, e.g. https://vault.example:8200")
	}
	u, err := url.Parse(v.Address)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return doc.Errorf("$.vault.address", "%q is not an http(s) URL", v.Address)
	}
	if u.Scheme == "http" && !loopbackHost(u.Hostname()) {
		return doc.Errorf("$.vault.address", "%q is plain http to another host: the key would cross the network in clear; use https", v.Address)
	}
	for name, s := range map[string]string{"mount": v.Mount, "path": v.Path} {
		if strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") || strings.Contains(s, "..") {
			return doc.Errorf("$.vault."+name, "%q: no leading or trailing slash, no ..", s)
		}
	}
	switch v.Auth.Method {
	case "token":
		if v.Auth.TokenFile == "" {
			return doc.Errorf("$.vault.auth", "method token needs token-file")
		}
		if v.Auth.RoleID != "" || v.Auth.SecretIDFile != "" {
			return doc.Errorf("$.vault.auth", "role-id and secret-id-file belong to method approle, not token")
		}
	case "approle":
		if v.Auth.RoleID == "" || v.Auth.SecretIDFile == "" {
			return doc.Errorf("$.vault.auth", "method approle needs role-id and secret-id-file")
		}
		if v.Auth.TokenFile != "" {
			return doc.Errorf("$.vault.auth.token-file", "token-file belongs to method token, not approle")
		}
	case "":
		return doc.Errorf("$.vault", "auth.method is missing; allowed: token, approle")
	default:
		return doc.Errorf("$.vault.auth.method", "%q is not an auth method; allowed: token, approle", v.Auth.Method)
	}
	if v.Timeout < 0 || v.RetryWait < 0 || v.CheckInterval < 0 {
		return doc.Errorf("$.vault", "timeout, retry-wait and check-interval must not be negative")
	}
	if v.MaxRetries < -1 || v.MaxRetries > 10 {
		return doc.Errorf("$.vault.max-retries", "%d is out of range: 0 to 10 (-1: no retries)", v.MaxRetries)
	}
	if v.Transit != nil && v.Transit.Key == "" {
		return doc.Errorf("$.vault.transit", "key is missing: the Transit key's name")
	}
	if g.Keys.Secret != "" {
		return doc.Errorf("$.keys.secret", "with the vault backend the secret key is in Vault, not in a file: remove keys.secret")
	}
	if g.Keys.Profile == "rfc9580" && v.Transit != nil {
		return doc.Errorf("$.keys.profile", "Transit signing makes v4 keys (rfc4880)")
	}
	return nil
}

func loopbackHost(h string) bool {
	return h == "localhost" || h == "::1" || strings.HasPrefix(h, "127.")
}
