package policy

import (
	"context"
	"testing"

	"github.com/conduit-gateway/conduit/envelope"
)

// Each test names the rule and the paragraph it implements; the first
// check of each is that the rule cites that paragraph.

func TestSenderMustBeTheFromAgency(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	wantCitation(t, p, "sender-is-from", "docs/design.md", "Security invariant 5")
	m := pkg("northshire-police", "hmp-northgate")
	d := p.Decide(context.Background(), m, Sender{Agency: "northshire-pio"})
	wantOutcome(t, d, Deny)
	wantRefusal(t, d, "hmp-northgate", "sender-is-from", "submitted by northshire-pio")

	// A gateway sends for its own agency only, whatever the package says.
	d = p.Decide(context.Background(), m, Sender{Agency: "northshire-police"})
	wantOutcome(t, d, Deny)
	wantRefusal(t, d, "hmp-northgate", "sender-is-from", "sends for northshire-pio only")
	if !d.Alerted() {
		t.Errorf("submission as another agency not alerted")
	}
}

func TestUnknownRecipientIsRefusedOthersDelivered(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	d := decide(p, pkg("northshire-pio", "hmp-northgate", "hmp-nowhere"))
	wantOutcome(t, d, Deliver)
	wantRefusal(t, d, "hmp-nowhere", "known-recipient", "not in the agency directory")
	wantDelivery(t, d, "hmp-northgate", "intel@northgate.hmpps.example", Normal, "addressed")
}

// MoU Annex A (Data handling; Accuracy).
func TestLabelRequired(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	wantCitation(t, p, "label-required", seedMoU, "Annex A (Data handling; Accuracy)")
	for _, tc := range []struct {
		name  string
		strip func(*envelope.Label)
		field string
	}{
		{"no classification", func(l *envelope.Label) { l.Classification = "" }, "classification"},
		{"no grading", func(l *envelope.Label) { l.Grading = envelope.Grading{} }, "grading"},
		{"no basis", func(l *envelope.Label) { l.Basis = "" }, "basis"},
		{"no data subjects", func(l *envelope.Label) { l.Subjects = nil }, "subjects"},
		{"no purpose", func(l *envelope.Label) { l.Purpose = "" }, "purpose"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := pkg("northshire-pio", "hmp-northgate")
			tc.strip(&m.Label)
			d := decide(p, m)
			wantOutcome(t, d, Deny)
			wantRefusal(t, d, "hmp-northgate", "label-required", tc.field)
			if len(d.Deliveries) != 0 {
				t.Errorf("deliveries despite an incomplete label: %v", d.Deliveries)
			}
		})
	}
}

// MoU Annex A (Purpose); Statement, prison information to LEAs.
func TestPurposeApprovedForTheDirection(t *testing.T) {
	p := builtinPolicy(t, "hmp-northgate")
	wantCitation(t, p, "purpose-approved", seedMoU, "Annex A (Purpose)")
	wantCitation(t, p, "purpose-approved", seedStmt, "Prison information to be disclosed to LEAs")
	for _, tc := range []struct {
		from, to string
		purpose  envelope.Purpose
		refused  bool
	}{
		{"hmp-northgate", "northshire-pio", "risk-management", true},
		{"hmp-northgate", "northshire-pio", "prison-security", false},
		{"hmp-northgate", "northshire-pio", "national-security", false},
		{"northshire-pio", "hmp-northgate", "risk-management", false},
		{"hmp-northgate", "ccu-north", "risk-management", false},
	} {
		t.Run(tc.from+"→"+tc.to+" "+string(tc.purpose), func(t *testing.T) {
			m := pkg(tc.from, tc.to)
			m.Label.Purpose = tc.purpose
			d := decide(p, m)
			if tc.refused {
				wantRefusal(t, d, tc.to, "purpose-approved", "not approved")
				wantOutcome(t, d, Deny)
			} else if len(deliveriesTo(d, tc.to)) == 0 {
				t.Errorf("not delivered:\n%s", dump(d))
			}
		})
	}
}

// MoU Annex A (Description of method of sharing).
func TestClassificationCeiling(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	wantCitation(t, p, "classification-ceiling", seedMoU, "Annex A (Description of method of sharing)")
	t.Run("SECRET refused and alerted, even to a route accredited for it", func(t *testing.T) {
		m := pkg("northshire-pio", "pas")
		m.Label.Classification = envelope.Secret
		d := decide(p, m)
		wantOutcome(t, d, Deny)
		wantRefusal(t, d, "pas", "classification-ceiling", "SECRET")
		if !d.Alerted() {
			t.Errorf("SECRET refused without an alert")
		}
	})
	t.Run("TOP SECRET refused and alerted", func(t *testing.T) {
		m := pkg("northshire-pio", "hmp-northgate")
		m.Label.Classification = envelope.TopSecret
		d := decide(p, m)
		wantOutcome(t, d, Deny)
		if !d.Alerted() {
			t.Errorf("TOP SECRET refused without an alert")
		}
	})
	t.Run("route accredited for OFFICIAL refuses OFFICIAL-SENSITIVE", func(t *testing.T) {
		m := pkg("northshire-police", "pecs-northway")
		m.Subjects = []envelope.Subject{{Role: "pecs-staff", Establishment: "pecs-northway"}}
		d := decide(p, m)
		wantRefusal(t, d, "pecs-northway", "classification-ceiling", "ceiling of OFFICIAL")
		if d.Alerted() {
			t.Errorf("an OFFICIAL-SENSITIVE refusal is not alerted")
		}
	})
	t.Run("OFFICIAL goes on the same route", func(t *testing.T) {
		m := pkg("northshire-police", "pecs-northway")
		m.Label.Classification = envelope.Official
		m.Subjects = []envelope.Subject{{Role: "pecs-staff", Establishment: "pecs-northway"}}
		d := decide(p, m)
		wantOutcome(t, d, Deliver)
	})
	t.Run("a per-route override lowers the ceiling", func(t *testing.T) {
		q, err := compilePolicy(t, "northshire-pio", "parameters:\n  classification-ceiling:\n    routes: {hmp-northgate: OFFICIAL}\n")
		tcheck(t, err, "compile")
		d := decide(q, pkg("northshire-pio", "hmp-northgate"))
		wantRefusal(t, d, "hmp-northgate", "classification-ceiling", "ceiling of OFFICIAL")
	})
}

// MoU Annex A (Data handling): not outside the UK/EEA.
func TestDestinationOutsideUKEEAIsRefused(t *testing.T) {
	p := builtinPolicy(t, "northshire-police")
	wantCitation(t, p, "uk-eea-only", seedMoU, "Annex A (Data handling)")
	m := pkg("northshire-police", "lakeland-sheriff", "northshire-pio")
	m.Label.Purpose = "crime"
	d := decide(p, m)
	wantRefusal(t, d, "lakeland-sheriff", "uk-eea-only", "outside the UK/EEA")
	wantNoDelivery(t, d, "lakeland-sheriff")
	if len(deliveriesTo(d, "northshire-pio")) == 0 {
		t.Errorf("the UK destination should still be delivered:\n%s", dump(d))
	}
}

// NIM handling codes; MoU Annex A.
func TestHandlingCodes(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	wantCitation(t, p, "handling-code", seedMoU, "Annex A")
	t.Run("code 4 never leaves the originating agency", func(t *testing.T) {
		m := pkg("northshire-pio", "hmp-northgate", "northshire-police")
		m.Label.Grading.Handling = "4"
		d := decide(p, m)
		wantRefusal(t, d, "hmp-northgate", "handling-code", "originating agency")
		// The PIO unit is part of Northshire Police: same agency.
		wantDelivery(t, d, "northshire-police", "crime-in-prison@northshire-police.example", Normal, "addressed")
	})
	t.Run("code 5 is held for the originator", func(t *testing.T) {
		m := pkg("northshire-pio", "hmp-northgate")
		m.Label.Grading.Handling = "5"
		d := decide(p, m)
		wantHold(t, d, "hmp-northgate", "handling-code")
		if len(d.Deliveries) != 0 {
			t.Errorf("code 5 delivered: %v", d.Deliveries)
		}
		// The originator must decide; the seeds set no period, so the
		// clock is the handling-code.hold-hours parameter (default 72).
		if h, ok := d.Deadline(DeadlineHold); !ok || h != 72 {
			t.Errorf("hold deadline = %d, %v; want 72 hours:\n%s", h, ok, dump(d))
		}
		wantTrace(t, d, "handling-code", EffectDeadline, "hold within 72 hours")
	})
	t.Run("code 5 hold clock is a parameter", func(t *testing.T) {
		p2, err := compilePolicy(t, "northshire-pio", "parameters:\n  handling-code: {hold-hours: 24}\n")
		tcheck(t, err, "policy")
		m := pkg("northshire-pio", "hmp-northgate")
		m.Label.Grading.Handling = "5"
		if h, ok := decide(p2, m).Deadline(DeadlineHold); !ok || h != 24 {
			t.Errorf("hold deadline = %d, %v; want 24 hours", h, ok)
		}
	})
	t.Run("other codes start no hold clock", func(t *testing.T) {
		if _, ok := decide(p, pkg("northshire-pio", "hmp-northgate")).Deadline(DeadlineHold); ok {
			t.Error("handling code 1 started a hold clock")
		}
	})
	t.Run("code 3 has no lawful destination", func(t *testing.T) {
		m := pkg("northshire-pio", "hmp-northgate")
		m.Label.Grading.Handling = "3"
		d := decide(p, m)
		wantOutcome(t, d, Deny)
		wantRefusal(t, d, "hmp-northgate", "handling-code", "no lawful destination")
	})
	t.Run("code 2 without an authorisation", func(t *testing.T) {
		m := pkg("northshire-pio", "hmp-northgate")
		m.Label.Grading.Handling = "2"
		d := decide(p, m)
		wantOutcome(t, d, Deny)
		wantRefusal(t, d, "hmp-northgate", "handling-code", "authorisation")
	})
	t.Run("code 2 with an authorisation is recorded", func(t *testing.T) {
		m := pkg("northshire-pio", "hmp-northgate")
		m.Label.Grading.Handling = "2"
		m.Label.Authorisation = "PAS-2026-0042"
		d := decide(p, m)
		wantOutcome(t, d, Deliver)
		wantTrace(t, d, "handling-code", EffectRecord, "PAS-2026-0042")
	})
	t.Run("3x5x2 C without conditions", func(t *testing.T) {
		m := pkg("northshire-pio", "hmp-northgate")
		m.Label.Grading = envelope.Grading{Scheme: envelope.Scheme3x5x2, Source: "2", Intelligence: "B", Handling: "C"}
		d := decide(p, m)
		wantOutcome(t, d, Deny)
		wantRefusal(t, d, "hmp-northgate", "handling-code", "conditions")
		m.Label.Conditions = "not to be used in evidence without the originator's consent"
		d = decide(p, m)
		wantOutcome(t, d, Deliver)
		wantTrace(t, d, "handling-code", EffectRecord, "conditions travel")
	})
}

// MoU 6.1 (sanitisation); Annex B.
func TestUnsanitisedToAnotherAgencyIsRefused(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	wantCitation(t, p, "sanitised-to-disseminate", seedMoU, "6.1")
	m := pkg("northshire-pio", "hmp-northgate", "northshire-police")
	m.Label.Sanitised = false
	d := decide(p, m)
	wantRefusal(t, d, "hmp-northgate", "sanitised-to-disseminate", "not marked sanitised")
	// Within the force (the PIO unit is part of it) no sanitisation is needed.
	if len(deliveriesTo(d, "northshire-police")) == 0 {
		t.Errorf("internal dissemination refused:\n%s", dump(d))
	}
}

// MoU 6.1 police bullet 4; Statement (PIO role, FIB conduit).
func TestPoliceReachAPrisonThroughItsPIO(t *testing.T) {
	p := builtinPolicy(t, "northshire-police")
	wantCitation(t, p, "police-to-prison-via-pio", seedMoU, "6.1 police responsibilities, bullet 4")
	wantCitation(t, p, "police-to-prison-via-pio", seedStmt, "FIB conduit")
	for _, tc := range []struct {
		name, from, prison, via, mailbox string
	}{
		{"force to a prison with a PIO", "northshire-police", "hmp-northgate", "northshire-pio", "pio@northshire-pio.example"},
		{"prison without a PIO: its force's FIB", "northshire-police", "hmp-fellside", "northshire-fib", "fib@northshire-fib.example"},
		{"another force's PIO", "dalesford-pio", "hmp-northgate", "northshire-pio", "pio@northshire-pio.example"},
		{"another force to a prison without a PIO", "westmarch-police", "hmp-fellside", "northshire-fib", "fib@northshire-fib.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decide(p, pkg(tc.from, tc.prison))
			wantNoDelivery(t, d, tc.prison)
			wantDelivery(t, d, tc.via, tc.mailbox, Normal, "police-to-prison-via-pio")
		})
	}
	for _, tc := range []struct{ name, from, prison string }{
		{"the PIO serving the prison", "northshire-pio", "hmp-northgate"},
		{"the RPIU of the prison's region", "rpiu-north-east", "hmp-northgate"},
		{"the FIB conduit of a prison without a PIO", "northshire-fib", "hmp-fellside"},
	} {
		t.Run("direct from "+tc.name, func(t *testing.T) {
			d := decide(p, pkg(tc.from, tc.prison))
			if len(deliveriesTo(d, tc.prison)) == 0 {
				t.Errorf("not delivered directly:\n%s", dump(d))
			}
		})
	}
}

// MoU 6.1 police, bullet 5.
func TestGovernorOfReceivingPrisonGoesToRegionalCCU(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	wantCitation(t, p, "governor-to-regional-ccu", seedMoU, "6.1 police responsibilities, bullet 5")
	m := pkg("northshire-pio", "hmp-northgate")
	m.Subjects = []envelope.Subject{{Role: "governing-governor", Establishment: "hmp-northgate"}}
	d := decide(p, m)
	wantNoDelivery(t, d, "hmp-northgate")
	wantDelivery(t, d, "ccu-north", "rcca@ccu-north.hmpps.example", Normal, "governor-to-regional-ccu")
	wantTrace(t, d, "governor-to-regional-ccu", EffectRedirect, "hmp-northgate → ccu-north")

	// A prison in another region goes to the CCU covering that region.
	m = pkg("westmarch-fib", "hmp-ravensby")
	m.Subjects = []envelope.Subject{{Role: "governing-governor", Establishment: "hmp-ravensby"}}
	d = decide(p, m)
	wantNoDelivery(t, d, "hmp-ravensby")
	wantDelivery(t, d, "ccu-north-west", "rcca@ccu-nw.hmpps.example", Normal, "governor-to-regional-ccu")
}

func TestGovernorOfAnotherPrisonIsNoRedirect(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	m := pkg("northshire-pio", "hmp-northgate")
	m.Subjects = []envelope.Subject{{Role: "governing-governor", Establishment: "hmp-dalesford"}}
	d := decide(p, m)
	wantDelivery(t, d, "hmp-northgate", "intel@northgate.hmpps.example", Normal, "addressed")
	wantNoDelivery(t, d, "ccu-north")
}

func TestGovernorWithoutEstablishmentConcernsEveryPrison(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	m := pkg("northshire-pio", "hmp-northgate")
	m.Subjects = []envelope.Subject{{Role: "governing-governor"}}
	d := decide(p, m)
	wantNoDelivery(t, d, "hmp-northgate")
	wantDelivery(t, d, "ccu-north", "rcca@ccu-north.hmpps.example", Normal, "governor-to-regional-ccu")
}

// MoU 6.1 police, bullet 5 (HQ).
func TestHQConcernedGoesToNationalAnalyst(t *testing.T) {
	p := builtinPolicy(t, "northshire-police")
	wantCitation(t, p, "hq-to-ncca", seedMoU, "6.1 police responsibilities, bullet 5")
	for _, to := range []string{"hmpps-hq", "hmp-northgate", "ccu-north", "ccu-national"} {
		t.Run(to, func(t *testing.T) {
			m := pkg("northshire-police", to)
			m.Subjects = []envelope.Subject{{Role: "hq"}}
			d := decide(p, m)
			if to != "ccu-national" {
				wantNoDelivery(t, d, to)
			}
			wantDelivery(t, d, "ccu-national", "ncca@ccu.hmpps.example", Normal, "hq-to-ncca")
			if ds := deliveriesTo(d, "ccu-national"); len(ds) != 1 {
				t.Errorf("want exactly the analyst's mailbox, got %v", ds)
			}
		})
	}
}

func TestProbationPackageConcerningHQGoesToNationalAnalyst(t *testing.T) {
	p := builtinPolicy(t, "northshire-police")
	m := pkg("northshire-police", "nps-north-east")
	m.Label.Purpose = "corruption-probation"
	m.Subjects = []envelope.Subject{{Role: "hq"}}
	d := decide(p, m)
	wantNoDelivery(t, d, "nps-north-east")
	wantNoDelivery(t, d, "ccu-north")
	wantDelivery(t, d, "ccu-national", "ncca@ccu.hmpps.example", Normal, "hq-to-ncca")
	wantTrace(t, d, "probation-via-ccu", EffectRedirect, "nps-north-east → ccu-north")
	wantTrace(t, d, "hq-to-ncca", EffectRedirect, "ccu-north → ccu-national")
}

// MoU 6.1 police bullet 4; Annex B probation.
func TestPoliceToProbationGoesToCCU(t *testing.T) {
	p := builtinPolicy(t, "northshire-police")
	wantCitation(t, p, "probation-via-ccu", seedMoU, "bullet 4")
	m := pkg("northshire-police", "nps-north-east")
	m.Label.Purpose = "corruption-probation"
	m.Subjects = []envelope.Subject{{Role: "probation-staff", Establishment: "nps-north-east"}}
	d := decide(p, m)
	wantNoDelivery(t, d, "nps-north-east")
	wantDelivery(t, d, "ccu-north", "rcca@ccu-north.hmpps.example", Normal, "probation-via-ccu")

	// The regional CCU passes it on to probation: that is the arrangement,
	// not onward disclosure.
	fwd := pkg("ccu-north", "nps-north-east")
	fwd.Label.Originator = "northshire-police"
	fwd.Label.Purpose = "corruption-probation"
	d = decide(p, fwd)
	wantDelivery(t, d, "nps-north-east", "dccm@ne.probation.example", Normal, "addressed")
	wantTrace(t, d, "no-onward-disclosure", EffectRecord, "on probation's behalf")
}

// MoU 4.1; Annex B PECS.
func TestPECSCorruptionGoesToSecurityManager(t *testing.T) {
	p := builtinPolicy(t, "northshire-police")
	wantCitation(t, p, "pecs-security-manager", seedMoU, "4.1")
	wantCitation(t, p, "pecs-security-manager", seedMoU, "Annex B (PECS pursue process)")
	m := pkg("northshire-police", "pecs-northway")
	m.Label.Classification = envelope.Official
	m.Subjects = []envelope.Subject{{Role: "pecs-staff", Establishment: "pecs-northway"}}
	d := decide(p, m)
	wantDelivery(t, d, "pecs-northway", "security@northway-escorts.example", Normal, "pecs-security-manager")
	if ds := deliveriesTo(d, "pecs-northway"); len(ds) != 1 {
		t.Errorf("want only the Security Manager, got %v", ds)
	}

	t.Run("a report on a prisoner follows the prison process", func(t *testing.T) {
		m := pkg("northshire-police", "pecs-northway")
		m.Label.Classification = envelope.Official
		m.Subjects = []envelope.Subject{{Role: "prisoner", Establishment: "hmp-northgate"}}
		d := decide(p, m)
		wantNoDelivery(t, d, "pecs-northway")
		wantTrace(t, d, "pecs-security-manager", EffectRedirect, "pecs-northway → hmp-northgate")
		// and the prison process for the police is through the PIO.
		wantDelivery(t, d, "northshire-pio", "pio@northshire-pio.example", Normal, "police-to-prison-via-pio")
	})
	t.Run("the prison process still keeps it from a governor who is a subject", func(t *testing.T) {
		m := pkg("northshire-police", "pecs-northway")
		m.Label.Classification = envelope.Official
		m.Subjects = []envelope.Subject{{Role: "prisoner", Establishment: "hmp-northgate"},
			{Role: "governing-governor", Establishment: "hmp-northgate"}}
		d := decide(p, m)
		wantNoDelivery(t, d, "hmp-northgate")
		wantNoDelivery(t, d, "northshire-pio")
		wantDelivery(t, d, "ccu-north", "rcca@ccu-north.hmpps.example", Normal, "governor-to-regional-ccu")
	})
	t.Run("a report on HMPPS staff with no prison named is held", func(t *testing.T) {
		m := pkg("northshire-police", "pecs-northway")
		m.Label.Classification = envelope.Official
		m.Subjects = []envelope.Subject{{Role: "staff"}}
		d := decide(p, m)
		wantHold(t, d, "pecs-northway", "pecs-security-manager")
	})
}

// Statement (PAS role).
func TestCatAPrisonerGoesThroughPAS(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	wantCitation(t, p, "cat-a-via-pas", seedStmt, "PAS role")
	for _, flag := range []string{"cat-a", "potential-cat-a", "e-list", "terrorism"} {
		t.Run(flag, func(t *testing.T) {
			m := pkg("northshire-pio", "hmp-northgate")
			m.Subjects = []envelope.Subject{{Role: "prisoner", Establishment: "hmp-northgate", Flags: []string{flag}}}
			d := decide(p, m)
			wantNoDelivery(t, d, "hmp-northgate")
			wantDelivery(t, d, "pas", "pas@pas.hmpps.example", Normal, "cat-a-via-pas")
		})
	}
	t.Run("HMPPS to police also goes through PAS", func(t *testing.T) {
		m := pkg("hmp-northgate", "northshire-pio")
		m.Subjects = []envelope.Subject{{Role: "prisoner", Establishment: "hmp-northgate", Flags: []string{"terrorism"}}}
		d := decide(p, m)
		wantNoDelivery(t, d, "northshire-pio")
		wantDelivery(t, d, "pas", "pas@pas.hmpps.example", Normal, "cat-a-via-pas")
	})
	t.Run("within HMPPS no gatekeeper is needed", func(t *testing.T) {
		m := pkg("hmp-northgate", "ccu-north")
		m.Subjects = []envelope.Subject{{Role: "prisoner", Establishment: "hmp-northgate", Flags: []string{"cat-a"}}}
		d := decide(p, m)
		wantDelivery(t, d, "ccu-north", "rcca@ccu-north.hmpps.example", Normal, "addressed")
	})
	t.Run("PAS passes it on to the prison", func(t *testing.T) {
		m := pkg("pas", "hmp-northgate")
		m.Label.Originator = "northshire-pio"
		m.Subjects = []envelope.Subject{{Role: "prisoner", Establishment: "hmp-northgate", Flags: []string{"cat-a"}}}
		d := decide(p, m)
		wantDelivery(t, d, "hmp-northgate", "intel@northgate.hmpps.example", Normal, "addressed")
	})
}

// MoU 6.1 (both sides) and Wormwood Scrubs report 7.1-7.2.
func TestEscapeWithFirearmsEscalatesAndBriefsSeniority(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	wantCitation(t, p, "imminent-risk-escalation", seedMoU, "6.1 (both sides")
	wantCitation(t, p, "high-risk-seniority", seedStmt, "Wormwood Scrubs report, 7.1-7.2")
	m := pkg("northshire-pio", "hmp-northgate")
	m.Risk = []string{"escape", "firearms"}
	d := decide(p, m)
	wantOutcome(t, d, Deliver)
	wantDelivery(t, d, "hmp-northgate", "intel@northgate.hmpps.example", Immediate, "addressed")
	wantDelivery(t, d, "hmp-northgate", "governor@northgate.hmpps.example", Immediate, "high-risk-seniority")
	wantDelivery(t, d, "pas", "pas@pas.hmpps.example", Immediate, "high-risk-seniority")
	wantDelivery(t, d, "hmp-northgate", "duty-governor@northgate.hmpps.example", Immediate, "imminent-risk-escalation")
	wantDelivery(t, d, "hmp-northgate", "orderly-officer@northgate.hmpps.example", Immediate, "imminent-risk-escalation")
	if h, ok := d.Deadline(DeadlineAcknowledge); !ok || h != 1 {
		t.Errorf("acknowledge deadline %d %v, want 1 hour", h, ok)
	}
	for _, x := range d.Deliveries {
		if x.Priority != Immediate {
			t.Errorf("delivery %v is not immediate", x)
		}
	}
}

func TestEscapeWithFirearmsNoSeniorityCopyToGovernorWhoIsSubject(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	m := pkg("northshire-pio", "hmp-northgate")
	m.Risk = []string{"escape", "firearms"}
	m.Subjects = []envelope.Subject{{Role: "governing-governor", Establishment: "hmp-northgate"}}
	d := decide(p, m)
	wantNoDelivery(t, d, "hmp-northgate")
	wantDelivery(t, d, "ccu-north", "rcca@ccu-north.hmpps.example", Immediate, "governor-to-regional-ccu")
	wantDelivery(t, d, "ccu-north", "ccu-north-duty@ccu-north.hmpps.example", Immediate, "imminent-risk-escalation")
	wantDelivery(t, d, "pas", "pas@pas.hmpps.example", Immediate, "high-risk-seniority")
	// Both sides of the conflict are in the trace.
	wantTrace(t, d, "high-risk-seniority", EffectCopy, "governing governor of hmp-northgate")
	wantTrace(t, d, "governor-to-regional-ccu", EffectOverridden, "no copy to the governing governor of hmp-northgate")
}

func TestImminentRiskEscalatesEachRisk(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	for _, risk := range []string{"escape", "abscond", "threat-to-life"} {
		t.Run(risk, func(t *testing.T) {
			m := pkg("northshire-pio", "hmp-northgate")
			m.Risk = []string{risk}
			d := decide(p, m)
			wantDelivery(t, d, "hmp-northgate", "intel@northgate.hmpps.example", Immediate, "addressed")
			wantTrace(t, d, "imminent-risk-escalation", EffectEscalate, risk)
			if _, ok := d.Deadline(DeadlineAcknowledge); !ok {
				t.Errorf("no acknowledgement deadline")
			}
			wantNoDelivery(t, d, "pas") // no seniority copy without firearms or high profile
		})
	}
	d := decide(p, pkg("northshire-pio", "hmp-northgate"))
	if _, ok := d.Deadline(DeadlineAcknowledge); ok {
		t.Errorf("acknowledgement deadline without a risk")
	}
}

func TestHighProfileCopiesGovernorOfSubjectsPrison(t *testing.T) {
	p := builtinPolicy(t, "northshire-police")
	m := pkg("northshire-police", "hmp-dalesford")
	m.Risk = []string{"high-profile"}
	m.Subjects = []envelope.Subject{{Role: "prisoner", Establishment: "hmp-dalesford"}}
	d := decide(p, m)
	// The dissemination goes through the PIO; the briefing for the
	// Governing Governor goes to the governor (Wormwood Scrubs 7.2).
	wantDelivery(t, d, "dalesford-pio", "pio@dalesford-pio.example", Normal, "police-to-prison-via-pio")
	wantDelivery(t, d, "hmp-dalesford", "governor@dalesford.hmpps.example", Normal, "high-risk-seniority")
	wantDelivery(t, d, "pas", "pas@pas.hmpps.example", Normal, "high-risk-seniority")
}

func TestFirearmsAboutCatAPrisonerNoDirectGovernorCopy(t *testing.T) {
	p := builtinPolicy(t, "northshire-police")
	m := pkg("northshire-police", "hmp-northgate")
	m.Risk = []string{"firearms"}
	m.Subjects = []envelope.Subject{{Role: "prisoner", Establishment: "hmp-northgate", Flags: []string{"cat-a"}}}
	d := decide(p, m)
	wantNoDelivery(t, d, "hmp-northgate")
	wantTrace(t, d, "cat-a-via-pas", EffectOverridden, "governing governor of hmp-northgate")
	wantDelivery(t, d, "pas", "pas@pas.hmpps.example", Normal, "cat-a-via-pas")
}

// MoU Annex A (Data security).
func TestMailboxWithNoTrainingRecordIsHeld(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	wantCitation(t, p, "trained-recipients", seedMoU, "Annex A (Data security")
	d := decide(p, pkg("northshire-pio", "hmp-eastmoor"))
	wantHold(t, d, "hmp-eastmoor", "trained-recipients")
	wantNoDelivery(t, d, "hmp-eastmoor")

	t.Run("an expired record counts for nothing when records expire", func(t *testing.T) {
		q, err := compilePolicy(t, "northshire-pio", "parameters:\n  trained-recipients: {valid-days: 330}\n")
		tcheck(t, err, "compile")
		// HMP Northgate's governor was trained on 2025-12-01, 357 days
		// before testNow; the intake holder on 2026-01-09, 318 days before.
		m := pkg("northshire-pio", "hmp-northgate")
		m.Risk = []string{"firearms"}
		d := decide(q, m)
		wantDelivery(t, d, "hmp-northgate", "intel@northgate.hmpps.example", Normal, "addressed")
		for _, x := range d.Deliveries {
			if x.Mailbox == "governor@northgate.hmpps.example" {
				t.Errorf("copy to a mailbox whose training expired")
			}
		}
		wantTrace(t, d, "trained-recipients", EffectOverridden, "governing-governor mailbox of hmp-northgate")
	})
	t.Run("an escalation contact without training gets no copy", func(t *testing.T) {
		m := pkg("northshire-pio", "hmp-northgate")
		m.Risk = []string{"escape"}
		d := decide(p.At(testNow.AddDate(-1, 0, 0)), m) // before most training dates
		for _, x := range d.Deliveries {
			if x.Mailbox == "orderly-officer@northgate.hmpps.example" {
				t.Errorf("copy to an escalation contact trained after the decision time")
			}
		}
	})
}

// MoU Annex A (Data handling: onward disclosure).
func TestReceivedPackageNotPassedToThirdAgencyWithoutConsent(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	wantCitation(t, p, "no-onward-disclosure", seedMoU, "Annex A (Data handling")
	m := pkg("northshire-pio", "dalesford-police", "hmp-northgate")
	m.Label.Originator = "hmp-northgate"
	m.Label.Purpose = "crime"
	d := decide(p, m)
	wantHold(t, d, "dalesford-police", "no-onward-disclosure")
	// Back to the originator is always allowed.
	wantDelivery(t, d, "hmp-northgate", "intel@northgate.hmpps.example", Normal, "addressed")

	d = p.Decide(context.Background(), m, Sender{Agency: "northshire-pio", OriginatorConsent: "NGT-CONSENT-7"})
	wantOutcome(t, d, Deliver)
	wantTrace(t, d, "no-onward-disclosure", EffectRecord, "NGT-CONSENT-7")

	t.Run("the PIO passing police intelligence to a prison it serves", func(t *testing.T) {
		m := pkg("northshire-pio", "hmp-northgate")
		m.Label.Originator = "dalesford-police"
		d := decide(p, m)
		wantDelivery(t, d, "hmp-northgate", "intel@northgate.hmpps.example", Normal, "addressed")
		wantTrace(t, d, "no-onward-disclosure", EffectRecord, "PIO serving hmp-northgate")
	})
}

// MoU Annex A (Description of method of sharing: retention).
func TestEveryDecisionStartsTheRetentionClock(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	wantCitation(t, p, "retention", seedMoU, "Annex A (Description of method of sharing")
	for _, m := range []*envelope.Manifest{pkg("northshire-pio", "hmp-northgate"), func() *envelope.Manifest {
		m := pkg("northshire-pio", "hmp-northgate")
		m.Label.Basis = ""
		return m
	}()} {
		d := decide(p, m)
		if h, ok := d.Deadline(DeadlineRetention); !ok || h != 6*365*24 {
			t.Errorf("retention %d %v, want %d hours", h, ok, 6*365*24)
		}
	}
	q, err := compilePolicy(t, "northshire-pio", "parameters:\n  retention: {days: 365}\n")
	tcheck(t, err, "compile")
	if h, _ := decide(q, pkg("northshire-pio", "hmp-northgate")).Deadline(DeadlineRetention); h != 365*24 {
		t.Errorf("retention %d hours, want %d", h, 365*24)
	}
}
