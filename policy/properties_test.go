package policy

// The agreements' safety properties, checked on every decision over
// packages generated across the whole space the manifest allows: every
// label value, subject role and post, risk, topic, sender and addressee in
// the example directory, under the example administrator policy. Each
// property cites the seed paragraph it comes from (docs/policy.md,
// "Safety properties"). A failure prints the smallest package that still
// breaks the property (greedy shrinking), in the manifest's YAML form.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
)

// property is one promise of the agreements, judged on one decision.
type property struct {
	id, source string
	// broken returns why the decision breaks the promise, or "".
	broken func(w *world, c *propCase, d Decision) string
}

// propCase is one generated package and who decides it.
type propCase struct {
	m       *envelope.Manifest
	sender  string // the authenticated sender (outbound) or signer (inbound)
	self    string // the gateway deciding
	inbound bool
}

type world struct {
	dir    *config.Directory
	policy *Policy
}

// oversight reports whether a prison's governing governor, or the holder
// of a post the directory marks with oversight there, is a subject,
// computed here from the directory, independently of the policy's code.
func (w *world) oversight(m *envelope.Manifest, prison *config.Agency) bool {
	for _, s := range m.Subjects {
		if s.Role == "governing-governor" && (s.Establishment == "" || s.Establishment == prison.ID) {
			return true
		}
		if s.Post != "" && (s.Establishment == prison.ID || s.Establishment == "") {
			if p := prison.Post(s.Post); p != nil && p.Oversight {
				return true
			}
		}
	}
	return false
}

var properties = []property{
	{"oversight-subject-prison-receives-nothing", "002_7fa272ff2a5b7e4b.txt, MoU 6.1 police responsibilities, bullet 5",
		func(w *world, c *propCase, d Decision) string {
			for _, x := range d.Deliveries {
				if a := w.dir.Agency(x.Agency); a.Kind == config.Prison && w.oversight(c.m, a) {
					return fmt.Sprintf("%s received a package about its governing governor or a post with oversight (%s)", a.ID, x.Mailbox)
				}
			}
			return ""
		}},
	{"handling-code-4-stays-in-originating-agency", "NIM 5x5x5 handling code 4; 002_7fa272ff2a5b7e4b.txt, MoU Annex A (Data handling)",
		func(w *world, c *propCase, d Decision) string {
			l := c.m.Label
			if l.Grading.Scheme != envelope.Scheme5x5x5 || l.Grading.Handling != "4" {
				return ""
			}
			for _, x := range d.Deliveries {
				if w.dir.Organisation(x.Agency) != w.dir.Organisation(l.Originator) {
					return fmt.Sprintf("handling code 4 of %s delivered to %s", l.Originator, x.Agency)
				}
			}
			return ""
		}},
	{"handling-code-5-only-to-originator", "NIM 5x5x5 handling code 5 (refer to the originator)",
		func(w *world, c *propCase, d Decision) string {
			l := c.m.Label
			if l.Grading.Scheme != envelope.Scheme5x5x5 || l.Grading.Handling != "5" {
				return ""
			}
			for _, x := range d.Deliveries {
				if x.Agency != l.Originator && !(c.inbound && x.Agency == c.self) {
					return fmt.Sprintf("handling code 5 of %s delivered to %s", l.Originator, x.Agency)
				}
			}
			return ""
		}},
	{"handling-code-3-no-destination", "NIM 5x5x5 handling code 3; 002_7fa272ff2a5b7e4b.txt, MoU Annex A (Data handling: UK/EEA only)",
		func(w *world, c *propCase, d Decision) string {
			l := c.m.Label
			if l.Grading.Scheme == envelope.Scheme5x5x5 && l.Grading.Handling == "3" && len(d.Deliveries) > 0 {
				return "handling code 3 delivered to " + d.Deliveries[0].Agency
			}
			return ""
		}},
	{"never-above-route-ceiling", "002_7fa272ff2a5b7e4b.txt, MoU Annex A (Description of method of sharing: secure email)",
		func(w *world, c *propCase, d Decision) string {
			cl := c.m.Label.Classification
			for _, x := range d.Deliveries {
				a := w.dir.Agency(x.Agency)
				if cl.Rank() > a.Ceiling.Rank() || cl.Rank() > envelope.OfficialSensitive.Rank() {
					return fmt.Sprintf("%s delivered to %s (ceiling %s)", cl, a.ID, a.Ceiling)
				}
			}
			return ""
		}},
	{"unsanitised-never-crosses", "002_7fa272ff2a5b7e4b.txt, MoU 6.1 (sanitisation, both sides); Annex B",
		func(w *world, c *propCase, d Decision) string {
			if c.m.Label.Sanitised {
				return ""
			}
			for _, x := range d.Deliveries {
				if w.dir.Organisation(x.Agency) != w.dir.Organisation(c.sender) {
					return fmt.Sprintf("unsanitised package from %s delivered to %s", c.sender, x.Agency)
				}
			}
			return ""
		}},
	{"cat-a-through-pas", "000_8d469ee3e549c8f4.txt, Statement of Common Principles (PAS: gatekeeper for Category A, E-List and terrorist prisoners)",
		func(w *world, c *propCase, d Decision) string {
			if !catA(c.m) {
				return ""
			}
			from := w.dir.Agency(c.sender)
			for _, x := range d.Deliveries {
				a := w.dir.Agency(x.Agency)
				if from.Kind != config.PAS && a.Kind != config.PAS && from.Kind.Police() != a.Kind.Police() {
					return fmt.Sprintf("Category A intelligence crossed from %s to %s without PAS", from.ID, a.ID)
				}
			}
			return ""
		}},
	{"uk-eea-only", "002_7fa272ff2a5b7e4b.txt, MoU Annex A (Data handling)",
		func(w *world, c *propCase, d Decision) string {
			for _, x := range d.Deliveries {
				if a := w.dir.Agency(x.Agency); !ukEEA[a.Jurisdiction] {
					return fmt.Sprintf("delivered to %s (%s), outside the UK/EEA", a.ID, a.Jurisdiction)
				}
			}
			return ""
		}},
}

// chooser supplies the generator's choices: a seeded PRNG for the property
// test, the fuzzer's bytes for the fuzz target.
type chooser interface{ intn(n int) int }

type randChooser struct{ r *rand.Rand }

func (c randChooser) intn(n int) int { return c.r.IntN(n) }

type byteChooser struct{ b []byte }

func (c *byteChooser) intn(n int) int {
	if len(c.b) == 0 {
		return 0
	}
	v := int(c.b[0])
	c.b = c.b[1:]
	return v % n
}

func pick[T any](c chooser, xs []T) T { return xs[c.intn(len(xs))] }

func codeList2(cs []envelope.Code) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Code
	}
	return out
}

// generate builds one package over the manifest's whole space.
func (w *world) generate(c chooser) *propCase {
	ids := make([]string, len(w.dir.Agencies))
	var establishments, withPosts []*config.Agency
	for i, a := range w.dir.Agencies {
		ids[i] = a.ID
		switch a.Kind {
		case config.Prison, config.ProbationDivision, config.CRC, config.PECS:
			establishments = append(establishments, a)
		}
		if len(a.Posts) > 0 {
			withPosts = append(withPosts, a)
		}
	}
	sender := pick(c, ids)
	m := &envelope.Manifest{From: sender}
	for n := 1 + c.intn(3); n > 0; n-- {
		if to := pick(c, ids); !slices.Contains(m.To, to) {
			m.To = append(m.To, to)
		}
	}
	l := &m.Label
	l.Classification = pick(c, envelope.Classifications)
	if l.Classification == envelope.OfficialSensitive {
		l.Descriptor = pick(c, append([]string{""}, envelope.Descriptors...))
	}
	if c.intn(4) == 0 {
		l.Caveat = "UK EYES ONLY"
	}
	if c.intn(3) > 0 {
		l.Grading = envelope.Grading{Scheme: envelope.Scheme5x5x5, Source: pick(c, []string{"A", "B", "C", "D", "E"}),
			Intelligence: pick(c, []string{"1", "2", "3", "4", "5"}), Handling: pick(c, []string{"1", "2", "3", "4", "5"})}
		if l.Grading.Handling == "2" && c.intn(2) == 0 {
			l.Authorisation = "AUTH-1"
		}
	} else {
		l.Grading = envelope.Grading{Scheme: envelope.Scheme3x5x2, Source: pick(c, []string{"1", "2", "3"}),
			Intelligence: pick(c, []string{"A", "B", "C", "D", "E"}), Handling: pick(c, []string{"P", "C"})}
		if l.Grading.Handling == "C" && c.intn(2) == 0 {
			l.Conditions = "not to be used in evidence"
		}
	}
	l.Basis = pick(c, envelope.Bases)
	l.Subjects = []envelope.DataSubject{pick(c, envelope.DataSubjects)}
	l.Purpose = envelope.Purpose(pick(c, codeList2(envelope.Purposes)))
	l.Sanitised = c.intn(4) > 0
	l.Originator = sender
	if c.intn(4) == 0 {
		// A package passed on: originated elsewhere.
		l.Originator = pick(c, ids)
	}
	l.Reference = "PROP-1"
	l.Created = testNow.Add(-time.Hour)
	for n := c.intn(3); n > 0; n-- {
		var s envelope.Subject
		switch c.intn(3) {
		case 0: // a post at an establishment that declares posts
			a := pick(c, withPosts)
			s = envelope.Subject{Role: "staff", Post: pick(c, a.PostIDs()), Establishment: a.ID}
			if c.intn(5) == 0 {
				s.Establishment = "" // concerns every prison with the post
			}
		default:
			s.Role = envelope.Role(pick(c, codeList2(envelope.Roles)))
			if c.intn(4) > 0 {
				s.Establishment = pick(c, establishments).ID
			}
			if s.Role == "prisoner" {
				for _, f := range codeList2(envelope.Flags) {
					if c.intn(4) == 0 {
						s.Flags = append(s.Flags, f)
					}
				}
			}
		}
		m.Subjects = append(m.Subjects, s)
	}
	for _, r := range codeList2(envelope.Risks) {
		if c.intn(5) == 0 {
			m.Risk = append(m.Risk, r)
		}
	}
	m.Topic = pick(c, append([]string{""}, codeList2(envelope.Topics)...))
	pc := &propCase{m: m, sender: sender, self: sender}
	if c.intn(3) == 0 {
		// Inbound: decided by the gateway of an addressee receiving it
		// (a gateway of the agreements: in the UK/EEA).
		if self := pick(c, m.To); ukEEA[w.dir.Agency(self).Jurisdiction] {
			pc.inbound, pc.self = true, self
		}
	}
	return pc
}

func (w *world) decide(c *propCase) Decision {
	p, err := w.policy.As(c.self)
	if err != nil {
		panic(err)
	}
	if c.inbound {
		return p.DecideInbound(context.Background(), c.m, c.sender)
	}
	return p.Decide(context.Background(), c.m, Sender{Agency: c.sender})
}

// check returns the first property the case breaks.
func (w *world) check(c *propCase) (property, string, bool) {
	d := w.decide(c)
	for _, p := range properties {
		if why := p.broken(w, c, d); why != "" {
			return p, why, true
		}
	}
	return property{}, "", false
}

// shrink simplifies a failing case one step at a time, keeping each step
// that still breaks the same property.
func (w *world) shrink(c *propCase, prop string) *propCase {
	still := func(n *propCase) bool {
		if n.m.ValidateFacts() != nil {
			return false
		}
		p, _, bad := w.check(n)
		return bad && p.id == prop
	}
	clone := func(c *propCase) *propCase {
		n := *c
		m := *c.m
		m.To = slices.Clone(c.m.To)
		m.Risk = slices.Clone(c.m.Risk)
		m.Subjects = slices.Clone(c.m.Subjects)
		for i := range m.Subjects {
			m.Subjects[i].Flags = slices.Clone(m.Subjects[i].Flags)
		}
		m.Label.Subjects = slices.Clone(c.m.Label.Subjects)
		n.m = &m
		return &n
	}
	for changed := true; changed; {
		changed = false
		var steps []func(*propCase) bool
		for i := range c.m.To {
			steps = append(steps, func(n *propCase) bool {
				if len(n.m.To) < 2 || i >= len(n.m.To) {
					return false
				}
				n.m.To = slices.Delete(n.m.To, i, i+1)
				return true
			})
		}
		for i := range c.m.Subjects {
			steps = append(steps, func(n *propCase) bool {
				if i >= len(n.m.Subjects) {
					return false
				}
				n.m.Subjects = slices.Delete(n.m.Subjects, i, i+1)
				return true
			}, func(n *propCase) bool {
				if i >= len(n.m.Subjects) || len(n.m.Subjects[i].Flags) == 0 {
					return false
				}
				n.m.Subjects[i].Flags = n.m.Subjects[i].Flags[1:]
				return true
			})
		}
		for i := range c.m.Risk {
			steps = append(steps, func(n *propCase) bool {
				if i >= len(n.m.Risk) {
					return false
				}
				n.m.Risk = slices.Delete(n.m.Risk, i, i+1)
				return true
			})
		}
		simpler := func(get func(*envelope.Manifest) *string, v string) func(*propCase) bool {
			return func(n *propCase) bool {
				p := get(n.m)
				if *p == v {
					return false
				}
				*p = v
				return true
			}
		}
		steps = append(steps,
			simpler(func(m *envelope.Manifest) *string { return &m.Topic }, ""),
			simpler(func(m *envelope.Manifest) *string { return &m.Label.Descriptor }, ""),
			simpler(func(m *envelope.Manifest) *string { return &m.Label.Caveat }, ""),
			simpler(func(m *envelope.Manifest) *string { return &m.Label.Authorisation }, ""),
			simpler(func(m *envelope.Manifest) *string { return &m.Label.Conditions }, ""),
		)
		for _, step := range steps {
			n := clone(c)
			if step(n) && still(n) {
				c, changed = n, true
			}
		}
	}
	return c
}

func (w *world) report(t *testing.T, c *propCase, p property, why string) {
	t.Helper()
	small := w.shrink(c, p.id)
	_, smallWhy, _ := w.check(small)
	src, _ := yaml.Marshal(small.m)
	how := "decided by " + small.self + "'s gateway, sent by " + small.sender
	if small.inbound {
		how = "received by " + small.self + " from " + small.sender
	}
	t.Fatalf("property %s (%s) broken: %s\n(first seen as: %s)\nsmallest package, %s:\n%s", p.id, p.source, smallWhy, why, how, src)
}

func newWorld(t testing.TB) *world {
	dir := exampleDirectory(t)
	src, err := os.ReadFile("../examples/policy.yaml")
	tcheck(t, err, "read example policy")
	p, err := Compile(dir, "northshire-pio", "../examples/policy.yaml", src)
	tcheck(t, err, "compile example policy")
	return &world{dir: dir, policy: p.At(testNow)}
}

// TestSafetyPropertiesHoldOnEveryDecision generates packages across the
// manifest's space and checks every property on each decision.
func TestSafetyPropertiesHoldOnEveryDecision(t *testing.T) {
	w := newWorld(t)
	n := 20000
	if testing.Short() {
		n = 2000
	}
	r := randChooser{rand.New(rand.NewPCG(2026, 11))}
	seen := map[string]int{}
	for i := 0; i < n; i++ {
		c := w.generate(r)
		if c.m.ValidateFacts() != nil {
			t.Fatalf("generator made an invalid manifest: %v", c.m.ValidateFacts())
		}
		if p, why, bad := w.check(c); bad {
			w.report(t, c, p, why)
		}
		d := w.decide(c)
		seen[string(d.Decision)]++
		for _, x := range d.Deliveries {
			if a := w.dir.Agency(x.Agency); a.Kind == config.Prison {
				seen["prison-delivered"]++
			}
		}
		if c.inbound {
			seen["inbound"]++
		}
	}
	// The generator must reach every outcome, or the properties are only
	// checked on refusals.
	for _, k := range []string{"deliver", "hold", "deny", "prison-delivered", "inbound"} {
		if seen[k] < n/100 {
			t.Errorf("only %d of %d generated packages reached %s: the generator does not cover the space", seen[k], n, k)
		}
	}
	t.Logf("outcomes over %d packages: %v", n, seen)
}

// TestPropertyCheckerCatchesABrokenDecision proves the properties can
// fail: a decision doctored to deliver to a prison whose LCCM is a subject
// breaks the first property, while the real policy's decision on the same
// package breaks none.
func TestPropertyCheckerCatchesABrokenDecision(t *testing.T) {
	w := newWorld(t)
	m := pkg("northshire-pio", "hmp-northgate", "hmp-ravensby")
	m.Subjects = []envelope.Subject{{Role: "staff", Post: "lccm", Establishment: "hmp-northgate"}, {Role: "prisoner"}}
	m.Risk = []string{"escape"}
	c := &propCase{m: m, sender: "northshire-pio", self: "northshire-pio"}
	doctored := Decision{Deliveries: []Delivery{{Agency: "hmp-northgate", Mailbox: "intel@northgate.hmpps.example"}}}
	var got string
	for _, p := range properties {
		if why := p.broken(w, c, doctored); why != "" {
			got = p.id
			break
		}
	}
	if got != "oversight-subject-prison-receives-nothing" {
		t.Fatalf("doctored delivery to a prison whose LCCM is a subject: property %q", got)
	}
	if _, why, bad := w.check(c); bad {
		t.Fatalf("the real policy breaks a property: %s", why)
	}
}

// FuzzSafetyProperties drives the same generator from the fuzzer's bytes.
func FuzzSafetyProperties(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte("governor lccm cat-a escape handling 4 5 unsanitised"))
	w := newWorld(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		c := w.generate(&byteChooser{b: b})
		if c.m.ValidateFacts() != nil {
			return
		}
		if p, why, bad := w.check(c); bad {
			w.report(t, c, p, why)
		}
	})
}
