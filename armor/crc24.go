package armor

// CRC-24 of RFC 4880 section 6.1 (RFC 9580 section 6.1.1): generator
// 0x864CFB, initial value 0xB704CE, most significant bit first. go-crypto
// computes it a bit at a time, which made the checksum the largest cost of
// sealing a large package; sixteen tables let the loop take sixteen bytes
// per step ("slicing-by-16"; with eight, the checksum was still an eighth
// of sealing a 1 MiB package).

const (
	crc24Init = 0xb704ce
	crc24Poly = 0x1864cfb // with the x^24 term, as RFC 4880's sample code
	crc24Mask = 0xffffff
)

// crc24Tables[k][b] is the CRC register after byte b followed by k zero
// bytes, from a zero register.
var crc24Tables = func() (t [16][256]uint32) {
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
	for k := 1; k < len(t); k++ {
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
	// (the CRC is linear), so each step looks up sixteen bytes in sixteen
	// tables and XORs the results.
	for len(d) >= 16 {
		s := d[:16]
		crc = t[15][byte(crc>>16)^s[0]] ^ t[14][byte(crc>>8)^s[1]] ^ t[13][byte(crc)^s[2]] ^
			t[12][s[3]] ^ t[11][s[4]] ^ t[10][s[5]] ^ t[9][s[6]] ^ t[8][s[7]] ^
			t[7][s[8]] ^ t[6][s[9]] ^ t[5][s[10]] ^ t[4][s[11]] ^
			t[3][s[12]] ^ t[2][s[13]] ^ t[1][s[14]] ^ t[0][s[15]]
		d = d[16:]
	}
	for _, b := range d {
		crc = (crc<<8 ^ t[0][byte(crc>>16)^b]) & crc24Mask
	}
	return crc
}
