package console

import (
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/examples"
)

func TestDecodeDraftRefusesWhatItCannotRead(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"unknown field", `{"title": "x", "colour": "red"}`, `unknown field "colour"`},
		{"wrong type", `{"to": "hmp-northgate"}`, `field "to" must be []string`},
		{"not JSON", `{"to": [}`, "not valid JSON"},
		{"empty", ``, "empty or cut short"},
		{"trailing data", `{} {}`, "data after its JSON object"},
		{"too large", `{"body": "` + strings.Repeat("a", maxDraft) + `"}`, "cut short"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeDraft(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func exampleConfig(t *testing.T) *config.Config {
	t.Helper()
	dir, err := config.LoadDirectory("directory.yaml", examples.Directory)
	if err != nil {
		t.Fatal(err)
	}
	return &config.Config{Agency: "northshire-pio", Directory: dir}
}

func TestDraftProblemsNameTheirField(t *testing.T) {
	cfg := exampleConfig(t)
	good := func() *Draft {
		return &Draft{To: []string{"hmp-northgate"}, Label: DraftLabel{Classification: "OFFICIAL-SENSITIVE", Grading: "5x5x5",
			Source: "B", Intelligence: "2", Handling: "1", Basis: "assessment", Subjects: []string{"suspected"},
			Purpose: "corruption-prison", Sanitised: true, Reference: "REF-1"}}
	}
	for _, tc := range []struct {
		name  string
		edit  func(d *Draft)
		field string
	}{
		{"complete", func(d *Draft) {}, ""},
		{"no recipient", func(d *Draft) { d.To = nil }, "to"},
		{"own agency", func(d *Draft) { d.To = []string{"northshire-pio"} }, "to"},
		{"unknown agency", func(d *Draft) { d.To = []string{"hmp-nowhere"} }, "to"},
		{"3x5x2 code under 5x5x5", func(d *Draft) { d.Label.Source = "1" }, "source5"},
		{"unknown purpose", func(d *Draft) { d.Label.Purpose = "curiosity" }, "purpose"},
		{"unknown data subject", func(d *Draft) { d.Label.Subjects = []string{"bystander"} }, "datasubjects"},
		{"quote in the authorisation", func(d *Draft) { d.Label.Handling = "2"; d.Label.Authorisation = `A"; purpose=crime` }, "authorisation"},
		{"header injection in a subject", func(d *Draft) { d.Subjects = []DraftSubject{{Role: "staff; id=x"}} }, "subject_role_0"},
		{"unknown establishment", func(d *Draft) {
			d.Subjects = []DraftSubject{{Role: "governing-governor", Establishment: "hmp-nowhere"}}
		}, "subject_est_0"},
		{"unknown risk", func(d *Draft) { d.Risk = []string{"weather"} }, "facts"},
		{"post not at the establishment", func(d *Draft) {
			d.Subjects = []DraftSubject{{Role: "staff", Establishment: "hmp-northgate", Post: "chaplain"}}
		}, "subject_post_0"},
		{"post without establishment", func(d *Draft) { d.Subjects = []DraftSubject{{Role: "staff", Post: "lccm"}} }, "subject_post_0"},
		{"two-line title", func(d *Draft) { d.Title = "a\r\nBcc: x" }, "title"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := good()
			tc.edit(d)
			m, probs := d.manifest(cfg, time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
			if tc.field == "" {
				if len(probs) > 0 {
					t.Fatalf("problems with a complete draft: %v", probs)
				}
				if got := m.Label.Canonical(); !strings.Contains(got, "originator=northshire-pio") || !strings.Contains(got, "purpose=corruption-prison") {
					t.Fatalf("label %s", got)
				}
				return
			}
			for _, p := range probs {
				if p.Field == tc.field {
					return
				}
			}
			t.Fatalf("no problem on field %q: %v", tc.field, probs)
		})
	}
}

// FuzzDecodeDraft: whatever a client sends, decoding and building the
// manifest and message return errors, never panic.
func FuzzDecodeDraft(f *testing.F) {
	f.Add(`{"to": ["hmp-northgate"], "label": {"classification": "OFFICIAL", "grading": "5x5x5"}}`)
	f.Add(`{"subjects": [{"role": "governing-governor", "establishment": "hmp-northgate", "flags": ["cat-a"]}], "risk": ["escape"]}`)
	f.Add(`{"label": {"conditions": "\"\\;", "review": "2027-01-01", "caveat": "UK EYES ONLY"}}`)
	f.Add(`{"title": "\u00e9t\u00e9", "body": "x\ny", "uploads": ["a"]}`)
	dir, err := config.LoadDirectory("directory.yaml", examples.Directory)
	if err != nil {
		f.Fatal(err)
	}
	cfg := &config.Config{Agency: "northshire-pio", Directory: dir}
	f.Fuzz(func(t *testing.T, in string) {
		d, err := DecodeDraft(strings.NewReader(in))
		if err != nil {
			return
		}
		m, _ := d.manifest(cfg, time.Now())
		var b strings.Builder
		if err := writeMessage(&b, d, m, "pio@northshire-pio.example", d.recipients(dir), nil, time.Now(), "h"); err != nil {
			t.Fatal(err)
		}
		head, _, _ := strings.Cut(b.String(), "\r\n\r\n")
		for _, line := range strings.Split(head, "\r\n") {
			if strings.ContainsAny(line, "\r\n") {
				t.Fatalf("a header line holds a line break: %q", line)
			}
		}
	})
}

func TestDryRunDifferenceNamesWhatChanges(t *testing.T) {
	before := []string{"decision: deliver", "to ccu-north rcca@x by governor-to-regional-ccu"}
	after := []string{"decision: deliver", "to ccu-north rcca@x by governor-to-regional-ccu", "to pas pas@y by corruption-to-pas"}
	removed, added := difference(before, after)
	if len(removed) != 0 || len(added) != 1 || added[0] != "to pas pas@y by corruption-to-pas" {
		t.Fatalf("removed %v added %v", removed, added)
	}
	removed, added = difference(after, before)
	if len(removed) != 1 || len(added) != 0 {
		t.Fatalf("reversed: removed %v added %v", removed, added)
	}
}
