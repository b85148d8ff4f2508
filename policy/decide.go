package policy

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/envelope"
)

// Policy is a compiled policy: the directory, this gateway's agency, the
// built-in catalogue with its parameters and the administrator's rules.
// It is immutable once compiled, so decisions need no locks.
type Policy struct {
	Directory *config.Directory
	Self      *config.Agency
	Params    Params
	// File is the administrator policy file it was compiled from.
	File string
	// LegacySource says where the legacy-marking table's entry for a
	// marking comes from (config.Config.LegacySource); nil: the built-in
	// table.
	LegacySource func(marking string) string

	rules []Rule // built-in catalogue, docs/design.md order
	admin []*AdminRule
	// now is the clock for training validity (tests pin it).
	now func() time.Time

	gaters     []gater
	redirects  []redirector
	adders     []adder
	destGaters []destGater
	receivers  []receiver
	blockers   []blocker
	trained    *trainedRecipients
	retention  *retention
}

// Rules returns the built-in rules followed by the administrator's.
func (p *Policy) Rules() []Rule {
	out := slices.Clone(p.rules)
	for _, a := range p.admin {
		out = append(out, a)
	}
	return out
}

// AdminRules returns the administrator's rules.
func (p *Policy) AdminRules() []*AdminRule { return p.admin }

// build sorts the built-in rules into their phases.
func (p *Policy) build() {
	p.rules = builtins(&p.Params)
	for _, r := range p.rules {
		if g, ok := r.(gater); ok {
			p.gaters = append(p.gaters, g)
		}
		if g, ok := r.(redirector); ok {
			p.redirects = append(p.redirects, g)
		}
		if g, ok := r.(adder); ok {
			p.adders = append(p.adders, g)
		}
		if g, ok := r.(destGater); ok {
			p.destGaters = append(p.destGaters, g)
		}
		if g, ok := r.(receiver); ok {
			p.receivers = append(p.receivers, g)
		}
		if g, ok := r.(blocker); ok {
			p.blockers = append(p.blockers, g)
		}
		switch g := r.(type) {
		case *trainedRecipients:
			p.trained = g
		case *retention:
			p.retention = g
		}
	}
	if p.now == nil {
		p.now = time.Now
	}
}

// redirectAll runs the built-in redirections until none changes
// anything: a redirection's target may itself be one another redirection
// judges (a PECS report handed to a prison whose governor is a subject; a
// package for probation, sent to the regional CCU, that concerns HQ). The
// redirections only move packages towards the CCU and PAS, so this ends
// within a few passes; the bound is a guard.
func (p *Policy) redirectAll(e *eval) {
	for pass := 0; pass < 8; pass++ {
		before := e.moves
		for _, r := range p.redirects {
			r.redirect(e)
		}
		if e.moves == before {
			return
		}
	}
}

// blockedBy returns the redirection that keeps a package from an agency,
// or nil.
func (p *Policy) blockedBy(e *eval, a *config.Agency) blocker {
	for _, b := range p.blockers {
		if b.blocks(e, a) {
			return b
		}
	}
	return nil
}

// Decide decides where an outgoing package goes. The manifest is the
// package as submitted; sender is the agency the gateway authenticated.
// Decide never fails: a package it cannot route is refused or held, with
// the reason in the decision.
func (p *Policy) Decide(ctx context.Context, m *envelope.Manifest, s Sender) Decision {
	e := &eval{ctx: ctx, p: p, d: p.Directory, m: m, self: p.Self, sender: p.Directory.Agency(s.Agency),
		consent: s.OriginatorConsent, dir: outbound, now: p.now()}
	e.act = newActivation(e)
	// Room for a typical decision, so appends do not regrow.
	e.dests = make([]*dest, 0, 8)
	e.out.Trace = make([]Step, 0, 16)
	e.out.Deliveries = make([]Delivery, 0, 8)
	p.traceMarking(e)

	// Phase 1: package gates.
	for _, g := range p.gaters {
		g.gate(e)
	}
	matched := p.matchAdmin(e)
	holdAll := p.adminGates(e, matched)
	if e.denied {
		p.retention.finish(e)
		return e.finish()
	}

	// Phase 2: redirections. The addressee list, rewritten by the
	// administrator's rules, then the built-in redirections.
	for _, to := range m.To {
		a := p.Directory.Agency(to)
		if a == nil || slices.ContainsFunc(e.dests, func(d *dest) bool { return d.agency == a }) {
			continue
		}
		e.addDest(a, config.Intake, "addressed", false)
	}
	p.adminRewrite(e, matched)
	p.redirectAll(e)

	// Phase 3: additions. Escalation comes last so that every copy,
	// however added, goes at immediate priority and its agency's
	// escalation contacts are told.
	for _, r := range p.adders {
		if _, esc := r.(*imminentRiskEscalation); !esc {
			r.add(e)
		}
	}
	p.adminAdditions(e, matched, false)
	for _, r := range p.adders {
		if _, esc := r.(*imminentRiskEscalation); esc {
			r.add(e)
		}
	}
	p.adminAdditions(e, matched, true)
	if e.denied {
		// An addition the package needs could not be made (the
		// directory lacks its agency): nothing goes.
		p.retention.finish(e)
		return e.finish()
	}

	// Phase 4: destination gates, on every destination.
	for _, d := range e.dests {
		for _, g := range p.destGaters {
			g.destGate(e, d)
		}
		p.adminDestGates(e, matched, d, holdAll)
	}
	e.deliver()
	p.retention.finish(e)
	return e.finish()
}

// RuleLegacyMarking is the trace and audit id of a legacy marking read
// through the legacy-marking table.
const RuleLegacyMarking = "legacy-marking"

// traceMarking records that the package was marked with a legacy marking
// and which table read it as which classification (DESIGN.md, The handling
// label: "mapped by a configurable table, never guessed"), so that the
// decision says so whichever table did it.
func (p *Policy) traceMarking(e *eval) {
	l := &e.m.Label
	if l.Marked == "" || l.Classification == "" {
		return
	}
	src := "built-in legacy-marking table (DESIGN.md, The handling label)"
	if p.LegacySource != nil {
		src = p.LegacySource(l.Marked)
	}
	e.out.Trace = append(e.out.Trace, Step{Rule: RuleLegacyMarking, Effect: EffectRecord, Source: src,
		Detail: fmt.Sprintf("marked %s, read as %s by the legacy-marking table (%s)", l.Marked, l.Classification, src)})
}

// DecideInbound decides what this gateway does with a received package
// that has been opened and verified: from is the agency whose pinned key
// signed it. A refused inbound package is quarantined by the caller.
func (p *Policy) DecideInbound(ctx context.Context, m *envelope.Manifest, from string) Decision {
	return p.DecideInboundFor(ctx, m, from, nil)
}

// DecideInboundFor is DecideInbound for a package the sending gateway
// addressed to particular mailboxes of this agency (its RCPT TO): the
// sender's policy chose them by function from the shared directory (the
// governing governor, the security manager standing in for an untrained
// intake...), so each becomes a destination with that mailbox's function,
// and this agency's own rules then judge each one as they would the intake.
// Addresses that are not this agency's mailboxes are ignored; with none
// left, the package goes to the intake, as DecideInbound.
func (p *Policy) DecideInboundFor(ctx context.Context, m *envelope.Manifest, from string, mailboxes []string) Decision {
	e := &eval{ctx: ctx, p: p, d: p.Directory, m: m, self: p.Self, sender: p.Directory.Agency(from),
		dir: inbound, now: p.now()}
	e.act = newActivation(e)
	p.traceMarking(e)
	var fns []config.Function
	for _, addr := range mailboxes {
		for i := range p.Self.Mailboxes {
			mb := &p.Self.Mailboxes[i]
			if !strings.EqualFold(mb.Address, addr) {
				continue
			}
			fn := mb.Function
			if fn == "" {
				fn = config.Intake
			}
			if !slices.Contains(fns, fn) {
				fns = append(fns, fn)
			}
		}
	}
	if len(fns) == 0 {
		fns = []config.Function{config.Intake}
	}
	for _, fn := range fns {
		e.addDest(p.Self, fn, "addressed", false)
	}
	// Escalation last, as outbound, so that every copy is immediate.
	receivers := slices.Clone(p.receivers)
	for i, r := range receivers {
		if esc, ok := r.(*imminentRiskEscalation); ok {
			receivers = append(slices.Delete(receivers, i, i+1), esc)
			break
		}
	}
	for _, r := range receivers {
		if e.denied {
			// After a refusal only the remaining gates are worth
			// recording; routing a refused package means nothing.
			if _, isAdder := r.(adder); isAdder {
				continue
			}
		}
		r.receive(e)
		if e.sender == nil {
			break
		}
	}
	if !e.denied {
		matched := p.matchAdmin(e)
		holdAll := p.adminGates(e, matched)
		if !e.denied {
			p.adminAdditions(e, matched, true)
			for _, d := range e.dests {
				p.adminDestGates(e, matched, d, holdAll)
			}
		}
	}
	if !e.denied {
		e.deliver()
	}
	p.retention.finish(e)
	return e.finish()
}

// Notice kinds (MoU Annex A: Accuracy; Data loss; Subject rights
// requests).
const (
	NoticeRectification = "rectification"
	NoticeBreach        = "breach"
	NoticeSubjectAccess = "subject-access"
	NoticeUnlawful      = "unlawful-transmission"
)

// Notice is a notice about a package already exchanged.
type Notice struct {
	Kind string
	// From is the agency sending the notice.
	From string
	// Originator is the package's originator, from its label.
	Originator string
	// Reference is the package reference.
	Reference string
	// Recipients are the agencies that received the package, from the
	// audit trail; a rectification by the originator fans out to them.
	Recipients []string
}

// DecideNotice decides where a notice goes. Breach, subject-access
// consultation and unlawful-transmission notices go to the originator;
// a rectification goes to the originator and, when the originator issues
// it, to every agency that received the package.
func (p *Policy) DecideNotice(ctx context.Context, n Notice) Decision {
	e := &eval{ctx: ctx, p: p, d: p.Directory, self: p.Self, sender: p.Directory.Agency(n.From),
		dir: outbound, now: p.now(), m: &envelope.Manifest{To: []string{n.Originator}}}
	var r Rule
	for _, x := range p.rules {
		if x.ID() == "notices" {
			r = x
		}
	}
	orig := p.Directory.Agency(n.Originator)
	switch {
	case e.sender == nil:
		e.deny(r, "the notice's sender %s is not in the directory", n.From)
		return e.finish()
	case e.sender != p.Self:
		e.deny(r, "this gateway sends notices for %s only, not for %s", p.Self.ID, n.From)
		return e.finish()
	case orig == nil:
		e.deny(r, "the originator %s is not in the directory", n.Originator)
		return e.finish()
	}
	switch n.Kind {
	case NoticeBreach, NoticeSubjectAccess, NoticeUnlawful:
		// MoU Annex A, Data loss: "The receiving party will notify the
		// sending party immediately of any Personal Data Breaches";
		// Subject rights: "without first consulting the sending party";
		// Accuracy: "notify the other party without delay" of an
		// unlawful transmission.
		d := e.addDest(orig, config.Intake, r.ID(), false)
		if n.Kind == NoticeBreach || n.Kind == NoticeUnlawful {
			d.priority = Immediate
		}
		e.trace(r, EffectDeliver, "%s notice for %s to the originator %s", n.Kind, n.Reference, orig.ID)
	case NoticeRectification:
		// MoU Annex A, Accuracy: the receiving party "will notify the
		// sending party without delay if it becomes aware of any
		// inaccuracies"; the originator's rectification reaches every
		// agency that holds the data.
		if !e.sameOrg(n.From, orig.ID) {
			e.addDest(orig, config.Intake, r.ID(), false)
			e.trace(r, EffectDeliver, "rectification for %s to the originator %s", n.Reference, orig.ID)
		} else {
			for _, id := range n.Recipients {
				a := p.Directory.Agency(id)
				if a == nil {
					e.trace(r, EffectRefuse, "%s: received the package but is no longer in the directory", id)
					e.out.Refusals = append(e.out.Refusals, Refusal{Agency: id, Rule: r.ID(), Reason: "not in the agency directory"})
					continue
				}
				if a == e.sender || slices.ContainsFunc(e.dests, func(d *dest) bool { return d.agency == a }) {
					continue
				}
				e.addDest(a, config.Intake, r.ID(), false)
				e.trace(r, EffectCopy, "rectification for %s to %s, which received the package", n.Reference, a.ID)
			}
		}
	default:
		e.deny(r, "%q is not a notice kind (rectification, breach, subject-access, unlawful-transmission)", n.Kind)
		return e.finish()
	}
	for _, d := range e.dests {
		if !ukEEA[d.agency.Jurisdiction] {
			e.refuse(d, r, "outside the UK/EEA")
		}
	}
	e.deliver()
	return e.finish()
}

// logDecision writes the decision's outcome (never content or subject
// identities: only agency ids, rule ids and counts).
func logDecision(log *slog.Logger, kind string, m *envelope.Manifest, d *Decision) {
	if log == nil {
		return
	}
	log.Info("policy decision", slog.String("direction", kind), slog.String("from", m.From),
		slog.String("reference", m.Label.Reference), slog.String("decision", string(d.Decision)),
		slog.Int("deliveries", len(d.Deliveries)), slog.Int("refusals", len(d.Refusals)),
		slog.Int("holds", len(d.Holds)), slog.Int("steps", len(d.Trace)))
}

// builtinRouteTo returns the rule by which the sending gateway, deciding
// under the built-in rules, delivers the received package to this
// agency, or "" if it would not.
func (p *Policy) builtinRouteTo(e *eval) string {
	if e.sender == nil {
		return ""
	}
	q := *p
	q.Self, q.admin = e.sender, nil
	// The package arrived signed by the sender's gateway, so a consent it
	// needed was given there; the check here is only about the route.
	d := q.Decide(e.ctx, e.m, Sender{Agency: e.sender.ID, OriginatorConsent: "(inbound check)"})
	for _, x := range d.Deliveries {
		if x.Agency == e.self.ID {
			return x.Rule
		}
	}
	return ""
}

// As returns the policy as the gateway of another agency in the same
// directory would apply it (for `conduit policy explain --as`).
func (p *Policy) As(agency string) (*Policy, error) {
	a := p.Directory.Agency(agency)
	if a == nil {
		return nil, fmt.Errorf("policy: %q is not an agency in the directory", agency)
	}
	q := *p
	q.Self = a
	return &q, nil
}

// At returns the policy deciding as at a fixed time (training records are
// judged at that time).
func (p *Policy) At(t time.Time) *Policy {
	q := *p
	q.now = func() time.Time { return t }
	return &q
}
