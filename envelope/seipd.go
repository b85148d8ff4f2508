package envelope

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"math/bits"
	"slices"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// The signed and encrypted OpenPGP message of the rfc4880 profile, written
// with the standard library's CFB. go-crypto's OpenPGP CFB encrypts a byte
// at a time, with a call per block on top, and was half the cost of
// sealing a large package. encryptSigned writes the packets go-crypto's
// openpgp.EncryptWithParams writes for the same recipients, signer and
// config: the session key packets (by go-crypto), a Symmetrically
// Encrypted Integrity Protected Data packet, version 1 with its
// Modification Detection Code (RFC 4880 section 5.13), holding a one-pass
// signature, the literal data and the signature (by go-crypto's packet
// serialisers), with the same partial lengths: byte for byte what
// go-crypto writes given the same randomness (TestEncryptSignedWritesGoCryptoBytes).
// Where the keys or their preferences lead go-crypto anywhere else (SEIPD
// v2, v6 keys, another cipher or hash, compression), go-crypto writes the
// message.

// OpenPGP hash algorithm ids (RFC 9580 section 9.5) go-crypto's encrypt
// starts from, in its order.
const (
	hashIDSHA256   = 8
	hashIDSHA384   = 9
	hashIDSHA512   = 10
	hashIDSHA3_256 = 12
	hashIDSHA3_512 = 14
)

// seipdPlan is what go-crypto would choose for a message, when it is
// what encryptSigned writes itself.
type seipdPlan struct {
	keys       []openpgp.Key
	signer     *packet.PrivateKey
	recipients []*packet.Recipient // intended recipients, in the signature
}

// planSEIPDv1 follows go-crypto's choice of algorithms (openpgp/v2
// encrypt, writeAndSign and selectHash, v1.5.2) and reports whether it
// ends with SEIPD v1, AES-256 and a v4 Ed25519 signature over SHA-256,
// uncompressed. ok is false for any other outcome, and for every error,
// which go-crypto's own path then reports.
func planSEIPDv1(to []*openpgp.Entity, signer *openpgp.Entity, cfg *packet.Config) (plan *seipdPlan, ok bool) {
	if cfg.V6() || cfg.AEADConfig != nil || cfg.Compression() != packet.CompressionNone ||
		cfg.Cipher() != packet.CipherAES256 || cfg.Hash() != crypto.SHA256 || len(to) == 0 {
		return nil, false
	}
	now := cfg.Now()
	ciphers := []uint8{uint8(packet.CipherAES256), uint8(packet.CipherAES128)}
	hashes := []uint8{hashIDSHA256, hashIDSHA384, hashIDSHA512, hashIDSHA3_256, hashIDSHA3_512}
	plan = &seipdPlan{}
	aead := true
	for _, r := range to {
		k, err := r.EncryptionKeyWithError(now, cfg)
		if err != nil || k.PublicKey.Version != 4 {
			return nil, false
		}
		self, _ := r.PrimarySelfSignature(now, cfg)
		if self == nil {
			return nil, false
		}
		aead = aead && self.SEIPDv2
		ciphers = intersect(ciphers, self.PreferredSymmetric)
		hashes = intersect(hashes, self.PreferredHash)
		plan.keys = append(plan.keys, k)
		if cfg.IntendedRecipients() {
			plan.recipients = append(plan.recipients, &packet.Recipient{KeyVersion: r.PrimaryKey.Version, Fingerprint: r.PrimaryKey.Fingerprint})
		}
	}
	// go-crypto takes AES-128 when the preferences share no cipher, and
	// the configured AES-256 only when every recipient lists it.
	if aead || !slices.Contains(ciphers, uint8(packet.CipherAES256)) {
		return nil, false
	}
	if len(hashes) == 0 {
		hashes = []uint8{hashIDSHA256}
	}
	sk, found := signer.SigningKeyById(now, cfg.SigningKey(), cfg)
	if !found || sk.PrivateKey == nil || sk.PrivateKey.Encrypted || sk.PrimarySelfSignature == nil {
		return nil, false
	}
	priv := sk.PrivateKey
	// An Ed25519 key of the RFC 4880 kind: go-crypto's acceptable hashes
	// for it are the candidates above, SHA-256 first.
	if priv.Version != 4 || priv.PubKeyAlgo != packet.PubKeyAlgoEdDSA {
		return nil, false
	}
	if curve, err := priv.PublicKey.Curve(); err != nil || curve != packet.Curve25519 {
		return nil, false
	}
	// selectHash: the configured SHA-256 if a candidate is left, or the
	// first acceptable hash (SHA-256) if none is.
	hashes = intersect(hashes, sk.PrimarySelfSignature.PreferredHash)
	if len(hashes) > 0 && !slices.Contains(hashes, hashIDSHA256) {
		return nil, false
	}
	plan.signer = priv
	return plan, true
}

// intersect is go-crypto's intersectPreferences without its writing into
// a: the values of a that b has, in a's order.
func intersect(a, b []uint8) []uint8 {
	var out []uint8
	for _, v := range a {
		if slices.Contains(b, v) {
			out = append(out, v)
		}
	}
	return out
}

// encryptSigned returns a writer that signs and encrypts what is written
// to it as an OpenPGP message to w, as openpgp.EncryptWithParams with
// signer as the only signer does. Close finishes the message; it does not
// close w.
func encryptSigned(w io.Writer, to []*openpgp.Entity, signer *openpgp.Entity, cfg *packet.Config) (io.WriteCloser, error) {
	plan, ok := planSEIPDv1(to, signer, cfg)
	if !ok {
		return openpgp.EncryptWithParams(w, to, nil, &openpgp.EncryptParams{
			Signers: []*openpgp.Entity{signer},
			Config:  cfg,
		})
	}
	// The random values in go-crypto's order: session key, then each
	// session key packet's, then the data packet's prefix.
	key := make([]byte, packet.CipherAES256.KeySize())
	if _, err := io.ReadFull(cfg.Random(), key); err != nil {
		return nil, err
	}
	defer clear(key)
	for _, k := range plan.keys {
		if err := packet.SerializeEncryptedKeyAEADwithHiddenOption(w, k.PublicKey, packet.CipherAES256, false, key, false, cfg); err != nil {
			return nil, err
		}
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	data, err := newSEIPDWriter(w, block, cfg.Random())
	if err != nil {
		return nil, err
	}
	ops := &packet.OnePassSignature{
		Version:    3,
		SigType:    packet.SigTypeBinary,
		Hash:       crypto.SHA256,
		PubKeyAlgo: plan.signer.PubKeyAlgo,
		KeyId:      plan.signer.KeyId,
		IsLast:     true,
	}
	if err := ops.Serialize(data); err != nil {
		return nil, err
	}
	lit, err := packet.SerializeLiteral(nopCloser{data}, true, "", 0)
	if err != nil {
		return nil, err
	}
	return &signedWriter{data: data, lit: lit, h: sha256.New(), plan: plan, cfg: cfg}, nil
}

// signedWriter hashes the message for the signature as it writes the
// literal data, and writes the signature packet after it on Close.
type signedWriter struct {
	data *seipdWriter
	lit  io.WriteCloser
	h    hash.Hash
	plan *seipdPlan
	cfg  *packet.Config
}

func (s *signedWriter) Write(p []byte) (int, error) {
	s.h.Write(p)
	return s.lit.Write(p)
}

func (s *signedWriter) Close() error {
	if err := s.lit.Close(); err != nil {
		return err
	}
	// The signature go-crypto's createSignaturePacket and
	// signatureWriter.Close make.
	priv := s.plan.signer
	lifetime := s.cfg.SigLifetime()
	sig := &packet.Signature{
		Version:            priv.Version,
		SigType:            packet.SigTypeBinary,
		PubKeyAlgo:         priv.PubKeyAlgo,
		Hash:               crypto.SHA256,
		CreationTime:       s.cfg.Now(),
		IssuerKeyId:        &priv.KeyId,
		IssuerKeyVersion:   uint8(priv.Version),
		IssuerFingerprint:  priv.Fingerprint,
		Notations:          s.cfg.Notations(),
		SigLifetimeSecs:    &lifetime,
		Metadata:           &packet.LiteralData{Format: 'b'},
		IntendedRecipients: s.plan.recipients,
	}
	if err := sig.Sign(s.h, priv, s.cfg); err != nil {
		return err
	}
	if err := sig.Serialize(s.data); err != nil {
		return err
	}
	return s.data.Close()
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// seipdWriter writes a SEIPD v1 packet (RFC 4880 section 5.13): a
// new-format header with partial body lengths, the version, then in
// OpenPGP's CFB mode without resynchronisation the random prefix, the
// data and the MDC packet. That mode is CFB with a zero IV over the
// prefix and all that follows (RFC 4880 section 13.9, step 7 skipped,
// as SEIPD requires), which crypto/cipher's CFB computes a block at a
// time.
type seipdWriter struct {
	w      io.Writer
	stream cipher.Stream
	mdc    hash.Hash
	// body is the packet body not yet written, kept and cut into partial
	// lengths as go-crypto's partialLengthWriter does, so that the
	// lengths are the ones go-crypto writes.
	body []byte
	err  error
}

const (
	tagSEIPD      = 18
	mdcTag        = 0xd3 // the MDC packet's header: old format, tag 19, length 20
	mdcLen        = sha1.Size
	partialMin    = 512
	maxPartialPow = 30
)

func newSEIPDWriter(w io.Writer, block cipher.Block, rand io.Reader) (*seipdWriter, error) {
	if _, err := w.Write([]byte{0xc0 | tagSEIPD}); err != nil {
		return nil, err
	}
	bs := block.BlockSize()
	iv := make([]byte, bs, bs+2)
	if _, err := io.ReadFull(rand, iv); err != nil {
		return nil, err
	}
	s := &seipdWriter{
		w:      w,
		stream: cipher.NewCFBEncrypter(block, make([]byte, bs)), //nolint:staticcheck // OpenPGP's CFB, see above
		mdc:    sha1.New(),
	}
	s.put([]byte{1}, false) // version 1
	// The prefix: a random block, its last two bytes repeated.
	prefix := append(iv, iv[bs-2:]...)
	s.mdc.Write(prefix)
	s.put(prefix, true)
	return s, s.err
}

func (s *seipdWriter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	s.mdc.Write(p)
	s.put(p, true)
	if s.err != nil {
		return 0, s.err
	}
	return len(p), nil
}

// put adds p to the packet body, encrypted or not. Before it does, as
// go-crypto's partialLengthWriter.Write, it writes the largest power of
// two of the held body as one partial length, if over 512 bytes are held.
func (s *seipdWriter) put(p []byte, encrypt bool) {
	if len(s.body) > partialMin && s.err == nil {
		pow := min(bits.Len(uint(len(s.body)))-1, maxPartialPow)
		n := 1 << pow
		if _, s.err = s.w.Write([]byte{224 + byte(pow)}); s.err == nil {
			_, s.err = s.w.Write(s.body[:n])
		}
		s.body = s.body[:copy(s.body, s.body[n:])]
	}
	n := len(s.body)
	s.body = slices.Grow(s.body, len(p))[:n+len(p)]
	if encrypt {
		s.stream.XORKeyStream(s.body[n:], p)
	} else {
		copy(s.body[n:], p)
	}
}

// Close writes the MDC packet, whose SHA-1 covers the prefix, the data
// and the MDC packet's own header, and the last length.
func (s *seipdWriter) Close() error {
	if s.err != nil {
		return s.err
	}
	var mdc [2 + mdcLen]byte
	mdc[0], mdc[1] = mdcTag, mdcLen
	s.mdc.Write(mdc[:2])
	s.mdc.Sum(mdc[:2])
	s.put(mdc[:], true)
	if s.err != nil {
		return s.err
	}
	if _, err := s.w.Write(newFormatLength(len(s.body))); err != nil {
		return err
	}
	_, err := s.w.Write(s.body)
	s.body = nil
	s.err = errors.New("seipd: write after close")
	return err
}

// newFormatLength is a new-format packet length (RFC 4880 section
// 4.2.2), as go-crypto's serializeLength writes it.
func newFormatLength(n int) []byte {
	switch {
	case n < 192:
		return []byte{byte(n)}
	case n < 8384:
		n -= 192
		return []byte{192 + byte(n>>8), byte(n)}
	default:
		return []byte{255, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
}
