package policy

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/envelope"
)

// benchRules is 20 administrator rules of the kinds an administrator
// writes: most do not match a typical package, some do.
func benchRules(t testing.TB) string {
	src, err := os.ReadFile("../examples/policy.yaml")
	tcheck(t, err, "read example policy")
	var b strings.Builder
	b.Write(src) // 7 rules
	conds := []string{
		`label.rank >= 1 && manifest.topic == "corruption" && sender.kind == "police-force"`,
		`"escape" in manifest.risk && directory.kind(manifest.to[0]) == "prison"`,
		`label.purpose in ["crime", "national-security"] && label.scheme == "5x5x5" && label.handling == "1"`,
		`manifest.roles.exists(r, r == "hq") && label.basis == "fact"`,
		`manifest.establishments.exists(e, directory.region(e) == "yorkshire")`,
		`sender.region == "north-west" && label.classification == "OFFICIAL"`,
		`label.subjects.size() > 2`,
		`label.originator != sender.agency && label.purpose == "service-threats"`,
		`"cat-a" in manifest.flags && manifest.topic == "risk-information"`,
		`label.caveat == "UK EYES ONLY" && sender.jurisdiction != "GB"`,
		`manifest.to.exists(a, directory.kind(a) == "pecs") && label.intelligence == "5"`,
		`label.reference.startsWith("TEST-") && label.descriptor == "COMMERCIAL"`,
		`manifest.to.size() > 3`,
	}
	for i, c := range conds {
		action := "copy\n    to: [rpiu-north-east]"
		if i%3 == 1 {
			action = "hold"
		}
		fmt.Fprintf(&b, "  - id: bench-%d\n    when: '%s'\n    action: %s\n", i, c, action)
	}
	return b.String()
}

func benchPolicy(b *testing.B) *Policy {
	p, err := compilePolicy(b, "northshire-pio", benchRules(b))
	tcheck(b, err, "compile bench policy")
	if n := len(p.AdminRules()); n != 20 {
		b.Fatalf("%d admin rules, want 20", n)
	}
	return p
}

// BenchmarkDecide: decisions per second for the example directory, the
// full built-in catalogue and 20 administrator rules, over a mix of
// packages (the goal is at least 100,000 decisions/s on one core:
// go test -bench Decide -cpu 1 ./policy).
func BenchmarkDecide(b *testing.B) {
	p := benchPolicy(b)
	var mix []*envelope.Manifest
	mix = append(mix, pkg("northshire-pio", "hmp-northgate"))
	m := pkg("northshire-pio", "hmp-northgate")
	m.Risk = []string{"escape", "firearms"}
	m.Subjects = []envelope.Subject{{Role: "governing-governor", Establishment: "hmp-northgate"}}
	mix = append(mix, m)
	m = pkg("northshire-pio", "hmp-northgate", "ccu-north")
	m.Subjects = []envelope.Subject{{Role: "prisoner", Establishment: "hmp-northgate", Flags: []string{"cat-a"}}}
	mix = append(mix, m)
	m = pkg("northshire-pio", "hmp-eastmoor", "lakeland-sheriff")
	m.Label.Purpose = "crime"
	mix = append(mix, m)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		m := mix[i%len(mix)]
		d := p.Decide(ctx, m, Sender{Agency: m.From})
		if d.Decision == "" {
			b.Fatal("no decision")
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}
