package envelope

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// readOutcome is everything Open takes from reading a message. Errors
// are kept as the check Open reports them as (decryptErr, bodyErr): the
// texts differ in places where go-crypto's own depend on the size of its
// reads.
type readOutcome struct {
	err       string // from reading the packets before the body
	body      string
	bodyErr   string
	encrypted bool
	algo      packet.CipherFunction
	decWith   string
	signed    bool
	sigErr    string
	signedBy  string
}

func outcomeOf(md *openpgp.MessageDetails, err error) readOutcome {
	if err != nil {
		return readOutcome{err: checkOf(decryptErr(err))}
	}
	body, err := io.ReadAll(md.UnverifiedBody)
	o := readOutcome{body: string(body), encrypted: md.IsEncrypted, algo: md.DecryptedWithAlgorithm, signed: md.IsSigned}
	if err != nil {
		o.bodyErr = checkOf(bodyErr(err))
		o.body = "" // unverified: what came before the error does not count
	}
	if md.DecryptedWith.PublicKey != nil {
		o.decWith = hex.EncodeToString(md.DecryptedWith.PublicKey.Fingerprint)
	}
	if md.SignatureError != nil {
		o.sigErr = md.SignatureError.Error()
	}
	if md.SignedBy != nil {
		o.signedBy = hex.EncodeToString(md.SignedBy.PublicKey.Fingerprint)
	}
	return o
}

// checkOf is the check Open reports an error as.
func checkOf(err error) string {
	var ce *CheckError
	if errors.As(err, &ce) {
		return ce.Check.Error()
	}
	return err.Error()
}

// checkReadsAsGoCrypto reads msg with readMessage and with go-crypto's
// ReadMessage and requires the same outcome.
func checkReadsAsGoCrypto(t testing.TB, fx *packetFixture, msg []byte) (fast bool) {
	t.Helper()
	keyring := openpgp.EntityList{fx.pr.receiver.Entity, fx.pr.sender.Entity}
	cfg := &packet.Config{}
	want := outcomeOf(openpgp.ReadMessage(bytes.NewReader(msg), keyring, nil, cfg))
	md, fast, err := readMessage(bytes.NewReader(msg), keyring, cfg)
	got := outcomeOf(md, err)
	if got != want && want.bodyErr == "" && got.bodyErr != "" && fast {
		// The one difference, deliberate: a last packet length that
		// claims more data than there is. go-crypto takes the early end
		// for the end when it happens to read a few bytes at a time, and
		// accepts what came if the MDC checks; readMessage refuses
		// the malformed packet.
		if vb, ok := md.UnverifiedBody.(*verifiedBody); ok && vb.mdc.err == io.ErrUnexpectedEOF && vb.mdc.held == mdcSize {
			return fast
		}
	}
	if got != want && want.err == "" && want.bodyErr == "" && fast {
		// The other: a packet after the encrypted data that go-crypto's
		// grammar check lets through and go-crypto skips.
		if vb, ok := md.UnverifiedBody.(*verifiedBody); ok && vb.mdc.err == errTrailingPacket {
			return fast
		}
	}
	if got != want {
		gb, wb := got.body, want.body
		got.body, want.body = fmt.Sprintf("%d bytes", len(gb)), fmt.Sprintf("%d bytes", len(wb))
		t.Fatalf("message of %d bytes (fast path %v), bodies equal %v:\n got %+v\nwant %+v", len(msg), fast, gb == wb, got, want)
	}
	return fast
}

func TestReadMessageTakesCFBPathAndAgreesWithGoCrypto(t *testing.T) {
	fx := newPacketFixture(t)
	if !checkReadsAsGoCrypto(t, fx, fx.packets) {
		t.Fatal("a sealed envelope's message was not read by the CFB path")
	}
	md, _, err := readMessage(bytes.NewReader(fx.packets), openpgp.EntityList{fx.pr.receiver.Entity, fx.pr.sender.Entity}, nil)
	tcheck(t, err, "read")
	o := outcomeOf(md, nil)
	if !o.encrypted || !o.signed || o.sigErr != "" || o.bodyErr != "" || o.algo != packet.CipherAES256 || o.signedBy == "" {
		t.Fatalf("outcome %+v", o)
	}
}

// Every single-bit flip and every truncation of a sealed message: the
// same outcome as go-crypto's.
func TestReadMessageAgreesWithGoCryptoOnDamage(t *testing.T) {
	fx := newPacketFixture(t)
	for i := range fx.packets {
		bad := bytes.Clone(fx.packets)
		bad[i] ^= 1 << (i % 8)
		checkReadsAsGoCrypto(t, fx, bad)
		checkReadsAsGoCrypto(t, fx, fx.packets[:i])
	}
	checkReadsAsGoCrypto(t, fx, append(bytes.Clone(fx.packets), fx.packets...))
	checkReadsAsGoCrypto(t, fx, append(bytes.Clone(fx.packets), 0xd3, 0x00))
}

// Plaintexts of every shape inside a valid encryption layer: literal data
// alone, compressed, unsigned, signed by an unknown key, nested
// encryption, trailing packets.
func TestReadMessageAgreesWithGoCryptoOnPlaintexts(t *testing.T) {
	fx := newPacketFixture(t)
	for i, pt := range packetPlaintexts(t, fx) {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if !checkReadsAsGoCrypto(t, fx, fx.encrypt(t, pt)) {
				t.Error("not read by the CFB path")
			}
		})
	}
}

// packetPlaintexts are decrypted packet streams of several shapes.
func packetPlaintexts(t testing.TB, fx *packetFixture) [][]byte {
	literal := packetsOf(t, func(w io.Writer) error {
		lw, err := packet.SerializeLiteral(nopCloser{w}, true, "", 0)
		if err != nil {
			return err
		}
		lw.Write([]byte(secretBody))
		return lw.Close()
	})
	compressed := packetsOf(t, func(w io.Writer) error {
		cw, err := packet.SerializeCompressed(nopCloser{w}, packet.CompressionZLIB, nil)
		if err != nil {
			return err
		}
		cw.Write(fx.plaintext)
		return cw.Close()
	})
	nested := fx.encrypt(t, fx.plaintext)
	return [][]byte{
		fx.plaintext,
		literal,
		compressed,
		nested,
		append(bytes.Clone(fx.plaintext), literal...),
		fx.plaintext[:len(fx.plaintext)/2],
		{},
	}
}

// FuzzReadMessageDecrypted: any decrypted packet stream, in a valid
// encryption layer, reads as go-crypto reads it.
func FuzzReadMessageDecrypted(f *testing.F) {
	fx := newPacketFixture(f)
	for _, pt := range packetPlaintexts(f, fx) {
		f.Add(pt)
	}
	f.Fuzz(func(t *testing.T, plaintext []byte) {
		checkReadsAsGoCrypto(t, fx, fx.encrypt(t, plaintext))
	})
}

// FuzzReadMessage: any message at all reads as go-crypto reads it.
func FuzzReadMessage(f *testing.F) {
	fx := newPacketFixture(f)
	f.Add(fx.packets)
	f.Add(fx.packets[:len(fx.packets)/2])
	f.Fuzz(func(t *testing.T, msg []byte) {
		checkReadsAsGoCrypto(t, fx, msg)
	})
}
