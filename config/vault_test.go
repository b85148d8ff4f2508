package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVaultSectionErrorsNameTheLine(t *testing.T) {
	dir := t.TempDir()
	tcheck(t, os.WriteFile(filepath.Join(dir, "directory.yaml"), []byte(base), 0o600), "write directory")
	head := "agency: pas\ndirectory: directory.yaml\npolicy: p.yaml\n"
	for _, tc := range []struct {
		name, src, want string
		line            int
	}{
		{"unknown backend", "keys: {backend: hsm, partners: certs}\n", `"hsm" is not a key backend`, 4},
		{"vault backend without a section", "keys: {backend: vault, partners: certs}\n", "needs a vault: section", 4},
		{"plain http to another host", "keys: {backend: vault}\nvault:\n  address: http://vault.example:8200\n  auth: {method: token, token-file: t}\n", "plain http to another host", 6},
		{"unknown auth method", "keys: {backend: vault}\nvault:\n  address: https://vault.example:8200\n  auth: {method: userpass}\n", `"userpass" is not an auth method`, 7},
		{"approle without its secret id", "keys: {backend: vault}\nvault:\n  address: https://vault.example:8200\n  auth:\n    method: approle\n    role-id: r\n", "needs role-id and secret-id-file", 8},
		{"token method given a role id", "keys: {backend: vault}\nvault:\n  address: https://v.example\n  auth: {method: token, token-file: t, role-id: r}\n", "belong to method approle", 7},
		{"unknown vault field", "keys: {backend: vault}\nvault:\n  address: https://v.example\n  adress: x\n", `unknown field "adress"`, 7},
		{"secret file as well as vault", "keys: {backend: vault, secret: k.key}\nvault:\n  address: https://v.example\n  auth: {method: token, token-file: t}\n", "remove keys.secret", 4},
		{"max retries out of range", "keys: {backend: vault}\nvault:\n  address: https://v.example\n  auth: {method: token, token-file: t}\n  max-retries: 50\n", "out of range", 8},
		{"transit without a key", "keys: {backend: vault}\nvault:\n  address: https://v.example\n  auth: {method: token, token-file: t}\n  transit: {mount: transit}\n", "the Transit key's name", 8},
		{"bad timeout", "keys: {backend: vault}\nvault:\n  address: https://v.example\n  auth: {method: token, token-file: t}\n  timeout: soon\n", `invalid duration "soon"`, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "conduit.yaml")
			tcheck(t, os.WriteFile(path, []byte(head+tc.src), 0o600), "write config")
			_, err := Load(path)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want *config.Error", err, err)
			}
			if !strings.Contains(ce.Error(), tc.want) || ce.Line != tc.line || !strings.HasPrefix(ce.Error(), path+":") {
				t.Errorf("error %q at line %d; want %s:%d saying %q", ce.Error(), ce.Line, path, tc.line, tc.want)
			}
		})
	}
}

func TestVaultBackendNeedsNoSecretFile(t *testing.T) {
	dir := t.TempDir()
	tcheck(t, os.WriteFile(filepath.Join(dir, "directory.yaml"), []byte(base), 0o600), "write directory")
	path := filepath.Join(dir, "conduit.yaml")
	src := "agency: pas\ndirectory: directory.yaml\npolicy: p.yaml\nkeys: {backend: vault, partners: certs}\n" +
		"vault:\n  address: https://vault.example:8200\n  ca-file: vault-ca.pem\n  namespace: prisons\n" +
		"  auth: {method: approle, role-id: r-1, secret-id-file: secret-id}\n  timeout: 4s\n  max-retries: 3\n" +
		"  transit: {key: agency-signing}\n"
	tcheck(t, os.WriteFile(path, []byte(src), 0o600), "write config")
	c, err := Load(path)
	tcheck(t, err, "load")
	v := c.Vault
	if v.Mount != DefaultVaultMount || v.Path != DefaultVaultPath || v.CAFile != filepath.Join(dir, "vault-ca.pem") ||
		v.Auth.SecretIDFile != filepath.Join(dir, "secret-id") || v.Transit.Key != "agency-signing" || v.MaxRetries != 3 {
		t.Fatalf("vault section read as %+v", v)
	}
	for _, m := range c.MissingForServe() {
		if strings.HasPrefix(m, "keys.secret") {
			t.Errorf("serve asks for keys.secret with the vault backend: %s", m)
		}
	}
}
