package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/examples"
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
		out, err := io.ReadAll(&strictCRLF{r: iotestOneByte(strings.NewReader(tt.in))})
		if gotBad := errors.Is(err, errBareLineEnding); gotBad != tt.bad {
			t.Errorf("%q: err = %v, want bad=%v", tt.in, err, tt.bad)
		}
		if !tt.bad && string(out) != tt.in {
			t.Errorf("%q: passed through as %q", tt.in, out)
		}
	}
	if dataErr(errBareLineEnding).Code != 554 || dataErr(smtp.ErrDataTooLarge).Code != 552 {
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

func TestBackoffDoublesWithJitterUpToMax(t *testing.T) {
	min, max := 10*time.Second, 80*time.Second
	for attempts, base := range map[int]time.Duration{1: 10 * time.Second, 2: 20 * time.Second, 3: 40 * time.Second, 4: 80 * time.Second, 9: 80 * time.Second} {
		for i := 0; i < 50; i++ {
			d := backoff(attempts, min, max)
			if d < base*3/4 || d > base*5/4 {
				t.Fatalf("attempt %d: %s outside %s ±25%%", attempts, d, base)
			}
		}
	}
}

func TestMailboxDirCannotEscapeTheMaildir(t *testing.T) {
	for in, want := range map[string]string{
		"Intel@Northgate.example": "intel@northgate.example",
		"../../etc/passwd":        "..%2f..%2fetc%2fpasswd",
		"..":                      "invalid",
		"a b@c":                   "a%20b@c",
	} {
		if got := mailboxDir(in); got != want {
			t.Errorf("mailboxDir(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSubjectHeaderParsing(t *testing.T) {
	s, err := parseSubjectHeader(`role=prisoner; establishment=hmp-northgate; flags="cat-a, e-list"`)
	if err != nil || s.Role != "prisoner" || s.Establishment != "hmp-northgate" || len(s.Flags) != 2 {
		t.Errorf("got %+v, %v", s, err)
	}
	for _, bad := range []string{"establishment=x", "role", "role=x; colour=red"} {
		if _, err := parseSubjectHeader(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// testGateway is a gateway value with the example directory, enough for
// the intake's header parsing (no listeners, keys or store).
func testGateway(t testing.TB) *Gateway {
	t.Helper()
	dir, err := config.LoadDirectory("directory.yaml", examples.Directory)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Agency: "northshire-pio", Directory: dir}
	return &Gateway{cfg: cfg, self: dir.Agency("northshire-pio"), Now: time.Now}
}

func TestManifestFromHeader(t *testing.T) {
	g := testGateway(t)
	// The classification from the subject marking, the rest of the label
	// from a Handling-Label header without one.
	hdr := "Subject: [OFFICIAL-SENSITIVE] x\r\nConduit-Risk: escape, Firearms\r\nConduit-Topic: corruption\r\n" +
		"Handling-Label: v=1; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; subjects=suspected; purpose=corruption-prison; sanitised=yes; reference=NP-1\r\n" +
		"Conduit-Subject: role=governing-governor; establishment=hmp-northgate\r\n\r\n"
	h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	m, err := g.manifestFromHeader(h, []string{"intel@northgate.hmpps.example"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Label.Classification != "OFFICIAL-SENSITIVE" || len(m.Risk) != 2 || m.Risk[1] != "firearms" ||
		m.Topic != "corruption" || len(m.To) != 1 || m.To[0] != "hmp-northgate" || m.Label.Originator != "northshire-pio" {
		t.Errorf("manifest = %+v", m)
	}
	// A wrong header value is a 554 that names it.
	h.Set(hdrRisk, "boredom")
	_, err = g.manifestFromHeader(h, []string{"intel@northgate.hmpps.example"})
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 554 || !strings.Contains(se.Message, "boredom") {
		t.Errorf("bad risk: %v", err)
	}
}

// FuzzIntakeHeaders: a submitted message's header is outside input. The
// intake must answer with a manifest or a 5xx, never panic.
func FuzzIntakeHeaders(f *testing.F) {
	g := testGateway(f)
	f.Add("Subject: OFFICIAL: x\r\nHandling-Label: v=1; classification=OFFICIAL\r\n\r\n")
	f.Add("Conduit-Subject: role=prisoner; flags=cat-a\r\nConduit-Risk: ,,,\r\n\r\n")
	f.Add("Subject: [RESTRICTED\r\n\r\n")
	f.Fuzz(func(t *testing.T, hdr string) {
		h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(hdr)))
		if err != nil {
			return
		}
		m, err := g.manifestFromHeader(h, []string{"intel@northgate.hmpps.example"})
		var se *smtp.SMTPError
		if err != nil && (!errors.As(err, &se) || se.Code < 500) {
			t.Fatalf("error is not a 5xx reply: %v", err)
		}
		if err == nil && m == nil {
			t.Fatal("no manifest and no error")
		}
	})
}

// FuzzStrictCRLF: whatever passes is byte-identical and has no bare line
// ending; whatever has one fails.
func FuzzStrictCRLF(f *testing.F) {
	f.Add([]byte("a\r\nb\r\n"))
	f.Add([]byte("a\n.\nb"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := io.ReadAll(&strictCRLF{r: bytes.NewReader(in)})
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
