package envelope

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// designExample is the label of docs/design.md ("The handling label"), folded
// over several lines as a mail header would carry it.
const designExample = "v=1; classification=OFFICIAL-SENSITIVE; descriptor=PERSONAL; caveat=\"UK EYES ONLY\";\r\n" +
	" grading=5x5x5; source=B; intelligence=2; handling=2; authorisation=PAS-2026-0042; basis=assessment;\r\n" +
	" subjects=\"suspected,witness\"; purpose=crime; sanitised=yes; originator=met-pio;\r\n" +
	" reference=MET-2026-000123; created=2026-11-23T10:00:00Z"

const designCanonical = `v=1; classification=OFFICIAL-SENSITIVE; descriptor=PERSONAL; caveat="UK EYES ONLY"; grading=5x5x5; source=B; intelligence=2; handling=2; authorisation=PAS-2026-0042; basis=assessment; subjects="suspected,witness"; purpose=crime; sanitised=yes; originator=met-pio; reference=MET-2026-000123; created="2026-11-23T10:00:00Z"`

func TestLabelCanonicalFormIsByteStable(t *testing.T) {
	l, err := ParseLabel(designExample)
	tcheck(t, err, "parse docs/design.md example")
	if got := l.Canonical(); got != designCanonical {
		t.Fatalf("canonical:\n got %s\nwant %s", got, designCanonical)
	}
	again, err := ParseLabel(l.Canonical())
	tcheck(t, err, "re-parse canonical")
	if again.Canonical() != designCanonical {
		t.Fatal("canonical form does not re-parse to itself")
	}
	// Data-subject order is canonical, so two spellings are one label.
	swapped, err := ParseLabel(strings.Replace(designCanonical, `"suspected,witness"`, `"witness, suspected"`, 1))
	tcheck(t, err, "parse swapped subjects")
	if !swapped.Equal(&l) {
		t.Fatal("subject order changed the label")
	}
}

func TestLabelErrorsNameTheField(t *testing.T) {
	base := strings.TrimSuffix(designCanonical, `; created="2026-11-23T10:00:00Z"`)
	tests := []struct {
		name, label, field, mention string
	}{
		{"unknown classification", strings.Replace(base, "OFFICIAL-SENSITIVE", "HUSH-HUSH", 1), "classification", "OFFICIAL-SENSITIVE"},
		{"descriptor on OFFICIAL", strings.Replace(base, "classification=OFFICIAL-SENSITIVE", "classification=OFFICIAL", 1), "descriptor", "OFFICIAL-SENSITIVE"},
		{"unknown caveat", strings.Replace(base, "UK EYES ONLY", "FIVE EYES", 1), "caveat", "UK EYES ONLY"},
		{"unknown scheme", strings.Replace(base, "grading=5x5x5", "grading=4x4x4", 1), "grading", "3x5x2"},
		{"5x5x5 source is a letter", strings.Replace(base, "source=B", "source=1", 1), "source", "mostly reliable"},
		{"5x5x5 intelligence is a number", strings.Replace(base, "intelligence=2", "intelligence=B", 1), "intelligence", "cannot be judged"},
		{"5x5x5 handling 6", strings.Replace(base, "handling=2", "handling=6", 1), "handling", "originating agency only"},
		{"missing basis", strings.Replace(base, "basis=assessment; ", "", 1), "basis", "assessment"},
		{"unknown basis", strings.Replace(base, "basis=assessment", "basis=rumour", 1), "basis", "fact"},
		{"missing subjects", strings.Replace(base, `subjects="suspected,witness"; `, "", 1), "subjects", "convicted"},
		{"unknown subject", strings.Replace(base, "suspected,witness", "suspected,bystander", 1), "subjects", "victim"},
		{"subject twice", strings.Replace(base, "suspected,witness", "witness,witness", 1), "subjects", "twice"},
		{"unapproved purpose", strings.Replace(base, "purpose=crime", "purpose=curiosity", 1), "purpose", "prison-security"},
		{"missing purpose", strings.Replace(base, "purpose=crime; ", "", 1), "purpose", "risk-management"},
		{"sanitised maybe", strings.Replace(base, "sanitised=yes", "sanitised=maybe", 1), "sanitised", "yes, no"},
		{"bad originator", strings.Replace(base, "originator=met-pio", "originator=Met_PIO", 1), "originator", "agency id"},
		{"missing reference", strings.Replace(base, "; reference=MET-2026-000123", "", 1), "reference", "required"},
		{"missing created", base, "created", "RFC 3339"},
		{"bad created", base + "; created=yesterday", "created", "RFC 3339"},
		{"fractional created", base + `; created="2026-11-23T10:00:00.5Z"`, "created", "whole seconds"},
		{"review before created", base + `; created="2026-11-23T10:00:00Z"; review=2026-01-01`, "review", "after"},
		{"unknown field", base + "; colour=red", "colour", "not a label field"},
		{"field twice", base + "; purpose=crime", "purpose", "twice"},
		{"version not first", strings.Replace(base, "v=1; ", "", 1) + "; v=1", "v", "first"},
		{"version 2", strings.Replace(base, "v=1", "v=2", 1), "v", "supported"},
		{"conditions under 5x5x5", base + `; conditions="court only"`, "conditions", "3x5x2"},
		{"unterminated quote", `v=1; caveat="UK EYES ONLY`, "label", "unterminated"},
		{"missing equals", `v=1; classification`, "label", "expected '='"},
		{"unquoted list", strings.Replace(base, `subjects="suspected,witness"`, "subjects=suspected,witness", 1), "label", `must be quoted: subjects="suspected,witness"`},
		{"empty", ``, "label", "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseLabel(tt.label)
			var le *LabelError
			if !errors.As(err, &le) {
				t.Fatalf("err = %v, want *LabelError", err)
			}
			if le.Field != tt.field {
				t.Errorf("field = %q, want %q (%v)", le.Field, tt.field, err)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error %q does not mention %q", err, tt.mention)
			}
		})
	}
}

func TestLabel3x5x2(t *testing.T) {
	l, err := ParseLabel(`v=1; classification=OFFICIAL; grading=3x5x2; source=2; intelligence=c; handling=C; conditions="Not for use in court without consent"; basis=fact; subjects=other; purpose=risk-management; sanitised=no; originator=hmp-northgate; reference="NG/77"; created=2026-11-23T10:00:00Z`)
	tcheck(t, err, "parse 3x5x2")
	if !strings.Contains(l.Canonical(), `reference="NG/77"`) {
		t.Errorf("a reference with a tspecial must be quoted (RFC 2045 5.1): %s", l.Canonical())
	}
	if l.Grading.Intelligence != "C" || l.Grading.Scheme.Meaning("handling", "C") != "lawful sharing permitted subject to conditions" {
		t.Errorf("grading = %+v", l.Grading)
	}
	// The letters and numbers swap roles: 5x5x5 codes are refused here.
	_, err = ParseLabel(strings.Replace(l.Canonical(), "source=2", "source=B", 1))
	var le *LabelError
	if !errors.As(err, &le) || le.Field != "source" || !strings.Contains(err.Error(), "1 (reliable)") {
		t.Errorf("5x5x5 source under 3x5x2: %v", err)
	}
}

func TestLegacyMarkingsMapUpwardsAndNeverGuess(t *testing.T) {
	tests := []struct {
		in   string
		want Classification
	}{
		{"NOT PROTECTIVELY MARKED", Official},
		{"PROTECT", OfficialSensitive},
		{"restricted", OfficialSensitive},
		{"CONFIDENTIAL", Secret},
		{"OFFICIAL SENSITIVE", OfficialSensitive},
		{"official-sensitive", OfficialSensitive},
	}
	for _, tt := range tests {
		got, err := DefaultLegacyMarkings.Map(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("Map(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if _, err := DefaultLegacyMarkings.Map("IN CONFIDENCE"); err == nil {
		t.Error("an unknown marking was guessed")
	}
	// An administrator's table replaces the default.
	custom := LegacyMarkings{"RESTRICTED": Official}
	l, err := ParseLabelWith(strings.Replace(designCanonical, "classification=OFFICIAL-SENSITIVE; descriptor=PERSONAL", "classification=RESTRICTED", 1), custom)
	tcheck(t, err, "custom table")
	if l.Classification != Official {
		t.Errorf("custom mapping gave %s", l.Classification)
	}
	if _, err := ParseLabelWith(strings.Replace(designCanonical, "classification=OFFICIAL-SENSITIVE", "classification=PROTECT", 1), custom); err == nil {
		t.Error("a marking absent from the administrator's table was accepted")
	}
}

func TestLabelYAMLAndJSONForms(t *testing.T) {
	src := `classification: OFFICIAL-SENSITIVE
grading: 5x5x5
source: B
intelligence: 2
handling: 2
authorisation: PAS-2026-0042
basis: assessment
subjects: [suspected]
purpose: corruption-prison
sanitised: true
originator: met-pio
reference: MET-2026-000123
created: 2026-11-23T10:00:00Z
`
	var l Label
	tcheck(t, yaml.Unmarshal([]byte(src), &l), "yaml")
	tcheck(t, l.Validate(), "validate")
	out, err := yaml.Marshal(l)
	tcheck(t, err, "marshal yaml")
	var back Label
	tcheck(t, yaml.Unmarshal(out, &back), "re-read yaml")
	if !back.Equal(&l) {
		t.Errorf("YAML round trip:\n%s\n%s", l.Canonical(), back.Canonical())
	}
	j, err := json.Marshal(l)
	tcheck(t, err, "json")
	var fromJSON Label
	tcheck(t, json.Unmarshal(j, &fromJSON), "json back")
	if !fromJSON.Equal(&l) {
		t.Error("JSON round trip changed the label")
	}
	var bad Label
	err = yaml.Unmarshal([]byte("classification: OFFICIAL\ncolour: red\n"), &bad)
	if err == nil || !strings.Contains(err.Error(), "colour") {
		t.Errorf("unknown YAML field: %v", err)
	}
}

func TestManifestErrorsQuoteTheLine(t *testing.T) {
	src := "from: met-pio\nto: [hmp-northgate]\nlabel: {classification: OFFICIAL}\nsubjects: [{role: governor}]\n"
	_, err := ParseManifest(strings.NewReader(src))
	if err == nil || !strings.Contains(err.Error(), `subjects[0].role`) || !strings.Contains(err.Error(), "4 | subjects: [{role: governor}]") {
		t.Fatalf("err = %v", err)
	}
	_, err = ParseManifest(strings.NewReader("from: met-pio\nto: [x]\nrisk: [boredom]\n"))
	if err == nil || !strings.Contains(err.Error(), "threat-to-life") {
		t.Fatalf("risk err = %v", err)
	}
}
