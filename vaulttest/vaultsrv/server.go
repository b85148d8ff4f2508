// Package vaultsrv starts Vault's own in-process test server for Conduit's
// integration tests: a real Vault core (github.com/hashicorp/vault/vault)
// served by Vault's own HTTP handler over a real TLS listener on
// 127.0.0.1, with a KV v2 engine, a Transit engine and the AppRole auth
// method mounted, and the policies from docs/ written into it. Nothing of
// Vault's API is imitated: the product's backend talks to it as it would
// to a deployed Vault.
package vaultsrv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	kv "github.com/hashicorp/vault-plugin-secrets-kv"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/builtin/credential/approle"
	"github.com/hashicorp/vault/builtin/logical/transit"
	vaulthttp "github.com/hashicorp/vault/http"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/vault"
)

// Where the policies in docs/ expect things.
const (
	KVMount      = "conduit"
	KVPath       = "agency-identity"
	TransitMount = "conduit-transit"
	TransitKey   = "agency-signing"
	AppRoleMount = "approle"

	GatewayPolicy  = "conduit-gateway"
	OperatorPolicy = "conduit-operator"
)

// Server is a running in-process Vault.
type Server struct {
	Addr       string // https://127.0.0.1:PORT
	CAFile     string // the test CA that signed the listener's certificate
	RootToken  string
	Root       *api.Client // authenticated with the root token
	Core       *vault.Core
	unsealKeys [][]byte
	ln         net.Listener
	dir        string
}

// Start starts a Vault core, serves it over TLS on 127.0.0.1, mounts KV v2
// at KVMount, Transit at TransitMount and AppRole at AppRoleMount, and
// writes the gateway's and the operator's policies from docs/.
func Start(t testing.TB) *Server {
	t.Helper()
	core, keys, root := vault.TestCoreUnsealedWithConfig(t, &vault.CoreConfig{
		LogicalBackends:    map[string]logical.Factory{"kv": kv.Factory, "transit": transit.Factory},
		CredentialBackends: map[string]logical.Factory{"approle": approle.Factory},
	})
	dir := t.TempDir()
	tlsCfg, caFile, err := testTLS(dir)
	if err != nil {
		t.Fatalf("vault test TLS: %v", err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("vault listener: %v", err)
	}
	ln := tls.NewListener(tcp, tlsCfg)
	addr := "https://" + tcp.Addr().String()
	vaulthttp.TestServerWithListener(t, ln, addr, core)
	s := &Server{Addr: addr, CAFile: caFile, RootToken: root, Core: core, unsealKeys: keys, ln: ln, dir: dir}
	t.Cleanup(func() { ln.Close() })
	s.Root = s.Client(t, root)

	ctx := context.Background()
	tcheck(t, s.Root.Sys().MountWithContext(ctx, KVMount, &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}), "mount kv v2")
	tcheck(t, s.Root.Sys().MountWithContext(ctx, TransitMount, &api.MountInput{Type: "transit"}), "mount transit")
	tcheck(t, s.Root.Sys().EnableAuthWithOptionsWithContext(ctx, AppRoleMount, &api.EnableAuthOptions{Type: "approle"}), "enable approle")
	// The KV v2 mount upgrades itself in the background after mounting;
	// writes answer an error until it is done.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := s.Root.KVv2(KVMount).GetMetadata(ctx, "probe")
		if err == nil || isNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kv v2 mount not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for name, file := range map[string]string{GatewayPolicy: "vault-policy.hcl", OperatorPolicy: "vault-policy-operator.hcl"} {
		hcl, err := os.ReadFile(filepath.Join(DocsDir(), file))
		tcheck(t, err, "read "+file)
		tcheck(t, s.Root.Sys().PutPolicyWithContext(ctx, name, string(hcl)), "write policy "+name)
	}
	return s
}

// DocsDir is the product's docs/ folder, where the policies are.
func DocsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "docs")
}

func isNotFound(err error) bool {
	re, ok := err.(*api.ResponseError)
	if ok {
		return re.StatusCode == 404
	}
	// GetMetadata wraps ErrSecretNotFound for an absent secret.
	return errors.Is(err, api.ErrSecretNotFound)
}

// Client returns an API client for the server trusting the test CA,
// authenticated with token.
func (s *Server) Client(t testing.TB, token string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	tcheck(t, cfg.ConfigureTLS(&api.TLSConfig{CACert: s.CAFile}), "client TLS")
	c, err := api.NewClient(cfg)
	tcheck(t, err, "new client")
	c.SetToken(token)
	return c
}

// TokenOpts shape a token.
type TokenOpts struct {
	Policy      string        // GatewayPolicy or OperatorPolicy
	TTL         time.Duration // 0: 1h
	ExplicitMax time.Duration // 0: none
	Renewable   bool
}

// Token makes a token holding exactly one policy (no default policy), so
// that what the token can do is what the policy file grants.
func (s *Server) Token(t testing.TB, o TokenOpts) string {
	t.Helper()
	ttl := o.TTL
	if ttl == 0 {
		ttl = time.Hour
	}
	renewable := o.Renewable
	req := &api.TokenCreateRequest{
		Policies: []string{o.Policy}, NoDefaultPolicy: true, TTL: ttl.String(), Renewable: &renewable,
		DisplayName: "conduit-test",
	}
	if o.ExplicitMax > 0 {
		req.ExplicitMaxTTL = o.ExplicitMax.String()
	}
	sec, err := s.Root.Auth().Token().CreateOrphanWithContext(context.Background(), req)
	tcheck(t, err, "create token")
	return sec.Auth.ClientToken
}

// AppRole makes an AppRole role whose tokens hold exactly the gateway
// policy, with the given token TTLs, and returns its role id and a secret
// id.
func (s *Server) AppRole(t testing.TB, role string, tokenTTL, tokenMaxTTL time.Duration) (roleID, secretID string) {
	t.Helper()
	ctx := context.Background()
	_, err := s.Root.Logical().WriteWithContext(ctx, "auth/"+AppRoleMount+"/role/"+role, map[string]any{
		"token_policies": []string{GatewayPolicy}, "token_no_default_policy": true,
		"token_ttl": int(tokenTTL.Seconds()), "token_max_ttl": int(tokenMaxTTL.Seconds()),
		"secret_id_num_uses": 0,
	})
	tcheck(t, err, "write approle role")
	sec, err := s.Root.Logical().ReadWithContext(ctx, "auth/"+AppRoleMount+"/role/"+role+"/role-id")
	tcheck(t, err, "read role id")
	roleID = sec.Data["role_id"].(string)
	sec, err = s.Root.Logical().WriteWithContext(ctx, "auth/"+AppRoleMount+"/role/"+role+"/secret-id", nil)
	tcheck(t, err, "make secret id")
	return roleID, sec.Data["secret_id"].(string)
}

// DestroySecretIDs removes every secret id of a role, so that it can no
// longer log in.
func (s *Server) DestroySecretIDs(t testing.TB, role string) {
	t.Helper()
	ctx := context.Background()
	list, err := s.Root.Logical().ListWithContext(ctx, "auth/"+AppRoleMount+"/role/"+role+"/secret-id")
	tcheck(t, err, "list secret id accessors")
	if list == nil {
		return
	}
	for _, a := range list.Data["keys"].([]any) {
		_, err := s.Root.Logical().WriteWithContext(ctx, "auth/"+AppRoleMount+"/role/"+role+"/secret-id-accessor/destroy", map[string]any{"secret_id_accessor": a})
		tcheck(t, err, "destroy secret id")
	}
}

// RevokeAppRoleTokens revokes every token an AppRole role has handed out,
// as an administrator cutting a gateway off would.
func (s *Server) RevokeAppRoleTokens(t testing.TB, role string) {
	t.Helper()
	ctx := context.Background()
	list, err := s.Root.Logical().ListWithContext(ctx, "auth/token/accessors")
	tcheck(t, err, "list token accessors")
	n := 0
	for _, a := range list.Data["keys"].([]any) {
		sec, err := s.Root.Auth().Token().LookupAccessorWithContext(ctx, a.(string))
		if err != nil || sec == nil {
			continue
		}
		meta, _ := sec.Data["meta"].(map[string]any)
		if meta["role_name"] != role {
			continue
		}
		tcheck(t, s.Root.Auth().Token().RevokeAccessorWithContext(ctx, a.(string)), "revoke accessor")
		n++
	}
	if n == 0 {
		t.Fatalf("no token of role %s to revoke", role)
	}
}

// Seal seals Vault through its API, as an operator (or a Vault that lost
// its seal) would.
func (s *Server) Seal(t testing.TB) {
	t.Helper()
	tcheck(t, s.Root.Sys().SealWithContext(context.Background()), "seal vault")
}

// Unseal unseals Vault through its API with the test unseal keys.
func (s *Server) Unseal(t testing.TB) {
	t.Helper()
	for _, k := range s.unsealKeys {
		_, err := s.Root.Sys().UnsealWithContext(context.Background(), hex.EncodeToString(k))
		tcheck(t, err, "unseal vault")
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.Core.Sealed() {
		if time.Now().After(deadline) {
			t.Fatal("vault still sealed after unseal")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// After an unseal the mounts are set up again; wait until KV answers.
	for {
		_, err := s.Root.KVv2(KVMount).GetMetadata(context.Background(), "probe")
		if err == nil || isNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kv not answering after unseal: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WriteFile writes a file in the server's temporary folder and returns
// its path (token and secret-id files for the backend).
func (s *Server) WriteFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(s.dir, name)
	tcheck(t, os.WriteFile(p, []byte(content), 0o600), "write "+name)
	return p
}

func tcheck(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// testTLS makes a throw-away CA and a server certificate for 127.0.0.1,
// and writes the CA's certificate to dir/vault-ca.pem.
func testTLS(dir string) (*tls.Config, string, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Conduit test Vault CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, "", err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, "", err
	}
	caFile := filepath.Join(dir, "vault-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return nil, "", err
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   []string{"http/1.1"},
	}
	return cfg, caFile, nil
}
