package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/conduit-gateway/conduit/envelope"
)

// MoU 6.1 police, bullet 5: "If it is inappropriate to disseminate to
// prisons (e.g. if it concerns the governing-governor), police should
// disseminate to the regional CCU." The governor is the example: a subject
// holding a post the directory marks with oversight of the prison's
// intelligence function (examples/directory.yaml, hmp-northgate's posts)
// is treated the same; any other post holder is ordinary staff.
func TestOversightPostSubjectGoesToRegionalCCU(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	tests := []struct {
		name    string
		subject envelope.Subject
		toCCU   bool
		detail  string
	}{
		{"lccm", envelope.Subject{Role: "staff", Post: "lccm", Establishment: "hmp-northgate"}, true,
			"the Local Counter Corruption Manager (post lccm, senior-manager, with oversight of the intelligence function) of hmp-northgate is a subject"},
		{"lccm written as a role", envelope.Subject{Role: "lccm", Establishment: "hmp-northgate"}, true, "post lccm"},
		{"deputy lccm", envelope.Subject{Role: "staff", Post: "d-lccm", Establishment: "hmp-northgate"}, true, "post d-lccm"},
		{"head of security", envelope.Subject{Role: "staff", Post: "head-of-security", Establishment: "hmp-northgate"}, true, "post head-of-security"},
		{"deputy governor", envelope.Subject{Role: "staff", Post: "deputy-governor", Establishment: "hmp-northgate"}, true, "post deputy-governor"},
		{"duty governor", envelope.Subject{Role: "staff", Post: "duty-governor", Establishment: "hmp-northgate"}, false, ""},
		{"wing officer", envelope.Subject{Role: "staff", Post: "wing-officer", Establishment: "hmp-northgate"}, false, ""},
		{"officer with no post", envelope.Subject{Role: "staff", Establishment: "hmp-northgate"}, false, ""},
		{"lccm of another prison", envelope.Subject{Role: "staff", Post: "lccm", Establishment: "hmp-ravensby"}, false, ""},
		{"lccm with no establishment: every prison with the post", envelope.Subject{Role: "staff", Post: "lccm"}, true, "post lccm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := pkg("northshire-pio", "hmp-northgate")
			m.Subjects = []envelope.Subject{tt.subject}
			d := decide(p, m)
			if tt.toCCU {
				wantNoDelivery(t, d, "hmp-northgate")
				wantDelivery(t, d, "ccu-north", "rcca@ccu-north.hmpps.example", Normal, "governor-to-regional-ccu")
				wantTrace(t, d, "governor-to-regional-ccu", EffectRedirect, tt.detail)
				return
			}
			wantDelivery(t, d, "hmp-northgate", "intel@northgate.hmpps.example", Normal, "addressed")
			wantNoDelivery(t, d, "ccu-north")
		})
	}
}

// An ordinary officer reported by the police goes to the prison by the
// staff-corruption route of the catalogue: through its PIO (MoU 6.1
// police, bullet 4), then at the prison the 72-hour triage clock (MoU 6.1
// prison responsibilities).
func TestOfficerSubjectFollowsTheStaffCorruptionRoute(t *testing.T) {
	m := pkg("northshire-police", "hmp-northgate")
	m.Subjects = []envelope.Subject{{Role: "staff", Post: "wing-officer", Establishment: "hmp-northgate"}}
	d := decide(builtinPolicy(t, "northshire-police"), m)
	wantDelivery(t, d, "northshire-pio", "pio@northshire-pio.example", Normal, "police-to-prison-via-pio")
	wantNoDelivery(t, d, "ccu-north")

	in := pkg("northshire-pio", "hmp-northgate")
	in.Subjects = m.Subjects
	p, err := builtinPolicy(t, "northshire-pio").As("hmp-northgate")
	tcheck(t, err, "as hmp-northgate")
	d = p.DecideInbound(context.Background(), in, "northshire-pio")
	wantOutcome(t, d, Deliver)
	wantTrace(t, d, "triage-72h", EffectDeadline, "triage within 72 hours")

	// The same package about the LCCM, arriving at the prison anyway, is
	// refused and alerted.
	in.Subjects = []envelope.Subject{{Role: "staff", Post: "lccm", Establishment: "hmp-northgate"}}
	d = p.DecideInbound(context.Background(), in, "northshire-pio")
	wantOutcome(t, d, Deny)
	wantTrace(t, d, "governor-to-regional-ccu", EffectDeny, "post lccm")
}

// A prison whose entry lists no posts has the two MoU 4.1 requires every
// prison to appoint, the LCCM and the D-LCCM, both with oversight.
func TestEveryPrisonHasAnLCCM(t *testing.T) {
	p := builtinPolicy(t, "northshire-pio")
	for _, post := range []string{"lccm", "d-lccm"} {
		m := pkg("northshire-pio", "hmp-eastmoor")
		m.Subjects = []envelope.Subject{{Role: "staff", Post: post, Establishment: "hmp-eastmoor"}}
		d := decide(p, m)
		wantNoDelivery(t, d, "hmp-eastmoor")
		wantTrace(t, d, "governor-to-regional-ccu", EffectRedirect, "post "+post)
	}
}

func TestUndeclaredPostIsRefusedNotGuessed(t *testing.T) {
	m := pkg("northshire-pio", "hmp-northgate")
	m.Subjects = []envelope.Subject{{Role: "staff", Post: "chaplain", Establishment: "hmp-northgate"}}
	d := decide(builtinPolicy(t, "northshire-pio"), m)
	wantOutcome(t, d, Deny)
	wantTrace(t, d, "governor-to-regional-ccu", EffectDeny, "does not declare there (declared posts: lccm, d-lccm")
}

// Administrator rules see the post and its kind (local agreements route by
// post, MoU 7.1).
func TestAdminRuleSeesPostAndKind(t *testing.T) {
	p, err := compilePolicy(t, "northshire-pio", `rules:
  - id: senior-manager-to-ccu
    when: '"senior-manager" in manifest.post_kinds && "duty-governor" in manifest.posts == false'
    action: copy
    to: [ccu-national]
    reason: local agreement NE-2026-07 copies packages about senior managers to the national CCU
  - id: oversight-flag
    when: manifest.oversight
    action: copy
    to: [pas]
    reason: oversight posts are also briefed to PAS
`)
	tcheck(t, err, "compile")
	m := pkg("northshire-pio", "hmp-ravensby")
	m.Subjects = []envelope.Subject{{Role: "staff", Post: "duty-governor", Establishment: "hmp-ravensby"}}
	d := decide(p, m)
	wantNoDelivery(t, d, "ccu-national")
	wantNoDelivery(t, d, "pas")

	m.Subjects = []envelope.Subject{{Role: "staff", Post: "head-of-security", Establishment: "hmp-ravensby"}}
	d = decide(p, m)
	if len(deliveriesTo(d, "ccu-national")) == 0 || len(deliveriesTo(d, "pas")) == 0 {
		t.Errorf("rules on the post's kind and oversight did not fire:\n%+v", d.Trace)
	}
	for _, s := range d.Trace {
		if strings.Contains(s.Detail, "ravensby") && s.Rule == "governor-to-regional-ccu" && s.Effect == EffectRedirect {
			return
		}
	}
	t.Errorf("head of security at hmp-ravensby not redirected to its regional CCU:\n%+v", d.Trace)
}
