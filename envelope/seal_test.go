package envelope

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// crlfByteLoop is the line-ending conversion a byte at a time, as
// crlfWriter did before it wrote runs: the reference it must agree with.
func crlfByteLoop(writes [][]byte) []byte {
	var out []byte
	prevCR := false
	for _, p := range writes {
		for i, b := range p {
			if b == '\n' && !(i > 0 && p[i-1] == '\r' || i == 0 && prevCR) {
				out = append(out, '\r')
			}
			out = append(out, b)
		}
		if len(p) > 0 {
			prevCR = p[len(p)-1] == '\r'
		}
	}
	return out
}

func checkCRLF(t *testing.T, data []byte, cuts []int) {
	t.Helper()
	var writes [][]byte
	rest := data
	for _, c := range cuts {
		c %= len(rest) + 1
		writes = append(writes, rest[:c])
		rest = rest[c:]
	}
	writes = append(writes, rest)
	var got bytes.Buffer
	cw := &crlfWriter{w: &got}
	for _, p := range writes {
		if n, err := cw.Write(p); err != nil || n != len(p) {
			t.Fatalf("write: %d, %v", n, err)
		}
	}
	if want := crlfByteLoop(writes); !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("%q in %d writes:\n got %q\nwant %q", data, len(writes), got.Bytes(), want)
	}
}

func TestCRLFWriterTurnsOnlyBareLFIntoCRLF(t *testing.T) {
	for _, s := range []string{"", "\n", "\r\n", "\r", "a\nb\r\nc\n\n\r\r\n", "\n\n\n", "\r\r\n\n"} {
		for c := range len(s) + 1 {
			checkCRLF(t, []byte(s), []int{c})
		}
	}
	rng := rand.New(rand.NewPCG(9, 10))
	for range 500 {
		data := make([]byte, rng.IntN(300))
		for i := range data {
			data[i] = "ab\r\n"[rng.IntN(4)]
		}
		checkCRLF(t, data, []int{rng.IntN(300), rng.IntN(300), rng.IntN(300)})
	}
}

func FuzzCRLFWriter(f *testing.F) {
	f.Add([]byte("a\nb\r\nc"), uint8(2), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, cut1, cut2 uint8) {
		checkCRLF(t, data, []int{int(cut1), int(cut2)})
	})
}
