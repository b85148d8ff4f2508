package gateway

import (
	"context"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/policy"
)

// Auditor is where the gateway writes its audit trail (audit.SQLite).
type Auditor interface {
	Append(ctx context.Context, e audit.Event) (audit.Event, error)
}

// batchAuditor is an Auditor that can store many events with one disk
// sync, and move the events the store staged in its outbox into the chain
// (audit.SQLite); the gateway then commits concurrent appends as a group,
// and state changes carry their events in their own transactions (stage).
type batchAuditor interface {
	AppendAll(ctx context.Context, es []audit.Event) ([]audit.Event, error)
	Drain(ctx context.Context) (int, error)
}

// auditDrainPoll is how often the writer looks for staged events nobody
// told it about (the CLI's, or a write whose nudge it missed).
const auditDrainPoll = time.Second

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
//
// Staged events (stage) are moved into the chain by the same writer, in
// groups as large as the load makes them; AppendAll moves the staged ones
// first, so that a direct event never overtakes a staged one.
func (g *Gateway) runAuditWriter(b batchAuditor) {
	t := time.NewTicker(auditDrainPoll)
	defer t.Stop()
	for {
		var batch []auditReq
		select {
		case req := <-g.auditCh:
			batch = append(batch, req)
		case <-g.auditKick:
		case <-t.C:
		}
	more:
		for len(batch) < maxAuditBatch {
			select {
			case r := <-g.auditCh:
				batch = append(batch, r)
			default:
				break more
			}
		}
		if len(batch) == 0 {
			if _, err := b.Drain(context.Background()); err != nil {
				g.log.Error("admin alert: staged audit events not chained; retried", "err", err)
				g.metrics.AuditFailed()
			}
			continue
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

// stage writes events to the audit outbox in tx, the transaction of the
// state change they record (store.Tx.Audit): the change is never durable
// without its events. The writer moves them into the chain soon after
// (kickAudit, once the transaction has committed).
func (g *Gateway) stage(tx store.Tx, es ...audit.Event) error {
	if g.auditor == nil || len(es) == 0 {
		return nil
	}
	for i := range es {
		g.fill(&es[i])
	}
	return tx.Audit(es...)
}

// kickAudit tells the writer that events were staged.
func (g *Gateway) kickAudit() {
	select {
	case g.auditKick <- struct{}{}:
	default:
	}
}

// auditAll appends events that record no state change of the store (a
// refusal, an alert about a failure) straight to the chain.
func (g *Gateway) auditAll(ctx context.Context, es []audit.Event) {
	for _, e := range es {
		g.audit(ctx, e)
	}
}

func (g *Gateway) fill(e *audit.Event) {
	e.Agency = g.cfg.Agency
	if e.Actor == "" {
		e.Actor = "gateway"
	}
	if e.Time.IsZero() {
		e.Time = g.Now().UTC()
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
	g.fill(&e)
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

// decisionEvents are what the policy did to an outbound package: each
// redirection and each refusal, with its rule.
func (g *Gateway) decisionEvents(pkgID, actor string, d policy.Decision) []audit.Event {
	var es []audit.Event
	for _, s := range d.Trace {
		switch s.Effect {
		case policy.EffectRedirect:
			es = append(es, audit.Event{Kind: audit.Redirected, Package: pkgID, Rule: s.Rule, Actor: actor, Detail: s.Detail})
		case policy.EffectRecord:
			if s.Rule == policy.RuleLegacyMarking {
				es = append(es, audit.Event{Kind: audit.Marking, Package: pkgID, Rule: s.Rule, Actor: actor, Detail: s.Detail})
			}
		case policy.EffectDeny:
			g.metrics.Refused(s.Rule)
			es = append(es, audit.Event{Kind: audit.Refused, Package: pkgID, Rule: s.Rule, Actor: actor, Detail: s.Detail})
		}
	}
	for _, r := range d.Refusals {
		g.metrics.Refused(r.Rule)
		es = append(es, audit.Event{Kind: audit.Refused, Package: pkgID, Destination: r.Agency, Rule: r.Rule, Actor: actor, Detail: r.Reason})
	}
	return es
}
