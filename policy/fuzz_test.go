package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
)

// FuzzCompile feeds policy files (administrator input) to the compiler:
// it must never panic, and a policy it accepts must decide.
//
// Seeds are small (more in testdata/fuzz/FuzzCompile): the fuzzer
// minimises interesting inputs, which is slow for large ones.
func FuzzCompile(f *testing.F) {
	f.Add([]byte("rules:\n  - id: x\n    when: label.rank > 1\n    action: deny\n"))
	f.Add([]byte("parameters:\n  triage-72h: {hours: 24}\n"))
	dir := exampleDirectory(f)
	m := pkg("northshire-pio", "hmp-northgate")
	m.Risk = []string{"escape"}
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := Compile(dir, "northshire-pio", "fuzz.yaml", src)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		d := p.At(testNow).Decide(context.Background(), m, Sender{Agency: m.From})
		if d.Decision != Deliver && d.Decision != Hold && d.Decision != Deny {
			t.Fatalf("decision %q", d.Decision)
		}
	})
}

// FuzzDecide feeds package manifests (outside input) to the policy and
// checks the invariants no package may break, whatever it says.
func FuzzDecide(f *testing.F) {
	files, _ := filepath.Glob("../examples/packages/*.yaml")
	for _, p := range files {
		src, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	dir := exampleDirectory(f)
	src, err := os.ReadFile("../examples/policy.yaml")
	if err != nil {
		f.Fatal(err)
	}
	p, err := Compile(dir, "northshire-pio", "policy.yaml", src)
	if err != nil {
		f.Fatal(err)
	}
	p = p.At(testNow)
	const secretID = "FUZZ-SUBJECT-IDENTITY"
	f.Fuzz(func(t *testing.T, src []byte) {
		m, err := envelope.ParseManifest(bytes.NewReader(src))
		if err != nil {
			return
		}
		for i := range m.Subjects {
			m.Subjects[i].ID = secretID
		}
		q := p
		if as, err := p.As(m.From); err == nil {
			q = as
		}
		w := &world{dir: dir, policy: p}
		for i, d := range []Decision{
			q.Decide(context.Background(), m, Sender{Agency: m.From}),
			p.DecideInbound(context.Background(), m, m.From),
		} {
			checkInvariants(t, dir, m, d)
			if dir.Agency(m.From) != nil {
				// The agreements' safety properties (properties_test.go).
				c := &propCase{m: m, sender: m.From, self: q.Self.ID, inbound: i == 1}
				if c.inbound {
					c.self = p.Self.ID
				}
				for _, pr := range properties {
					if why := pr.broken(w, c, d); why != "" {
						t.Fatalf("property %s (%s): %s", pr.id, pr.source, why)
					}
				}
			}
			b, _ := json.Marshal(d)
			if strings.Contains(string(b), secretID) {
				t.Fatalf("subject identity in the decision: %s", b)
			}
		}
	})
}

func checkInvariants(t *testing.T, dir *config.Directory, m *envelope.Manifest, d Decision) {
	t.Helper()
	if m.Label.Validate() != nil && len(d.Deliveries) > 0 {
		t.Fatalf("delivered with an invalid label: %v", d.Deliveries)
	}
	if m.Label.Classification.Rank() > envelope.OfficialSensitive.Rank() && len(d.Deliveries) > 0 {
		t.Fatalf("%s delivered", m.Label.Classification)
	}
	for _, x := range d.Deliveries {
		a := dir.Agency(x.Agency)
		if a == nil {
			t.Fatalf("delivery to %s, not in the directory", x.Agency)
		}
		if !ukEEA[a.Jurisdiction] {
			t.Fatalf("delivery outside the UK/EEA: %s", a.ID)
		}
		if m.Label.Classification.Rank() > a.Ceiling.Rank() {
			t.Fatalf("delivery above %s's ceiling", a.ID)
		}
		if a.Kind == config.Prison && x.Mailbox != "" {
			for _, s := range m.Subjects {
				if s.Role == "governing-governor" && (s.Establishment == "" || s.Establishment == a.ID) {
					t.Fatalf("delivery to %s whose governing governor is a subject", a.ID)
				}
			}
		}
		if m.Label.Grading.Scheme == envelope.Scheme5x5x5 && m.Label.Grading.Handling == "3" {
			t.Fatalf("handling code 3 delivered")
		}
		// Code 5: the originator is the one destination allowed.
		if m.Label.Grading.Scheme == envelope.Scheme5x5x5 && m.Label.Grading.Handling == "5" && x.Agency != m.Label.Originator {
			t.Fatalf("handling code 5 delivered to %s, not the originator %s", x.Agency, m.Label.Originator)
		}
		if from := dir.Agency(m.From); from != nil {
			if from.Kind.Police() && (a.Kind == config.ProbationDivision || a.Kind == config.CRC) {
				t.Fatalf("police package delivered straight to probation (%s)", a.ID)
			}
			if catA(m) && from.Kind != config.PAS && a.Kind != config.PAS && from.Kind.Police() != a.Kind.Police() {
				t.Fatalf("Category A intelligence crossed to %s without PAS", a.ID)
			}
		}
		if hasRole(m, "hq") && (a.Kind == config.Prison || a.Kind == config.HMPPSHQ || a.Kind == config.CCURegional) {
			t.Fatalf("package concerning HQ delivered to %s", a.ID)
		}
		if x.Priority != Normal && x.Priority != Immediate {
			t.Fatalf("priority %q", x.Priority)
		}
	}
}

func catA(m *envelope.Manifest) bool {
	for _, s := range m.Subjects {
		for _, f := range s.Flags {
			if f == "cat-a" || f == "potential-cat-a" || f == "e-list" || f == "terrorism" {
				return true
			}
		}
	}
	return false
}

func hasRole(m *envelope.Manifest, role envelope.Role) bool {
	for _, s := range m.Subjects {
		if s.Role == role {
			return true
		}
	}
	return false
}
