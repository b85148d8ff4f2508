package armor

// CRC-24 of RFC 4880 section 6.1 (RFC 9580 section 6.1.1): generator
// 0x864CFB, initial value 0xB704CE, most significant bit first. go-crypto
// computes it a bit at a time, which made the checksum the largest cost of
// sealing a large package; eight tables let the loop take eight bytes per
// step ("slicing-by-8").

const (
	crc24Init = 0xb704ce
	crc24Poly = 0x1864cfb // with the x^24 term, as RFC 4880's sample code
	crc24Mask = 0xffffff
)

// crc24Tables[k][b] is the CRC register after byte b followed by k zero
// bytes, from a zero register.
var crc24Tables = func() (t [8][256]uint32) {
	for b := range 256 {
		crc := uint32(b) << 16
		for range 8 {
			crc <<= 1
			if crc&0x1000000 != 0 {
				crc ^= crc24Poly
			}
		}
		t[0][b] = crc & crc24Mask
	}
	for k := 1; k < 8; k++ {
		for b := range 256 {
			prev := t[k-1][b]
			t[k][b] = (prev<<8 ^ t[0][prev>>16]) & crc24Mask
		}
	}
	return t
}()

// crc24Update returns the CRC-24 register after d, from register crc.
func crc24Update(crc uint32, d []byte) uint32 {
	t := &crc24Tables
	// The register's three bytes combine with the next three input bytes
	// (the CRC is linear), so each step looks up eight bytes in eight
	// tables and XORs the results.
	for len(d) >= 8 {
		crc = t[7][byte(crc>>16)^d[0]] ^ t[6][byte(crc>>8)^d[1]] ^ t[5][byte(crc)^d[2]] ^
			t[4][d[3]] ^ t[3][d[4]] ^ t[2][d[5]] ^ t[1][d[6]] ^ t[0][d[7]]
		d = d[8:]
	}
	for _, b := range d {
		crc = (crc<<8 ^ t[0][byte(crc>>16)^b]) & crc24Mask
	}
	return crc
}
