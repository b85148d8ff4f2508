package keys

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	vault "github.com/hashicorp/vault/api"
)

// VaultConfig is what the Vault backend needs: where Vault is, how to
// trust it, how to log in, where the agency's key lives, and how long to
// wait. The gateway's config section `vault:` fills it in.
type VaultConfig struct {
	// Address is Vault's URL ("https://vault.example:8200").
	Address string
	// CAFile verifies Vault's TLS certificate; empty uses the system roots.
	CAFile string
	// Namespace is the Vault Enterprise namespace; empty for none.
	Namespace string
	// Mount is the KV v2 secrets engine's mount path ("conduit").
	Mount string
	// Path is the secret's path inside the mount ("agency-identity").
	Path string
	Auth VaultAuth
	// Timeout bounds one operation, retries included.
	Timeout time.Duration
	// MaxRetries is how often a request is retried after a connection
	// error or a 5xx answer (a sealed Vault answers 503).
	MaxRetries int
	// RetryWait is the least wait before a retry; it grows to three times
	// that at most.
	RetryWait time.Duration
	// Transit, when set, holds the agency's signing key in Vault Transit:
	// the private signing key never leaves Vault.
	Transit *TransitConfig
	// NoRenew turns off token renewal.
	NoRenew bool
	// Token, when set, is used instead of Auth (an operator's token for
	// the key commands; CONDUIT_VAULT_TOKEN).
	Token string
	Log   *slog.Logger
}

// VaultAuth says how the backend logs in to Vault.
type VaultAuth struct {
	// Method is "token" or "approle".
	Method string
	// TokenFile holds the token (method token). It is read again when the
	// token is refused, so a token a Vault Agent rewrites is picked up.
	TokenFile string
	// RoleID and SecretIDFile are the AppRole credentials (method approle).
	RoleID       string
	SecretIDFile string
	// Mount is the auth method's mount ("approle" by default).
	Mount string
}

// TransitConfig names the Transit key that signs for the agency.
type TransitConfig struct {
	Mount string // the Transit engine's mount ("transit")
	Key   string // the key's name; type ecdsa-p384 or rsa-3072
}

// Typed errors of the Vault backend.
var (
	// ErrStale is a Store refused by check-and-set: someone else stored a
	// newer version since this backend read its identity. Nothing was
	// written; read again and redo the change.
	ErrStale = errors.New("the key in Vault changed since it was read (check-and-set)")
	// ErrNoKeyStored is a KV path with no identity (or a deleted version).
	ErrNoKeyStored = errors.New("no agency key is stored there")
)

// identityFormat marks the KV secret's layout.
const identityFormat = "conduit-identity-1"

// Vault is the Vault backend: the agency's secret key in a KV v2 secret,
// versioned (a rotation writes a new version; earlier ones stay readable
// for packages still in flight), and optionally its signing key in
// Transit. Key material is held in memory only.
//
// The backend logs in lazily and renews its token when an operation finds
// it past half its TTL; the gateway's key gate calls Check every few
// seconds, which keeps a renewable token alive. Every failure to reach or
// use Vault wraps ErrUnavailable.
type Vault struct {
	cfg    VaultConfig
	client *vault.Client
	log    *slog.Logger

	mu        sync.Mutex
	haveToken bool
	renewAt   time.Time // renew the token after this
	expires   time.Time // zero: no expiry known
	renewable bool
	loaded    int // the KV version Identity last read (the check-and-set base)
}

// NewVault makes a Vault backend. It does not contact Vault: the first
// operation logs in.
func NewVault(cfg VaultConfig) (*Vault, error) {
	if cfg.Address == "" {
		return nil, errors.New("vault: no address")
	}
	if cfg.Mount == "" || cfg.Path == "" {
		return nil, errors.New("vault: the KV mount and path are needed")
	}
	vc := vault.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("vault: environment: %w", vc.Error)
	}
	vc.Address = cfg.Address
	if cfg.Timeout > 0 {
		vc.Timeout = cfg.Timeout
	}
	vc.MaxRetries = cfg.MaxRetries
	if cfg.RetryWait > 0 {
		vc.MinRetryWait, vc.MaxRetryWait = cfg.RetryWait, 3*cfg.RetryWait
	}
	tr := vc.HttpClient.Transport.(*http.Transport)
	// The client reads VAULT_* from the environment (api.DefaultConfig),
	// and one of them must never apply: VAULT_SKIP_VERIFY would send the
	// login and fetch the agency's secret key without checking who
	// answers.
	if tr.TLSClientConfig.InsecureSkipVerify {
		return nil, errors.New("vault: VAULT_SKIP_VERIFY is set in the environment: the key store's certificate is always verified; unset it and give vault.ca-file")
	}
	tr.TLSClientConfig.MinVersion = tls.VersionTLS12
	if cfg.Timeout > 0 {
		tr.DialContext = (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext
		tr.TLSHandshakeTimeout = cfg.Timeout
	}
	if cfg.CAFile != "" {
		if err := vc.ConfigureTLS(&vault.TLSConfig{CACert: cfg.CAFile}); err != nil {
			return nil, fmt.Errorf("vault: ca-file %s: %w", cfg.CAFile, err)
		}
	}
	c, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	// A token in the environment (VAULT_TOKEN) is never used silently: the
	// config's auth, or CONDUIT_VAULT_TOKEN through cfg.Token, decides.
	c.ClearToken()
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	}
	switch {
	case cfg.Token != "":
	case cfg.Auth.Method == "token" && cfg.Auth.TokenFile != "":
	case cfg.Auth.Method == "approle" && cfg.Auth.RoleID != "" && cfg.Auth.SecretIDFile != "":
	default:
		return nil, fmt.Errorf("vault: auth method %q is incomplete: token needs token-file, approle needs role-id and secret-id-file", cfg.Auth.Method)
	}
	if cfg.Auth.Mount == "" {
		cfg.Auth.Mount = cfg.Auth.Method
	}
	if cfg.Transit != nil && cfg.Transit.Mount == "" {
		cfg.Transit.Mount = "transit"
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	return &Vault{cfg: cfg, client: c, log: log.With("vault", cfg.Address, "secret", cfg.Mount+"/"+cfg.Path)}, nil
}

// unavailable wraps a failure to use Vault. The cause is Vault's own
// message (sealed, permission denied, connection refused), which never
// holds key material.
func unavailable(what string, err error) error {
	return fmt.Errorf("%w: vault %s: %v", ErrUnavailable, what, err)
}

// isDenied reports a 403: the token expired, was revoked or lacks the
// policy.
func isDenied(err error) bool {
	var re *vault.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden
}

// login authenticates with the configured method and records the token's
// lifetime.
func (v *Vault) login(ctx context.Context) error {
	var secret *vault.Secret
	switch {
	case v.cfg.Token != "":
		v.client.SetToken(v.cfg.Token)
	case v.cfg.Auth.Method == "token":
		b, err := os.ReadFile(v.cfg.Auth.TokenFile)
		if err != nil {
			return fmt.Errorf("vault: token-file: %w", err)
		}
		v.client.SetToken(strings.TrimSpace(string(b)))
	case v.cfg.Auth.Method == "approle":
		sid, err := os.ReadFile(v.cfg.Auth.SecretIDFile)
		if err != nil {
			return fmt.Errorf("vault: secret-id-file: %w", err)
		}
		v.client.ClearToken()
		secret, err = v.client.Logical().WriteWithContext(ctx, "auth/"+v.cfg.Auth.Mount+"/login", map[string]any{
			"role_id": v.cfg.Auth.RoleID, "secret_id": strings.TrimSpace(string(sid)),
		})
		if err != nil {
			return unavailable("approle login", err)
		}
		if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
			return unavailable("approle login", errors.New("no token in the answer"))
		}
		v.client.SetToken(secret.Auth.ClientToken)
	}
	if secret == nil || secret.Auth == nil {
		// A token from a file: ask Vault what it is.
		var err error
		secret, err = v.client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return unavailable("token lookup", err)
		}
	}
	v.setLifetime(secret)
	v.haveToken = true
	return nil
}

// setLifetime records when the token should be renewed and when it
// expires.
func (v *Vault) setLifetime(s *vault.Secret) {
	now := time.Now()
	v.renewAt, v.expires, v.renewable = time.Time{}, time.Time{}, false
	if s == nil {
		return
	}
	ttl, err := s.TokenTTL()
	if err != nil || ttl <= 0 {
		return // a token that never expires (root, or period 0)
	}
	renewable, _ := s.TokenIsRenewable()
	v.expires = now.Add(ttl)
	v.renewAt = now.Add(ttl / 2)
	v.renewable = renewable
}

// ensureToken logs in when there is no token yet, renews a renewable
// token past half its TTL, and logs in again when it can no longer be
// renewed.
func (v *Vault) ensureToken(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.haveToken {
		return v.login(ctx)
	}
	if v.renewAt.IsZero() || time.Now().Before(v.renewAt) {
		return nil
	}
	if v.renewable && !v.cfg.NoRenew {
		s, err := v.client.Auth().Token().RenewSelfWithContext(ctx, 0)
		if err == nil && s != nil && s.Auth != nil {
			v.setLifetimeFromAuth(s.Auth)
			v.log.Debug("vault token renewed", "ttl", s.Auth.LeaseDuration)
			return nil
		}
		if err != nil && !isDenied(err) {
			return unavailable("token renewal", err)
		}
	}
	// Not renewable, or past its maximum TTL: log in again.
	v.log.Info("vault token near its end; logging in again")
	return v.login(ctx)
}

func (v *Vault) setLifetimeFromAuth(a *vault.SecretAuth) {
	now := time.Now()
	ttl := time.Duration(a.LeaseDuration) * time.Second
	v.renewable = a.Renewable
	if ttl <= 0 {
		v.renewAt, v.expires = time.Time{}, time.Time{}
		return
	}
	v.expires, v.renewAt = now.Add(ttl), now.Add(ttl/2)
}

// call runs op with a valid token. When Vault refuses the token (403), it
// logs in once more and retries: a token file rewritten by an agent, or
// an AppRole token that expired while the gateway was idle.
func (v *Vault) call(ctx context.Context, what string, op func() error) error {
	if err := v.ensureToken(ctx); err != nil {
		return err
	}
	err := op()
	if err == nil || !isDenied(err) {
		return err
	}
	v.mu.Lock()
	lerr := v.login(ctx)
	v.mu.Unlock()
	if lerr != nil {
		return lerr
	}
	return op()
}

// Version is one version of the stored identity.
type Version struct {
	Number    int
	Created   time.Time
	Deleted   bool // deleted or destroyed: no longer readable
	Destroyed bool
}

// CurrentVersion is the KV version that Identity returns now. The gateway
// polls it to notice a rotation.
func (v *Vault) CurrentVersion(ctx context.Context) (int, error) {
	var md *vault.KVMetadata
	err := v.call(ctx, "read metadata", func() (err error) {
		md, err = v.client.KVv2(v.cfg.Mount).GetMetadata(ctx, v.cfg.Path)
		return err
	})
	if err != nil {
		if errors.Is(err, vault.ErrSecretNotFound) {
			return 0, fmt.Errorf("%w: %w at %s/%s", ErrUnavailable, ErrNoKeyStored, v.cfg.Mount, v.cfg.Path)
		}
		if errors.Is(err, ErrUnavailable) {
			return 0, err
		}
		return 0, unavailable("read metadata", err)
	}
	return md.CurrentVersion, nil
}

// Versions lists the stored versions, oldest first.
func (v *Vault) Versions(ctx context.Context) ([]Version, error) {
	var list []vault.KVVersionMetadata
	err := v.call(ctx, "list versions", func() (err error) {
		list, err = v.client.KVv2(v.cfg.Mount).GetVersionsAsList(ctx, v.cfg.Path)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return nil, err
		}
		return nil, unavailable("list versions", err)
	}
	out := make([]Version, 0, len(list))
	for _, m := range list {
		out = append(out, Version{Number: m.Version, Created: m.CreatedTime,
			Deleted: !m.DeletionTime.IsZero() || m.Destroyed, Destroyed: m.Destroyed})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out, nil
}

// Check reports whether Vault answers with this backend's token and holds
// the key (a metadata read: no key material crosses the wire). It renews
// the token when due.
func (v *Vault) Check(ctx context.Context) error {
	_, err := v.CurrentVersion(ctx)
	return err
}

// Identity reads the current version of the agency's key.
func (v *Vault) Identity(ctx context.Context) (*Identity, error) {
	id, n, err := v.read(ctx, 0)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	v.loaded = n
	v.mu.Unlock()
	return id, nil
}

// IdentityVersion reads one earlier (or the current) version.
func (v *Vault) IdentityVersion(ctx context.Context, n int) (*Identity, error) {
	if n <= 0 {
		return nil, fmt.Errorf("vault: version %d: versions start at 1", n)
	}
	id, _, err := v.read(ctx, n)
	return id, err
}

// LoadedVersion is the KV version Identity last returned (0: none yet).
func (v *Vault) LoadedVersion() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.loaded
}

func (v *Vault) read(ctx context.Context, n int) (*Identity, int, error) {
	var s *vault.KVSecret
	err := v.call(ctx, "read key", func() (err error) {
		kv := v.client.KVv2(v.cfg.Mount)
		if n == 0 {
			s, err = kv.Get(ctx, v.cfg.Path)
		} else {
			s, err = kv.GetVersion(ctx, v.cfg.Path, n)
		}
		return err
	})
	where := v.cfg.Mount + "/" + v.cfg.Path
	if n > 0 {
		where += " version " + strconv.Itoa(n)
	}
	if err != nil {
		if errors.Is(err, vault.ErrSecretNotFound) {
			return nil, 0, fmt.Errorf("vault: %w at %s", ErrNoKeyStored, where)
		}
		if errors.Is(err, ErrUnavailable) {
			return nil, 0, err
		}
		return nil, 0, unavailable("read key", err)
	}
	if s == nil || s.Data == nil {
		return nil, 0, fmt.Errorf("vault: %w at %s (deleted)", ErrNoKeyStored, where)
	}
	version := 0
	if s.VersionMetadata != nil {
		version = s.VersionMetadata.Version
	}
	id, err := v.decode(ctx, s.Data)
	if err != nil {
		return nil, 0, fmt.Errorf("vault: %s: %w", where, err)
	}
	return id, version, nil
}

// The KV secret's fields.
const (
	fieldFormat         = "format"
	fieldAgency         = "agency"
	fieldSecretKey      = "secret-key"  // armored secret key, all of it (no Transit)
	fieldCertificate    = "certificate" // armored public certificate (Transit)
	fieldSubkeys        = "subkeys"     // armored secret subkey packets (Transit)
	fieldTransitKey     = "transit-key"
	fieldTransitVersion = "transit-version"
)

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func (v *Vault) decode(ctx context.Context, d map[string]any) (*Identity, error) {
	if f := str(d, fieldFormat); f != identityFormat {
		return nil, fmt.Errorf("the secret is not a Conduit identity (format %q, want %q)", f, identityFormat)
	}
	if sk := str(d, fieldSecretKey); sk != "" {
		id, err := ReadIdentity(strings.NewReader(sk), nil)
		if err != nil {
			return nil, err
		}
		return id, nil
	}
	tk := str(d, fieldTransitKey)
	if tk == "" {
		return nil, errors.New("the secret holds neither a secret key nor a Transit key name")
	}
	if v.cfg.Transit == nil {
		return nil, fmt.Errorf("the key signs with Transit key %q, but the config names no vault.transit", tk)
	}
	if tk != v.cfg.Transit.Key {
		return nil, fmt.Errorf("the key signs with Transit key %q, the config names %q", tk, v.cfg.Transit.Key)
	}
	tv, err := strconv.Atoi(str(d, fieldTransitVersion))
	if err != nil || tv < 1 {
		return nil, fmt.Errorf("transit-version %q is not a version", str(d, fieldTransitVersion))
	}
	el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(str(d, fieldCertificate)))
	if err != nil || len(el) != 1 {
		return nil, fmt.Errorf("the stored certificate cannot be read: %v", err)
	}
	e := el[0]
	signer, err := v.transitSigner(ctx, tv)
	if err != nil {
		return nil, err
	}
	if err := signerMatches(signer, e.PrimaryKey); err != nil {
		return nil, err
	}
	e.PrivateKey = &packet.PrivateKey{PublicKey: *e.PrimaryKey, PrivateKey: signer}
	if err := attachSubkeys(e, str(d, fieldSubkeys)); err != nil {
		return nil, err
	}
	agency, err := agencyOf(e)
	if err != nil {
		return nil, err
	}
	return &Identity{Agency: agency, Entity: e}, nil
}

// attachSubkeys gives the certificate's encryption subkeys their secret
// halves, matched by fingerprint.
func attachSubkeys(e *openpgp.Entity, armored string) error {
	blk, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		return fmt.Errorf("the stored subkeys cannot be read: %w", err)
	}
	pr := packet.NewReader(blk.Body)
	found := 0
	for {
		p, err := pr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return fmt.Errorf("the stored subkeys cannot be read: %w", err)
		}
		pk, ok := p.(*packet.PrivateKey)
		if !ok {
			continue
		}
		for i := range e.Subkeys {
			if bytes.Equal(e.Subkeys[i].PublicKey.Fingerprint, pk.Fingerprint) {
				e.Subkeys[i].PrivateKey = pk
				found++
			}
		}
	}
	if found == 0 {
		return errors.New("no secret encryption subkey is stored")
	}
	return nil
}

// Store writes id as a new version with check-and-set on the version this
// backend last read (0 when it read none: the secret must not exist yet),
// so that two rotations at once cannot lose one: the second is refused
// with ErrStale. Earlier versions stay readable.
func (v *Vault) Store(ctx context.Context, id *Identity) error {
	_, err := v.StoreAt(ctx, id, v.LoadedVersion())
	return err
}

// StoreAt writes id as a new version if the current version is cas (0:
// only if none exists), and returns the new version number.
func (v *Vault) StoreAt(ctx context.Context, id *Identity, cas int) (int, error) {
	data, err := v.encode(id)
	if err != nil {
		return 0, err
	}
	var s *vault.KVSecret
	err = v.call(ctx, "store key", func() (err error) {
		s, err = v.client.KVv2(v.cfg.Mount).Put(ctx, v.cfg.Path, data, vault.WithCheckAndSet(cas))
		return err
	})
	if err != nil {
		var re *vault.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(re.Errors, " "), "check-and-set") {
			return 0, fmt.Errorf("vault: store %s/%s at version %d: %w", v.cfg.Mount, v.cfg.Path, cas, ErrStale)
		}
		if errors.Is(err, ErrUnavailable) {
			return 0, err
		}
		return 0, unavailable("store key", err)
	}
	n := 0
	if s != nil && s.VersionMetadata != nil {
		n = s.VersionMetadata.Version
	}
	v.mu.Lock()
	v.loaded = n
	v.mu.Unlock()
	v.log.Info("agency key stored in vault", "version", n, "fingerprint", id.Fingerprint())
	return n, nil
}

func (v *Vault) encode(id *Identity) (map[string]any, error) {
	d := map[string]any{fieldFormat: identityFormat, fieldAgency: id.Agency}
	ts, ok := id.Entity.PrivateKey.PrivateKey.(*transitSigner)
	if !ok {
		var buf bytes.Buffer
		if err := id.WriteSecret(&buf, nil); err != nil {
			return nil, err
		}
		d[fieldSecretKey] = buf.String()
		return d, nil
	}
	var cert bytes.Buffer
	if err := WritePublic(&cert, id.Entity); err != nil {
		return nil, err
	}
	var subs bytes.Buffer
	aw, err := armor.Encode(&subs, openpgp.PrivateKeyType, map[string]string{"Comment": "Conduit encryption subkeys for " + id.Agency})
	if err != nil {
		return nil, err
	}
	n := 0
	for _, s := range id.Entity.Subkeys {
		if s.PrivateKey == nil || s.PrivateKey.Encrypted {
			continue
		}
		if err := s.PrivateKey.Serialize(aw); err != nil {
			return nil, fmt.Errorf("serialize subkey: %w", err)
		}
		n++
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, errors.New("vault: the identity has no secret encryption subkey to store")
	}
	d[fieldCertificate] = cert.String()
	d[fieldSubkeys] = subs.String()
	d[fieldTransitKey] = ts.key
	d[fieldTransitVersion] = strconv.Itoa(ts.version)
	return d, nil
}

func isNotFound(err error) bool {
	var re *vault.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}
