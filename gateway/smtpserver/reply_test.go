package smtpserver

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestStrictCRLFRefusesBareLineEndings(t *testing.T) {
	tests := []struct {
		in  string
		bad bool
	}{
		{"a\r\nb\r\n", false},
		{"", false},
		{"a\nb\r\n", true},          // bare LF
		{"a\r\nb\rc\r\n", true},     // bare CR
		{"a\r\n.\nb\r\n", true},     // the LF-dot-LF smuggling form
		{"a\r\n\r.\r\nb\r\n", true}, // CR-dot-CR
		{"a\r", true},               // CR at the end
	}
	for _, tt := range tests {
		// One byte at a time, so state carries across reads.
		out, err := io.ReadAll(&StrictCRLF{R: iotestOneByte(strings.NewReader(tt.in))})
		if gotBad := errors.Is(err, errBareLineEnding); gotBad != tt.bad {
			t.Errorf("%q: err = %v, want bad=%v", tt.in, err, tt.bad)
		}
		if !tt.bad && string(out) != tt.in {
			t.Errorf("%q: passed through as %q", tt.in, out)
		}
	}
	if DataErr(errBareLineEnding).Code != 554 || DataErr(smtp.ErrDataTooLarge).Code != 552 {
		t.Error("data errors map to the wrong replies")
	}
}

type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func iotestOneByte(r io.Reader) io.Reader { return oneByte{r} }

func FuzzStrictCRLF(f *testing.F) {
	f.Add([]byte("a\r\nb\r\n"))
	f.Add([]byte("a\n.\nb"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := io.ReadAll(&StrictCRLF{R: bytes.NewReader(in)})
		clean := !bytes.Contains(bytes.ReplaceAll(in, []byte("\r\n"), nil), []byte("\n")) &&
			!bytes.Contains(bytes.ReplaceAll(in, []byte("\r\n"), nil), []byte("\r"))
		if clean != (err == nil) {
			t.Fatalf("%q: err = %v, clean = %v", in, err, clean)
		}
		if err == nil && !bytes.Equal(out, in) {
			t.Fatalf("%q changed to %q", in, out)
		}
	})
}
