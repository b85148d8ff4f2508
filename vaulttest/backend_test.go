// Package vaulttest runs Conduit's Vault key backend against Vault's own
// in-process server (package vaultsrv): a real Vault core over real TLS
// on 127.0.0.1, authenticated with tokens and AppRoles that hold exactly
// the policies in docs/. It is a module of its own so that Vault's large
// dependency graph stays out of the product's.
package vaulttest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/envelope"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/vaulttest/vaultsrv"
)

func tcheck(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// backendConfig is the backend's config for the server, with the
// policy's mount and path, logging in with an AppRole holding exactly the
// gateway policy.
func backendConfig(t testing.TB, s *vaultsrv.Server, role string) keys.VaultConfig {
	t.Helper()
	roleID, secretID := s.AppRole(t, role, time.Hour, 2*time.Hour)
	return keys.VaultConfig{
		Address: s.Addr, CAFile: s.CAFile, Mount: vaultsrv.KVMount, Path: vaultsrv.KVPath,
		Auth:    keys.VaultAuth{Method: "approle", RoleID: roleID, SecretIDFile: s.WriteFile(t, role+".secret-id", secretID)},
		Timeout: 10 * time.Second, MaxRetries: 1, RetryWait: 50 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// operator is a backend with the operator's token (the operator policy):
// the one that stores keys.
func operator(t testing.TB, s *vaultsrv.Server, transit bool) *keys.Vault {
	t.Helper()
	cfg := keys.VaultConfig{
		Address: s.Addr, CAFile: s.CAFile, Mount: vaultsrv.KVMount, Path: vaultsrv.KVPath,
		Token:   s.Token(t, vaultsrv.TokenOpts{Policy: vaultsrv.OperatorPolicy}),
		Timeout: 10 * time.Second, MaxRetries: 1, RetryWait: 50 * time.Millisecond,
	}
	if transit {
		cfg.Transit = &keys.TransitConfig{Mount: vaultsrv.TransitMount, Key: vaultsrv.TransitKey}
	}
	v, err := keys.NewVault(cfg)
	tcheck(t, err, "operator backend")
	return v
}

func newVault(t testing.TB, cfg keys.VaultConfig) *keys.Vault {
	t.Helper()
	v, err := keys.NewVault(cfg)
	tcheck(t, err, "new vault backend")
	return v
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// identity makes an agency identity in memory.
func identity(t testing.TB, agency string) *keys.Identity {
	t.Helper()
	id, err := keys.Generate(agency, "conduit@"+agency+".example", keys.ProfileRFC4880, time.Now().Add(-time.Hour))
	tcheck(t, err, "generate "+agency)
	return id
}

func pub(t testing.TB, id *keys.Identity) *keys.Cert {
	t.Helper()
	c, err := id.Public()
	tcheck(t, err, "public")
	return c
}

const body = "Subject: test\r\nFrom: <pio@met.example>\r\nTo: <intel@ng.example>\r\n\r\nThe intelligence.\r\n"

// seal seals a package from signer to recipient.
func seal(t testing.TB, signer *keys.Identity, to *keys.Cert) []byte {
	t.Helper()
	var buf bytes.Buffer
	tcheck(t, sealErr(signer, to, &buf), "seal")
	return buf.Bytes()
}

func sealErr(signer *keys.Identity, to *keys.Cert, w io.Writer) error {
	l, err := envelope.ParseLabel(`v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5; source=B; intelligence=2; handling=2; authorisation=PAS-2026-0042; basis=assessment; subjects=suspected; purpose=corruption-prison; sanitised=yes; originator=` + signer.Agency + `; reference=REF-1; created=2026-11-23T10:00:00Z`)
	if err != nil {
		return err
	}
	_, err = envelope.Seal(context.Background(), w, strings.NewReader(body), envelope.SealParams{
		Signer: signer, Recipients: []*keys.Cert{to}, Label: l, Profile: keys.ProfileOf(signer.Entity),
	})
	return err
}

// open opens a package with the receiver's identity, the sender pinned.
func open(receiver *keys.Identity, sender *keys.Cert, sealed []byte) (*envelope.Opened, error) {
	ps := keys.NewPartners()
	if err := ps.Add(sender, "", ""); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	return envelope.Open(context.Background(), &out, bytes.NewReader(sealed), envelope.OpenParams{Identity: receiver, Partners: ps})
}

func TestStoredIdentityLoadsAndSealsAndOpens(t *testing.T) {
	s := vaultsrv.Start(t)
	ctx := context.Background()
	met, ng := identity(t, "met-pio"), identity(t, "hmp-northgate")
	op := operator(t, s, false)
	n, err := op.StoreAt(ctx, ng, 0)
	tcheck(t, err, "operator stores the key")
	if n != 1 {
		t.Fatalf("first store is version %d, want 1", n)
	}
	gw := newVault(t, backendConfig(t, s, "gw"))
	tcheck(t, gw.Check(ctx), "check")
	loaded, err := gw.Identity(ctx)
	tcheck(t, err, "gateway loads its key")
	if loaded.Agency != "hmp-northgate" || loaded.Fingerprint() != ng.Fingerprint() {
		t.Fatalf("loaded %s %s, stored %s %s", loaded.Agency, loaded.Fingerprint(), ng.Agency, ng.Fingerprint())
	}
	// In: met seals to the key stored in Vault; the loaded key opens it.
	if _, err := open(loaded, pub(t, met), seal(t, met, pub(t, ng))); err != nil {
		t.Fatalf("package sealed to the stored key does not open with the loaded one: %v", err)
	}
	// Out: the loaded key signs; met verifies against the stored key.
	if _, err := open(met, pub(t, ng), seal(t, loaded, pub(t, met))); err != nil {
		t.Fatalf("package signed by the loaded key does not verify: %v", err)
	}
	// The gateway's policy reads; it cannot write (least privilege).
	if err := gw.Store(ctx, loaded); err == nil {
		t.Fatal("the gateway policy let the gateway write its key")
	}
}

func TestRotationIsANewVersionAndOldPackagesStillOpen(t *testing.T) {
	s := vaultsrv.Start(t)
	ctx := context.Background()
	met, ng := identity(t, "met-pio"), identity(t, "hmp-northgate")
	op := operator(t, s, false)
	_, err := op.StoreAt(ctx, ng, 0)
	tcheck(t, err, "store v1")
	before := seal(t, met, pub(t, ng)) // sealed to the first subkey

	// A rotation as keys/rotate.go does it: a new encryption subkey on the
	// same primary key (the pinned fingerprint stays), stored with
	// check-and-set on the version read.
	cur, err := op.Identity(ctx)
	tcheck(t, err, "read v1")
	tcheck(t, cur.Entity.AddEncryptionSubkey(keys.ProfileRFC4880.Config()), "add subkey")
	tcheck(t, op.Store(ctx, cur), "store v2")

	gw := newVault(t, backendConfig(t, s, "gw"))
	v, err := gw.CurrentVersion(ctx)
	tcheck(t, err, "current version")
	if v != 2 {
		t.Fatalf("current version %d, want 2", v)
	}
	vs, err := gw.Versions(ctx)
	tcheck(t, err, "versions")
	if len(vs) != 2 || vs[0].Number != 1 || vs[1].Number != 2 || vs[0].Deleted {
		t.Fatalf("versions %+v, want 1 and 2, both readable", vs)
	}
	old, err := gw.IdentityVersion(ctx, 1)
	tcheck(t, err, "read version 1")
	now, err := gw.Identity(ctx)
	tcheck(t, err, "read current")
	if len(old.Entity.Subkeys) != 1 || len(now.Entity.Subkeys) != 2 {
		t.Fatalf("subkeys: version 1 has %d, current %d; want 1 and 2", len(old.Entity.Subkeys), len(now.Entity.Subkeys))
	}
	if old.Fingerprint() != now.Fingerprint() {
		t.Fatal("rotation changed the primary fingerprint")
	}
	after := seal(t, met, pub(t, now)) // sealed to the new subkey
	for name, pkg := range map[string][]byte{"sealed before the rotation": before, "sealed after": after} {
		if _, err := open(now, pub(t, met), pkg); err != nil {
			t.Errorf("package %s does not open with the current key: %v", name, err)
		}
	}
	if _, err := open(old, pub(t, met), before); err != nil {
		t.Errorf("version 1 no longer opens its own packages: %v", err)
	}
}

func TestConcurrentStoreWithStaleVersionIsRefused(t *testing.T) {
	s := vaultsrv.Start(t)
	ctx := context.Background()
	_, err := operator(t, s, false).StoreAt(ctx, identity(t, "hmp-northgate"), 0)
	tcheck(t, err, "store v1")
	a, b := operator(t, s, false), operator(t, s, false)
	ia, err := a.Identity(ctx)
	tcheck(t, err, "a reads")
	ib, err := b.Identity(ctx)
	tcheck(t, err, "b reads")
	tcheck(t, ia.Entity.AddEncryptionSubkey(keys.ProfileRFC4880.Config()), "a rotates")
	tcheck(t, ib.Entity.AddEncryptionSubkey(keys.ProfileRFC4880.Config()), "b rotates")
	// Both store at once: exactly one wins, the other is told.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, p := range []struct {
		v  *keys.Vault
		id *keys.Identity
	}{{a, ia}, {b, ib}} {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = p.v.Store(ctx, p.id) }()
	}
	wg.Wait()
	won, stale := 0, 0
	var winner *keys.Identity
	for i, err := range errs {
		switch {
		case err == nil:
			won++
			winner = []*keys.Identity{ia, ib}[i]
		case errors.Is(err, keys.ErrStale):
			stale++
		default:
			t.Fatalf("store %d: %v", i, err)
		}
	}
	if won != 1 || stale != 1 {
		t.Fatalf("%d stores won and %d were refused as stale; want one each", won, stale)
	}
	// Nothing lost: version 2 is the winner's, whole; version 1 stays.
	v2, err := a.IdentityVersion(ctx, 2)
	tcheck(t, err, "read v2")
	if len(v2.Entity.Subkeys) != 2 || !bytes.Equal(v2.Entity.Subkeys[1].PublicKey.Fingerprint, winner.Entity.Subkeys[1].PublicKey.Fingerprint) {
		t.Fatal("version 2 is not the winning rotation")
	}
	if _, err := a.IdentityVersion(ctx, 3); err == nil {
		t.Fatal("a third version exists: the refused store wrote")
	}
	if _, err := a.IdentityVersion(ctx, 1); err != nil {
		t.Fatalf("version 1 lost: %v", err)
	}
}

func TestTokenRenewalAndRefusedTokensFailClosed(t *testing.T) {
	s := vaultsrv.Start(t)
	ctx := context.Background()
	_, err := operator(t, s, false).StoreAt(ctx, identity(t, "hmp-northgate"), 0)
	tcheck(t, err, "store")

	t.Run("a short-TTL token is kept alive by renewal", func(t *testing.T) {
		cfg := backendConfig(t, s, "renew")
		cfg.Auth = keys.VaultAuth{Method: "token", TokenFile: s.WriteFile(t, "renew.token",
			s.Token(t, vaultsrv.TokenOpts{Policy: vaultsrv.GatewayPolicy, TTL: 3 * time.Second, Renewable: true}))}
		v := newVault(t, cfg)
		// Check as the gateway's key gate does, for three TTLs.
		end := time.Now().Add(9 * time.Second)
		for time.Now().Before(end) {
			tcheck(t, v.Check(ctx), "check while renewing")
			time.Sleep(300 * time.Millisecond)
		}
		if _, err := v.Identity(ctx); err != nil {
			t.Fatalf("identity after three TTLs: %v", err)
		}
	})
	t.Run("without renewal the same token expires and the backend fails closed", func(t *testing.T) {
		cfg := backendConfig(t, s, "norenew")
		cfg.NoRenew = true
		cfg.Auth = keys.VaultAuth{Method: "token", TokenFile: s.WriteFile(t, "norenew.token",
			s.Token(t, vaultsrv.TokenOpts{Policy: vaultsrv.GatewayPolicy, TTL: 2 * time.Second, Renewable: true}))}
		v := newVault(t, cfg)
		tcheck(t, v.Check(ctx), "check while valid")
		waitFor(t, 20*time.Second, func() bool { return errors.Is(v.Check(ctx), keys.ErrUnavailable) })
		if id, err := v.Identity(ctx); !errors.Is(err, keys.ErrUnavailable) || id != nil {
			t.Fatalf("expired token: identity %v, err %v; want none and ErrUnavailable", id, err)
		}
	})
	t.Run("a revoked token fails closed", func(t *testing.T) {
		tok := s.Token(t, vaultsrv.TokenOpts{Policy: vaultsrv.GatewayPolicy})
		cfg := backendConfig(t, s, "revoked")
		cfg.Auth = keys.VaultAuth{Method: "token", TokenFile: s.WriteFile(t, "revoked.token", tok)}
		v := newVault(t, cfg)
		tcheck(t, v.Check(ctx), "check while valid")
		tcheck(t, s.Root.Auth().Token().RevokeOrphanWithContext(ctx, tok), "revoke")
		if err := v.Check(ctx); !errors.Is(err, keys.ErrUnavailable) {
			t.Fatalf("check with a revoked token: %v, want ErrUnavailable", err)
		}
		if id, err := v.Identity(ctx); !errors.Is(err, keys.ErrUnavailable) || id != nil {
			t.Fatalf("revoked token: identity %v, err %v", id, err)
		}
	})
	t.Run("AppRole logs in again after its token is revoked, and fails closed once its secret id is gone", func(t *testing.T) {
		v := newVault(t, backendConfig(t, s, "relogin"))
		tcheck(t, v.Check(ctx), "approle login")
		s.RevokeAppRoleTokens(t, "relogin")
		tcheck(t, v.Check(ctx), "check after revocation: a new login")
		s.DestroySecretIDs(t, "relogin")
		s.RevokeAppRoleTokens(t, "relogin")
		if err := v.Check(ctx); !errors.Is(err, keys.ErrUnavailable) {
			t.Fatalf("check with no way to log in: %v, want ErrUnavailable", err)
		}
	})
}

func waitFor(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestSealedVaultFailsClosedAndRecoversAfterUnseal(t *testing.T) {
	s := vaultsrv.Start(t)
	ctx := context.Background()
	_, err := operator(t, s, false).StoreAt(ctx, identity(t, "hmp-northgate"), 0)
	tcheck(t, err, "store")
	v := newVault(t, backendConfig(t, s, "gw"))
	tcheck(t, v.Check(ctx), "check before sealing")
	s.Seal(t)
	if err := v.Check(ctx); !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("check on a sealed vault: %v, want ErrUnavailable", err)
	}
	if id, err := v.Identity(ctx); !errors.Is(err, keys.ErrUnavailable) || id != nil {
		t.Fatalf("identity on a sealed vault: %v, %v", id, err)
	}
	s.Unseal(t)
	tcheck(t, v.Check(ctx), "check after unseal")
	if _, err := v.Identity(ctx); err != nil {
		t.Fatalf("identity after unseal: %v", err)
	}
}

func TestUnreachableVaultFailsAfterTheConfiguredRetries(t *testing.T) {
	s := vaultsrv.Start(t)
	ctx := context.Background()
	t.Run("connections cut: one attempt plus max-retries", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		tcheck(t, err, "listen")
		defer ln.Close()
		var accepted atomic.Int32
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted.Add(1)
				c.Close()
			}
		}()
		cfg := backendConfig(t, s, "cut")
		cfg.Address, cfg.MaxRetries, cfg.Timeout = "https://"+ln.Addr().String(), 3, 5*time.Second
		v := newVault(t, cfg)
		start := time.Now()
		err = v.Check(ctx)
		if !errors.Is(err, keys.ErrUnavailable) {
			t.Fatalf("check: %v, want ErrUnavailable", err)
		}
		if time.Since(start) > cfg.Timeout+2*time.Second {
			t.Fatalf("took %v, more than the %v timeout", time.Since(start), cfg.Timeout)
		}
		if n := accepted.Load(); n != 4 {
			t.Fatalf("%d connection attempts, want 4 (1 + max-retries 3)", n)
		}
	})
	t.Run("a server that never answers: the timeout ends it", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		tcheck(t, err, "listen")
		defer ln.Close()
		var mu sync.Mutex
		var held []net.Conn
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				held = append(held, c) // never answered, closed at the end
				mu.Unlock()
			}
		}()
		defer func() {
			mu.Lock()
			for _, c := range held {
				c.Close()
			}
			mu.Unlock()
		}()
		cfg := backendConfig(t, s, "silent")
		cfg.Address, cfg.MaxRetries, cfg.Timeout = "https://"+ln.Addr().String(), 5, 1*time.Second
		v := newVault(t, cfg)
		start := time.Now()
		if err := v.Check(ctx); !errors.Is(err, keys.ErrUnavailable) {
			t.Fatalf("check: %v, want ErrUnavailable", err)
		}
		if time.Since(start) > cfg.Timeout+2*time.Second {
			t.Fatalf("took %v with a %v timeout", time.Since(start), cfg.Timeout)
		}
	})
	t.Run("nothing listening", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		tcheck(t, err, "listen")
		addr := ln.Addr().String()
		ln.Close()
		cfg := backendConfig(t, s, "closed")
		cfg.Address = "https://" + addr
		if _, err := newVault(t, cfg).Identity(ctx); !errors.Is(err, keys.ErrUnavailable) {
			t.Fatalf("identity: %v, want ErrUnavailable", err)
		}
	})
	t.Run("a certificate the configured CA did not sign", func(t *testing.T) {
		cfg := backendConfig(t, s, "badca")
		cfg.CAFile = ""
		if err := newVault(t, cfg).Check(ctx); !errors.Is(err, keys.ErrUnavailable) {
			t.Fatalf("check without the CA: %v, want ErrUnavailable (TLS refused)", err)
		}
	})
}
