package envelope

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/keys"
)

const plainOuter = "From: pio@met.example\r\nTo: intel@northgate.example\r\nSubject: ...\r\nMIME-Version: 1.0\r\n" +
	"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"o\"\r\n\r\n" +
	"--o\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--o\r\nContent-Type: application/octet-stream\r\n\r\n"

// plainEnvelope is a standard PGP/MIME message (RFC 3156 section 6.2) of
// entity, signed by signer (nil: unsigned) and encrypted to the receiver.
func plainEnvelope(t *testing.T, pr pair, entity string, signer *keys.Identity) []byte {
	t.Helper()
	return rearmor(t, []byte(plainOuter), encryptAs(t, pr, []byte(entity), signer), []byte("\r\n--o--\r\n"))
}

func plainEntity(headers string) string {
	return "Content-Type: text/plain; charset=utf-8\r\n" + headers + "\r\n" + secretBody + "\r\n"
}

func TestOpenPlainPGPMIME(t *testing.T) {
	pr := newPair(t, keys.ProfileRFC4880)
	date := time.Now().Add(-time.Minute).Format(time.RFC1123Z)
	full, other := testLabel("met-pio"), testLabel("pas")
	subjectMarking := func(s string) (Label, bool, error) {
		if strings.HasPrefix(s, "[OFFICIAL-SENSITIVE]") {
			return Label{Classification: OfficialSensitive}, true, nil
		}
		return Label{}, false, nil
	}
	tests := []struct {
		name, headers string
		signer        *keys.Identity
		want          error
		class         Classification
		complete      bool
	}{
		{"full label inside", "Subject: Visits\r\nDate: " + date + "\r\nMessage-ID: <p1@met.example>\r\nHandling-Label: " + full.Canonical() + "\r\n", pr.sender, nil, OfficialSensitive, true},
		{"subject marking only", "Subject: [OFFICIAL-SENSITIVE] Visits\r\nDate: " + date + "\r\n", pr.sender, nil, OfficialSensitive, false},
		{"no marking", "Subject: Visits\r\nDate: " + date + "\r\n", pr.sender, ErrLabelInvalid, "", false},
		{"unsigned", "Subject: [OFFICIAL-SENSITIVE] Visits\r\n", nil, ErrNotSigned, "", false},
		{"signed by another key", "Subject: [OFFICIAL-SENSITIVE] Visits\r\n", identity(t, "impostor", keys.ProfileRFC4880), ErrSignerNotPinned, "", false},
		{"label names another originator", "Handling-Label: " + other.Canonical() + "\r\n", pr.sender, ErrSignerNotPinned, "", false},
		{"old", "Subject: [OFFICIAL-SENSITIVE] Visits\r\nDate: Mon, 02 Jan 2006 15:04:05 +0000\r\n", pr.sender, ErrOutsideWindow, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			o, err := OpenPlain(context.Background(), &out, bytes.NewReader(plainEnvelope(t, pr, plainEntity(tt.headers), tt.signer)),
				OpenParams{Identity: pr.receiver, Partners: pr.partners, SubjectMarking: subjectMarking})
			if tt.want != nil {
				if !errors.Is(err, tt.want) || out.Len() != 0 {
					t.Fatalf("err %v (%d bytes out), want %v", err, out.Len(), tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.Signer.Agency != "met-pio" || o.Label.Classification != tt.class || (o.Label.Validate() == nil) != tt.complete || !o.Plain ||
				o.Manifest.From != "met-pio" || o.Manifest.To[0] != "hmp-northgate" {
				t.Errorf("opened %+v", o)
			}
			if !strings.Contains(out.String(), VerifiedHeader+": signer=met-pio") || !strings.Contains(out.String(), secretBody) {
				t.Errorf("opened message:\n%s", out.String())
			}
		})
	}
}

// Replay is judged on signed values: the signed Message-ID, or, without
// one, the signed payload itself.
func TestOpenPlainRefusesReplay(t *testing.T) {
	pr := newPair(t, keys.ProfileRFC4880)
	date := time.Now().Add(-time.Minute).Format(time.RFC1123Z)
	for _, headers := range []string{
		"Subject: [OFFICIAL-SENSITIVE] x\r\nDate: " + date + "\r\nMessage-ID: <r1@met.example>\r\n",
		"Subject: [OFFICIAL-SENSITIVE] x\r\nDate: " + date + "\r\n",
	} {
		env := plainEnvelope(t, pr, plainEntity(headers), pr.sender)
		replay := &memReplay{}
		p := OpenParams{Identity: pr.receiver, Partners: pr.partners, Replay: replay,
			SubjectMarking: func(string) (Label, bool, error) { return Label{Classification: OfficialSensitive}, true, nil }}
		var out bytes.Buffer
		if _, err := OpenPlain(context.Background(), &out, bytes.NewReader(env), p); err != nil {
			t.Fatal(err)
		}
		out.Reset()
		if _, err := OpenPlain(context.Background(), &out, bytes.NewReader(env), p); !errors.Is(err, ErrReplay) || out.Len() != 0 {
			t.Errorf("%q: second open: %v", headers, err)
		}
	}
}

// Seal for a partner without Conduit: no manifest part, the label in the
// protected headers.
func TestSealPlainHasNoManifest(t *testing.T) {
	pr := newPair(t, keys.ProfileRFC4880)
	sealed := seal(t, pr, sampleMessage(), func(p *SealParams) { p.Plain = true })
	_, bin, _ := splitArmor(t, sealed)
	payload := string(innerPayload(t, pr, bin))
	if strings.Contains(payload, ManifestType) || strings.Contains(payload, "conduit-manifest.json") {
		t.Errorf("manifest part sealed for a plain partner:\n%s", payload)
	}
	for _, want := range []string{LabelHeader + ": v=1;", "Subject: [OFFICIAL-SENSITIVE PERSONAL] Visits intelligence", `hp="cipher"`, secretBody} {
		if !strings.Contains(payload, want) {
			t.Errorf("payload lacks %q", want)
		}
	}
}
