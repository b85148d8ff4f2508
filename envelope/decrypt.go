package envelope

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"crypto/subtle"
	"hash"
	"io"
	"time"

	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// readMessage is openpgp.ReadMessage (without a prompt) with the symmetric
// layer of the common case done by crypto/cipher's CFB: a message of
// public-key session key packets and one SEIPD v1 packet (RFC 4880
// section 5.13) under AES. go-crypto's OpenPGP CFB decrypts a byte at a
// time and was the largest cost of opening a large package. Everything
// else is go-crypto's: the packet parsers, the session key decryption,
// and, on the decrypted data, ReadMessage itself (literal data,
// compression, signatures, intended recipients). Errors are go-crypto's
// too, as ReadMessage reports them once it has decrypted (its
// HandleSensitiveParsingError), so that the checks above classify a
// failure as they did. Any other message (passphrase-encrypted, SEIPD v2
// or without an MDC, another cipher, a post-quantum key) is read again
// from the start by go-crypto's ReadMessage. fast reports which one read
// it.
//
// Deliberate differences, for malformed messages only: when the last
// partial length of the SEIPD packet claims more data than follows,
// go-crypto may take the early end for the end (depending on the size of
// its reads) and accept a message whose MDC checks, where readMessage
// refuses it as truncated; a packet other than padding after the
// encrypted data is refused, where go-crypto skips what its grammar check
// lets through (counting a signature among the message's); and so is a
// message with more than maxRecorded bytes of packets before the
// encrypted data that this path does not read itself.
func readMessage(r io.Reader, keyring openpgp.EntityList, cfg *packet.Config) (md *openpgp.MessageDetails, fast bool, err error) {
	rec := &recorder{r: r}
	var packets packet.PacketReader
	if cfg.StrictPacketSequence() {
		packets = packet.NewCheckReader(rec)
	} else {
		packets = packet.NewReader(rec)
	}
	goCrypto := func() (*openpgp.MessageDetails, bool, error) {
		if rec.overflow {
			return nil, false, pgperrors.StructuralError("more than 256 KiB of packets before the encrypted data")
		}
		md, err := openpgp.ReadMessage(io.MultiReader(bytes.NewReader(rec.buf), r), keyring, nil, cfg)
		return md, false, err
	}

	var eks []*packet.EncryptedKey
	var se *packet.SymmetricallyEncrypted
	for se == nil {
		p, err := packets.Next()
		if err != nil {
			return goCrypto()
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			eks = append(eks, p)
		case *packet.SymmetricallyEncrypted:
			if p.Version != 1 || !p.IntegrityProtected {
				return goCrypto()
			}
			se = p
		default:
			return goCrypto()
		}
	}

	// The session key, as ReadMessage finds it with no prompt: the
	// unencrypted private keys of the keyring that each packet names, in
	// order, the first that decrypts it. Key expiry is not checked, so
	// that old messages can be read.
	ids := make([]uint64, 0, len(eks))
	var dec *openpgp.Key
	var ek *packet.EncryptedKey
	for _, e := range eks {
		ids = append(ids, e.KeyId)
	}
search:
	for _, e := range eks {
		switch e.Algo {
		case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSAEncryptOnly, packet.PubKeyAlgoElGamal, packet.PubKeyAlgoECDH,
			packet.PubKeyAlgoX25519, packet.PubKeyAlgoX448:
		default:
			// go-crypto's list also has the post-quantum algorithms,
			// which it reads itself.
			return goCrypto()
		}
		for _, ent := range keyring.EntitiesById(e.KeyId) {
			for _, k := range ent.DecryptionKeys(e.KeyId, time.Time{}, cfg) {
				if k.PrivateKey == nil || k.PrivateKey.Encrypted {
					continue
				}
				if len(e.Key) == 0 && e.Decrypt(k.PrivateKey, cfg) != nil {
					continue
				}
				dec, ek = &k, e
				break search
			}
		}
	}
	if dec == nil {
		return nil, false, pgperrors.ErrKeyIncorrect
	}
	switch ek.CipherFunc {
	case packet.CipherAES128, packet.CipherAES192, packet.CipherAES256:
	default:
		return goCrypto()
	}
	if len(ek.Key) != ek.CipherFunc.KeySize() {
		return goCrypto()
	}
	block, err := aes.NewCipher(ek.Key)
	if err != nil {
		return nil, false, err
	}
	// From here the message is read once, by this path.
	rec.stop()

	// OpenPGP's CFB without resynchronisation (RFC 4880 section 13.9,
	// step 7 skipped for SEIPD) is CFB with a zero IV over the random
	// prefix and all that follows. As in go-crypto, the prefix's repeated
	// bytes are not checked: that check is an oracle.
	stream := cipher.NewCFBDecrypter(block, make([]byte, block.BlockSize())) //nolint:staticcheck // OpenPGP's CFB
	prefix := make([]byte, block.BlockSize()+2)
	if _, err := io.ReadFull(se.Contents, prefix); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, false, err
	}
	stream.XORKeyStream(prefix, prefix)
	mdc := &mdcReader{in: cipher.StreamReader{S: stream, R: se.Contents}, h: sha1.New(), outer: packets}
	mdc.h.Write(prefix)

	md, err = openpgp.ReadMessage(mdc, keyring, nil, cfg)
	if err != nil {
		return nil, true, pgperrors.HandleSensitiveParsingError(err, true)
	}
	if md.IsEncrypted || md.IsSymmetricallyEncrypted {
		// Encryption inside the encryption: not a message Open reads.
		return nil, true, pgperrors.HandleSensitiveParsingError(pgperrors.StructuralError("encrypted data inside encrypted data"), true)
	}
	// What ReadMessage records when it decrypts; the signature check at
	// the end of the body compares the intended recipients with
	// DecryptedWith, as it does when go-crypto decrypts.
	md.IsEncrypted = true
	md.EncryptedToKeyIds = ids
	md.DecryptedWith = *dec
	md.DecryptedWithAlgorithm = ek.CipherFunc
	md.UnverifiedBody = &verifiedBody{r: md.UnverifiedBody, mdc: mdc, signed: md.IsSigned}
	return md, true, nil
}

// recorder keeps what is read from r until stop, so that go-crypto can
// read the message again from the start. It keeps at most maxRecorded
// bytes: the packets before the encrypted data are a few hundred bytes
// each, and a message that puts more before it (packets the reader skips,
// read to their end) must not make Open hold it in memory.
type recorder struct {
	r        io.Reader
	buf      []byte
	stopped  bool
	overflow bool
}

const maxRecorded = 256 << 10

func (c *recorder) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if !c.stopped && !c.overflow {
		if len(c.buf)+n > maxRecorded {
			c.overflow, c.buf = true, nil
		} else {
			c.buf = append(c.buf, p[:n]...)
		}
	}
	return n, err
}

func (c *recorder) stop() { c.stopped, c.buf = true, nil }

// mdcReader reads the decrypted data of a SEIPD v1 packet, holding back
// the last 22 bytes, which are the MDC packet (RFC 4880 section 5.14). At
// the end of the packet it checks the MDC (SHA-1 over the prefix, the
// data and the MDC packet's header, in constant time) and that no packet
// follows, and only then reports io.EOF.
type mdcReader struct {
	in       io.Reader
	h        hash.Hash
	outer    packet.PacketReader // what the packet came from
	trailer  [mdcSize]byte
	held     int  // bytes of trailer filled
	atEOF    bool // in has ended; the trailer is complete
	err      error
	verified bool
}

var errTrailingPacket = pgperrors.StructuralError("a packet other than padding after the encrypted data packet")

const (
	mdcSize   = 2 + sha1.Size
	mdcHeader = 0xd3 // new format, tag 19
)

func (m *mdcReader) Read(p []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	for m.held < mdcSize && !m.atEOF {
		n, err := m.in.Read(m.trailer[m.held:])
		m.held += n
		switch {
		case err == io.EOF:
			m.atEOF = true
		case err != nil:
			m.err = err
			return 0, err
		}
	}
	if m.held < mdcSize {
		m.err = io.ErrUnexpectedEOF
		return 0, m.err
	}
	if m.atEOF {
		return 0, m.finish()
	}
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) > mdcSize {
		return m.step(p)
	}
	var scratch [2 * mdcSize]byte
	n, err := m.step(scratch[:mdcSize+len(p)])
	copy(p, scratch[:n])
	return n, err
}

// step reads into buf after its first mdcSize bytes and releases, from
// the start of buf, as many bytes as it read: the held trailer first.
func (m *mdcReader) step(buf []byte) (int, error) {
	n, err := m.in.Read(buf[mdcSize:])
	if err == io.EOF {
		m.atEOF = true
	} else if err != nil {
		m.err = err
	}
	if n >= mdcSize {
		var next [mdcSize]byte
		copy(next[:], buf[mdcSize+n-mdcSize:mdcSize+n])
		copy(buf, m.trailer[:])
		m.trailer = next
	} else {
		// Fewer than a trailer's length arrived: release the start of
		// the held trailer and append the new bytes to it.
		var data [mdcSize]byte
		copy(data[:], buf[mdcSize:mdcSize+n])
		copy(buf, m.trailer[:n])
		copy(m.trailer[:], m.trailer[n:])
		copy(m.trailer[mdcSize-n:], data[:n])
	}
	m.h.Write(buf[:n])
	if n == 0 && m.atEOF {
		return 0, m.finish()
	}
	if m.err != nil {
		return n, m.err
	}
	return n, nil
}

// finish checks the MDC packet, then reads the rest of the message. Its
// errors are the ones go-crypto reports there: a bad MDC as an error in
// decrypted data, whatever reading on after the packet found as it is.
func (m *mdcReader) finish() error {
	m.h.Write(m.trailer[:2])
	sum := m.h.Sum(nil)
	if subtle.ConstantTimeCompare(sum, m.trailer[2:]) != 1 || m.trailer[0] != mdcHeader || m.trailer[1] != sha1.Size {
		m.err = pgperrors.HandleSensitiveParsingError(pgperrors.ErrMDCHashMismatch, true)
		return m.err
	}
	// Only padding may follow the encrypted data (RFC 9580 section 5.14;
	// the reader skips marker packets itself). go-crypto reads on too,
	// and refuses most else by the message grammar, but would count a
	// signature there as one of the message's: this path refuses
	// anything else.
	for {
		p, err := m.outer.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			m.err = err
			return err
		}
		if _, ok := p.(*packet.Padding); !ok {
			m.err = errTrailingPacket
			return m.err
		}
	}
	m.verified = true
	m.err = io.EOF
	return io.EOF
}

// verifiedBody is the body of a message read by readMessage. It reports
// errors as go-crypto's ReadMessage does when it has decrypted the
// message: for a signed message, every error as an error in decrypted
// data; for an unsigned one, as go-crypto's checkReader (which
// ReadMessage has already put in front) reports them. And it ends only
// once the MDC has been checked, whatever ReadMessage read.
type verifiedBody struct {
	r      io.Reader
	mdc    *mdcReader
	signed bool
}

func (v *verifiedBody) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	if err == io.EOF && !v.mdc.verified {
		if _, err := io.Copy(io.Discard, v.mdc); err != nil || !v.mdc.verified {
			if err == nil {
				err = pgperrors.ErrMDCHashMismatch
			}
			return n, pgperrors.HandleSensitiveParsingError(err, true)
		}
	}
	if err != nil && err != io.EOF && v.signed {
		err = pgperrors.HandleSensitiveParsingError(err, true)
	}
	return n, err
}
