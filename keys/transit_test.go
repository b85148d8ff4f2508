package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// TestExternalP384SignerMakesAVerifiableIdentity checks the Transit path's
// OpenPGP side without Vault: a P-384 key behind the crypto.Signer
// interface (what Transit is) gets a hand-built public key packet, signs
// its own user ID and subkey binding, and signs messages go-crypto
// verifies. The Vault side is tested against a real Vault in vaulttest/.
func TestExternalP384SignerMakesAVerifiableIdentity(t *testing.T) {
	sk, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Now().Add(-time.Minute).Truncate(time.Second)
	pub, err := ecdsaP384Packet(created, &sk.PublicKey)
	if err != nil {
		t.Fatalf("public key packet: %v", err)
	}
	again, _ := ecdsaP384Packet(created, &sk.PublicKey)
	if !bytes.Equal(pub.Fingerprint, again.Fingerprint) {
		t.Fatal("the same key and creation time gave two fingerprints")
	}
	id, err := identityOnSigner("hmp-northgate", "conduit@hmp-northgate.example", pub, externalSigner{sk}, time.Now())
	if err != nil {
		t.Fatalf("identity on the signer: %v", err)
	}
	// Its certificate reads back with valid self-signatures.
	var cert bytes.Buffer
	if err := WritePublic(&cert, id.Entity); err != nil {
		t.Fatal(err)
	}
	c, err := ReadCert(&cert)
	if err != nil {
		t.Fatalf("certificate of the signer identity: %v", err)
	}
	if c.Fingerprint() != id.Fingerprint() || c.Agency != "hmp-northgate" {
		t.Fatalf("certificate %s %s", c.Agency, c.Fingerprint())
	}
	// A message signed through the interface verifies against it.
	var msg bytes.Buffer
	w, err := openpgp.Sign(&msg, []*openpgp.Entity{id.Entity}, nil, &packet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("signed through crypto.Signer"))
	if err := w.Close(); err != nil {
		t.Fatalf("sign: %v", err)
	}
	md, err := openpgp.ReadMessage(&msg, openpgp.EntityList{c.Entity}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(md.UnverifiedBody)
	if err != nil || !strings.Contains(string(body), "crypto.Signer") {
		t.Fatalf("body %q, %v", body, err)
	}
	if md.SignatureError != nil || md.SignedBy == nil {
		t.Fatalf("signature: %v", md.SignatureError)
	}
}

// externalSigner hides the key's type, as Transit's signer does.
type externalSigner struct{ k *ecdsa.PrivateKey }

func (s externalSigner) Public() crypto.PublicKey { return s.k.Public() }
func (s externalSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return s.k.Sign(r, d, o)
}
