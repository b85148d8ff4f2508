package envelope

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"
)

// partsRead is what a multipart reader made of an input: each part's
// header fields and body, and the error that ended it all.
type partsRead struct {
	parts []string
	err   string
}

// readParts reads every part through next, each body with reads of size
// bytes.
func readParts(next func() (textproto.Header, io.Reader, error), size int) partsRead {
	var got partsRead
	buf := make([]byte, size)
	for range 50 {
		h, body, err := next()
		if err != nil {
			got.err = fmt.Sprint(err)
			return got
		}
		var b strings.Builder
		for f := h.Fields(); f.Next(); {
			raw, _ := f.Raw()
			b.Write(raw)
		}
		b.WriteString("|")
		for {
			n, err := body.Read(buf)
			b.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				b.WriteString("|err " + err.Error())
				break
			}
		}
		got.parts = append(got.parts, b.String())
	}
	got.err = "more than 50 parts"
	return got
}

// nextPart adapts a multipart reader's NextPart to readParts.
func nextPart[P io.Reader](next func() (P, error), header func(P) textproto.Header) func() (textproto.Header, io.Reader, error) {
	return func() (textproto.Header, io.Reader, error) {
		p, err := next()
		if err != nil {
			return textproto.Header{}, nil, err
		}
		return header(p), p, nil
	}
}

func goMessageParts(in []byte, boundary string, size int) partsRead {
	mr := textproto.NewMultipartReader(bufio.NewReader(bytes.NewReader(in)), boundary)
	return readParts(nextPart(mr.NextPart, func(p *textproto.Part) textproto.Header { return p.Header }), size)
}

func ourParts(in []byte, boundary string, size, bufSize int) partsRead {
	mr := newMultipartReader(bufio.NewReaderSize(&stickyReader{r: bytes.NewReader(in)}, bufSize), boundary)
	return readParts(nextPart(mr.NextPart, func(p *mimePart) textproto.Header { return p.Header }), size)
}

// checkPartsAgree requires our reader to read in what go-message's does,
// with read sizes and buffer sizes that move where the windows fall.
func checkPartsAgree(t *testing.T, in []byte, boundary string) {
	t.Helper()
	for _, size := range []int{1, 7, 512, 64 << 10} {
		want := goMessageParts(in, boundary, size)
		for _, bufSize := range []int{lineMax, 16 << 10} {
			got := ourParts(in, boundary, size, bufSize)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("boundary %q, reads of %d, buffer %d, input %q:\nours:       %q\ngo-message: %q", boundary, size, bufSize, in, got, want)
			}
		}
	}
}

func TestMultipartReaderAgreesWithGoMessage(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	armored := func(n int) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			b.WriteString(strings.Repeat(string(rune('A'+i%26)), 64) + "\r\n")
		}
		return b.String()
	}
	const bd = "conduit-cdt-abc"
	envelope := "preamble\r\n--" + bd + "\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--" + bd +
		"\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\n" + armored(300) +
		"-----END PGP MESSAGE-----\r\n\r\n--" + bd + "--\r\nepilogue\r\n"
	cases := map[string]string{
		"envelope":                  envelope,
		"LF only":                   strings.ReplaceAll(envelope, "\r\n", "\n"),
		"no close delimiter":        strings.Replace(envelope, "--"+bd+"--", "", 1),
		"close delimiter, no CRLF":  strings.TrimSuffix(envelope, "\r\nepilogue\r\n"),
		"cut in the body":           envelope[:len(envelope)/2],
		"cut in a delimiter":        envelope[:strings.LastIndex(envelope, bd)+3],
		"delimiter with blanks":     strings.Replace(envelope, "--"+bd+"\r\nContent-Type: application/octet", "--"+bd+" \t\r\nContent-Type: application/octet", 1),
		"delimiter, LF inside CRLF": strings.Replace(envelope, "\r\n-----END", "\n--"+bd+"\n-----END", 1),
		"boundary-like line":        strings.Replace(envelope, "\r\n-----END", "\r\n--"+bd+"x\r\n-----END", 1),
		"dashes everywhere":         strings.ReplaceAll(envelope, "A", "-"),
		"empty part":                strings.Replace(envelope, "Version: 1\r\n", "", 1),
		"part without header":       "--" + bd + "\r\n\r\nbody\r\n--" + bd + "--\r\n",
		"body at the delimiter":     "--" + bd + "\r\n\r\n--" + bd + "\r\n\r\nx\r\n--" + bd + "--",
		"bad line after a part":     strings.Replace(envelope, "\r\n--"+bd+"--", "\r\n\r\nstray\r\n--"+bd+"--", 1),
		"long preamble line":        strings.Repeat("p", lineMax+10) + "\r\n" + envelope,
		"preamble line of lineMax":  strings.Repeat("p", lineMax-2) + "\r\n" + envelope,
		"preamble line, lineMax+1":  strings.Repeat("p", lineMax-1) + "\r\n" + envelope,
		"long header line":          strings.Replace(envelope, "Content-Type: application/pgp-encrypted", "X-Long: "+strings.Repeat("h", 20000)+"\r\nContent-Type: application/pgp-encrypted", 1),
		"nothing":                   "",
		"no delimiter":              "just text\r\n",
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) { checkPartsAgree(t, []byte(in), bd) })
	}
	t.Run("random", func(t *testing.T) {
		for range 300 {
			in := []byte(envelope)
			for range 1 + rng.IntN(4) {
				i := rng.IntN(len(in))
				switch rng.IntN(3) {
				case 0:
					in[i] = "-\r\n \tAz"[rng.IntN(7)]
				case 1:
					in = in[:i]
				case 2:
					in = append(in[:i:i], append([]byte("\r\n--"+bd), in[i:]...)...)
				}
			}
			checkPartsAgree(t, in, bd)
		}
	})
	t.Run("empty boundary", func(t *testing.T) { checkPartsAgree(t, []byte("--\r\n\r\nx\r\n----\r\n"), "") })
}

// FuzzMultipartReader runs the multipart reader, which parses outside
// input (the envelope as received, and the payload a partner signed),
// against go-message's on arbitrary input.
func FuzzMultipartReader(f *testing.F) {
	f.Add([]byte("pre\r\n--b\r\nA: 1\r\n\r\nbody\r\n--b\r\n\r\nmore\r\n--b--\r\n"), "b")
	f.Add([]byte("--b\n\n-----BEGIN X-----\nQUJD\n--b-\n--b--"), "b")
	f.Add([]byte("--xy \r\n\r\n--xy\r\n\r\n\r\n--xy--"), "xy")
	f.Fuzz(func(t *testing.T, in []byte, boundary string) {
		if len(boundary) > 100 {
			return
		}
		checkPartsAgree(t, in, boundary)
	})
}
