package armor

import (
	"encoding/base64"
	"encoding/binary"
)

// Base64 of whole armor lines, faster than encoding/base64: a table of
// every 12-bit value's two characters turns six input bytes into eight
// characters with four lookups and one store, where the standard encoder
// looks up and stores one character at a time. Encoding is the standard
// alphabet's (RFC 4648 section 4), as the tests check against
// encoding/base64.

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

var pairs = func() (t [1 << 12]uint16) {
	for i := range t {
		t[i] = uint16(alphabet[i>>6]) | uint16(alphabet[i&63])<<8
	}
	return t
}()

// encodeBase64 writes the base64 of src to dst, which must hold
// base64.StdEncoding.EncodedLen(len(src)) bytes.
func encodeBase64(dst, src []byte) {
	t := &pairs
	// Eight bytes are loaded for six used, so the fast loop stops while
	// eight remain.
	for len(src) >= 8 && len(dst) >= 8 {
		v := binary.BigEndian.Uint64(src)
		binary.LittleEndian.PutUint64(dst, uint64(t[v>>52])|uint64(t[v>>40&0xfff])<<16|
			uint64(t[v>>28&0xfff])<<32|uint64(t[v>>16&0xfff])<<48)
		src, dst = src[6:], dst[8:]
	}
	for len(src) >= 3 && len(dst) >= 4 {
		v := uint(src[0])<<16 | uint(src[1])<<8 | uint(src[2])
		binary.LittleEndian.PutUint32(dst, uint32(t[v>>12])|uint32(t[v&0xfff])<<16)
		src, dst = src[3:], dst[4:]
	}
	if len(src) > 0 {
		base64.StdEncoding.Encode(dst, src)
	}
}

// Decoding: a table of every pair of characters (the first in the high
// byte) gives the pair's twelve bits, so a group of eight characters, read
// as one word, is four lookups and three shifts. A pair with a character
// outside the alphabet (padding included) has badPair set, which one test
// catches for a whole line. The table is 128 KiB, but the pairs of the
// alphabet fall on 16 KiB of it, which stays in the first-level cache;
// four tables of one character each needed twice the lookups, and a 1 MiB
// open spent a seventh of its time in them.
const badPair = 0x8000

var pairTable = func() *[1 << 16]uint16 {
	t := new([1 << 16]uint16)
	for i := range t {
		t[i] = badPair
	}
	for a := range len(alphabet) {
		for b := range len(alphabet) {
			t[uint16(alphabet[a])<<8|uint16(alphabet[b])] = uint16(a<<6 | b)
		}
	}
	return t
}()

// decode8 decodes the eight characters of v (the first in the high byte)
// into the top six bytes of the result, with badPair set in bad if any
// is outside the alphabet.
func decode8(v uint64) (out uint64, bad uint16) {
	t := pairTable
	e0, e1, e2, e3 := t[v>>48], t[uint16(v>>32)], t[uint16(v>>16)], t[uint16(v)]
	return (uint64(e0)<<36 | uint64(e1)<<24 | uint64(e2)<<12 | uint64(e3)) << 16, e0 | e1 | e2 | e3
}

// decodeBase64 is base64.StdEncoding.Decode for text without line breaks:
// the same result, and the same error at the same offset. Groups of eight
// characters are decoded here; from the first group that has padding or
// a character outside the alphabet, encoding/base64 decodes the rest.
func decodeBase64(dst, src []byte) (int, error) {
	n, i := 0, 0
	// Six bytes are written by a store of eight, so the loop stops while
	// eight remain in dst.
	for len(src)-i >= 8 && len(dst)-n >= 8 {
		out, bad := decode8(binary.BigEndian.Uint64(src[i:]))
		if bad&badPair != 0 {
			break
		}
		binary.BigEndian.PutUint64(dst[n:], out)
		i += 8
		n += 6
	}
	m, err := base64.StdEncoding.Decode(dst[n:], src[i:])
	if cerr, ok := err.(base64.CorruptInputError); ok {
		err = cerr + base64.CorruptInputError(i)
	}
	return n + m, err
}

// decodeLine decodes the first lineLen characters of src into dst, which
// must hold 50 bytes (a store of eight writes the last six), and reports
// whether all of them were in the alphabet. When they were not, dst holds
// nothing of use and the line is for decodeBase64 to read.
func decodeLine(dst, src []byte) bool {
	src, dst = src[:lineLen], dst[:lineLen/4*3+2]
	var bad uint16
	for i := range lineLen / 8 {
		out, b := decode8(binary.BigEndian.Uint64(src[i*8:]))
		bad |= b
		binary.BigEndian.PutUint64(dst[i*6:], out)
	}
	return bad&badPair == 0
}
