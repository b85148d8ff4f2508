package envelope

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/conduit-gateway/conduit/keys"
)

// encryptBoth writes msg (in the given pieces) as a signed and encrypted
// message twice, with go-crypto's EncryptWithParams and with
// encryptSigned, from the same randomness and clock.
func encryptBoth(t *testing.T, to []*openpgp.Entity, signer *openpgp.Entity, profile keys.Profile, writes [][]byte) (goCrypto, ours []byte) {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	run := func(f func(io.Writer, *packet.Config) (io.WriteCloser, error)) []byte {
		// The same seed for both runs: every random value (session key,
		// ephemeral key, prefix) comes out the same if it is drawn in the
		// same order.
		cryptotest.SetGlobalRandom(t, 1)
		cfg := profile.Config()
		cfg.Rand = rand.NewChaCha8([32]byte{1})
		cfg.Time = func() time.Time { return now }
		var b bytes.Buffer
		w, err := f(&b, cfg)
		tcheck(t, err, "encrypt")
		for _, p := range writes {
			_, err := w.Write(p)
			tcheck(t, err, "write")
		}
		tcheck(t, w.Close(), "close")
		return b.Bytes()
	}
	goCrypto = run(func(w io.Writer, cfg *packet.Config) (io.WriteCloser, error) {
		return openpgp.EncryptWithParams(w, to, nil, &openpgp.EncryptParams{Signers: []*openpgp.Entity{signer}, Config: cfg})
	})
	ours = run(func(w io.Writer, cfg *packet.Config) (io.WriteCloser, error) {
		return encryptSigned(w, to, signer, cfg)
	})
	return goCrypto, ours
}

func TestEncryptSignedWritesGoCryptoBytes(t *testing.T) {
	pr := newPair(t, keys.ProfileRFC4880)
	third := identity(t, "ccu-north", keys.ProfileRFC4880)
	rng := rand.New(rand.NewPCG(11, 12))
	for _, size := range []int{0, 1, 511, 512, 513, 4 << 10, 64<<10 + 3, 300_000} {
		msg := make([]byte, size)
		for i := range msg {
			msg[i] = byte(rng.Uint32())
		}
		// Seal's pattern (64 KiB writes) and small, uneven ones: the
		// partial lengths follow the writes.
		var big, small [][]byte
		for rest := msg; len(rest) > 0; {
			n := min(len(rest), 64<<10)
			big, rest = append(big, rest[:n]), rest[n:]
		}
		for rest := msg; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(3000))
			small, rest = append(small, rest[:n]), rest[n:]
		}
		for _, to := range [][]*openpgp.Entity{{pr.receiver.Entity}, {pr.receiver.Entity, third.Entity}} {
			if _, ok := planSEIPDv1(to, pr.sender.Entity, keys.ProfileRFC4880.Config()); !ok {
				t.Fatal("the rfc4880 profile's keys do not take the CFB path")
			}
			for _, writes := range [][][]byte{big, small} {
				want, got := encryptBoth(t, to, pr.sender.Entity, keys.ProfileRFC4880, writes)
				if !bytes.Equal(got, want) {
					t.Fatalf("%d bytes to %d recipients in %d writes: %d bytes differ from go-crypto's %d", size, len(to), len(writes), len(got), len(want))
				}
			}
		}
	}
}

// The message must also read back: go-crypto decrypts it, checks the MDC
// and verifies the signature.
func TestEncryptSignedReadsBack(t *testing.T) {
	pr := newPair(t, keys.ProfileRFC4880)
	msg := bytes.Repeat([]byte("sealed "), 50_000)
	var b bytes.Buffer
	w, err := encryptSigned(&b, []*openpgp.Entity{pr.receiver.Entity}, pr.sender.Entity, keys.ProfileRFC4880.Config())
	tcheck(t, err, "encrypt")
	w.Write(msg)
	tcheck(t, w.Close(), "close")
	md, err := openpgp.ReadMessage(&b, openpgp.EntityList{pr.receiver.Entity, pr.sender.Entity}, nil, nil)
	tcheck(t, err, "read")
	got, err := io.ReadAll(md.UnverifiedBody)
	tcheck(t, err, "body and MDC")
	if !bytes.Equal(got, msg) || !md.IsEncrypted || !md.IsSigned || md.SignatureError != nil {
		t.Fatalf("body equal %v, encrypted %v, signed %v, signature error %v", bytes.Equal(got, msg), md.IsEncrypted, md.IsSigned, md.SignatureError)
	}
}

// Where go-crypto would choose otherwise, go-crypto writes the message.
func TestEncryptSignedLeavesOtherChoicesToGoCrypto(t *testing.T) {
	pr := newPair(t, keys.ProfileRFC4880)
	v6 := newPair(t, keys.ProfileRFC9580)
	if _, ok := planSEIPDv1([]*openpgp.Entity{v6.receiver.Entity}, v6.sender.Entity, keys.ProfileRFC9580.Config()); ok {
		t.Error("rfc9580 keys took the SEIPD v1 path")
	}
	cfg := keys.ProfileRFC4880.Config()
	cfg.DefaultCompressionAlgo = packet.CompressionZLIB
	if _, ok := planSEIPDv1([]*openpgp.Entity{pr.receiver.Entity}, pr.sender.Entity, cfg); ok {
		t.Error("a compressing config took the SEIPD v1 path")
	}

	// A recipient that prefers only AES-128: go-crypto picks it.
	aes128 := identity(t, "aes128-only", keys.ProfileRFC4880)
	self, err := aes128.Entity.PrimarySelfSignature(time.Now(), nil)
	tcheck(t, err, "self signature")
	self.PreferredSymmetric = []uint8{uint8(packet.CipherAES128)}
	to := []*openpgp.Entity{aes128.Entity}
	if _, ok := planSEIPDv1(to, pr.sender.Entity, keys.ProfileRFC4880.Config()); ok {
		t.Fatal("an AES-128-only recipient took the AES-256 path")
	}
	want, got := encryptBoth(t, to, pr.sender.Entity, keys.ProfileRFC4880, [][]byte{[]byte("x")})
	if !bytes.Equal(got, want) {
		t.Fatal("the fallback differs from go-crypto")
	}
}
