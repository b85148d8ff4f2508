package marking

import (
	"errors"
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/envelope"
)

func TestSubjectMarkingsAsStaffTypeThem(t *testing.T) {
	tests := []struct {
		subject    string
		class      envelope.Classification
		descriptor string
		caveat     string
		marked     string
	}{
		{"[OFFICIAL-SENSITIVE] Conveyance on wing C", envelope.OfficialSensitive, "", "", ""},
		{"[OFFICIAL-SENSITIVE PERSONAL] Conveyance on wing C", envelope.OfficialSensitive, "PERSONAL", "", ""},
		{"[OFFICIAL SENSITIVE - PERSONAL] Conveyance", envelope.OfficialSensitive, "PERSONAL", "", ""},
		{"OFFICIAL-SENSITIVE: Conveyance on wing C", envelope.OfficialSensitive, "", "", ""},
		{"OFFICIAL-SENSITIVE PERSONAL: Conveyance", envelope.OfficialSensitive, "PERSONAL", "", ""},
		{"OFFICIAL SENSITIVE - LOCSEN - Conveyance", envelope.OfficialSensitive, "LOCSEN", "", ""},
		{"official-sensitive: conveyance", envelope.OfficialSensitive, "", "", ""},
		{"OFFICIAL_SENSITIVE Conveyance", envelope.OfficialSensitive, "", "", ""},
		{"OFFICIAL \u2013 SENSITIVE: Conveyance", envelope.OfficialSensitive, "", "", ""},
		{"OFFICIAL Conveyance on wing C", envelope.Official, "", "", ""},
		{"(OFFICIAL) Conveyance", envelope.Official, "", "", ""},
		{"OFFICIAL-SENSITIVE UK EYES ONLY: Conveyance", envelope.OfficialSensitive, "", "UK EYES ONLY", ""},
		{"[OFFICIAL-SENSITIVE PERSONAL UK EYES ONLY] Conveyance", envelope.OfficialSensitive, "PERSONAL", "UK EYES ONLY", ""},
		{"RE: FW: [OFFICIAL-SENSITIVE] Conveyance", envelope.OfficialSensitive, "", "", ""},
		{"[EXTERNAL] [OFFICIAL-SENSITIVE] Conveyance", envelope.OfficialSensitive, "", "", ""},
		{"Conveyance on wing C [OFFICIAL-SENSITIVE]", envelope.OfficialSensitive, "", "", ""},
		{"Conveyance on wing C - OFFICIAL-SENSITIVE PERSONAL", envelope.OfficialSensitive, "PERSONAL", "", ""},
		{"Conveyance on wing C | OFFICIAL", envelope.Official, "", "", ""},
		{"[OFFICIAL-SENSITIVE] Conveyance [OFFICIAL-SENSITIVE]", envelope.OfficialSensitive, "", "", ""},
		{"OFFICIAL-SENSITIVE", envelope.OfficialSensitive, "", "", ""},
		{"[RESTRICTED] Conveyance", envelope.OfficialSensitive, "", "", "RESTRICTED"},
		{"PROTECT - PERSONAL: Conveyance", envelope.OfficialSensitive, "PERSONAL", "", "PROTECT"},
		{"[SECRET] Conveyance", envelope.Secret, "", "", ""},
		{"TOP SECRET: Conveyance", envelope.TopSecret, "", "", ""},
	}
	for _, tt := range tests {
		m, found, err := FromSubject(tt.subject, nil)
		if err != nil || !found {
			t.Errorf("%q: found %v, %v", tt.subject, found, err)
			continue
		}
		if m.Classification != tt.class || m.Descriptor != tt.descriptor || m.Caveat != tt.caveat || m.Marked != tt.marked {
			t.Errorf("%q = %+v; want %s %q %q marked %q", tt.subject, m, tt.class, tt.descriptor, tt.caveat, tt.marked)
		}
		if m.Source != SubjectSource {
			t.Errorf("%q: source %q", tt.subject, m.Source)
		}
	}
}

func TestSubjectsWithoutAMarking(t *testing.T) {
	for _, s := range []string{
		"", "Conveyance on wing C", "Official visit on Tuesday", "Officially sanctioned visit",
		"Secretary's visit", "Meeting - official", "[EXTERNAL] Conveyance", "Re: the secret ballot",
		"Conveyance (wing C)", "[OFFICIAL-SENSITIVE",
	} {
		if m, found, err := FromSubject(s, nil); found || err != nil {
			t.Errorf("%q read as a marking: %+v, %v", s, m, err)
		}
	}
}

func TestSubjectMarkingErrorsNameTheMarking(t *testing.T) {
	protectOnly := envelope.LegacyMarkings{"PROTECT": envelope.OfficialSensitive}
	tests := []struct {
		subject string
		legacy  envelope.LegacyMarkings
		want    string
	}{
		// The administrator's table replaces the built-in one here too.
		{"[RESTRICTED] Conveyance", protectOnly, "marked RESTRICTED"},
		{"[CONFIDENTIAL] Conveyance", protectOnly, "marked CONFIDENTIAL"},
		{"[OFFICIAL] Conveyance - OFFICIAL-SENSITIVE", nil, "two different markings"},
	}
	for _, tt := range tests {
		_, found, err := FromSubject(tt.subject, tt.legacy)
		var me *Error
		if !found || !errors.As(err, &me) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: found %v, err %v; want %q", tt.subject, found, err, tt.want)
		}
	}
	m, _, err := FromSubject("[PROTECT] Conveyance", protectOnly)
	if err != nil || m.Classification != envelope.OfficialSensitive || m.Marked != "PROTECT" {
		t.Errorf("PROTECT under the replaced table: %+v, %v", m, err)
	}
	m, _, err = FromSubject("[RESTRICTED] Conveyance", envelope.LegacyMarkings{"RESTRICTED": envelope.Official})
	if err != nil || m.Classification != envelope.Official {
		t.Errorf("RESTRICTED under a table mapping it to OFFICIAL: %+v, %v", m, err)
	}
}

// Purview writes its labels as MSIP_Label_<guid>_<Property>=value pairs
// (Microsoft Purview Information Protection, "label metadata in email
// headers"). These headers are written here in that syntax.
const (
	osPersonalGUID = "3c9e4a1b-7f0d-4c2a-9b1e-5d6f7a8b9c0d"
	officialGUID   = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
	tenantGUID     = "9f8e7d6c-5b4a-4392-8170-fedcba987654"
)

func purviewHeader(guid, name, enabled string) string {
	p := "MSIP_Label_" + guid + "_"
	return p + "Enabled=" + enabled + "; " + p + "SetDate=2026-11-23T10:00:00Z; " + p + "Method=Privileged; " +
		p + "Name=" + name + "; " + p + "SiteId=" + tenantGUID + "; " + p + "ActionId=11111111-2222-4333-8444-555555555555; " + p + "ContentBits=0"
}

var table = PurviewTable{
	osPersonalGUID: {GUID: osPersonalGUID, Name: "OFFICIAL-SENSITIVE PERSONAL", Classification: envelope.OfficialSensitive, Descriptor: "PERSONAL"},
	officialGUID:   {GUID: officialGUID, Name: "OFFICIAL", Classification: envelope.Official},
}

func TestPurviewLabelsThroughTheAdministratorsTable(t *testing.T) {
	tests := []struct {
		name   string
		header string
		want   Marking
		found  bool
		err    string
	}{
		{"OS personal", purviewHeader(osPersonalGUID, "OFFICIAL-SENSITIVE PERSONAL", "true"),
			Marking{Classification: envelope.OfficialSensitive, Descriptor: "PERSONAL", Source: `the sensitivity label "OFFICIAL-SENSITIVE PERSONAL"`}, true, ""},
		{"upper-case GUID, folded", strings.ReplaceAll(purviewHeader(strings.ToUpper(officialGUID), "Official", "True"), "; ", ";\r\n "),
			Marking{Classification: envelope.Official, Source: `the sensitivity label "OFFICIAL"`}, true, ""},
		{"renamed in the tenant: the GUID decides", purviewHeader(officialGUID, "OFFICIAL-SENSITIVE", "true"),
			Marking{Classification: envelope.Official, Source: `the sensitivity label "OFFICIAL"`}, true, ""},
		{"a removed label and the one in force", purviewHeader(officialGUID, "OFFICIAL", "false") + "; " + purviewHeader(osPersonalGUID, "OS P", "true"),
			Marking{Classification: envelope.OfficialSensitive, Descriptor: "PERSONAL", Source: `the sensitivity label "OFFICIAL-SENSITIVE PERSONAL"`}, true, ""},
		{"empty", "", Marking{}, false, ""},
		{"no label enabled", purviewHeader(officialGUID, "OFFICIAL", "false"), Marking{}, false, ""},
		{"unknown label", purviewHeader("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "Highly Confidential", "true"), Marking{}, true,
			`the sensitivity label "Highly Confidential" (aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee) is not one this gateway knows`},
		{"two labels", purviewHeader(officialGUID, "OFFICIAL", "true") + ";" + purviewHeader(osPersonalGUID, "OS", "true"), Marking{}, true, "2 sensitivity labels"},
		{"malformed", "MSIP_Label_x", Marking{}, true, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, found, err := FromPurview(tt.header, table)
			if found != tt.found {
				t.Errorf("found %v, want %v (%v)", found, tt.found, err)
			}
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || m != tt.want {
				t.Errorf("= %+v, %v; want %+v", m, err, tt.want)
			}
		})
	}
}

// What a marking cannot carry is asked for field by field, with the
// header to send next time, in a reply a PIO can act on.
func TestRefusalAsksForEachMissingField(t *testing.T) {
	m, _, err := FromSubject("[OFFICIAL-SENSITIVE PERSONAL] Conveyance", nil)
	if err != nil {
		t.Fatal(err)
	}
	var l envelope.Label
	if err := m.Apply(&l); err != nil {
		t.Fatal(err)
	}
	text := Refusal(m, l, false)
	for _, want := range []string{
		"Package refused, nothing was sent: the subject line marks it OFFICIAL-SENSITIVE PERSONAL",
		"1. the intelligence grading",
		"fact or an assessment",
		"data subjects: suspected, convicted, victim, witness or other",
		"why it is shared (purpose)",
		"source and the tactic",
		"your reference",
		"Handling-Label: v=1; classification=OFFICIAL-SENSITIVE; descriptor=PERSONAL; grading=5x5x5;",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("refusal lacks %q:\n%s", want, text)
		}
	}
	// The example header is itself a valid label once filled in.
	for _, line := range strings.Split(text, "\n") {
		if h, ok := strings.CutPrefix(strings.TrimSpace(line), envelope.LabelHeader+": "); ok {
			if _, err := envelope.ParseLabelPartial(h); err != nil {
				t.Errorf("the example header does not parse: %v\n%s", err, h)
			}
		}
	}
	// A field already given is not asked for again.
	l.Purpose, l.Basis = "crime", envelope.BasisFact
	if text := Refusal(m, l, false); strings.Contains(text, "(purpose)") || strings.Contains(text, "fact or an assessment") || !strings.Contains(text, "purpose=crime") {
		t.Errorf("asked again for a field given:\n%s", text)
	}
}

func TestMarkingConflictWithTheHeaderIsRefused(t *testing.T) {
	l := envelope.Label{Classification: envelope.Official}
	m := Marking{Classification: envelope.OfficialSensitive, Source: SubjectSource}
	if err := m.Apply(&l); !errors.Is(err, ErrConflict) {
		t.Errorf("conflicting markings: %v", err)
	}
	l = envelope.Label{Classification: envelope.OfficialSensitive}
	if err := m.Apply(&l); err != nil {
		t.Errorf("agreeing markings: %v", err)
	}
}
