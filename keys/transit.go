package keys

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// transitSigner is a crypto.Signer whose private key stays in Vault
// Transit: Sign sends the digest (prehashed) to transit/sign and returns
// the signature. go-crypto accepts an external signer for RSA (PKCS #1
// v1.5) and ECDSA (ASN.1 DER) primary keys, hence the two key types.
type transitSigner struct {
	v       *Vault
	key     string
	version int // pinned: the OpenPGP fingerprint is this version's key
	pub     crypto.PublicKey
	created time.Time
}

// Transit key types the backend can sign with.
const (
	TransitECDSAP384 = "ecdsa-p384"
	TransitRSA3072   = "rsa-3072"
)

func (s *transitSigner) Public() crypto.PublicKey { return s.pub }

// transitHash names a digest for Transit's sign endpoint.
func transitHash(h crypto.Hash) (string, error) {
	switch h {
	case crypto.SHA256:
		return "sha2-256", nil
	case crypto.SHA384:
		return "sha2-384", nil
	case crypto.SHA512:
		return "sha2-512", nil
	case crypto.SHA3_256:
		return "sha3-256", nil
	case crypto.SHA3_512:
		return "sha3-512", nil
	}
	return "", fmt.Errorf("transit cannot sign a %v digest", h)
}

// Sign asks Transit to sign a digest. It has no context of its own (the
// crypto.Signer interface): the client's configured timeout bounds it.
// A failure wraps ErrUnavailable, so no package goes out unsigned.
func (s *transitSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	hash, err := transitHash(opts.HashFunc())
	if err != nil {
		return nil, err
	}
	body := map[string]any{
		"input":       base64.StdEncoding.EncodeToString(digest),
		"prehashed":   true,
		"key_version": s.version,
	}
	if _, ok := s.pub.(*rsa.PublicKey); ok {
		body["signature_algorithm"] = "pkcs1v15" // OpenPGP RSA signatures (RFC 9580 section 5.2.3.4)
	} else {
		body["marshaling_algorithm"] = "asn1"
	}
	ctx := context.Background()
	var sig string
	path := s.v.cfg.Transit.Mount + "/sign/" + s.key + "/" + hash
	err = s.v.call(ctx, "transit sign", func() error {
		sec, err := s.v.client.Logical().WriteWithContext(ctx, path, body)
		if err != nil {
			return err
		}
		if sec == nil {
			return errors.New("empty answer")
		}
		sig, _ = sec.Data["signature"].(string)
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return nil, err
		}
		return nil, unavailable("transit sign", err)
	}
	// "vault:v1:BASE64"
	parts := strings.SplitN(sig, ":", 3)
	if len(parts) != 3 || parts[0] != "vault" {
		return nil, fmt.Errorf("transit sign: unexpected signature form")
	}
	return base64.StdEncoding.DecodeString(parts[2])
}

// transitSigner reads a Transit key's public half at a version (0: the
// latest) and returns a signer pinned to that version.
func (v *Vault) transitSigner(ctx context.Context, version int) (*transitSigner, error) {
	if v.cfg.Transit == nil {
		return nil, errors.New("vault: no transit key configured")
	}
	t := v.cfg.Transit
	var data map[string]any
	err := v.call(ctx, "read transit key", func() error {
		sec, err := v.client.Logical().ReadWithContext(ctx, t.Mount+"/keys/"+t.Key)
		if err != nil {
			return err
		}
		if sec == nil {
			return fmt.Errorf("%w: no transit key %s/keys/%s", ErrNoKeyStored, t.Mount, t.Key)
		}
		data = sec.Data
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNoKeyStored) {
			return nil, err
		}
		return nil, unavailable("read transit key", err)
	}
	typ, _ := data["type"].(string)
	if typ != TransitECDSAP384 && typ != TransitRSA3072 {
		return nil, fmt.Errorf("vault: transit key %s is %q; Conduit signs with %s or %s (what go-crypto accepts as an external signer)", t.Key, typ, TransitECDSAP384, TransitRSA3072)
	}
	if version == 0 {
		version = toInt(data["latest_version"])
	}
	vers, _ := data["keys"].(map[string]any)
	kv, _ := vers[strconv.Itoa(version)].(map[string]any)
	if kv == nil {
		return nil, fmt.Errorf("vault: transit key %s has no version %d", t.Key, version)
	}
	pemText, _ := kv["public_key"].(string)
	blk, _ := pem.Decode([]byte(pemText))
	if blk == nil {
		return nil, fmt.Errorf("vault: transit key %s version %d: no public key", t.Key, version)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("vault: transit key %s version %d: %w", t.Key, version, err)
	}
	created, err := time.Parse(time.RFC3339Nano, fmt.Sprint(kv["creation_time"]))
	if err != nil {
		return nil, fmt.Errorf("vault: transit key %s version %d: creation time: %w", t.Key, version, err)
	}
	return &transitSigner{v: v, key: t.Key, version: version, pub: pub, created: created.UTC().Truncate(time.Second)}, nil
}

func toInt(x any) int {
	switch n := x.(type) {
	case int:
		return n
	case float64:
		return int(n)
	case interface{ Int64() (int64, error) }: // json.Number
		i, _ := n.Int64()
		return int(i)
	}
	i, _ := strconv.Atoi(fmt.Sprint(x))
	return i
}

// openpgpPublic makes the OpenPGP public key packet of a Transit key.
func openpgpPublic(s *transitSigner) (*packet.PublicKey, error) {
	switch p := s.pub.(type) {
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P384() {
			return nil, fmt.Errorf("transit key %s is not on P-384", s.key)
		}
		return ecdsaP384Packet(s.created, p)
	case *rsa.PublicKey:
		return packet.NewRSAPublicKey(s.created, p), nil
	}
	return nil, fmt.Errorf("transit key %s: unsupported public key %T", s.key, s.pub)
}

// ecdsaP384Packet builds a v4 OpenPGP public-key packet for a P-384 key
// (RFC 9580 section 5.5.2.3 and 5.5.5.4): go-crypto's own constructor
// takes its internal ECDSA type, so the packet is written and parsed.
func ecdsaP384Packet(created time.Time, p *ecdsa.PublicKey) (*packet.PublicKey, error) {
	point, err := p.Bytes() // uncompressed: 0x04 || X || Y
	if err != nil {
		return nil, err
	}
	oid := []byte{0x2B, 0x81, 0x04, 0x00, 0x22} // 1.3.132.0.34, NIST P-384
	bits := 8*(len(point)-1) + 3                // the leading 0x04 has 3 significant bits
	var body bytes.Buffer
	ts := uint32(created.Unix())
	body.Write([]byte{4, byte(ts >> 24), byte(ts >> 16), byte(ts >> 8), byte(ts), byte(packet.PubKeyAlgoECDSA), byte(len(oid))})
	body.Write(oid)
	body.Write([]byte{byte(bits >> 8), byte(bits)})
	body.Write(point)
	pkt := append([]byte{0xC0 | 6, byte(body.Len())}, body.Bytes()...) // new format, tag 6, one-octet length
	pk, err := packet.Read(bytes.NewReader(pkt))
	if err != nil {
		return nil, fmt.Errorf("transit public key packet: %w", err)
	}
	pub, ok := pk.(*packet.PublicKey)
	if !ok {
		return nil, fmt.Errorf("transit public key packet: read as %T", pk)
	}
	return pub, nil
}

// signerMatches checks that a stored certificate's primary key is the
// Transit key's public half: the fingerprint is the pinned one only if it
// is.
func signerMatches(s *transitSigner, pk *packet.PublicKey) error {
	want, err := openpgpPublic(s)
	if err != nil {
		return err
	}
	if !bytes.Equal(want.Fingerprint, pk.Fingerprint) {
		return fmt.Errorf("vault: the stored certificate %X is not transit key %s version %d (%X)", pk.Fingerprint, s.key, s.version, want.Fingerprint)
	}
	return nil
}

// GenerateTransit creates an agency identity whose primary (signing) key
// is the configured Transit key's latest version, and whose encryption
// subkey (ECDH P-384) is made here, to be stored in KV by Store. The
// OpenPGP key's creation time is the Transit version's, so the same
// Transit key always gives the same fingerprint; the certificate is
// stored as well, with its self-signatures.
func (v *Vault) GenerateTransit(ctx context.Context, agency, email string, now time.Time) (*Identity, error) {
	if agency == "" || strings.ContainsAny(agency, "()<>\x00 ") {
		return nil, fmt.Errorf("generate key: agency id %q is not usable in a user ID", agency)
	}
	s, err := v.transitSigner(ctx, 0)
	if err != nil {
		return nil, err
	}
	pub, err := openpgpPublic(s)
	if err != nil {
		return nil, err
	}
	if now.Before(s.created) {
		now = s.created
	}
	return identityOnSigner(agency, email, pub, s, now)
}

// identityOnSigner builds an agency identity whose primary key is an
// external crypto.Signer (its OpenPGP public key packet pub), with a user
// ID and a new ECDH P-384 encryption subkey, both self-signed by signer.
func identityOnSigner(agency, email string, pub *packet.PublicKey, signer crypto.Signer, now time.Time) (*Identity, error) {
	e := &openpgp.Entity{
		PrimaryKey: pub,
		PrivateKey: &packet.PrivateKey{PublicKey: *pub, PrivateKey: signer},
		Identities: map[string]*openpgp.Identity{},
	}
	cfg := transitConfig(now)
	if err := e.AddUserId(agency, userIDComment, email, cfg); err != nil {
		return nil, fmt.Errorf("generate key for %s: user ID: %w", agency, err)
	}
	if err := e.AddEncryptionSubkey(cfg); err != nil {
		return nil, fmt.Errorf("generate key for %s: encryption subkey: %w", agency, err)
	}
	return &Identity{Agency: agency, Entity: e}, nil
}

// transitConfig is the go-crypto configuration for an identity signed by
// Transit: v4 keys (the rfc4880 profile), an ECDH P-384 encryption
// subkey, SHA-384 (go-crypto picks it for P-384 in any case).
func transitConfig(now time.Time) *packet.Config {
	c := ProfileRFC4880.Config()
	c.Algorithm = packet.PubKeyAlgoECDH
	c.Curve = packet.CurveNistP384
	c.DefaultHash = crypto.SHA384
	c.Time = func() time.Time { return now }
	return c
}

// EnsureTransitKey creates the configured Transit key with the given type
// when it does not exist yet (an operator's command: the gateway's policy
// cannot create keys). An existing key is left as it is.
func (v *Vault) EnsureTransitKey(ctx context.Context, typ string) error {
	if v.cfg.Transit == nil {
		return errors.New("vault: no transit key configured")
	}
	if typ != TransitECDSAP384 && typ != TransitRSA3072 {
		return fmt.Errorf("vault: transit key type %q: use %s or %s", typ, TransitECDSAP384, TransitRSA3072)
	}
	t := v.cfg.Transit
	return v.call(ctx, "create transit key", func() error {
		sec, err := v.client.Logical().ReadWithContext(ctx, t.Mount+"/keys/"+t.Key)
		if err == nil && sec != nil {
			return nil
		}
		if err != nil && !isNotFound(err) {
			return err
		}
		_, err = v.client.Logical().WriteWithContext(ctx, t.Mount+"/keys/"+t.Key, map[string]any{"type": typ, "exportable": false})
		return err
	})
}

// TransitSigned reports whether an identity's signing key is in Transit.
func TransitSigned(id *Identity) bool {
	if id == nil || id.Entity == nil || id.Entity.PrivateKey == nil {
		return false
	}
	_, ok := id.Entity.PrivateKey.PrivateKey.(*transitSigner)
	return ok
}
