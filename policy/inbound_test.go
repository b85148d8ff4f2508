package policy

import (
	"context"
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/envelope"
)

func receive(p *Policy, m *envelope.Manifest) Decision {
	return p.DecideInbound(context.Background(), m, m.From)
}

// MoU 6.1 prison and probation responsibilities; Annex B (Triage).
func TestReceivedCorruptionReportStartsTriageClock(t *testing.T) {
	p := builtinPolicy(t, "hmp-northgate")
	wantCitation(t, p, "triage-72h", seedMoU, "6.1 prison and probation responsibilities")
	d := receive(p, pkg("northshire-pio", "hmp-northgate"))
	wantOutcome(t, d, Deliver)
	wantDelivery(t, d, "hmp-northgate", "intel@northgate.hmpps.example", Normal, "addressed")
	if h, ok := d.Deadline(DeadlineTriage); !ok || h != 72 {
		t.Errorf("triage deadline %d %v, want 72 hours", h, ok)
	}
	// Not a corruption report: no triage clock.
	m := pkg("northshire-pio", "hmp-northgate")
	m.Topic = "security"
	if _, ok := receive(p, m).Deadline(DeadlineTriage); ok {
		t.Errorf("triage clock for a security package")
	}
	// The police side has no triage duty under the MoU.
	q := builtinPolicy(t, "northshire-pio")
	if _, ok := receive(q, pkg("hmp-northgate", "northshire-pio")).Deadline(DeadlineTriage); ok {
		t.Errorf("triage clock at the PIO")
	}
	// An administrator may shorten it, never lengthen it.
	s, err := compilePolicy(t, "hmp-northgate", "parameters:\n  triage-72h: {hours: 48}\n")
	tcheck(t, err, "compile")
	if h, _ := receive(s, pkg("northshire-pio", "hmp-northgate")).Deadline(DeadlineTriage); h != 48 {
		t.Errorf("triage %d hours, want 48", h)
	}
	if _, err := compilePolicy(t, "hmp-northgate", "parameters:\n  triage-72h: {hours: 96}\n"); err == nil {
		t.Errorf("a 96-hour triage clock was accepted")
	}
}

func TestInboundOverCeilingIsRefusedAndAlerted(t *testing.T) {
	p := builtinPolicy(t, "pecs-northway")
	m := pkg("northshire-police", "pecs-northway")
	m.Subjects = []envelope.Subject{{Role: "pecs-staff", Establishment: "pecs-northway"}}
	d := receive(p, m) // OFFICIAL-SENSITIVE over an OFFICIAL route
	wantOutcome(t, d, Deny)
	wantRefusal(t, d, "pecs-northway", "classification-ceiling", "ceiling of OFFICIAL")
	if !d.Alerted() {
		t.Errorf("not alerted")
	}
	m.Label.Classification = envelope.Official
	d = receive(p, m)
	wantDelivery(t, d, "pecs-northway", "security@northway-escorts.example", Normal, "pecs-security-manager")
	if h, _ := d.Deadline(DeadlineTriage); h != 72 {
		t.Errorf("PECS triage %d, want 72 (Annex B PECS: within 72 hours)", h)
	}
}

func TestInboundDeliversOnlyToTrainedMailboxes(t *testing.T) {
	p := builtinPolicy(t, "hmp-eastmoor")
	d := receive(p, pkg("northshire-pio", "hmp-eastmoor"))
	wantHold(t, d, "hmp-eastmoor", "trained-recipients")
	if len(d.Deliveries) != 0 {
		t.Errorf("delivered to an untrained mailbox: %v", d.Deliveries)
	}
}

func TestInboundMisroutedPackagesAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name, self string
		m          func() *envelope.Manifest
		rule       string
	}{
		{"governor of this prison is a subject", "hmp-northgate", func() *envelope.Manifest {
			m := pkg("northshire-pio", "hmp-northgate")
			m.Subjects = []envelope.Subject{{Role: "governing-governor", Establishment: "hmp-northgate"}}
			return m
		}, "governor-to-regional-ccu"},
		{"not addressed to this agency", "hmp-fellside", func() *envelope.Manifest {
			return pkg("northshire-pio", "hmp-northgate")
		}, "known-recipient"},
		{"police to probation directly", "nps-north-east", func() *envelope.Manifest {
			m := pkg("northshire-police", "nps-north-east")
			m.Label.Purpose = "corruption-probation"
			return m
		}, "probation-via-ccu"},
		{"Cat A without PAS", "hmp-northgate", func() *envelope.Manifest {
			m := pkg("northshire-pio", "hmp-northgate")
			m.Subjects = []envelope.Subject{{Role: "prisoner", Flags: []string{"cat-a"}}}
			return m
		}, "cat-a-via-pas"},
		{"unsanitised from another agency", "hmp-northgate", func() *envelope.Manifest {
			m := pkg("northshire-pio", "hmp-northgate")
			m.Label.Sanitised = false
			return m
		}, "sanitised-to-disseminate"},
		{"handling code 4 from outside the originator", "hmp-northgate", func() *envelope.Manifest {
			m := pkg("northshire-pio", "hmp-northgate")
			m.Label.Grading.Handling = "4"
			return m
		}, "handling-code"},
		{"HQ concerned, received by HQ", "hmpps-hq", func() *envelope.Manifest {
			m := pkg("northshire-police", "hmpps-hq")
			m.Subjects = []envelope.Subject{{Role: "hq"}}
			return m
		}, "hq-to-ncca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := builtinPolicy(t, tc.self)
			d := receive(p, tc.m())
			wantOutcome(t, d, Deny)
			if len(d.Refusals) == 0 || d.Refusals[0].Rule != tc.rule {
				t.Errorf("refusal by %v, want %s:\n%s", d.Refusals, tc.rule, dump(d))
			}
			if !d.Alerted() {
				t.Errorf("a misrouted package is not alerted")
			}
		})
	}
}

func TestInboundAcceptsAPackageRedirectedHere(t *testing.T) {
	// The PIO addressed HMP Northgate about its governor; its gateway
	// sent it to the regional CCU instead, with the manifest unchanged.
	m := pkg("northshire-pio", "hmp-northgate")
	m.Subjects = []envelope.Subject{{Role: "governing-governor", Establishment: "hmp-northgate"}}
	d := receive(builtinPolicy(t, "ccu-north"), m)
	wantDelivery(t, d, "ccu-north", "rcca@ccu-north.hmpps.example", Normal, "addressed")
	wantTrace(t, d, "known-recipient", EffectRecord, "sent here by governor-to-regional-ccu")
	// The other regional CCU has no business with it.
	d = receive(builtinPolicy(t, "ccu-north-west"), m)
	wantOutcome(t, d, Deny)
	wantRefusal(t, d, "ccu-north-west", "known-recipient", "no built-in rule sends it here")
}

func TestInboundEscalationAndSeniority(t *testing.T) {
	p := builtinPolicy(t, "hmp-northgate")
	m := pkg("northshire-pio", "hmp-northgate")
	m.Risk = []string{"abscond", "high-profile"}
	d := receive(p, m)
	wantDelivery(t, d, "hmp-northgate", "intel@northgate.hmpps.example", Immediate, "addressed")
	wantDelivery(t, d, "hmp-northgate", "governor@northgate.hmpps.example", Immediate, "high-risk-seniority")
	wantDelivery(t, d, "hmp-northgate", "duty-governor@northgate.hmpps.example", Immediate, "imminent-risk-escalation")
	if _, ok := d.Deadline(DeadlineAcknowledge); !ok {
		t.Errorf("no acknowledgement deadline")
	}
}

func TestInboundHQGoesToNationalAnalystMailbox(t *testing.T) {
	p := builtinPolicy(t, "ccu-national")
	m := pkg("northshire-police", "ccu-national")
	m.Subjects = []envelope.Subject{{Role: "hq"}}
	d := receive(p, m)
	wantDelivery(t, d, "ccu-national", "ncca@ccu.hmpps.example", Normal, "hq-to-ncca")
}

// MoU Annex A (Accuracy; Data loss; Subject rights).
func TestNoticesGoToOriginatorAndRectificationFansOut(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	wantCitation(t, p, "notices", seedMoU, "Annex A (Accuracy; Data loss; Subject rights")
	ctx := context.Background()
	d := p.DecideNotice(ctx, Notice{Kind: NoticeBreach, From: "hmp-northgate", Originator: "northshire-pio", Reference: "R1"})
	wantRefusal(t, d, "northshire-pio", "notices", "for northshire-pio only")
	p, err := p.As("hmp-northgate")
	tcheck(t, err, "as hmp-northgate")
	d = p.DecideNotice(ctx, Notice{Kind: NoticeBreach, From: "hmp-northgate", Originator: "northshire-pio", Reference: "R1"})
	wantDelivery(t, d, "northshire-pio", "pio@northshire-pio.example", Immediate, "notices")
	d = p.DecideNotice(ctx, Notice{Kind: NoticeSubjectAccess, From: "hmp-northgate", Originator: "northshire-pio", Reference: "R1"})
	wantDelivery(t, d, "northshire-pio", "pio@northshire-pio.example", Normal, "notices")
	// A receiver's rectification goes back to the originator only.
	d = p.DecideNotice(ctx, Notice{Kind: NoticeRectification, From: "hmp-northgate", Originator: "northshire-pio",
		Reference: "R1", Recipients: []string{"hmp-northgate", "ccu-north"}})
	if len(d.Deliveries) != 1 || d.Deliveries[0].Agency != "northshire-pio" {
		t.Errorf("receiver's rectification: %v", d.Deliveries)
	}
	// The originator's rectification reaches every agency that received it.
	p, _ = p.As("northshire-pio")
	d = p.DecideNotice(ctx, Notice{Kind: NoticeRectification, From: "northshire-pio", Originator: "northshire-pio",
		Reference: "R1", Recipients: []string{"hmp-northgate", "ccu-north", "lakeland-sheriff", "gone-agency"}})
	var got []string
	for _, x := range d.Deliveries {
		got = append(got, x.Agency)
	}
	sort.Strings(got)
	if want := []string{"ccu-north", "hmp-northgate"}; !reflect.DeepEqual(got, want) {
		t.Errorf("rectification to %v, want %v", got, want)
	}
	wantRefusal(t, d, "lakeland-sheriff", "notices", "outside the UK/EEA")
	wantRefusal(t, d, "gone-agency", "notices", "not in the agency directory")
	d = p.DecideNotice(ctx, Notice{Kind: "gossip", From: "northshire-pio", Originator: "northshire-pio"})
	wantOutcome(t, d, Deny)
}

// TestDecisionJSONContract pins the JSON form `policy explain --json`
// promises: every field present, lists never null.
func TestDecisionJSONContract(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	for _, m := range []*envelope.Manifest{pkg("northshire-pio", "hmp-northgate"), func() *envelope.Manifest {
		m := pkg("northshire-pio", "hmp-northgate")
		m.Label.Classification = envelope.Secret
		return m
	}()} {
		b, err := json.Marshal(decide(p, m))
		tcheck(t, err, "marshal")
		var top map[string]json.RawMessage
		tcheck(t, json.Unmarshal(b, &top), "unmarshal")
		keys := []string{}
		for k, v := range top {
			keys = append(keys, k)
			if string(v) == "null" {
				t.Errorf("%s is null in %s", k, b)
			}
		}
		sort.Strings(keys)
		if want := []string{"deadlines", "decision", "deliveries", "holds", "refusals", "trace"}; !reflect.DeepEqual(keys, want) {
			t.Errorf("top-level keys %v, want %v", keys, want)
		}
		var shape struct {
			Deliveries []map[string]any `json:"deliveries"`
			Refusals   []map[string]any `json:"refusals"`
			Deadlines  []map[string]any `json:"deadlines"`
			Trace      []map[string]any `json:"trace"`
		}
		tcheck(t, json.Unmarshal(b, &shape), "unmarshal shape")
		check := func(what string, items []map[string]any, want ...string) {
			for _, it := range items {
				var ks []string
				for k := range it {
					ks = append(ks, k)
				}
				sort.Strings(ks)
				if !reflect.DeepEqual(ks, want) {
					t.Errorf("%s keys %v, want %v", what, ks, want)
				}
			}
		}
		check("delivery", shape.Deliveries, "agency", "mailbox", "priority", "rule")
		check("refusal", shape.Refusals, "agency", "reason", "rule")
		check("deadline", shape.Deadlines, "hours", "kind")
		check("trace", shape.Trace, "detail", "effect", "rule", "source")
	}
}

// TestTraceNeverHoldsSubjectIdentity: the subject's identity is content;
// it must not reach the trace, which is audited and printed.
func TestTraceNeverHoldsSubjectIdentity(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	const id = "A1234BC-SECRETNAME"
	for _, role := range []envelope.Role{"governing-governor", "hq", "prisoner", "staff", "pecs-staff"} {
		m := pkg("northshire-pio", "hmp-northgate", "pecs-northway")
		m.Risk = []string{"escape", "firearms"}
		m.Subjects = []envelope.Subject{{Role: role, Establishment: "hmp-northgate", ID: id, Flags: []string{"cat-a"}}}
		b, _ := json.Marshal(decide(p, m))
		if strings.Contains(string(b), id) {
			t.Errorf("subject identity in the decision for role %s", role)
		}
	}
}

// TestInboundHonoursTheMailboxTheSenderChose: HMP Eastmoor's intake has no
// training record, so the sender's policy addresses its governing
// governor; the receiver delivers there (trained) instead of holding the
// package at the intake. MoU Annex A (Data security): the receiver still
// judges each mailbox itself.
func TestInboundHonoursTheMailboxTheSenderChose(t *testing.T) {
	p := builtinPolicy(t, "hmp-eastmoor")
	m := pkg("northshire-pio", "hmp-eastmoor")
	intake := p.DecideInbound(context.Background(), m, "northshire-pio")
	if len(intake.Deliveries) != 0 {
		t.Fatalf("the untrained intake received it: %s", dump(intake))
	}
	const governor = "governor@eastmoor.hmpps.example"
	d := p.DecideInboundFor(context.Background(), m, "northshire-pio", []string{governor})
	if len(d.Deliveries) != 1 || d.Deliveries[0].Mailbox != governor {
		t.Fatalf("want one delivery to %s: %s", governor, dump(d))
	}
	// Asking for the untrained intake by name changes nothing.
	in := p.DecideInboundFor(context.Background(), m, "northshire-pio", []string{"intel@eastmoor.hmpps.example"})
	if len(in.Deliveries) != 0 {
		t.Fatalf("the untrained intake received it when addressed: %s", dump(in))
	}
	// An address that is not Eastmoor's own opens no way round the intake.
	other := p.DecideInboundFor(context.Background(), m, "northshire-pio", []string{"someone@else.example"})
	if len(other.Deliveries) != 0 {
		t.Fatalf("a foreign address opened a way round the intake: %s", dump(other))
	}
}

// TestInboundMailboxChoiceCannotReachAGovernorWhoIsASubject: a sending
// gateway (misconfigured or hostile) that addresses the governing governor
// of a prison whose governor is a subject gets no delivery there (MoU 6.1
// police, bullet 5).
func TestInboundMailboxChoiceCannotReachAGovernorWhoIsASubject(t *testing.T) {
	p := builtinPolicy(t, "hmp-northgate")
	m := pkg("northshire-pio", "hmp-northgate")
	m.Subjects = []envelope.Subject{{Role: "governing-governor", Establishment: "hmp-northgate"}}
	gov := p.Self.Mailbox("governing-governor")
	if gov == nil {
		t.Fatal("no governor mailbox in the example")
	}
	d := p.DecideInboundFor(context.Background(), m, "northshire-pio", []string{gov.Address})
	for _, dl := range d.Deliveries {
		if dl.Mailbox == gov.Address {
			t.Fatalf("delivered to the governor who is a subject: %s", dump(d))
		}
	}
}
