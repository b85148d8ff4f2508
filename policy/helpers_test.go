package policy

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
)

// testNow pins the clock: the example directory's training dates are
// judged as at this time.
var testNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func tcheck(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func exampleDirectory(t testing.TB) *config.Directory {
	t.Helper()
	src, err := os.ReadFile("../examples/directory.yaml")
	tcheck(t, err, "read example directory")
	d, err := config.LoadDirectory("../examples/directory.yaml", src)
	tcheck(t, err, "load example directory")
	return d
}

// builtinPolicy is the built-in catalogue with default parameters, as the
// gateway of self runs it.
func builtinPolicy(t testing.TB, self string) *Policy {
	t.Helper()
	p, err := Compile(exampleDirectory(t), self, "none.yaml", nil)
	tcheck(t, err, "compile built-in policy")
	return p.At(testNow)
}

func compilePolicy(t testing.TB, self, src string) (*Policy, error) {
	t.Helper()
	p, err := Compile(exampleDirectory(t), self, "policy.yaml", []byte(src))
	if err != nil {
		return nil, err
	}
	return p.At(testNow), nil
}

// pkg is a complete, sanitised, handling-code-1 corruption package from
// one agency to others, about a member of staff of the first addressee.
func pkg(from string, to ...string) *envelope.Manifest {
	return &envelope.Manifest{
		From: from,
		To:   to,
		Label: envelope.Label{
			Classification: envelope.OfficialSensitive,
			Grading:        envelope.Grading{Scheme: envelope.Scheme5x5x5, Source: "B", Intelligence: "2", Handling: "1"},
			Basis:          envelope.BasisAssessment,
			Subjects:       []envelope.DataSubject{"suspected"},
			Purpose:        "corruption-prison",
			Sanitised:      true,
			Originator:     from,
			Reference:      "TEST-0001",
			Created:        time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
		},
		Subjects: []envelope.Subject{{Role: "staff", Establishment: to[0]}},
		Topic:    "corruption",
	}
}

// decide decides as the gateway of the package's sender would.
func decide(p *Policy, m *envelope.Manifest) Decision {
	if q, err := p.As(m.From); err == nil {
		p = q
	}
	return p.Decide(context.Background(), m, Sender{Agency: m.From})
}

func deliveriesTo(d Decision, agency string) []Delivery {
	var out []Delivery
	for _, x := range d.Deliveries {
		if x.Agency == agency {
			out = append(out, x)
		}
	}
	return out
}

// wantDelivery fails unless the decision delivers to the agency's mailbox
// with the priority, put there by the rule.
func wantDelivery(t *testing.T, d Decision, agency, mailbox string, prio Priority, rule string) {
	t.Helper()
	for _, x := range d.Deliveries {
		if x.Agency == agency && x.Mailbox == mailbox {
			if x.Priority != prio || x.Rule != rule {
				t.Errorf("delivery to %s %s: priority %s rule %s, want %s %s", agency, mailbox, x.Priority, x.Rule, prio, rule)
			}
			return
		}
	}
	t.Errorf("no delivery to %s at %s; decision:\n%s", agency, mailbox, dump(d))
}

func wantNoDelivery(t *testing.T, d Decision, agency string) {
	t.Helper()
	if ds := deliveriesTo(d, agency); len(ds) > 0 {
		t.Errorf("%s receives %v; want nothing; decision:\n%s", agency, ds, dump(d))
	}
}

func wantRefusal(t *testing.T, d Decision, agency, rule, reasonPart string) {
	t.Helper()
	for _, r := range d.Refusals {
		if r.Agency == agency && r.Rule == rule {
			if !strings.Contains(r.Reason, reasonPart) {
				t.Errorf("refusal of %s by %s: reason %q does not say %q", agency, rule, r.Reason, reasonPart)
			}
			return
		}
	}
	t.Errorf("no refusal of %s by %s; decision:\n%s", agency, rule, dump(d))
}

func wantHold(t *testing.T, d Decision, agency, rule string) {
	t.Helper()
	for _, h := range d.Holds {
		if h.Agency == agency && h.Rule == rule {
			if d.Decision != Hold {
				t.Errorf("hold on %s but decision %s", agency, d.Decision)
			}
			return
		}
	}
	t.Errorf("no hold on %s by %s; decision:\n%s", agency, rule, dump(d))
}

func wantTrace(t *testing.T, d Decision, rule, effect, detailPart string) {
	t.Helper()
	for _, s := range d.Trace {
		if s.Rule == rule && s.Effect == effect && strings.Contains(s.Detail, detailPart) {
			if s.Source == "" {
				t.Errorf("trace step %s/%s has no source", rule, effect)
			}
			return
		}
	}
	t.Errorf("no trace step %s %s %q; decision:\n%s", rule, effect, detailPart, dump(d))
}

func wantOutcome(t *testing.T, d Decision, want Outcome) {
	t.Helper()
	if d.Decision != want {
		t.Errorf("decision %s, want %s:\n%s", d.Decision, want, dump(d))
	}
}

// wantCitation checks that the rule cites the seed document and section.
func wantCitation(t *testing.T, p *Policy, id, seed, section string) {
	t.Helper()
	r := p.ruleByID(id)
	if r == nil {
		t.Fatalf("no rule %s", id)
	}
	if !strings.Contains(r.Source(), seed) || !strings.Contains(r.Source(), section) {
		t.Errorf("rule %s cites %q; want %s %s", id, r.Source(), seed, section)
	}
}

func dump(d Decision) string {
	var b strings.Builder
	b.WriteString("decision " + string(d.Decision) + "\n")
	for _, x := range d.Deliveries {
		b.WriteString("  deliver " + x.Agency + " " + x.Mailbox + " " + string(x.Priority) + " " + x.Rule + "\n")
	}
	for _, x := range d.Refusals {
		b.WriteString("  refuse " + x.Agency + " " + x.Rule + ": " + x.Reason + "\n")
	}
	for _, x := range d.Holds {
		b.WriteString("  hold " + x.Agency + " " + x.Rule + ": " + x.Reason + "\n")
	}
	for _, s := range d.Trace {
		b.WriteString("  trace " + s.Rule + " " + s.Effect + ": " + s.Detail + "\n")
	}
	return b.String()
}

const (
	seedMoU  = "002_7fa272ff2a5b7e4b.txt"
	seedStmt = "000_8d469ee3e549c8f4.txt"
)
