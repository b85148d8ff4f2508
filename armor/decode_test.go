package armor

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"

	gcarmor "github.com/ProtonMail/go-crypto/openpgp/armor"
)

type decoded struct {
	blockType string
	header    map[string]string
	body      []byte
	err       error // from Decode or from reading the body
}

func decodeOurs(in []byte) decoded {
	b, err := Decode(bytes.NewReader(in))
	if err != nil {
		return decoded{err: err}
	}
	body, err := io.ReadAll(b.Body)
	return decoded{b.Type, b.Header, body, err}
}

func decodeGoCrypto(in []byte) decoded {
	b, err := gcarmor.Decode(bytes.NewReader(in))
	if err != nil {
		return decoded{err: err}
	}
	body, err := io.ReadAll(b.Body)
	return decoded{b.Type, b.Header, body, err}
}

// checkAgrees asserts that our decoder reads in what go-crypto's does: the
// same block type, headers and data where go-crypto succeeds, and a
// failure where go-crypto fails. Ours may refuse more in one case only:
// base64 text after a padded group, which go-crypto's streaming decoder
// accepts or refuses depending on how its reads fall.
func checkAgrees(t *testing.T, in []byte) {
	t.Helper()
	got, want := decodeOurs(in), decodeGoCrypto(in)
	if (got.err == nil) != (want.err == nil) {
		var ce base64.CorruptInputError
		if want.err == nil && (errors.Is(got.err, ErrCorrupt) || errors.As(got.err, &ce)) && paddingThenText(in) {
			return
		}
		t.Fatalf("input %q:\nours:      err %v\ngo-crypto: err %v", in, got.err, want.err)
	}
	if errors.Is(want.err, io.EOF) != errors.Is(got.err, io.EOF) || errors.Is(want.err, io.ErrUnexpectedEOF) != errors.Is(got.err, io.ErrUnexpectedEOF) {
		// Input both damaged (text after the padding) and cut short (no
		// END line): ours refuses it at the damage, go-crypto reads on
		// to the end and reports that first. Both refuse it.
		if errors.Is(got.err, ErrCorrupt) && errors.Is(want.err, io.ErrUnexpectedEOF) && paddingThenText(in) {
			return
		}
		t.Fatalf("input %q:\nours:      err %v\ngo-crypto: err %v", in, got.err, want.err)
	}
	if got.blockType != want.blockType || !maps.Equal(got.header, want.header) {
		t.Fatalf("input %q:\nours:      %q %q\ngo-crypto: %q %q", in, got.blockType, got.header, want.blockType, want.header)
	}
	if want.err == nil && !bytes.Equal(got.body, want.body) {
		t.Fatalf("input %q:\nours:      body %q\ngo-crypto: body %q", in, got.body, want.body)
	}
}

// paddingThenText reports whether the input has base64 padding followed
// by more text on a line the body could hold: the one case where ours
// refuses what go-crypto may accept.
func paddingThenText(in []byte) bool {
	padded := false
	for line := range bytes.Lines(in) {
		line = bytes.TrimSpace(line)
		if bytes.HasPrefix(line, []byte("-----END ")) || len(line) == 5 && line[0] == '=' {
			padded = false
			continue
		}
		if padded && len(line) > 0 {
			return true
		}
		if i := bytes.IndexByte(line, '='); i >= 0 {
			if len(bytes.TrimRight(line[i:], "=")) > 0 {
				return true
			}
			padded = true
		}
	}
	return false
}

func TestDecodeReadsGoCryptoArmor(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{0, 1, 2, 3, 47, 48, 49, 1000, outLen - 1, outLen, outLen + 1, 300_000} {
		data := randomBytes(rng, n)
		for _, crlf := range []bool{false, true} {
			armored := ourArmor(t, crlf, "PGP MESSAGE", map[string]string{"Comment": "test"}, [][]byte{data})
			for _, in := range [][]byte{armored, append([]byte("leading text\r\n-----BEGIN PGP SIGNATURE-----\r\nnot a header\r\n"), armored...)} {
				got := decodeOurs(in)
				if got.err != nil || got.blockType != "PGP MESSAGE" || got.header["Comment"] != "test" || !bytes.Equal(got.body, data) {
					t.Fatalf("%d bytes, crlf %v: type %q header %q err %v, body equal %v", n, crlf, got.blockType, got.header, got.err, bytes.Equal(got.body, data))
				}
				checkAgrees(t, in)
			}
		}
	}
}

// TestDecodeReadsAnySize reads the body with reads of sizes on either
// side of minDirect, where the reader switches between decoding into the
// caller's buffer and into its own.
func TestDecodeReadsAnySize(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 10_000)
	for _, crlf := range []bool{false, true} {
		armored := ourArmor(t, crlf, "PGP MESSAGE", nil, [][]byte{data})
		for _, size := range []int{1, 47, 48, 49, 75, minDirect - 1, minDirect, minDirect + 1, 4096, 100_000} {
			b, err := Decode(bytes.NewReader(armored))
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			buf := make([]byte, size)
			for {
				n, err := b.Body.Read(buf)
				got = append(got, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("reads of %d: %v", size, err)
				}
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("reads of %d, crlf %v: body differs", size, crlf)
			}
		}
	}
}

func TestDecodeReadsInSmallPieces(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 10_000)
	armored := ourArmor(t, true, "PGP MESSAGE", nil, [][]byte{data})
	b, err := Decode(iotest.OneByteReader(bytes.NewReader(armored)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(iotest.OneByteReader(b.Body))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("err %v, body equal %v", err, bytes.Equal(got, data))
	}
}

func TestDecodeAgreesWithGoCryptoOnDamage(t *testing.T) {
	data := bytes.Repeat([]byte("attack at dawn "), 500)
	armored := string(ourArmor(t, true, "PGP MESSAGE", nil, [][]byte{data}))
	lines := strings.Split(armored, "\r\n")
	cases := map[string]string{
		"truncated mid-line":         armored[:len(armored)/2],
		"truncated at a line":        strings.Join(lines[:len(lines)/2], "\r\n") + "\r\n",
		"no END line":                strings.Join(lines[:len(lines)-1], "\r\n"),
		"bad character":              strings.Replace(armored, lines[10], "!"+lines[10][1:], 1),
		"over-long line":             strings.Replace(armored, lines[10], lines[10]+lines[11], 1),
		"line padded to 99":          strings.Replace(armored, lines[10], lines[10]+strings.Repeat(" ", 35), 1),
		"line padded to 100":         strings.Replace(armored, lines[10], lines[10]+strings.Repeat(" ", 36), 1),
		"blank lines":                strings.Replace(armored, lines[10], "\r\n\r\n"+lines[10], 1),
		"indented lines":             strings.ReplaceAll(armored, "\r\n", "\r\n  "),
		"LF only":                    strings.ReplaceAll(armored, "\r\n", "\n"),
		"no checksum":                strings.Replace(armored, lines[len(lines)-2]+"\r\n", "", 1),
		"header without colon":       strings.Replace(armored, "-----\r\n\r\n", "-----\r\nnot a header\r\n\r\n", 1),
		"long header":                strings.Replace(armored, "-----\r\n\r\n", "-----\r\nComment: "+strings.Repeat("x ", 200)+"\r\n\r\n", 1),
		"long leading line":          strings.Repeat("y", 500) + "\r\n" + armored,
		"long BEGIN line":            "-----BEGIN " + strings.Repeat("Z", 120) + "-----\r\n\r\nAAAA\r\n" + armored,
		"nothing":                    "no armor here\r\n",
		"empty":                      "",
		"short checksum-like":        strings.Replace(armored, lines[10], "=AAA", 1),
		"text after the padded":      strings.Replace(armored, lines[len(lines)-3], lines[len(lines)-3]+"\r\nAAAA", 1),
		"full line after the padded": strings.Replace(armored, lines[len(lines)-3], lines[len(lines)-3]+"\r\n"+lines[10], 1),
		"short line, then full ones": strings.Replace(armored, lines[10], lines[10][:63], 1),
		"split line, then full ones": strings.Replace(armored, lines[10], lines[10][:30]+"\r\n"+lines[10][30:], 1),
		"bad character at the end":   strings.Replace(armored, lines[10], lines[10][:63]+"-", 1),
		"blank inside a full line":   strings.Replace(armored, lines[10], lines[10][:20]+" "+lines[10][21:], 1),
		"leading blank, full line":   strings.Replace(armored, lines[10], " "+lines[10][1:], 1),
		"CR CR LF":                   strings.Replace(armored, lines[10]+"\r\n", lines[10]+"\r\r\n", 1),
		"CR alone after a line":      strings.Replace(armored, lines[10]+"\r\n", lines[10]+"\r"+lines[11][:4]+"\r\n", 1),
		"line of 65":                 strings.Replace(armored, lines[10], lines[10]+"A", 1),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) { checkAgrees(t, []byte(in)) })
	}
}

// FuzzDecode runs the decoder, which parses outside input, against
// go-crypto's on arbitrary input: it must not fail differently, read other
// data, or crash.
func FuzzDecode(f *testing.F) {
	var b bytes.Buffer
	w, _ := EncodeCRLF(&b, "PGP MESSAGE", map[string]string{"Version": "1"})
	w.Write(bytes.Repeat([]byte("sealed package "), 20))
	w.Close()
	f.Add(b.Bytes())
	f.Add([]byte("-----BEGIN PGP MESSAGE-----\n\nQQ==\n=AAAA\n-----END PGP MESSAGE-----\n"))
	f.Add([]byte("junk\n-----BEGIN X-----\nA: b\n\nQUJD\nRA==\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		checkAgrees(t, in)
	})
}

func BenchmarkDecode1MiB(b *testing.B) {
	data := make([]byte, 1<<20)
	var buf bytes.Buffer
	w, _ := EncodeCRLF(&buf, "PGP MESSAGE", nil)
	w.Write(data)
	w.Close()
	armored := buf.Bytes()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		blk, err := Decode(bytes.NewReader(armored))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, blk.Body)
	}
}
