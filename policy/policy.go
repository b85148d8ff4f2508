// Package policy is in charge of the sharing policy: the rules of the
// agreements between HMPPS and the police (the built-in catalogue of
// docs/design.md, each rule citing the paragraph of the source document it
// implements), the administrator's own rules with CEL conditions, and the
// decisions they produce for an outgoing package (Decide), a received one
// (DecideInbound) and a notice about a package already sent (DecideNotice).
// Every decision carries an ordered trace of the rules that matched, what
// they did and their citation, which `conduit policy explain` prints.
//
// Precedence, whatever order rules are listed in:
//
//  1. package gates (deny or hold the whole package): sender-is-from,
//     known-recipient, label-required, purpose-approved, handling-code,
//     sanitised-to-disseminate, no-onward-disclosure, then the
//     administrator's deny, require and hold rules;
//  2. redirections: the administrator's deliver and redirect rules rewrite
//     the addressee list first, then the built-in redirections have the last
//     word (pecs-security-manager, governor-to-regional-ccu, hq-to-ncca,
//     probation-via-ccu, cat-a-via-pas, police-to-prison-via-pio), run
//     until none changes anything;
//  3. additions: high-risk-seniority and the administrator's copy rules,
//     then imminent-risk-escalation and the administrator's escalate rules
//     (last, so that every copy goes at immediate priority); an addition
//     that a redirection would have kept from its destination is dropped;
//  4. destination gates, applied to every destination however it got
//     there: classification-ceiling, uk-eea-only, handling code 4,
//     sanitised-to-disseminate, administrator deny rules naming the
//     destination, then trained-recipients when a mailbox is chosen.
//
// When two rules pull a package in opposite directions the safer outcome
// wins (refuse over deliver, hold over deliver, no copy over a copy) and the
// trace shows both: the rule that wanted the delivery, and the rule that
// overrode it with effect "overridden".
package policy

import (
	"strings"
)

// Rule is one rule of the policy: a built-in rule of the catalogue or an
// administrator's rule. It is the smallest interface that callers listing
// or explaining the policy need; what a rule does in each phase of a
// decision is an optional method, found by type assertion.
type Rule interface {
	// ID is the rule's stable identifier, as docs/design.md's catalogue names
	// it (or the administrator's id).
	ID() string
	// Source is the citation: the seed document and section the rule
	// implements, or the policy file and line of an administrator rule.
	Source() string
}

// Priority is how urgently a delivery is made.
type Priority string

const (
	Normal    Priority = "normal"
	Immediate Priority = "immediate"
)

// Outcome summarises a decision.
type Outcome string

const (
	// Deliver: every delivery listed is made; there may still be refusals
	// for some addressees.
	Deliver Outcome = "deliver"
	// Hold: at least one destination waits for a release (by the
	// originator or an administrator); the deliveries listed are made now.
	Hold Outcome = "hold"
	// Deny: nothing is delivered and nothing waits.
	Deny Outcome = "deny"
)

// Delivery is one mailbox a package goes to.
type Delivery struct {
	Agency   string   `json:"agency"`
	Mailbox  string   `json:"mailbox"`
	Priority Priority `json:"priority"`
	// Rule is the rule that put this delivery here: "addressed" when the
	// sender addressed the agency and no rule changed it.
	Rule string `json:"rule"`
}

// Refusal is an agency the package will not go to, and why.
type Refusal struct {
	Agency string `json:"agency"`
	Rule   string `json:"rule"`
	Reason string `json:"reason"`
}

// HoldEntry is an agency the package waits for, and what releases it.
type HoldEntry struct {
	Agency string `json:"agency"`
	Rule   string `json:"rule"`
	Reason string `json:"reason"`
}

// Deadline kinds.
const (
	DeadlineAcknowledge = "acknowledge" // imminent-risk-escalation
	DeadlineTriage      = "triage"      // triage-72h
	DeadlineRetention   = "retention"   // retention
	DeadlineHold        = "hold"        // handling-code 5: the originator must decide
)

// Deadline is a clock the gateway starts with the decision; an overdue
// deadline is reported (and, for acknowledge, alerted).
type Deadline struct {
	Kind  string `json:"kind"`
	Hours int    `json:"hours"`
}

// Effects a trace step may record.
const (
	EffectDeny       = "deny"       // the whole package is refused
	EffectRefuse     = "refuse"     // one destination is refused
	EffectHold       = "hold"       // held for a release
	EffectRedirect   = "redirect"   // a destination replaced by another
	EffectDeliver    = "deliver"    // a destination added as if addressed
	EffectCopy       = "copy"       // an additional copy
	EffectEscalate   = "escalate"   // priority raised, escalation copies
	EffectMailbox    = "mailbox"    // a particular mailbox chosen
	EffectRecord     = "record"     // something recorded with the dissemination
	EffectDeadline   = "deadline"   // a clock started
	EffectAlert      = "alert"      // administrators are alerted
	EffectOverridden = "overridden" // a safer rule overrode another's effect
)

// Step is one entry of a decision's trace.
type Step struct {
	Rule   string `json:"rule"`
	Effect string `json:"effect"`
	Source string `json:"source"`
	Detail string `json:"detail"`
}

// Decision is the policy's answer for one package. Its JSON form is the
// stable contract of `conduit policy explain --json` (docs/policy.md).
type Decision struct {
	Decision   Outcome     `json:"decision"`
	Deliveries []Delivery  `json:"deliveries"`
	Refusals   []Refusal   `json:"refusals"`
	Holds      []HoldEntry `json:"holds"`
	Deadlines  []Deadline  `json:"deadlines"`
	Trace      []Step      `json:"trace"`
}

// Alerted reports whether the decision asks for administrators to be
// alerted (a SECRET package refused, a misrouted inbound package).
func (d Decision) Alerted() bool {
	for _, s := range d.Trace {
		if s.Effect == EffectAlert {
			return true
		}
	}
	return false
}

// Deadline returns the hours of a deadline kind, and false if absent.
func (d Decision) Deadline(kind string) (int, bool) {
	for _, dl := range d.Deadlines {
		if dl.Kind == kind {
			return dl.Hours, true
		}
	}
	return 0, false
}

// Sender is who submits a package, as the gateway authenticated them.
type Sender struct {
	// Agency is the authenticated sending agency.
	Agency string
	// OriginatorConsent is the reference of the originator's consent to
	// pass on a package received from another agency (MoU Annex A, "Data
	// handling"); empty when there is none.
	OriginatorConsent string
}

// meta carries a built-in rule's identity.
type meta struct {
	id, source, summary string
}

func (m meta) ID() string      { return m.id }
func (m meta) Source() string  { return m.source }
func (m meta) Summary() string { return m.summary }

// Described is a rule with a one-line summary, for `policy check`.
type Described interface {
	Rule
	Summary() string
}

func joinIDs(xs []string) string { return strings.Join(xs, ", ") }
