package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
)

// twoAgencies is the smallest useful directory: a PIO unit and the prison
// it serves, neither its force, a PAS, nor any CCU listed.
const twoAgencies = `agencies:
  - id: northshire-pio
    name: Northshire Police PIO unit
    kind: pio
    jurisdiction: GB
    serves: [hmp-northgate]
    gateway: conduit.northshire-pio.example
    fingerprint: 0123456789ABCDEF0123456789ABCDEF01234567
    mailboxes: [{address: pio@northshire.police.example, trained: 2026-11-01}]
  - id: hmp-northgate
    name: HMP Northgate
    kind: prison
    region: north-east
    jurisdiction: GB
    gateway: conduit.hmp-northgate.example:2525
    fingerprint: 89ABCDEF0123456789ABCDEF0123456789ABCDEF
    mailboxes:
      - {address: intel@northgate.example, trained: 2026-11-01}
      - {address: governor@northgate.example, function: governing-governor, trained: 2026-11-01}
`

// A rule that needs an agency a small directory lacks refuses the
// packages that need it, naming what is missing; every other package goes.
func TestSmallDirectoryRefusesOnlyWhatNeedsAMissingAgency(t *testing.T) {
	dir, err := config.LoadDirectory("directory.yaml", []byte(twoAgencies))
	tcheck(t, err, "a two-agency directory")
	p, err := Compile(dir, "northshire-pio", "none.yaml", nil)
	tcheck(t, err, "compile")
	p = p.At(testNow)
	for _, tc := range []struct {
		name    string
		shape   func(*envelope.Manifest)
		outcome Outcome
		rule    string
		says    string
	}{
		{"routine", func(*envelope.Manifest) {}, Deliver, "", ""},
		{"governor subject, no regional CCU",
			func(m *envelope.Manifest) {
				m.Subjects = []envelope.Subject{{Role: "governing-governor", Establishment: "hmp-northgate"}}
			},
			Deny, "governor-to-regional-ccu", "no regional CCU (kind ccu-regional) covering region north-east"},
		{"HQ concerned, no national CCU",
			func(m *envelope.Manifest) { m.Subjects = []envelope.Subject{{Role: "hq"}} },
			Deny, "hq-to-ncca", "no national CCU (kind ccu-national)"},
		{"Category A prisoner, no PAS",
			func(m *envelope.Manifest) {
				m.Subjects = []envelope.Subject{{Role: "prisoner", Establishment: "hmp-northgate", Flags: []string{"cat-a"}}}
			},
			Deny, "cat-a-via-pas", "no Police Advisers Section (kind pas)"},
		{"firearms, no PAS for the seniority copy",
			func(m *envelope.Manifest) { m.Risk = []string{"firearms"} },
			Deny, "high-risk-seniority", "the directory has no Police Advisers Section"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := pkg("northshire-pio", "hmp-northgate")
			tc.shape(m)
			d := p.Decide(context.Background(), m, Sender{Agency: "northshire-pio"})
			wantOutcome(t, d, tc.outcome)
			if tc.outcome == Deliver {
				wantDelivery(t, d, "hmp-northgate", "intel@northgate.example", Normal, "addressed")
				return
			}
			wantNoDelivery(t, d, "hmp-northgate")
			wantRefusal(t, d, "hmp-northgate", tc.rule, tc.says)
		})
	}
}

// A prison no PIO serves is reached through the FIB of its force; when the
// directory has neither, the police package is refused, not sent direct.
func TestPrisonWithoutAnyPoliceConduitIsRefused(t *testing.T) {
	src := strings.Replace(twoAgencies, "    serves: [hmp-northgate]\n", "", 1)
	dir, err := config.LoadDirectory("directory.yaml", []byte(src))
	tcheck(t, err, "directory")
	p, err := Compile(dir, "northshire-pio", "none.yaml", nil)
	tcheck(t, err, "compile")
	d := p.At(testNow).Decide(context.Background(), pkg("northshire-pio", "hmp-northgate"), Sender{Agency: "northshire-pio"})
	wantOutcome(t, d, Deny)
	wantNoDelivery(t, d, "hmp-northgate")
	wantRefusal(t, d, "hmp-northgate", "police-to-prison-via-pio", "no PIO serving hmp-northgate and no force for it")
}
