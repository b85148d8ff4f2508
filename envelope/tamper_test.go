package envelope

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/conduit-gateway/conduit/keys"
)

// splitArmor cuts a sealed envelope into what comes before the armored
// OpenPGP message, the binary message, and what follows it.
func splitArmor(t *testing.T, sealed []byte) (pre []byte, bin []byte, post []byte) {
	t.Helper()
	start := bytes.Index(sealed, []byte("-----BEGIN PGP MESSAGE-----"))
	endMarker := []byte("-----END PGP MESSAGE-----")
	end := bytes.Index(sealed, endMarker)
	if start < 0 || end < 0 {
		t.Fatal("no armored message in envelope")
	}
	end += len(endMarker)
	blk, err := armor.Decode(bytes.NewReader(sealed[start:end]))
	tcheck(t, err, "armor decode")
	bin, err = io.ReadAll(blk.Body)
	tcheck(t, err, "armor body")
	return sealed[:start], bin, sealed[end:]
}

func rearmor(t *testing.T, pre, bin, post []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	b.Write(pre)
	aw, err := armor.Encode(&crlfWriter{w: &b}, "PGP MESSAGE", nil)
	tcheck(t, err, "armor")
	aw.Write(bin)
	tcheck(t, aw.Close(), "armor close")
	b.Write(post)
	return b.Bytes()
}

// innerPayload decrypts an envelope with the receiver's key, ignoring the
// signature, to get the signed MIME payload an attacker would want to
// re-sign or re-encrypt.
func innerPayload(t *testing.T, pr pair, bin []byte) []byte {
	t.Helper()
	md, err := openpgp.ReadMessage(bytes.NewReader(bin), openpgp.EntityList{pr.receiver.Entity}, nil, nil)
	tcheck(t, err, "decrypt")
	b, err := io.ReadAll(md.UnverifiedBody)
	tcheck(t, err, "read payload")
	return b
}

// encryptAs encrypts payload to the receiver, signed by signer (nil: not
// signed).
func encryptAs(t *testing.T, pr pair, payload []byte, signer *keys.Identity) []byte {
	t.Helper()
	var b bytes.Buffer
	var signers []*openpgp.Entity
	if signer != nil {
		signers = []*openpgp.Entity{signer.Entity}
	}
	w, err := openpgp.EncryptWithParams(&b, []*openpgp.Entity{pr.receiver.Entity}, nil, &openpgp.EncryptParams{
		Signers: signers, Config: keys.ProfileRFC4880.Config(),
	})
	tcheck(t, err, "encrypt")
	w.Write(payload)
	tcheck(t, w.Close(), "encrypt close")
	return b.Bytes()
}

// withoutMDC replaces the integrity-protected data packet (tag 18) of a
// message by a Symmetrically Encrypted Data packet (tag 9), which has no
// MDC, keeping the session key packets in front of it.
func withoutMDC(t *testing.T, bin []byte) []byte {
	t.Helper()
	i := 0
	for i < len(bin) {
		hdr := bin[i]
		if hdr&0xc0 != 0xc0 {
			t.Fatalf("old-format packet at %d", i)
		}
		tag := hdr & 0x3f
		if tag == 18 {
			body := make([]byte, 200)
			rand.Read(body)
			out := append([]byte{}, bin[:i]...)
			out = append(out, 0xc0|9, byte(len(body)))
			return append(out, body...)
		}
		l := int(bin[i+1])
		switch {
		case l < 192:
			i += 2 + l
		case l < 224:
			i += 3 + ((l-192)<<8 + int(bin[i+2]) + 192)
		default:
			t.Fatalf("unexpected length form before the data packet")
		}
	}
	t.Fatal("no SEIPD packet")
	return nil
}

func TestOpenTampered(t *testing.T) {
	pr := newPair(t, keys.ProfileRFC4880)
	// A second agency whose key the receiver knows and pins: a valid
	// signature by it is still not the originator's.
	other := identity(t, "hmp-eastfield", keys.ProfileRFC4880)
	tcheck(t, pr.partners.Add(cert(t, other), "hmp-eastfield", other.Fingerprint()), "pin other")
	stranger := identity(t, "stranger", keys.ProfileRFC4880)

	sealed := seal(t, pr, sampleMessage(), nil)
	pre, bin, post := splitArmor(t, sealed)
	payload := innerPayload(t, pr, bin)

	tests := []struct {
		name   string
		mangle func() []byte
		want   error
	}{
		{"flipped ciphertext byte", func() []byte {
			b := bytes.Clone(bin)
			b[len(b)/2] ^= 0x01
			return rearmor(t, pre, b, post)
		}, ErrTampered},
		{"flipped armor character", func() []byte {
			b := bytes.Clone(sealed)
			i := bytes.Index(b, []byte("-----BEGIN PGP MESSAGE-----")) + 200
			if b[i] == 'A' {
				b[i] = 'B'
			} else {
				b[i] = 'A'
			}
			return b
		}, ErrTampered},
		{"signature stripped", func() []byte {
			return rearmor(t, pre, encryptAs(t, pr, payload, nil), post)
		}, ErrNotSigned},
		{"signed by a different known key", func() []byte {
			return rearmor(t, pre, encryptAs(t, pr, payload, other), post)
		}, ErrSignerNotPinned},
		{"inner label altered and re-signed by a non-pinned key", func() []byte {
			p := bytes.Replace(payload, []byte("handling=2"), []byte("handling=1"), 1)
			return rearmor(t, pre, encryptAs(t, pr, p, stranger), post)
		}, ErrSignerNotPinned},
		{"outer marking altered", func() []byte {
			return bytes.Replace(sealed, []byte(`SIO-Label: marking="OFFICIAL-SENSITIVE PERSONAL"`), []byte(`SIO-Label: marking="OFFICIAL"`), 1)
		}, ErrMarkingMismatch},
		{"outer subject marking altered", func() []byte {
			return bytes.Replace(sealed, []byte("Subject: [OFFICIAL-SENSITIVE PERSONAL]"), []byte("Subject: [OFFICIAL]"), 1)
		}, ErrMarkingMismatch},
		{"outer package id altered", func() []byte {
			return bytes.Replace(sealed, []byte("\r\nConduit-Package: cdt-"), []byte("\r\nConduit-Package: cdt-x"), 1)
		}, ErrMarkingMismatch},
		{"SED packet without MDC", func() []byte {
			return rearmor(t, pre, withoutMDC(t, bin), post)
		}, ErrNoIntegrity},
		{"truncated message", func() []byte {
			return sealed[:len(sealed)/2]
		}, ErrTruncated},
		{"closing boundary missing", func() []byte {
			i := bytes.LastIndex(sealed, []byte("--conduit-"))
			return sealed[:i]
		}, ErrTruncated},
		{"not encrypted to us", func() []byte {
			other := newPair(t, keys.ProfileRFC4880)
			other.receiver = stranger
			return rearmor(t, pre, encryptAs(t, other, payload, pr.sender), post)
		}, ErrNoKey},
		{"label removed and re-signed by the originator", func() []byte {
			// Even the pinned originator cannot send a package without a
			// valid label.
			p := bytes.Replace(payload, []byte("Handling-Label:"), []byte("X-Removed:"), 1)
			return rearmor(t, pre, encryptAs(t, pr, p, pr.sender), post)
		}, ErrLabelInvalid},
		{"manifest label differs from header label", func() []byte {
			p := bytes.Replace(payload, []byte(`handling=2; authorisation=PAS-2026-0042; basis=assessment; subjects=\"suspected,witness\"`),
				[]byte(`handling=1; authorisation=PAS-2026-0042; basis=assessment; subjects=\"suspected,witness\"`), 1)
			if bytes.Equal(p, payload) {
				t.Fatal("manifest label not found in payload")
			}
			return rearmor(t, pre, encryptAs(t, pr, p, pr.sender), post)
		}, ErrMarkingMismatch},
		{"not PGP/MIME", func() []byte {
			return []byte("Subject: hello\r\n\r\nplain text " + secretBody)
		}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := tt.mangle()
			var out bytes.Buffer
			_, err := Open(context.Background(), &out, bytes.NewReader(msg), OpenParams{Identity: pr.receiver, Partners: pr.partners})
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var ce *CheckError
			if !errors.As(err, &ce) {
				t.Errorf("err is %T, want *CheckError", err)
			}
			if out.Len() != 0 {
				t.Errorf("%d bytes released despite the failed check", out.Len())
			}
			if strings.Contains(err.Error(), "firearm") || strings.Contains(err.Error(), "Visits intelligence") {
				t.Errorf("error text leaks plaintext: %v", err)
			}
		})
	}
}
