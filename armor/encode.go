// Package armor is in charge of OpenPGP ASCII armor (RFC 4880 section 6,
// RFC 9580 section 6.2) on the envelope's wire. It writes armor byte for
// byte as github.com/ProtonMail/go-crypto/openpgp/armor does (64
// characters a line, the CRC-24 line that GnuPG 2.2 needs), optionally
// with the CRLF line ends of canonical MIME, and reads it as that package
// does. It exists for speed: go-crypto computes the CRC a bit at a time and
// moves the text through several small writers, which made armor most of
// the cost of sealing and opening a large package.
package armor

import (
	"encoding/base64"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
)

const (
	// lineLen is the number of base64 characters on a full line, as
	// go-crypto writes (RFC 4880 section 6.3 allows up to 76).
	lineLen = 64
	// flushAt is how much encoded text the Writer collects before
	// writing it on: large writes, without holding a large package.
	flushAt = 32 << 10
)

var errClosed = errors.New("armor: write after close")

var outPool = sync.Pool{New: func() any {
	b := make([]byte, 0, flushAt+lineLen+8)
	return &b
}}

// Writer encodes what is written to it as an armored block. Close writes
// the checksum and the armor tail; until then the block is incomplete.
type Writer struct {
	w         io.Writer
	eol       string
	blockType string
	crc       uint32
	rest      [3]byte // input bytes not yet encoded: less than a group
	nrest     int
	col       int // base64 characters on the current line
	buf       *[]byte
	err       error
}

// Encode returns a Writer that writes to out an armored block of the given
// type, with the given armor headers (in key order), as go-crypto's
// armor.Encode writes it: lines end with LF.
func Encode(out io.Writer, blockType string, headers map[string]string) (*Writer, error) {
	return encode(out, blockType, headers, "\n")
}

// EncodeCRLF is Encode with every line ended by CRLF, the canonical form of
// a MIME body part (RFC 2046 section 4.1.1): the bytes go-crypto writes
// with each LF turned into CRLF.
func EncodeCRLF(out io.Writer, blockType string, headers map[string]string) (*Writer, error) {
	return encode(out, blockType, headers, "\r\n")
}

func encode(out io.Writer, blockType string, headers map[string]string, eol string) (*Writer, error) {
	// A line break inside a field would end the armor line early and
	// produce armor no reader parses as written.
	if strings.ContainsAny(blockType, "\r\n") {
		return nil, errors.New("armor: block type contains a line break")
	}
	keys := make([]string, 0, len(headers))
	for k, v := range headers {
		if strings.ContainsAny(k, "\r\n") || strings.ContainsAny(v, "\r\n") {
			return nil, errors.New("armor: header contains a line break")
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	e := &Writer{w: out, eol: eol, blockType: blockType, crc: crc24Init, buf: outPool.Get().(*[]byte)}
	b := (*e.buf)[:0]
	b = append(b, "-----BEGIN "...)
	b = append(b, blockType...)
	b = append(b, "-----"...)
	b = append(b, eol...)
	for _, k := range keys {
		b = append(b, k...)
		b = append(b, ": "...)
		b = append(b, headers[k]...)
		b = append(b, eol...)
	}
	b = append(b, eol...)
	*e.buf = b
	return e, nil
}

// Write encodes p. The encoded text is written on in large pieces.
func (e *Writer) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n := len(p)
	e.crc = crc24Update(e.crc, p)
	if e.nrest > 0 {
		k := copy(e.rest[e.nrest:], p)
		e.nrest += k
		p = p[k:]
		if e.nrest < len(e.rest) {
			return n, nil
		}
		e.encode(e.rest[:])
		e.nrest = 0
	}
	full := len(p) / 3 * 3
	e.encode(p[:full])
	e.nrest = copy(e.rest[:], p[full:])
	if e.err != nil {
		return 0, e.err
	}
	return n, nil
}

// encode appends the base64 of src, a whole number of 3-byte groups, to
// the output, breaking lines every lineLen characters. As in go-crypto, a
// line break is written only when more text follows it.
func (e *Writer) encode(src []byte) {
	b := *e.buf
	for len(src) > 0 && e.err == nil {
		if e.col == lineLen {
			b = append(b, e.eol...)
			e.col = 0
		}
		k := min(len(src), (lineLen-e.col)/4*3)
		m := base64.StdEncoding.EncodedLen(k)
		b = slices.Grow(b, m)
		encodeBase64(b[len(b):len(b)+m], src[:k])
		b = b[:len(b)+m]
		e.col += m
		src = src[k:]
		if len(b) >= flushAt {
			*e.buf = b
			e.flush()
			b = *e.buf
		}
	}
	*e.buf = b
}

func (e *Writer) flush() {
	b := *e.buf
	if len(b) > 0 && e.err == nil {
		_, e.err = e.w.Write(b)
	}
	*e.buf = b[:0]
}

// Close encodes the last partial group, then writes the checksum line
// and the armor tail. The tail ends without a line break, as go-crypto's
// does. Close does not close the underlying writer.
func (e *Writer) Close() error {
	if e.buf == nil {
		return nil
	}
	if e.nrest > 0 && e.err == nil {
		b := *e.buf
		if e.col == lineLen {
			b = append(b, e.eol...)
			e.col = 0
		}
		b = base64.StdEncoding.AppendEncode(b, e.rest[:e.nrest])
		*e.buf = b
		e.nrest = 0
	}
	sum := [3]byte{byte(e.crc >> 16), byte(e.crc >> 8), byte(e.crc)}
	b := *e.buf
	b = append(b, e.eol...)
	b = append(b, '=')
	b = base64.StdEncoding.AppendEncode(b, sum[:])
	b = append(b, e.eol...)
	b = append(b, "-----END "...)
	b = append(b, e.blockType...)
	b = append(b, "-----"...)
	*e.buf = b
	e.flush()
	outPool.Put(e.buf)
	e.buf = nil
	err := e.err
	if err == nil {
		e.err = errClosed
	}
	return err
}
