package submission

import (
	"bufio"
	"errors"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
)

// Intake reads the markings agencies' own tools write: a Purview label
// through the configured table, a subject marking through the configured
// legacy table; what they cannot carry is asked for in the refusal.
func TestIntakeReadsPurviewAndSubjectMarkings(t *testing.T) {
	g := testServer(t)
	const guid = "3c9e4a1b-7f0d-4c2a-9b1e-5d6f7a8b9c0d"
	g.cfg.PurviewLabels = []config.PurviewLabel{{GUID: guid, Name: "OFFICIAL-SENSITIVE PERSONAL", Classification: envelope.OfficialSensitive, Descriptor: "PERSONAL"}}
	g.cfg.LegacyMarkings = map[string]envelope.Classification{"PROTECT": envelope.OfficialSensitive}
	const rest = "Handling-Label: v=1; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; subjects=suspected; purpose=corruption-prison; sanitised=yes; reference=NP-1\r\n"
	purview := "msip_labels: MSIP_Label_" + guid + "_Enabled=true; MSIP_Label_" + guid + "_Name=OFFICIAL-SENSITIVE PERSONAL;\r\n MSIP_Label_" + guid + "_SiteId=9f8e7d6c-5b4a-4392-8170-fedcba987654\r\n"
	tests := []struct {
		name, hdr string
		class     envelope.Classification
		desc      string
		refusal   []string
	}{
		{"purview label and the rest of the label", purview + rest + "Subject: Conveyance\r\n", envelope.OfficialSensitive, "PERSONAL", nil},
		{"subject marking with a descriptor", "Subject: OFFICIAL-SENSITIVE PERSONAL: Conveyance\r\n" + rest, envelope.OfficialSensitive, "PERSONAL", nil},
		{"purview label alone", purview + "Subject: Conveyance\r\n", "", "", []string{
			`the sensitivity label "OFFICIAL-SENSITIVE PERSONAL" marks it OFFICIAL-SENSITIVE PERSONAL`, "the intelligence grading", "Handling-Label: v=1; classification=OFFICIAL-SENSITIVE; descriptor=PERSONAL"}},
		{"subject marking alone", "Subject: [OFFICIAL] Conveyance\r\n", "", "", []string{"the subject line marks it OFFICIAL", "why it is shared (purpose)"}},
		{"legacy marking outside the configured table", "Subject: [RESTRICTED] Conveyance\r\n" + rest, "", "", []string{"marked RESTRICTED"}},
		{"purview and subject disagree", purview + rest + "Subject: [OFFICIAL] Conveyance\r\n", "", "", []string{"two different markings"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(tt.hdr + "\r\n")))
			if err != nil {
				t.Fatal(err)
			}
			m, err := g.manifestFromHeader(h, []string{"intel@northgate.hmpps.example"})
			if tt.refusal == nil {
				if err != nil || m.Label.Classification != tt.class || m.Label.Descriptor != tt.desc || m.Label.Validate() != nil {
					t.Fatalf("manifest %+v, %v", m, err)
				}
				return
			}
			var se *smtp.SMTPError
			if !errors.As(err, &se) || se.Code != 554 || se.EnhancedCode != (smtp.EnhancedCode{5, 6, 0}) {
				t.Fatalf("want a 554 5.6.0, got %v", err)
			}
			for _, want := range tt.refusal {
				if !strings.Contains(se.Message, want) {
					t.Errorf("refusal lacks %q:\n%s", want, se.Message)
				}
			}
		})
	}
}
