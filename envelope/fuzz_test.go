package envelope

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/keys"
)

// FuzzParseLabel: the label parser takes outside input (submitted mail
// headers, CLI arguments). Whatever it accepts must have a canonical form
// that parses back to the same label.
func FuzzParseLabel(f *testing.F) {
	f.Add(designExample)
	f.Add(designCanonical)
	f.Add(`v=1; classification=OFFICIAL; grading=3x5x2; source=1; intelligence=A; handling=C; conditions="a \"quoted\" \\ text"; basis=fact; subjects=other; purpose=crime; sanitised=no; originator=x; reference=y; created=2026-11-23T10:00:00Z`)
	f.Add(`v=1; classification="TOP SECRET"`)
	f.Add("v=1;\r\n\tclassification=RESTRICTED;")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLabel(s)
		if err != nil {
			var le *LabelError
			if !errors.As(err, &le) {
				t.Fatalf("error is %T, want *LabelError: %v", err, err)
			}
			return
		}
		c := l.Canonical()
		back, err := ParseLabel(c)
		if err != nil {
			t.Fatalf("canonical form %q does not parse: %v", c, err)
		}
		if back.Canonical() != c {
			t.Fatalf("canonical form is not stable:\n%s\n%s", c, back.Canonical())
		}
	})
}

// FuzzParseManifest: package files come from senders.
func FuzzParseManifest(f *testing.F) {
	f.Add("from: met-pio\nto: [hmp-northgate]\nlabel: {classification: OFFICIAL-SENSITIVE, grading: 5x5x5, source: B, intelligence: 2, handling: 2}\nsubjects: [{role: governing-governor, establishment: hmp-northgate}]\nrisk: [escape]\ntopic: corruption\n")
	f.Add("from: a\nto: [b]\nlabel: {subjects: [suspected, suspected]}\n")
	f.Add("{}")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseManifest(strings.NewReader(s))
		if err == nil && (m == nil || m.From == "" || len(m.To) == 0) {
			t.Fatalf("accepted an incomplete manifest: %+v", m)
		}
	})
}

// FuzzOpen: envelopes come from the network. Open must never panic, and
// must never write anything unless every check passed.
func FuzzOpen(f *testing.F) {
	pr := newPair(f, keys.ProfileRFC4880)
	valid := seal(f, pr, sampleMessage(), nil)
	f.Add(valid)
	f.Add(valid[:len(valid)/3])
	f.Add(bytes.Replace(valid, []byte("SIO-Label: marking=\"OFFICIAL-SENSITIVE PERSONAL\""), []byte("SIO-Label: marking=OFFICIAL"), 1))
	f.Add([]byte("Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nwcBMA0\r\n-----END PGP MESSAGE-----\r\n--b--\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		var out bytes.Buffer
		_, err := Open(context.Background(), &out, bytes.NewReader(msg), OpenParams{
			Identity: pr.receiver, Partners: pr.partners, SpoolDir: t.TempDir(),
		})
		if err != nil && out.Len() > 0 {
			t.Fatalf("%d bytes released with error %v", out.Len(), err)
		}
	})
}

// FuzzOpenPlain: standard PGP/MIME from a partner without Conduit comes
// from the network too. OpenPlain must never panic, and must never write
// anything unless every check passed.
func FuzzOpenPlain(f *testing.F) {
	pr := newPair(f, keys.ProfileRFC4880)
	valid := seal(f, pr, sampleMessage(), func(p *SealParams) { p.Plain = true })
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Fuzz(func(t *testing.T, msg []byte) {
		var out bytes.Buffer
		_, err := OpenPlain(context.Background(), &out, bytes.NewReader(msg), OpenParams{
			Identity: pr.receiver, Partners: pr.partners, SpoolDir: t.TempDir(),
			SubjectMarking: func(s string) (Label, bool, error) { return Label{}, false, nil },
		})
		if err != nil && out.Len() > 0 {
			t.Fatalf("%d bytes released with error %v", out.Len(), err)
		}
	})
}
