package config

import (
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/envelope"
)

func TestPurviewLabelTableErrorsNameFileLineAndField(t *testing.T) {
	dir, err := ReadFile("../examples/directory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	read := func(string) ([]byte, error) { return dir, nil }
	const head = "agency: northshire-pio\ndirectory: directory.yaml\npolicy: policy.yaml\npurview-labels:\n"
	tests := []struct {
		entry, want string
	}{
		{"  - {guid: not-a-guid, name: OFFICIAL, classification: OFFICIAL}", "conduit.yaml:5:12: $.purview-labels[0].guid: \"not-a-guid\" is not a label GUID"},
		{"  - {guid: 0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9, name: X, classification: RESTRICTED}", "$.purview-labels[0].classification: \"RESTRICTED\" is not a classification"},
		{"  - {guid: 0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9, name: X, classification: OFFICIAL, descriptor: PERSONAL}", "a descriptor qualifies OFFICIAL-SENSITIVE only"},
		{"  - {guid: 0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9, name: X, classification: OFFICIAL}\n  - {guid: 0B1C2D3E-4F50-4617-8293-A4B5C6D7E8F9, name: Y, classification: OFFICIAL}", "conduit.yaml:6:12: $.purview-labels[1].guid: label 0B1C2D3E-4F50-4617-8293-A4B5C6D7E8F9 is already listed"},
		{"  - {guid: 0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9, classification: OFFICIAL}", "has no name"},
	}
	for _, tt := range tests {
		_, err := Parse("conduit.yaml", []byte(head+tt.entry+"\n"), read)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s:\n got %v\nwant %q", tt.entry, err, tt.want)
		}
	}
	c, err := Parse("conduit.yaml", []byte(head+"  - {guid: 3C9E4A1B-7F0D-4C2A-9B1E-5D6F7A8B9C0D, name: OS P, classification: OFFICIAL-SENSITIVE, descriptor: PERSONAL}\n"), read)
	if err != nil {
		t.Fatal(err)
	}
	if e := c.Purview()["3c9e4a1b-7f0d-4c2a-9b1e-5d6f7a8b9c0d"]; e.Classification != envelope.OfficialSensitive || e.Descriptor != "PERSONAL" {
		t.Errorf("table entry %+v", e)
	}
}
