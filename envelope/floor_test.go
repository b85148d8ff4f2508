package envelope

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/keys"
)

// The floor of seal and open: the cryptographic calls a sealed package
// cannot do without, alone, on the same message, for the default profile
// (RFC 4880: Ed25519 signature over SHA-256, ECDH over Curve25519, AES-256
// in OpenPGP's CFB mode with the SHA-1 modification detection code).
// Everything Seal and Open do beyond it (packet framing, the label and
// manifest, MIME, ASCII armor with its CRC-24, the spool, the checks) is
// their overhead. The benchmarks run the operation and its floor in the
// same loop and report both and their ratio ("x-floor").

type floorKeys struct {
	signPriv ed25519.PrivateKey
	signPub  ed25519.PublicKey
	encPriv  *ecdh.PrivateKey
}

func newFloorKeys(b *testing.B) floorKeys {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	tcheck(b, err, "ed25519 key")
	enc, err := ecdh.X25519().GenerateKey(rand.Reader)
	tcheck(b, err, "x25519 key")
	return floorKeys{signPriv: priv, signPub: pub, encPriv: enc}
}

// sessionKey is ECDH's key agreement and key derivation (RFC 6637): an
// ephemeral key, the shared secret, SHA-256 over it.
func (k floorKeys) sessionKey(b *testing.B) []byte {
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	tcheck(b, err, "ephemeral key")
	z, err := eph.ECDH(k.encPriv.PublicKey())
	tcheck(b, err, "ecdh")
	sum := sha256.Sum256(z)
	return sum[:]
}

// sealFloor hashes and signs msg, agrees a key, and encrypts the message
// with its modification detection code.
func (k floorKeys) sealFloor(b *testing.B, msg, out []byte) {
	digest := sha256.Sum256(msg)
	_ = ed25519.Sign(k.signPriv, digest[:])
	key := k.sessionKey(b)
	blk, err := aes.NewCipher(key)
	tcheck(b, err, "aes")
	iv := make([]byte, aes.BlockSize)
	cipher.NewCFBEncrypter(blk, iv).XORKeyStream(out, msg) //nolint:staticcheck // OpenPGP's CFB
	mdc := sha1.Sum(msg)
	_ = mdc
}

// openFloor agrees the key, decrypts and checks the modification
// detection code, and verifies the signature.
func (k floorKeys) openFloor(b *testing.B, ct, out []byte, sig []byte) {
	key := k.sessionKey(b) // one scalar multiplication fewer in a real open
	blk, err := aes.NewCipher(key)
	tcheck(b, err, "aes")
	iv := make([]byte, aes.BlockSize)
	cipher.NewCFBDecrypter(blk, iv).XORKeyStream(out, ct) //nolint:staticcheck // OpenPGP's CFB
	_ = sha1.Sum(out)
	digest := sha256.Sum256(out)
	_ = ed25519.Verify(k.signPub, digest[:], sig)
}

func vsFloor(b *testing.B, op, floor func()) {
	var opT, floorT time.Duration
	n := 0
	for b.Loop() {
		t0 := time.Now()
		op()
		t1 := time.Now()
		floor()
		floorT += time.Since(t1)
		opT += t1.Sub(t0)
		n++
	}
	b.ReportMetric(float64(opT.Nanoseconds())/float64(n), "op-ns")
	b.ReportMetric(float64(floorT.Nanoseconds())/float64(n), "floor-ns")
	b.ReportMetric(float64(opT)/float64(floorT), "x-floor")
}

func benchSealVsFloor(b *testing.B, size int) {
	pr := newPair(b, keys.ProfileRFC4880)
	msg := benchMessage(size)
	p := SealParams{Signer: pr.sender, Recipients: []*keys.Cert{cert(b, pr.receiver)}, Label: testLabel("met-pio")}
	fk := newFloorKeys(b)
	out := make([]byte, len(msg))
	b.SetBytes(int64(size))
	vsFloor(b, func() {
		if _, err := Seal(context.Background(), io.Discard, bytes.NewReader(msg), p); err != nil {
			b.Fatal(err)
		}
	}, func() { fk.sealFloor(b, msg, out) })
}

func benchOpenVsFloor(b *testing.B, size int) {
	pr := newPair(b, keys.ProfileRFC4880)
	msg := benchMessage(size)
	sealed := seal(b, pr, string(msg), nil)
	p := OpenParams{Identity: pr.receiver, Partners: pr.partners, SpoolDir: b.TempDir()}
	fk := newFloorKeys(b)
	ct := make([]byte, len(msg))
	fk.sealFloor(b, msg, ct)
	digest := sha256.Sum256(msg)
	sig := ed25519.Sign(fk.signPriv, digest[:])
	out := make([]byte, len(msg))
	b.SetBytes(int64(size))
	vsFloor(b, func() {
		if _, err := Open(context.Background(), io.Discard, bytes.NewReader(sealed), p); err != nil {
			b.Fatal(err)
		}
	}, func() { fk.openFloor(b, ct, out, sig) })
}

func BenchmarkSealVsFloor4KiB(b *testing.B)  { benchSealVsFloor(b, 4<<10) }
func BenchmarkSealVsFloor16KiB(b *testing.B) { benchSealVsFloor(b, 16<<10) }
func BenchmarkSealVsFloor1MiB(b *testing.B)  { benchSealVsFloor(b, 1<<20) }
func BenchmarkOpenVsFloor4KiB(b *testing.B)  { benchOpenVsFloor(b, 4<<10) }
func BenchmarkOpenVsFloor16KiB(b *testing.B) { benchOpenVsFloor(b, 16<<10) }
func BenchmarkOpenVsFloor1MiB(b *testing.B)  { benchOpenVsFloor(b, 1<<20) }
