// Package keys is in charge of the gateways' OpenPGP keys: generating an
// agency identity, storing its secret key (encrypted at rest), exporting its
// public certificate, and loading partner certificates pinned by
// fingerprint. A partner certificate whose fingerprint is not the pinned one
// is never used. Key storage sits behind Backend so that a Vault backend can
// stand in for the file keyring.
package keys

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// Profile selects the OpenPGP generation a partner speaks.
type Profile string

const (
	// ProfileRFC4880 is v4 keys, Curve25519 (EdDSA signing, ECDH
	// encryption), SEIPD v1 with MDC: what GnuPG 2.2 and Sequoia read.
	ProfileRFC4880 Profile = "rfc4880"
	// ProfileRFC9580 is v6 keys, Ed25519/X25519, SEIPD v2 (AEAD).
	ProfileRFC9580 Profile = "rfc9580"
)

// ParseProfile checks a profile name.
func ParseProfile(s string) (Profile, error) {
	switch Profile(s) {
	case ProfileRFC4880, ProfileRFC9580:
		return Profile(s), nil
	case "":
		return ProfileRFC4880, nil
	}
	return "", fmt.Errorf("unknown profile %q: use %s or %s", s, ProfileRFC4880, ProfileRFC9580)
}

// Config returns the go-crypto configuration for a profile. It is never
// nil: go-crypto's v2 Encrypt panics on a nil config when every recipient
// advertises SEIPD v2.
func (p Profile) Config() *packet.Config {
	c := &packet.Config{
		DefaultHash:            crypto.SHA256,
		DefaultCipher:          packet.CipherAES256,
		DefaultCompressionAlgo: packet.CompressionNone,
	}
	switch p {
	case ProfileRFC9580:
		c.V6Keys = true
		c.Algorithm = packet.PubKeyAlgoEd25519
		c.AEADConfig = &packet.AEADConfig{}
	default:
		// The key must not advertise SEIPD v2, or go-crypto would pick it
		// for v4 recipients that GnuPG 2.2 cannot read: leave AEADConfig nil.
		c.Algorithm = packet.PubKeyAlgoEdDSA
		c.Curve = packet.Curve25519
	}
	return c
}

// Typed errors callers branch on.
var (
	ErrFingerprintMismatch = errors.New("certificate fingerprint is not the pinned one")
	// ErrNotAgencyKey: no agency was given to pin a certificate for, and
	// its user ID names none.
	ErrNotAgencyKey   = errors.New("certificate is not pinned for an agency")
	ErrPassphrase     = errors.New("secret key passphrase is wrong")
	ErrNeedPassphrase = errors.New("secret key is encrypted: a passphrase is needed; give it in a file (keys.passphrase-file in the config, or --passphrase-file FILE) or in CONDUIT_PASSPHRASE")
)

// userIDComment marks the user ID of a gateway identity; the user ID's
// name is the agency id, so a certificate says which agency it speaks for.
const userIDComment = "Conduit gateway"

// Identity is this gateway's own agency key: a signing primary key and an
// encryption subkey (more than one after a rotation).
type Identity struct {
	Agency string
	Entity *openpgp.Entity
}

// Cert is a partner's public certificate.
//
// Agency is the agency the certificate is pinned for: the directory's
// pinned fingerprint, an administrator's decision, binds a key to an
// agency (Partners.Add). Before it is pinned, Agency is what the user ID
// claims, which may be empty: a key made with `gpg --quick-gen-key 'HMP
// Northgate Intel <intel@northgate.example>'` names no agency id at all.
type Cert struct {
	Agency string
	// Claimed is the agency id the certificate's user ID names, if any
	// (informational only: never consulted to decide whose key it is).
	Claimed string
	Entity  *openpgp.Entity
}

// NameWarning says when the certificate's user ID names another agency
// than the one it is pinned for; "" when it names that agency or none.
// A warning for `keys list` and `policy check`, never a refusal: the pin
// decides.
func (c *Cert) NameWarning(agency string) string {
	if c.Claimed == "" || c.Claimed == agency {
		return ""
	}
	return fmt.Sprintf("certificate %s is pinned for %s but its user ID names %q; the pin decides, check the directory entry", c.Fingerprint(), agency, c.Claimed)
}

// Label names the certificate for messages: its agency, else its
// fingerprint.
func (c *Cert) Label() string {
	if c.Agency != "" {
		return c.Agency
	}
	return c.Fingerprint()
}

// Fingerprint is the upper-case hex fingerprint of a key.
func Fingerprint(e *openpgp.Entity) string {
	return strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint))
}

// Fingerprint of the identity's primary key.
func (id *Identity) Fingerprint() string { return Fingerprint(id.Entity) }

// Fingerprint of the certificate's primary key.
func (c *Cert) Fingerprint() string { return Fingerprint(c.Entity) }

// Profile tells which profile a key belongs to, from its version.
func ProfileOf(e *openpgp.Entity) Profile {
	if e.PrimaryKey.Version == 6 {
		return ProfileRFC9580
	}
	return ProfileRFC4880
}

// Generate creates a new agency identity.
func Generate(agency, email string, profile Profile, now time.Time) (*Identity, error) {
	return generate(agency, email, profile, now, 0)
}

func generate(agency, email string, profile Profile, now time.Time, lifetimeSecs uint32) (*Identity, error) {
	if agency == "" || strings.ContainsAny(agency, "()<>\x00 ") {
		return nil, fmt.Errorf("generate key: agency id %q is not usable in a user ID", agency)
	}
	cfg := profile.Config()
	cfg.Time = func() time.Time { return now }
	cfg.KeyLifetimeSecs = lifetimeSecs
	e, err := openpgp.NewEntity(agency, userIDComment, email, cfg)
	if err != nil {
		return nil, fmt.Errorf("generate key for %s: %w", agency, err)
	}
	return &Identity{Agency: agency, Entity: e}, nil
}

// claimedAgency is the agency id a certificate's user IDs name, or "".
func claimedAgency(e *openpgp.Entity) string {
	a, err := agencyOf(e)
	if err != nil || !isAgencyWord(a) {
		return ""
	}
	return a
}

// isAgencyWord reports whether s has the form of a directory agency id
// (lower-case letters, digits, hyphens).
func isAgencyWord(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// agencyOf reads the agency id from a certificate's user IDs: the name part
// of a "agency (Conduit gateway) <email>" user ID, or of any user ID whose
// name is a single word. It names this gateway's own identity; for a
// partner's certificate it is only a claim (Cert.Claimed).
func agencyOf(e *openpgp.Entity) (string, error) {
	var fallback string
	for _, id := range e.Identities {
		if id.UserId == nil {
			continue
		}
		name := strings.TrimSpace(id.UserId.Name)
		if id.UserId.Comment == userIDComment && name != "" {
			return name, nil
		}
		if fallback == "" && name != "" && !strings.ContainsAny(name, " \t") {
			fallback = name
		}
	}
	if fallback != "" {
		return fallback, nil
	}
	return "", ErrNotAgencyKey
}

// WritePublic writes the armored public certificate.
func WritePublic(w io.Writer, e *openpgp.Entity) error {
	aw, err := armor.Encode(w, openpgp.PublicKeyType, nil)
	if err != nil {
		return err
	}
	if err := e.Serialize(aw); err != nil {
		return fmt.Errorf("serialize certificate: %w", err)
	}
	if err := aw.Close(); err != nil {
		return err
	}
	_, err = io.WriteString(w, "\n")
	return err
}

// WriteSecret writes the armored secret key, encrypting the secret key
// material with the passphrase (S2K) when one is given. The identity itself
// stays decrypted in memory.
func (id *Identity) WriteSecret(w io.Writer, passphrase []byte) error {
	e := id.Entity
	if len(passphrase) > 0 {
		// Encrypt a copy, so the in-memory identity stays usable.
		var buf bytes.Buffer
		if err := e.SerializePrivateWithoutSigning(&buf, nil); err != nil {
			return fmt.Errorf("serialize secret key: %w", err)
		}
		cp, err := openpgp.ReadEntity(packet.NewReader(&buf))
		if err != nil {
			return fmt.Errorf("copy secret key: %w", err)
		}
		if err := cp.EncryptPrivateKeys(passphrase, ProfileOf(e).Config()); err != nil {
			return fmt.Errorf("encrypt secret key: %w", err)
		}
		e = cp
	}
	aw, err := armor.Encode(w, openpgp.PrivateKeyType, map[string]string{
		"Comment": "Conduit agency secret key for " + id.Agency,
	})
	if err != nil {
		return err
	}
	if err := e.SerializePrivateWithoutSigning(aw, nil); err != nil {
		return fmt.Errorf("serialize secret key: %w", err)
	}
	if err := aw.Close(); err != nil {
		return err
	}
	_, err = io.WriteString(w, "\n")
	return err
}

// ReadIdentity reads an armored secret key and decrypts it with the
// passphrase if it is encrypted.
func ReadIdentity(r io.Reader, passphrase []byte) (*Identity, error) {
	el, err := openpgp.ReadArmoredKeyRing(r)
	if err != nil {
		return nil, fmt.Errorf("read secret key: %w", err)
	}
	if len(el) != 1 {
		return nil, fmt.Errorf("read secret key: want one key, found %d", len(el))
	}
	e := el[0]
	if e.PrivateKey == nil {
		return nil, errors.New("read secret key: the file holds a public certificate, not a secret key")
	}
	if encrypted(e) {
		if len(passphrase) == 0 {
			return nil, ErrNeedPassphrase
		}
		if err := e.DecryptPrivateKeys(passphrase); err != nil {
			return nil, ErrPassphrase
		}
	}
	agency, err := agencyOf(e)
	if err != nil {
		return nil, err
	}
	return &Identity{Agency: agency, Entity: e}, nil
}

func encrypted(e *openpgp.Entity) bool {
	if e.PrivateKey != nil && e.PrivateKey.Encrypted {
		return true
	}
	for _, s := range e.Subkeys {
		if s.PrivateKey != nil && s.PrivateKey.Encrypted {
			return true
		}
	}
	return false
}

// ReadCert reads one armored (or binary) public certificate. Any secret
// key material in it is dropped, so a mistakenly shared secret key is
// never used as a partner certificate.
func ReadCert(r io.Reader) (*Cert, error) {
	data, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	var el openpgp.EntityList
	if bytes.Contains(data, []byte("-----BEGIN PGP")) {
		el, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
	} else {
		el, err = openpgp.ReadKeyRing(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	if len(el) != 1 {
		return nil, fmt.Errorf("read certificate: want one certificate, found %d", len(el))
	}
	e := el[0]
	// An expired or revoked certificate is read, so that it can be pinned
	// and reported (deliveries to it are held with the reason); a broken
	// one is not.
	if _, err := e.VerifyPrimaryKey(time.Time{}, nil); err != nil && !e.Revoked(time.Now()) {
		return nil, fmt.Errorf("read certificate %s: %w", Fingerprint(e), err)
	}
	pub, err := publicOnly(e)
	if err != nil {
		return nil, err
	}
	// The user ID is a claim, not a binding: an ordinary user ID made by
	// gpg or sq names no agency, and the pin decides whose key it is.
	claimed := claimedAgency(pub)
	return &Cert{Agency: claimed, Claimed: claimed, Entity: pub}, nil
}

func publicOnly(e *openpgp.Entity) (*openpgp.Entity, error) {
	var buf bytes.Buffer
	if err := e.Serialize(&buf); err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	return openpgp.ReadEntity(packet.NewReader(&buf))
}

// Public returns the identity's public certificate.
func (id *Identity) Public() (*Cert, error) {
	pub, err := publicOnly(id.Entity)
	if err != nil {
		return nil, err
	}
	return &Cert{Agency: id.Agency, Claimed: id.Agency, Entity: pub}, nil
}

// NormalizeFingerprint upper-cases a fingerprint and drops spaces and
// colons, the forms people copy from gpg and sq output.
func NormalizeFingerprint(s string) string {
	return strings.ToUpper(strings.NewReplacer(" ", "", ":", "").Replace(s))
}

// Pin checks that a certificate is the one pinned for an agency. The
// fingerprint is the whole binding (DESIGN.md, Keys: "partner public keys
// are pinned by fingerprint in the directory"); what the user ID says is
// not consulted (see Cert.NameWarning).
func Pin(c *Cert, agency, fingerprint string) error {
	if agency == "" {
		return fmt.Errorf("certificate %s: %w: say which agency it is pinned for", c.Fingerprint(), ErrNotAgencyKey)
	}
	if c.Fingerprint() != NormalizeFingerprint(fingerprint) {
		return fmt.Errorf("%w: %s presented %s, pinned %s", ErrFingerprintMismatch, agency, c.Fingerprint(), NormalizeFingerprint(fingerprint))
	}
	return nil
}

// ErrUnavailable is wrapped by a backend that cannot be used now (Vault
// sealed, unreachable, or the token expired). Callers fail closed on it: no
// package is sealed or opened, and the work waits.
var ErrUnavailable = errors.New("key backend unavailable")

// Backend is where this gateway's own secret key lives: a file here, Vault
// in a deployment that keeps keys off the gateway's disk. Every method may
// block (a network call for Vault) and must fail closed: an error, never a
// weaker key.
type Backend interface {
	// Identity returns the current identity. After a rotation it holds the
	// new encryption subkey and every earlier one, so packages sealed to an
	// old subkey still open.
	Identity(ctx context.Context) (*Identity, error)
	// Store makes id the current identity (a rotation). The earlier one is
	// kept where the backend can (Vault KV versions).
	Store(ctx context.Context, id *Identity) error
	// Check reports whether the backend answers now; an error wraps
	// ErrUnavailable.
	Check(ctx context.Context) error
}

// File is the file keyring backend: an armored secret key file, encrypted
// at rest with a passphrase.
type File struct {
	Path       string
	Passphrase []byte
}

// Identity loads and decrypts the secret key file.
func (f *File) Identity(ctx context.Context) (*Identity, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fh, err := os.Open(f.Path)
	if err != nil {
		return nil, fmt.Errorf("open secret key: %w", err)
	}
	defer fh.Close()
	id, err := ReadIdentity(fh, f.Passphrase)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	return id, nil
}

// Store replaces the secret key file atomically (a temporary file in the
// same directory, synced, then renamed), so a crash leaves the old key or
// the new one, never half of either. The previous file is kept beside it
// as PATH.prev for the operator's records.
func (f *File) Store(ctx context.Context, id *Identity) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.Path), ".secret-*.tmp")
	if err != nil {
		return fmt.Errorf("store secret key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("store secret key: %w", err)
	}
	if err := id.WriteSecret(tmp, f.Passphrase); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("store secret key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("store secret key: %w", err)
	}
	if old, err := os.ReadFile(f.Path); err == nil {
		if err := os.WriteFile(f.Path+".prev", old, 0o600); err != nil {
			return fmt.Errorf("store secret key: keep previous: %w", err)
		}
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return fmt.Errorf("store secret key: %w", err)
	}
	return nil
}

// Check reports whether the key file can be read.
func (f *File) Check(ctx context.Context) error {
	if _, err := os.Stat(f.Path); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return ctx.Err()
}

// Partners holds the partner certificates this gateway trusts, each pinned
// for one agency.
type Partners struct {
	byAgency map[string]*Cert
	// unusable records, per agency, why its certificate could not be read
	// or pinned: one partner's bad file must not stop the gateway, and
	// what is for that partner is held with this reason.
	unusable map[string]string
}

// NewPartners makes an empty set of pinned partners.
func NewPartners() *Partners {
	return &Partners{byAgency: map[string]*Cert{}, unusable: map[string]string{}}
}

// SetUnusable records that an agency's certificate cannot be used, and why.
func (p *Partners) SetUnusable(agency, reason string) { p.unusable[agency] = reason }

// Unusable returns why an agency's certificate could not be used, if it
// could not.
func (p *Partners) Unusable(agency string) (string, bool) {
	r, ok := p.unusable[agency]
	return r, ok
}

// Add pins a certificate for an agency after checking its fingerprint. An
// empty fingerprint pins whatever the certificate is (for the CLI, where the
// operator hands over the file itself).
func (p *Partners) Add(c *Cert, agency, fingerprint string) error {
	if agency == "" {
		agency = c.Agency
	}
	if fingerprint == "" {
		fingerprint = c.Fingerprint()
	}
	if err := Pin(c, agency, fingerprint); err != nil {
		return err
	}
	bound := *c
	bound.Agency = agency
	p.byAgency[agency] = &bound
	return nil
}

// UnusableAll returns every agency whose certificate could not be used,
// with the reason.
func (p *Partners) UnusableAll() map[string]string { return maps.Clone(p.unusable) }

// Get returns the pinned certificate of an agency.
func (p *Partners) Get(agency string) (*Cert, bool) {
	c, ok := p.byAgency[agency]
	return c, ok
}

// AgencyOf returns the agency a primary-key fingerprint is pinned for.
func (p *Partners) AgencyOf(fingerprint []byte) (string, bool) {
	for a, c := range p.byAgency {
		if bytes.Equal(c.Entity.PrimaryKey.Fingerprint, fingerprint) {
			return a, true
		}
	}
	return "", false
}

// Entities returns every pinned certificate, for signature verification.
func (p *Partners) Entities() openpgp.EntityList {
	out := make(openpgp.EntityList, 0, len(p.byAgency))
	for _, c := range p.byAgency {
		out = append(out, c.Entity)
	}
	return out
}

// Certs returns the pinned certificates, ordered by agency.
func (p *Partners) Certs() []*Cert {
	out := make([]*Cert, 0, len(p.byAgency))
	for _, c := range p.byAgency {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *Cert) int { return strings.Compare(a.Agency, b.Agency) })
	return out
}
