package armor

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"

	gcarmor "github.com/ProtonMail/go-crypto/openpgp/armor"
)

// goCryptoArmor is what go-crypto's encoder writes for data in the given
// writes.
func goCryptoArmor(t testing.TB, blockType string, headers map[string]string, writes [][]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := gcarmor.Encode(&b, blockType, headers)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range writes {
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func ourArmor(t testing.TB, crlf bool, blockType string, headers map[string]string, writes [][]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := Encode
	if crlf {
		enc = EncodeCRLF
	}
	w, err := enc(&b, blockType, headers)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range writes {
		if n, err := w.Write(p); err != nil || n != len(p) {
			t.Fatalf("write: %d, %v", n, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// split cuts data into writes at the given points (each taken modulo the
// length), as a caller writing in pieces would.
func split(data []byte, cuts []int) [][]byte {
	var out [][]byte
	for _, c := range cuts {
		if len(data) == 0 {
			break
		}
		c %= len(data) + 1
		out = append(out, data[:c])
		data = data[c:]
	}
	return append(out, data)
}

// checkSameBytes asserts that our encoder writes go-crypto's bytes, with
// LF and with every LF as CRLF.
func checkSameBytes(t testing.TB, blockType string, headers map[string]string, data []byte, cuts []int) {
	t.Helper()
	writes := split(data, cuts)
	want := goCryptoArmor(t, blockType, headers, writes)
	if got := ourArmor(t, false, blockType, headers, writes); !bytes.Equal(got, want) {
		t.Fatalf("%d bytes in %d writes: LF armor differs from go-crypto's\n got %q\nwant %q", len(data), len(writes), got, want)
	}
	wantCRLF := bytes.ReplaceAll(want, []byte("\n"), []byte("\r\n"))
	if got := ourArmor(t, true, blockType, headers, writes); !bytes.Equal(got, wantCRLF) {
		t.Fatalf("%d bytes in %d writes: CRLF armor differs from go-crypto's with CRLF\n got %q\nwant %q", len(data), len(writes), got, wantCRLF)
	}
}

func TestEncodeWritesGoCryptoBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	sizes := []int{0, 1, 2, 3, 4, 47, 48, 49, 95, 96, 97, 143, 144, 145, 1000, 4096, flushAt - 1, flushAt, flushAt/4*3 + 1, 100_000, 1 << 20}
	for _, n := range sizes {
		data := randomBytes(rng, n)
		checkSameBytes(t, "PGP MESSAGE", nil, data, nil)
		checkSameBytes(t, "PGP MESSAGE", nil, data, []int{1, 2, 3, 4, 5, 47, 64, 1 << 16})
		cuts := make([]int, 20)
		for i := range cuts {
			cuts[i] = rng.IntN(n + 1)
		}
		checkSameBytes(t, "PGP SIGNATURE", map[string]string{"Version": "x", "Comment": "a: b", "Charset": ""}, data, cuts)
	}
}

func TestEncodeRefusesLineBreaksInFields(t *testing.T) {
	for _, tc := range []struct {
		blockType string
		headers   map[string]string
	}{
		{"PGP\nMESSAGE", nil},
		{"PGP MESSAGE", map[string]string{"Comment": "a\r\nb"}},
		{"PGP MESSAGE", map[string]string{"Com\nment": "a"}},
	} {
		if _, err := Encode(io.Discard, tc.blockType, tc.headers); err == nil {
			t.Errorf("Encode(%q, %q): no error", tc.blockType, tc.headers)
		}
	}
}

func TestWriteAfterCloseFails(t *testing.T) {
	w, err := Encode(io.Discard, "PGP MESSAGE", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("write after close succeeded")
	}
}

// FuzzEncodeMatchesGoCrypto: for any data written in any pieces, our
// encoder writes go-crypto's bytes.
func FuzzEncodeMatchesGoCrypto(f *testing.F) {
	f.Add([]byte{}, uint16(0), uint16(0))
	f.Add([]byte("hello, world"), uint16(5), uint16(1))
	f.Add(bytes.Repeat([]byte{0xff}, 200), uint16(48), uint16(49))
	f.Fuzz(func(t *testing.T, data []byte, cut1, cut2 uint16) {
		checkSameBytes(t, "PGP MESSAGE", nil, data, []int{int(cut1), int(cut2)})
	})
}

func BenchmarkEncode1MiB(b *testing.B) {
	data := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		w, _ := EncodeCRLF(io.Discard, "PGP MESSAGE", nil)
		w.Write(data)
		w.Close()
	}
}
