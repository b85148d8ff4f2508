package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/testbed"
)

// Markings written by the tools agencies already use, submitted over SMTP
// (STARTTLS, AUTH) to a running gateway: a Purview sensitivity label, a
// legacy marking read by the table in force (recorded in the audit trail),
// and a subject marking alone, refused with what is still needed.
func TestSubmittedMarkingsFromAgencyTools(t *testing.T) {
	const guid = "3c9e4a1b-7f0d-4c2a-9b1e-5d6f7a8b9c0d"
	b := newE2EBed(t, testbed.Options{Extra: "purview-labels:\n  - {guid: " + guid + ", name: OFFICIAL-SENSITIVE PERSONAL, classification: OFFICIAL-SENSITIVE, descriptor: PERSONAL}\n"},
		"northshire-pio", "hmp-northgate")
	ctx := context.Background()
	rest := "v=1; grading=5x5x5; source=B; intelligence=2; handling=1; basis=assessment; subjects=suspected; purpose=corruption-prison; sanitised=yes; sanitised-by=northshire-pio; reference=NP-2026-0077"

	// A Purview label, the rest of the label in a Handling-Label without
	// a classification.
	purview := "msip_labels: MSIP_Label_" + guid + "_Enabled=true; MSIP_Label_" + guid + "_SetDate=2026-11-23T10:00:00Z; MSIP_Label_" + guid +
		"_Method=Privileged; MSIP_Label_" + guid + "_Name=OFFICIAL-SENSITIVE PERSONAL; MSIP_Label_" + guid + "_SiteId=9f8e7d6c-5b4a-4392-8170-fedcba987654"
	if _, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(rest, "Conveyance on wing C", purview)); err != nil {
		t.Fatalf("Purview-labelled package: %v", err)
	}
	if !testbed.WaitFor(ctx, 30*time.Second, func() bool { return len(b.Delivered("hmp-northgate", ngIntel)) > 0 }) {
		t.Fatal("the Purview-labelled package was not delivered")
	}
	got, _ := os.ReadFile(b.Delivered("hmp-northgate", ngIntel)[0])
	if !strings.Contains(string(got), "Handling-Label: v=1; classification=OFFICIAL-SENSITIVE; descriptor=PERSONAL;") ||
		!strings.Contains(string(got), "Subject: [OFFICIAL-SENSITIVE PERSONAL] Conveyance on wing C") {
		t.Errorf("delivered:\n%.800s", got)
	}

	// A legacy marking: read by the built-in table, recorded.
	resp, err := b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage(strings.Replace(e2eLabel, "classification=OFFICIAL-SENSITIVE", "classification=RESTRICTED", 1), "Conveyance"))
	if err != nil {
		t.Fatalf("RESTRICTED package: %v", err)
	}
	pkg := packageOf(t, resp)
	cfg := b.Nodes["northshire-pio"].Config
	if !testbed.WaitFor(ctx, 10*time.Second, func() bool {
		out := run(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--package", pkg, "--config", cfg).stdout
		return strings.Contains(out, "marked RESTRICTED, read as OFFICIAL-SENSITIVE by the legacy-marking table (built-in legacy-marking table")
	}) {
		t.Errorf("no marking event in the audit trail:\n%s", run(t, b.Dir, nil, nil, conduitBin, "audit", "query", "--package", pkg, "--config", cfg).stdout)
	}

	// A subject marking alone: refused, asking for each field, with the
	// header to send next time.
	_, err = b.Submit(ctx, "northshire-pio", []string{ngIntel}, e2eMessage("", "OFFICIAL-SENSITIVE: Conveyance"))
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 554 {
		t.Fatalf("subject marking alone: %v", err)
	}
	for _, want := range []string{"the subject line marks it OFFICIAL-SENSITIVE", "the intelligence grading", "why it is shared (purpose)",
		"Handling-Label: v=1; classification=OFFICIAL-SENSITIVE; grading=5x5x5"} {
		if !strings.Contains(se.Message, want) {
			t.Errorf("refusal lacks %q:\n%s", want, se.Message)
		}
	}
}
