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

// batchAuditor is an Auditor that can store many events with one disk
// sync; the gateway then commits concurrent appends as a group.
type batchAuditor interface {
	AppendAll(ctx context.Context, es []audit.Event) ([]audit.Event, error)
}

type auditReq struct {
	e    audit.Event
	done chan error
}

// maxAuditBatch bounds one group commit.
const maxAuditBatch = 256

// runAuditWriter commits audit events in groups: it takes every event
// waiting, writes them in one transaction, and only then lets each caller
// go on, so an event is durable when g.audit returns, as with one append
// per event, but a busy gateway pays one disk sync per group, not per
// event.
func (g *Gateway) runAuditWriter(b batchAuditor) {
	for req := range g.auditCh {
		batch := []auditReq{req}
	more:
		for len(batch) < maxAuditBatch {
			select {
			case r := <-g.auditCh:
				batch = append(batch, r)
			default:
				break more
			}
		}
		es := make([]audit.Event, len(batch))
		for i, r := range batch {
			es[i] = r.e
		}
		// Not the callers' contexts: an event is written even if the
		// session that caused it has gone.
		_, err := b.AppendAll(context.Background(), es)
		for _, r := range batch {
			r.done <- err
		}
	}
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
	var err error
	if g.auditCh != nil {
		done := make(chan error, 1)
		g.auditCh <- auditReq{e, done}
		err = <-done
	} else {
		_, err = g.auditor.Append(ctx, e)
	}
	if err != nil {
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
