package envelope

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/conduit-gateway/conduit/keys"
)

// The targets below mutate inside the OpenPGP message of a valid envelope
// rather than its MIME wrapper, which FuzzOpen's mutations rarely get
// past: the armor and the PGP/MIME structure are rebuilt around each input,
// so every execution reaches the packet parser (FuzzOpenPacketStream: the
// public-key encrypted session key and the encrypted data packets, RFC
// 9580 sections 5.1 and 5.13) or, with a valid encryption layer rebuilt
// around the input, the decrypted stream (FuzzOpenDecryptedPackets: the
// compressed, literal, one-pass signature and signature packets, sections
// 5.6, 5.9, 5.4 and 5.2).

// packetFixture is a valid envelope taken apart.
type packetFixture struct {
	pr             pair
	prefix, suffix []byte // the PGP/MIME around the armored message
	packets        []byte // the binary OpenPGP message
	cipher         packet.CipherFunction
	sessionKey     []byte
	plaintext      []byte // the decrypted packet stream (MDC removed)
}

func newPacketFixture(t testing.TB) *packetFixture {
	t.Helper()
	pr := newPair(t, keys.ProfileRFC4880)
	valid := seal(t, pr, sampleMessage(), nil)
	begin := bytes.Index(valid, []byte("-----BEGIN PGP MESSAGE-----"))
	endMark := []byte("-----END PGP MESSAGE-----")
	end := bytes.Index(valid, endMark)
	if begin < 0 || end < 0 {
		t.Fatal("no armored message in the envelope")
	}
	end += len(endMark)
	block, err := armor.Decode(bytes.NewReader(valid[begin:end]))
	tcheck(t, err, "dearmor")
	bin, err := io.ReadAll(block.Body)
	tcheck(t, err, "read packets")
	fx := &packetFixture{pr: pr, prefix: valid[:begin], suffix: valid[end:], packets: bin}

	// Decrypt one layer by hand to get the session key and the plaintext
	// packet stream.
	rd := packet.NewReader(bytes.NewReader(bin))
	p, err := rd.Next()
	tcheck(t, err, "PKESK")
	ek, ok := p.(*packet.EncryptedKey)
	if !ok {
		t.Fatalf("first packet is %T", p)
	}
	dks := pr.receiver.Entity.DecryptionKeys(ek.KeyId, time.Time{}, nil)
	if len(dks) == 0 {
		t.Fatal("no decryption key")
	}
	tcheck(t, ek.Decrypt(dks[0].PrivateKey, nil), "decrypt session key")
	p, err = rd.Next()
	tcheck(t, err, "SEIPD")
	se, ok := p.(*packet.SymmetricallyEncrypted)
	if !ok {
		t.Fatalf("second packet is %T", p)
	}
	rc, err := se.Decrypt(ek.CipherFunc, ek.Key)
	tcheck(t, err, "decrypt data")
	fx.plaintext, err = io.ReadAll(rc)
	tcheck(t, err, "read plaintext")
	tcheck(t, rc.Close(), "MDC")
	fx.cipher, fx.sessionKey = ek.CipherFunc, ek.Key
	return fx
}

// envelope rebuilds a PGP/MIME envelope around a binary OpenPGP message.
func (fx *packetFixture) envelope(t testing.TB, bin []byte) []byte {
	var out bytes.Buffer
	out.Write(fx.prefix)
	aw, err := armor.Encode(&crlfWriter{w: &out}, "PGP MESSAGE", nil)
	tcheck(t, err, "armor")
	aw.Write(bin)
	tcheck(t, aw.Close(), "armor")
	out.Write(fx.suffix)
	return out.Bytes()
}

// encrypt wraps a plaintext packet stream in a valid encryption layer to
// the receiver: a session key packet and SEIPD v1 with its MDC.
func (fx *packetFixture) encrypt(t testing.TB, plaintext []byte) []byte {
	var out bytes.Buffer
	ek, ok := fx.pr.receiver.Entity.EncryptionKey(time.Now(), nil)
	if !ok {
		t.Fatal("no encryption key")
	}
	tcheck(t, packet.SerializeEncryptedKey(&out, ek.PublicKey, fx.cipher, fx.sessionKey, nil), "PKESK")
	w, err := packet.SerializeSymmetricallyEncrypted(&out, fx.cipher, false, packet.CipherSuite{}, fx.sessionKey, nil)
	tcheck(t, err, "SEIPD")
	w.Write(plaintext)
	tcheck(t, w.Close(), "SEIPD")
	return out.Bytes()
}

func (fx *packetFixture) open(t *testing.T, msg []byte) {
	var out bytes.Buffer
	o, err := Open(context.Background(), &out, bytes.NewReader(msg), OpenParams{
		Identity: fx.pr.receiver, Partners: fx.pr.partners, SpoolDir: t.TempDir(),
	})
	if err != nil {
		if out.Len() > 0 {
			t.Fatalf("%d bytes released with error %v", out.Len(), err)
		}
		return
	}
	// Whatever opens was signed by the pinned key of the label's originator.
	if o.Signer.Agency != fx.pr.sender.Agency || o.Label.Originator != o.Signer.Agency {
		t.Fatalf("opened with signer %+v for originator %s", o.Signer, o.Label.Originator)
	}
}

// packetsOf serialises packets written by f.
func packetsOf(t testing.TB, f func(w io.Writer) error) []byte {
	var b bytes.Buffer
	tcheck(t, f(&b), "serialise")
	return b.Bytes()
}

func FuzzOpenPacketStream(f *testing.F) {
	fx := newPacketFixture(f)
	f.Add(fx.packets)
	f.Add(fx.packets[:len(fx.packets)/2])
	// Session key packet alone, and twice.
	rd := packet.NewReader(bytes.NewReader(fx.packets))
	first, _ := rd.Next()
	var pkesk bytes.Buffer
	first.(*packet.EncryptedKey).Serialize(&pkesk)
	f.Add(pkesk.Bytes())
	f.Add(append(append([]byte{}, pkesk.Bytes()...), fx.packets...))
	// A Symmetrically Encrypted Data packet (tag 9, no MDC) with the same
	// session key: the EFAIL case, refused before decryption.
	var sed bytes.Buffer
	sed.Write(pkesk.Bytes())
	body := append(make([]byte, 18), fx.plaintext...) // prefix bytes, not decryptable as-is: structure only
	rand.Read(body[:18])
	sed.WriteByte(0xC0 | 9)
	sed.WriteByte(0xFF)
	sed.Write([]byte{byte(len(body) >> 24), byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))})
	sed.Write(body)
	f.Add(sed.Bytes())
	f.Fuzz(func(t *testing.T, bin []byte) {
		fx.open(t, fx.envelope(t, bin))
	})
}

func FuzzOpenDecryptedPackets(f *testing.F) {
	fx := newPacketFixture(f)
	f.Add(fx.plaintext)
	// The same signed message inside a compressed packet (ZIP, ZLIB).
	for _, algo := range []packet.CompressionAlgo{packet.CompressionZIP, packet.CompressionZLIB} {
		f.Add(packetsOf(f, func(w io.Writer) error {
			cw, err := packet.SerializeCompressed(nopCloser{w}, algo, nil)
			if err != nil {
				return err
			}
			cw.Write(fx.plaintext)
			return cw.Close()
		}))
	}
	// A literal data packet alone: encrypted, not signed.
	f.Add(packetsOf(f, func(w io.Writer) error {
		lw, err := packet.SerializeLiteral(nopCloser{w}, true, "", 0)
		if err != nil {
			return err
		}
		io.WriteString(lw, sampleMessage())
		return lw.Close()
	}))
	f.Add(fx.plaintext[:len(fx.plaintext)-20]) // the signature packet cut
	f.Fuzz(func(t *testing.T, plain []byte) {
		fx.open(t, fx.envelope(t, fx.encrypt(t, plain)))
	})
}

// TestPacketFixtureOpens: the fuzz targets' rebuilt envelopes are valid
// when nothing is mutated, so mutations start from a message that opens.
func TestPacketFixtureOpens(t *testing.T) {
	fx := newPacketFixture(t)
	for name, msg := range map[string][]byte{
		"packets":   fx.envelope(t, fx.packets),
		"plaintext": fx.envelope(t, fx.encrypt(t, fx.plaintext)),
	} {
		var out bytes.Buffer
		if _, err := Open(context.Background(), &out, bytes.NewReader(msg), OpenParams{
			Identity: fx.pr.receiver, Partners: fx.pr.partners, SpoolDir: t.TempDir(),
		}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
