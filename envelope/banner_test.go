package envelope

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
)

func bannerLabel() Label {
	return Label{Classification: OfficialSensitive, Descriptor: "PERSONAL",
		Grading: Grading{Scheme: Scheme5x5x5, Source: "B", Intelligence: "2", Handling: "5"},
		Basis:   BasisAssessment, Subjects: []DataSubject{"suspected"}, Purpose: "corruption-prison", Sanitised: true,
		Originator: "northshire-pio", Reference: "NP-2026-0001", Created: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
}

func TestBannerSaysTheLabelInWords(t *testing.T) {
	l := bannerLabel()
	b := l.Banner("cdt-abc", "northshire-pio")
	for _, want := range []string{"OFFICIAL-SENSITIVE PERSONAL", "cdt-abc", "From northshire-pio, reference NP-2026-0001",
		"source B (mostly reliable)", "intelligence 2 (known personally to the source but not to the officer)",
		"Handling 5: no further dissemination", "an assessment, not established fact",
		"What to do:", "refer any request to the originator, northshire-pio"} {
		if !strings.Contains(b, want) {
			t.Errorf("banner lacks %q:\n%s", want, b)
		}
	}
}

// The banner becomes the first part; the message's header stays on top and
// its content, whatever its type, is the second part unchanged.
func TestWithBannerKeepsTheMessage(t *testing.T) {
	for _, tc := range []struct{ name, msg, body string }{
		{"plain", "From: a@x.example\r\nSubject: [OFFICIAL] hello\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nline one\r\nline two\r\n", "line one\r\nline two\r\n"},
		{"no content type", "From: a@x.example\r\nSubject: s\r\n\r\nbare body", "bare body"},
		{"quoted-printable", "From: a@x.example\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n", "café\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := WithBanner([]byte(tc.msg), "BANNER TEXT\r\n")
			if err != nil {
				t.Fatal(err)
			}
			e, err := message.Read(bytes.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			if e.Header.Get("From") != "a@x.example" || e.Header.Get("Subject") == "" {
				t.Errorf("top header lost: %q", out)
			}
			mr := e.MultipartReader()
			if mr == nil {
				t.Fatalf("not multipart: %q", out)
			}
			var parts []string
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(p.Body)
				parts = append(parts, string(b))
			}
			if len(parts) != 2 || parts[0] != "BANNER TEXT\r\n" || parts[1] != tc.body {
				t.Errorf("parts %q", parts)
			}
		})
	}
}

func FuzzWithBanner(f *testing.F) {
	f.Add([]byte("From: a@x.example\r\nContent-Type: text/plain\r\n\r\nbody\r\n"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		out, err := WithBanner(msg, "B\r\n")
		if err != nil {
			return
		}
		if !bytes.Contains(out, []byte("\r\n\r\nB\r\n")) {
			t.Fatalf("no banner in %q", out)
		}
	})
}
