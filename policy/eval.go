package policy

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
)

type direction int

const (
	outbound direction = iota
	inbound
)

// dest is one destination while a decision is being made.
type dest struct {
	agency *config.Agency
	fn     config.Function
	// contact is a particular address (an escalation contact) to use
	// instead of the mailbox with function fn.
	contact  string
	priority Priority
	rule     string
	// addition marks a copy added in phase 3: if it is refused or its
	// mailbox untrained it is dropped, not held.
	addition bool
	refused  bool
	held     bool
}

// eval is the state of one decision.
type eval struct {
	ctx     context.Context
	p       *Policy
	d       *config.Directory
	m       *envelope.Manifest
	sender  *config.Agency // outbound: the submitter's agency; inbound: the sending agency
	self    *config.Agency
	consent string
	dir     direction
	now     time.Time

	dests  []*dest
	out    Decision
	denied bool
	act    *activation
	// moves counts changes of destination or mailbox, so that the
	// redirections can run until none applies.
	moves int
}

func (e *eval) trace(r Rule, effect, format string, args ...any) {
	detail := format
	if len(args) > 0 {
		detail = fmt.Sprintf(format, args...)
	}
	e.out.Trace = append(e.out.Trace, Step{Rule: r.ID(), Effect: effect, Source: r.Source(), Detail: detail})
}

// step records a trace step whose detail is already composed.
func (e *eval) step(r Rule, effect, detail string) {
	e.out.Trace = append(e.out.Trace, Step{Rule: r.ID(), Effect: effect, Source: r.Source(), Detail: detail})
}

// deny refuses the whole package.
func (e *eval) deny(r Rule, format string, args ...any) {
	reason := fmt.Sprintf(format, args...)
	e.trace(r, EffectDeny, "%s", reason)
	if !e.denied {
		e.denied = true
		if e.dir == inbound {
			e.out.Refusals = append(e.out.Refusals, Refusal{Agency: e.self.ID, Rule: r.ID(), Reason: reason})
			return
		}
		for _, to := range e.m.To {
			if slices.ContainsFunc(e.out.Refusals, func(f Refusal) bool { return f.Agency == to }) {
				continue
			}
			e.out.Refusals = append(e.out.Refusals, Refusal{Agency: to, Rule: r.ID(), Reason: reason})
		}
	}
}

// alert marks the decision for an administrator alert.
func (e *eval) alert(r Rule, format string, args ...any) {
	e.trace(r, EffectAlert, format, args...)
}

// refuse refuses one destination. A refused addition is dropped quietly
// (the trace still shows it); a refused destination is a refusal.
func (e *eval) refuse(d *dest, r Rule, reason string) {
	if d.refused || d.held {
		return
	}
	d.refused = true
	if d.addition {
		e.step(r, EffectOverridden, "no copy to "+d.agency.ID+" (added by "+d.rule+"): "+reason)
		return
	}
	e.step(r, EffectRefuse, d.agency.ID+": "+reason)
	e.out.Refusals = append(e.out.Refusals, Refusal{Agency: d.agency.ID, Rule: r.ID(), Reason: reason})
}

// hold makes one destination wait for a release.
func (e *eval) hold(d *dest, r Rule, reason string) {
	if d.refused || d.held {
		return
	}
	d.held = true
	e.step(r, EffectHold, d.agency.ID+": "+reason)
	e.out.Holds = append(e.out.Holds, HoldEntry{Agency: d.agency.ID, Rule: r.ID(), Reason: reason})
}

// live returns the destinations still going somewhere.
func (e *eval) live() []*dest {
	var ds []*dest
	for _, d := range e.dests {
		if !d.refused && !d.held {
			ds = append(ds, d)
		}
	}
	return ds
}

func (e *eval) addDest(a *config.Agency, fn config.Function, rule string, addition bool) *dest {
	d := &dest{agency: a, fn: fn, priority: Normal, rule: rule, addition: addition}
	e.dests = append(e.dests, d)
	return d
}

func (e *eval) redirect(d *dest, to *config.Agency, fn config.Function, r Rule, why string) {
	if to == nil {
		// A small directory may lack the agency a rule sends packages
		// to: the package is refused there, with both reasons, rather
		// than the directory.
		e.refuse(d, r, why+", but the directory has "+lacking(r.ID(), d.agency)+
			"; nothing was sent there. Ask your administrator to add that agency to the directory")
		return
	}
	e.step(r, EffectRedirect, d.agency.ID+" → "+to.ID+": "+why)
	d.agency, d.fn, d.rule = to, fn, r.ID()
	e.moves++
}

// lacking says which agency a redirecting rule needed and the directory
// does not have.
func lacking(rule string, from *config.Agency) string {
	switch rule {
	case "governor-to-regional-ccu", "probation-via-ccu":
		return "no regional CCU (kind ccu-regional) covering region " + from.Region
	case "hq-to-ncca":
		return "no national CCU (kind ccu-national)"
	case "cat-a-via-pas":
		return "no Police Advisers Section (kind pas)"
	case "police-to-prison-via-pio":
		if from.Force == "" {
			return "no PIO serving " + from.ID + " and no force for it (whose FIB would be its conduit)"
		}
		return "no PIO serving " + from.ID + " and no FIB of force " + from.Force
	}
	return "no agency to receive it"
}

// setMailbox sends a destination to a particular mailbox function.
func (e *eval) setMailbox(d *dest, fn config.Function, r Rule) {
	d.fn, d.rule = fn, r.ID()
	e.moves++
}

func (e *eval) deadline(r Rule, kind string, hours int, why string) {
	for i, dl := range e.out.Deadlines {
		if dl.Kind == kind {
			if hours < dl.Hours {
				// The shorter clock is the safer one.
				e.out.Deadlines[i].Hours = hours
				e.trace(r, EffectDeadline, "%s deadline shortened to %d hours: %s", kind, hours, why)
			}
			return
		}
	}
	e.out.Deadlines = append(e.out.Deadlines, Deadline{Kind: kind, Hours: hours})
	e.step(r, EffectDeadline, kind+" within "+strconv.Itoa(hours)+" hours: "+why)
}

// governorSubject reports whether the governing governor of the prison,
// or the holder of a post with oversight of the intelligence function
// there, is a subject. A governor subject with no establishment is taken
// to concern every prison, which is the safer reading.
func (e *eval) governorSubject(prison string) bool {
	_, ok := e.oversightSubject(prison)
	return ok
}

// oversightSubject says who, among the subjects, makes it inappropriate to
// disseminate to the prison (MoU 6.1 police, bullet 5: "If it is
// inappropriate to disseminate to prisons (e.g. if it concerns the
// governing-governor), police should disseminate to the regional CCU"):
// the governing governor, or the holder of a post the directory marks as
// having oversight of the intelligence function at that prison. The
// governor is the MoU's example, not the whole rule.
func (e *eval) oversightSubject(prison string) (who string, ok bool) {
	for _, s := range e.m.Subjects {
		if s.Role == "governing-governor" && (s.Establishment == "" || s.Establishment == prison) {
			return "the governing governor of " + prison, true
		}
	}
	a := e.d.Agency(prison)
	if a == nil {
		return "", false
	}
	for _, s := range e.m.Subjects {
		post := s.Post
		if post == "" && !slices.ContainsFunc(envelope.Roles, func(c envelope.Code) bool { return c.Code == string(s.Role) }) {
			// A manifest built without ParseManifest ("role: lccm").
			post = string(s.Role)
		}
		// A post holder with no establishment is taken to concern every
		// prison that has the post, as a governor with none is.
		if post == "" || (s.Establishment != prison && s.Establishment != "") {
			continue
		}
		if p := a.Post(post); p != nil && p.Oversight {
			return fmt.Sprintf("the %s (post %s, %s, with oversight of the intelligence function) of %s", p.Name, p.ID, p.Kind, prison), true
		}
	}
	return "", false
}

func (e *eval) hasRole(role envelope.Role) bool {
	for _, s := range e.m.Subjects {
		if s.Role == role {
			return true
		}
	}
	return false
}

// catA reports whether a prisoner subject is Category A, potential Cat A,
// on the E-List or a terrorist prisoner (Statement, PAS role).
func (e *eval) catA() bool {
	for _, s := range e.m.Subjects {
		for _, f := range s.Flags {
			switch f {
			case "cat-a", "potential-cat-a", "e-list", "terrorism":
				return true
			}
		}
	}
	return false
}

func (e *eval) hasAnyRisk(risks []string) []string {
	var found []string
	for _, r := range e.m.Risk {
		if slices.Contains(risks, r) {
			found = append(found, r)
		}
	}
	return found
}

// crossing reports whether a package between the two agencies crosses
// between law enforcement and HMPPS.
func crossing(a, b *config.Agency) bool { return a.Kind.Police() != b.Kind.Police() }

// sameOrg reports whether two agencies are one organisation (a PIO unit
// or FIB is part of its force).
func (e *eval) sameOrg(a, b string) bool { return e.d.Organisation(a) == e.d.Organisation(b) }

// finish dedupes deliveries, settles the outcome and fills empty lists so
// that the JSON form always has every field.
func (e *eval) finish() Decision {
	out := &e.out
	if out.Deliveries == nil {
		out.Deliveries = []Delivery{}
	}
	if out.Refusals == nil {
		out.Refusals = []Refusal{}
	}
	if out.Holds == nil {
		out.Holds = []HoldEntry{}
	}
	if out.Deadlines == nil {
		out.Deadlines = []Deadline{}
	}
	if out.Trace == nil {
		out.Trace = []Step{}
	}
	switch {
	case len(out.Holds) > 0:
		out.Decision = Hold
	case len(out.Deliveries) > 0:
		out.Decision = Deliver
	default:
		out.Decision = Deny
	}
	return *out
}

// deliver turns the live destinations into deliveries, choosing each
// mailbox under trained-recipients, and merging duplicates (the higher
// priority and the first rule win).
func (e *eval) deliver() {
	for _, d := range e.dests {
		if d.refused || d.held {
			continue
		}
		addr, ok := e.p.trained.mailbox(e, d)
		if !ok {
			continue
		}
		dup := false
		for i := range e.out.Deliveries {
			dl := &e.out.Deliveries[i]
			if dl.Agency == d.agency.ID && dl.Mailbox == addr {
				if d.priority == Immediate {
					dl.Priority = Immediate
				}
				dup = true
				break
			}
		}
		if !dup {
			e.out.Deliveries = append(e.out.Deliveries, Delivery{Agency: d.agency.ID, Mailbox: addr, Priority: d.priority, Rule: d.rule})
		}
	}
}
