package gateway

import (
	"context"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/policy"
)

// Auditor is where the gateway writes its audit trail (audit.SQLite).
type Auditor interface {
	Append(ctx context.Context, e audit.Event) (audit.Event, error)
}

// audit appends one event. Events carry metadata only (package id,
// agencies, rules, mailbox addresses), never content or a subject's
// identity. A failed append is an administrator alert; it does not undo
// or refuse what already happened (a package stored before its 250 stays
// stored: refusing it then would make the sender submit it twice).
func (g *Gateway) audit(ctx context.Context, e audit.Event) {
	if g.auditor == nil {
		return
	}
	e.Agency = g.cfg.Agency
	if e.Actor == "" {
		e.Actor = "gateway"
	}
	if e.Time.IsZero() {
		e.Time = g.Now().UTC()
	}
	if _, err := g.auditor.Append(ctx, e); err != nil {
		g.log.Error("admin alert: audit trail not written", "kind", string(e.Kind), "package", e.Package, "err", err)
		g.metrics.AuditFailed()
	}
}

// auditDecision records what the policy did to an outbound package: each
// redirection and each refusal, with its rule.
func (g *Gateway) auditDecision(ctx context.Context, pkgID, actor string, d policy.Decision) {
	for _, s := range d.Trace {
		switch s.Effect {
		case policy.EffectRedirect:
			g.audit(ctx, audit.Event{Kind: audit.Redirected, Package: pkgID, Rule: s.Rule, Actor: actor, Detail: s.Detail})
		case policy.EffectDeny:
			g.metrics.Refused(s.Rule)
			g.audit(ctx, audit.Event{Kind: audit.Refused, Package: pkgID, Rule: s.Rule, Actor: actor, Detail: s.Detail})
		}
	}
	for _, r := range d.Refusals {
		g.metrics.Refused(r.Rule)
		g.audit(ctx, audit.Event{Kind: audit.Refused, Package: pkgID, Destination: r.Agency, Rule: r.Rule, Actor: actor, Detail: r.Reason})
	}
}
