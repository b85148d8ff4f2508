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

// Decoding: four tables give each character's six bits already in place
// in a 24-bit group, so a group of four characters is four lookups and
// three ORs. A character outside the alphabet (padding included) sets the
// top byte, which one test catches for eight characters at a time.
var decTables = func() (t [4][256]uint32) {
	for k := range t {
		for c := range t[k] {
			t[k][c] = 0xff000000
		}
	}
	for v := range len(alphabet) {
		c := alphabet[v]
		for k := range t {
			t[k][c] = uint32(v) << (18 - 6*k)
		}
	}
	return t
}()

// decodeBase64 is base64.StdEncoding.Decode for text without line breaks:
// the same result, and the same error at the same offset. Groups of eight
// characters are decoded here; from the first group that has padding or
// a character outside the alphabet, encoding/base64 decodes the rest.
func decodeBase64(dst, src []byte) (int, error) {
	t0, t1, t2, t3 := &decTables[0], &decTables[1], &decTables[2], &decTables[3]
	n, i := 0, 0
	// Six bytes are written by a store of eight, so the loop stops while
	// eight remain in dst.
	for len(src)-i >= 8 && len(dst)-n >= 8 {
		s := src[i : i+8]
		a := t0[s[0]] | t1[s[1]] | t2[s[2]] | t3[s[3]]
		b := t0[s[4]] | t1[s[5]] | t2[s[6]] | t3[s[7]]
		if (a|b)&0xff000000 != 0 {
			break
		}
		binary.BigEndian.PutUint64(dst[n:], uint64(a)<<40|uint64(b)<<16)
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
	t0, t1, t2, t3 := &decTables[0], &decTables[1], &decTables[2], &decTables[3]
	src, dst = src[:lineLen], dst[:lineLen/4*3+2]
	var bad uint32
	for i := range lineLen / 8 {
		s := src[i*8 : i*8+8]
		a := t0[s[0]] | t1[s[1]] | t2[s[2]] | t3[s[3]]
		b := t0[s[4]] | t1[s[5]] | t2[s[6]] | t3[s[7]]
		bad |= a | b
		binary.BigEndian.PutUint64(dst[i*6:], uint64(a)<<40|uint64(b)<<16)
	}
	return bad&0xff000000 == 0
}
