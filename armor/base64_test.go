package armor

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"testing"
)

// randomBytes is n bytes from rng.
func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// checkDecodeBase64 requires decodeBase64 to do what
// base64.StdEncoding.Decode does with in: the same bytes, the same error.
func checkDecodeBase64(t *testing.T, in []byte) {
	t.Helper()
	want := make([]byte, len(in))
	wn, werr := base64.StdEncoding.Decode(want, in)
	got := make([]byte, len(in)+8)
	gn, gerr := decodeBase64(got, in)
	if gn != wn || !bytes.Equal(got[:gn], want[:wn]) || fmt.Sprint(gerr) != fmt.Sprint(werr) {
		t.Fatalf("%q: %d bytes, %v; want %d bytes, %v", in, gn, gerr, wn, werr)
	}
}

func TestEncodeBase64IsStandard(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for n := range 200 {
		src := randomBytes(rng, n)
		want := base64.StdEncoding.EncodeToString(src)
		dst := make([]byte, len(want))
		encodeBase64(dst, src)
		if string(dst) != want {
			t.Fatalf("%d bytes: %q, want %q", n, dst, want)
		}
	}
}

func TestDecodeBase64IsStandard(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for n := range 300 {
		text := []byte(base64.StdEncoding.EncodeToString(randomBytes(rng, n)))
		cases := [][]byte{text}
		if len(text) > 0 {
			bad := bytes.Clone(text)
			bad[rng.IntN(len(bad))] = "!=-_ \x00\xff"[rng.IntN(7)]
			cases = append(cases, bad, text[:len(text)-1])
		}
		for _, in := range cases {
			checkDecodeBase64(t, in)
		}
	}
}

func FuzzDecodeBase64(f *testing.F) {
	f.Add([]byte("QUJDRA=="))
	f.Fuzz(checkDecodeBase64)
}
