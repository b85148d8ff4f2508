package armor

import (
	"math/rand/v2"
	"testing"
)

// crc24Bitwise is the sample code of RFC 4880 section 6.1, a bit at a
// time: the reference the tables must agree with.
func crc24Bitwise(crc uint32, d []byte) uint32 {
	for _, b := range d {
		crc ^= uint32(b) << 16
		for range 8 {
			crc <<= 1
			if crc&0x1000000 != 0 {
				crc ^= crc24Poly
			}
		}
	}
	return crc & crc24Mask
}

func TestCRC24AgreesWithRFC4880Sample(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		d := randomBytes(rng, n)
		// And cut in two: the register carries across calls as it does
		// across writes.
		want := crc24Bitwise(crc24Init, d)
		if got := crc24Update(crc24Init, d); got != want {
			t.Fatalf("%d bytes: crc %06x, want %06x", n, got, want)
		}
		cut := rng.IntN(n + 1)
		if got := crc24Update(crc24Update(crc24Init, d[:cut]), d[cut:]); got != want {
			t.Fatalf("%d bytes cut at %d: crc %06x, want %06x", n, cut, got, want)
		}
	}
}

func BenchmarkCRC24(b *testing.B) {
	data := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		crc24Update(crc24Init, data)
	}
}
