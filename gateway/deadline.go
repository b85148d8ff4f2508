package gateway

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/policy"
)

const deadlinePoll = 2 * time.Second

// Clocks are started in the transaction that stores what they time (the
// intake's queue items, the receiving side's delivery record), so a
// package is never acknowledged without them. These functions say which
// clocks a decision starts; the caller adds them (store.Tx.AddDeadline).

// outboundClocks are the acknowledgement clocks of each destination an
// immediate escalation goes to (imminent-risk-escalation, MoU 6.1: "major
// or imminent risk ... escalated immediately"); the destination's signed
// receipt stops them.
func outboundClocks(now time.Time, pkgID string, dec policy.Decision, sent []string) []store.Deadline {
	hours, ok := dec.Deadline(policy.DeadlineAcknowledge)
	if !ok {
		return nil
	}
	var out []store.Deadline
	for _, d := range dec.Deliveries {
		if d.Priority != policy.Immediate || !slices.Contains(sent, d.Agency) {
			continue
		}
		out = append(out, store.Deadline{PackageID: pkgID, Kind: policy.DeadlineAcknowledge, Agency: d.Agency,
			Started: now, Due: now.Add(time.Duration(hours) * time.Hour)})
	}
	return out
}

// inboundClocks are the triage clock of a received report (triage-72h,
// MoU 6.1 prison responsibilities: triage within 72 hours); `conduit
// triage done` or a triage reply stops it.
func inboundClocks(now time.Time, pkgID, originator string, dec policy.Decision) []store.Deadline {
	hours, ok := dec.Deadline(policy.DeadlineTriage)
	if !ok {
		return nil
	}
	return []store.Deadline{{PackageID: pkgID, Kind: policy.DeadlineTriage, Agency: originator,
		Started: now, Due: now.Add(time.Duration(hours) * time.Hour)}}
}

// holdClocks are the clocks of each destination held under 5x5x5
// handling code 5 (handling-code rule: "no further dissemination: refer
// to the originator"): the originator must release or drop the held item
// (`conduit queue release|drop`, which stop the clock) before it runs out.
func holdClocks(now time.Time, pkgID string, dec policy.Decision, held map[string]policy.HoldEntry) []store.Deadline {
	hours, ok := dec.Deadline(policy.DeadlineHold)
	if !ok {
		return nil
	}
	var out []store.Deadline
	for agency, h := range held {
		if h.Rule != "handling-code" {
			continue
		}
		out = append(out, store.Deadline{PackageID: pkgID, Kind: policy.DeadlineHold, Agency: agency,
			Started: now, Due: now.Add(time.Duration(hours) * time.Hour)})
	}
	return out
}

// retentionClocks are a package's retention clock (retention rule; MoU
// Annex A): its stored copies are destroyed when it runs out.
func retentionClocks(now time.Time, pkgID, originator string, dec policy.Decision) []store.Deadline {
	hours, ok := dec.Deadline(policy.DeadlineRetention)
	if !ok {
		return nil
	}
	return []store.Deadline{{PackageID: pkgID, Kind: policy.DeadlineRetention, Agency: originator,
		Started: now, Due: now.Add(time.Duration(hours) * time.Hour)}}
}

// addClocks starts clocks in tx.
func addClocks(tx store.Tx, ds ...[]store.Deadline) error {
	for _, l := range ds {
		for _, d := range l {
			if err := tx.AddDeadline(d); err != nil {
				return err
			}
		}
	}
	return nil
}

// runDeadlines raises an alert for each clock that runs out: a log line
// for the administrators and a notice in each escalation contact's
// mailbox. Each clock is alerted once.
func (g *Gateway) runDeadlines(ctx context.Context) {
	t := time.NewTicker(deadlinePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := g.Now()
		due, err := g.store.Deadlines(ctx, now, true)
		if err != nil {
			if ctx.Err() == nil {
				g.log.Error("deadlines not read", "err", err)
			}
			continue
		}
		for _, d := range due {
			if d.Kind == policy.DeadlineRetention {
				continue // not an alert: retention purges (below)
			}
			g.alertOverdue(ctx, d, now)
		}
		keep := time.Duration(g.engine.Policy().Params.Retention.Days) * 24 * time.Hour
		if _, err := PurgeExpired(ctx, g.cfg, g.store, g.auditor, now, keep, false); err != nil && ctx.Err() == nil {
			g.log.Error("retention purge failed", "err", err)
		}
	}
}

func (g *Gateway) alertOverdue(ctx context.Context, d store.Deadline, now time.Time) {
	what := map[string]string{
		policy.DeadlineAcknowledge: fmt.Sprintf("%s has not acknowledged the immediate escalation", d.Agency),
		policy.DeadlineTriage:      fmt.Sprintf("the report from %s has not been triaged", d.Agency),
		policy.DeadlineHold:        fmt.Sprintf("the package held for %s (handling code 5) still waits for the originator's decision", d.Agency),
	}[d.Kind]
	if what == "" {
		what = d.Kind + " is overdue"
	}
	g.log.Error("admin alert: deadline overdue", "package", d.PackageID, "kind", d.Kind, "agency", d.Agency,
		"due", d.Due.UTC().Format(time.RFC3339), "overdue", now.Sub(d.Due).Round(time.Minute).String())
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Conduit gateway <%s>\r\nSubject: [Conduit] Overdue: %s, package %s\r\nDate: %s\r\n",
		emailOfIdentity(g.identity()), d.Kind, d.PackageID, now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Auto-Submitted: auto-generated\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	fmt.Fprintf(&b, "Package %s: %s.\r\nThe clock started %s and ran out %s.\r\n", d.PackageID, what,
		d.Started.UTC().Format(time.RFC3339), d.Due.UTC().Format(time.RFC3339))
	if d.Kind == policy.DeadlineTriage {
		fmt.Fprintf(&b, "\r\nWhen it has been triaged: conduit triage done %s --config <this gateway's config>\r\n", d.PackageID)
	}
	if d.Kind == policy.DeadlineHold {
		fmt.Fprintf(&b, "\r\nRefer it to the originator, then: conduit queue release|drop ID --reason TEXT --config <this gateway's config>\r\n")
	}
	for _, c := range g.self.Escalation {
		if err := g.deliver(ctx, c.Address, g.cfg.Agency, fmt.Sprintf("overdue-%d", d.ID), nil, b.Bytes()); err != nil {
			g.log.Error("overdue notice not delivered", "contact", c.Address, "err", err)
			return // try again on the next round
		}
	}
	g.metrics.OverdueAlert(d.Kind)
	ev := audit.Event{Kind: audit.Alert, Package: d.PackageID, Destination: d.Agency, Rule: d.Kind, Detail: what}
	if err := g.store.Bookkeep(ctx, func(tx store.Tx) error {
		if err := tx.MarkAlerted(d.ID, now); err != nil {
			return err
		}
		return g.stage(tx, ev)
	}); err != nil {
		g.log.Error("overdue alert not recorded", "err", err)
		g.audit(ctx, ev)
		return
	}
	g.kickAudit()
}
