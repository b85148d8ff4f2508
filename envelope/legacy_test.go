package envelope

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/keys"
)

// The administrator's table replaces the built-in one in every parser
// (DESIGN.md, The handling label: legacy markings are "mapped by a
// configurable table, never guessed"). protectOnly is the table of the
// issue: PROTECT mapped, RESTRICTED not.
var protectOnly = LegacyMarkings{"PROTECT": OfficialSensitive}

const legacyManifest = `from: met-pio
to: [hmp-northgate]
label: {classification: %s, grading: 5x5x5, source: B, intelligence: 2, handling: 1,
        basis: assessment, subjects: [suspected], purpose: crime, sanitised: true,
        originator: met-pio, reference: MET-2026-1, created: 2026-11-23T10:00:00Z}
`

func TestReplacedLegacyTableInEveryParser(t *testing.T) {
	header := func(marking string) string {
		return strings.Replace(designCanonical, "classification=OFFICIAL-SENSITIVE; descriptor=PERSONAL", "classification="+quoteValue(marking), 1)
	}
	parsers := []struct {
		name  string
		parse func(marking string, table LegacyMarkings) (Label, error)
	}{
		{"header", func(mk string, tb LegacyMarkings) (Label, error) { return ParseLabelWith(header(mk), tb) }},
		{"header partial (intake)", func(mk string, tb LegacyMarkings) (Label, error) { return ParseLabelPartialWith(header(mk), tb) }},
		{"manifest", func(mk string, tb LegacyMarkings) (Label, error) {
			m, err := ParseManifestWith(strings.NewReader(strings.Replace(legacyManifest, "%s", mk, 1)), tb)
			if err != nil {
				return Label{}, err
			}
			return m.Label, nil
		}},
	}
	tests := []struct {
		marking string
		table   LegacyMarkings
		want    Classification // "" : refused
		marked  string
	}{
		{"RESTRICTED", protectOnly, "", ""},
		{"PROTECT", protectOnly, OfficialSensitive, "PROTECT"},
		{"protect", protectOnly, OfficialSensitive, "PROTECT"},
		{"RESTRICTED", DefaultLegacyMarkings, OfficialSensitive, "RESTRICTED"},
		{"RESTRICTED", LegacyMarkings{"RESTRICTED": Official}, Official, "RESTRICTED"},
		{"OFFICIAL", protectOnly, Official, ""},
		{"OFFICIAL SENSITIVE", protectOnly, OfficialSensitive, ""},
	}
	for _, p := range parsers {
		for _, tt := range tests {
			l, err := p.parse(tt.marking, tt.table)
			if tt.want == "" {
				var le *LabelError
				if !errors.As(err, &le) || le.Field != "classification" || !strings.Contains(err.Error(), tt.marking) {
					t.Errorf("%s: %s under %v: want a refusal naming it, got %v (%s)", p.name, tt.marking, tt.table, err, l.Classification)
				}
				continue
			}
			if err != nil || l.Classification != tt.want || l.Marked != tt.marked {
				t.Errorf("%s: %s under %v = %q marked %q, %v; want %q marked %q", p.name, tt.marking, tt.table, l.Classification, l.Marked, err, tt.want, tt.marked)
			}
		}
	}
}

// Open reads the inner label with the table it is given: a partner's
// RESTRICTED, mapped by the built-in table, is refused under a table
// without it, and nothing is released.
func TestOpenReadsTheInnerLabelWithTheTableInForce(t *testing.T) {
	pr := newPair(t, keys.ProfileRFC4880)
	sealed := seal(t, pr, sampleMessage(), nil)
	pre, bin, post := splitArmor(t, sealed)
	payload := innerPayload(t, pr, bin)
	i := bytes.Index(payload, []byte("Handling-Label: v=1; classification=OFFICIAL-SENSITIVE"))
	if i < 0 {
		t.Fatal("no Handling-Label in the payload")
	}
	legacy := bytes.Clone(payload)
	legacy = append(legacy[:i:i], bytes.Replace(payload[i:], []byte("classification=OFFICIAL-SENSITIVE;"), []byte("classification=RESTRICTED;"), 1)...)
	env := rearmor(t, pre, encryptAs(t, pr, legacy, pr.sender), post)

	for _, tt := range []struct {
		table LegacyMarkings
		ok    bool
	}{{nil, true}, {DefaultLegacyMarkings, true}, {protectOnly, false}} {
		var out bytes.Buffer
		o, err := Open(context.Background(), &out, bytes.NewReader(env), OpenParams{Identity: pr.receiver, Partners: pr.partners, Legacy: tt.table})
		if !tt.ok {
			if err == nil || !strings.Contains(err.Error(), "RESTRICTED") || out.Len() != 0 {
				t.Errorf("table %v: want a refusal naming RESTRICTED and nothing released, got %v (%d bytes)", tt.table, err, out.Len())
			}
			continue
		}
		if err != nil {
			// The manifest part still carries the canonical label; the
			// header's legacy marking read as the same classification is
			// no disagreement.
			t.Fatalf("table %v: %v", tt.table, err)
		}
		if o.Label.Classification != OfficialSensitive || o.Label.Marked != "RESTRICTED" {
			t.Errorf("table %v: opened label %s marked %q", tt.table, o.Label.Classification, o.Label.Marked)
		}
	}
}
