// Package clocks is in charge of the deadlines the sharing policy starts
// for a package: which clocks a decision starts (acknowledgement of an
// immediate escalation, triage of a report, the originator's decision on a
// handling-code-5 hold, retention), the alert when one runs out, and the
// purge of a package's stored copies when its retention clock does. The
// clocks are started by the caller in the transaction that stores what
// they time; the Keeper sleeps until the earliest is due.
package clocks

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/metrics"
	"github.com/conduit-gateway/conduit/policy"
)

// Clocks are started in the transaction that stores what they time (the
// intake's queue items, the receiving side's delivery record), so a
// package is never acknowledged without them. These functions say which
// clocks a decision starts; the caller adds them (store.Tx.AddDeadline).

// Outbound are the acknowledgement clocks of each destination an
// immediate escalation goes to (imminent-risk-escalation, MoU 6.1: "major
// or imminent risk ... escalated immediately"); the destination's signed
// receipt stops them.
func Outbound(now time.Time, pkgID string, dec policy.Decision, sent []string) []store.Deadline {
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

// Inbound are the triage clock of a received report (triage-72h,
// MoU 6.1 prison responsibilities: triage within 72 hours); `conduit
// triage done` or a triage reply stops it.
func Inbound(now time.Time, pkgID, originator string, dec policy.Decision) []store.Deadline {
	hours, ok := dec.Deadline(policy.DeadlineTriage)
	if !ok {
		return nil
	}
	return []store.Deadline{{PackageID: pkgID, Kind: policy.DeadlineTriage, Agency: originator,
		Started: now, Due: now.Add(time.Duration(hours) * time.Hour)}}
}

// Holds are the clocks of each destination held under 5x5x5
// handling code 5 (handling-code rule: "no further dissemination: refer
// to the originator"): the originator must release or drop the held item
// (`conduit queue release|drop`, which stop the clock) before it runs out.
func Holds(now time.Time, pkgID string, dec policy.Decision, held map[string]policy.HoldEntry) []store.Deadline {
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

// Retention are a package's retention clock (retention rule; MoU
// Annex A): its stored copies are destroyed when it runs out.
func Retention(now time.Time, pkgID, originator string, dec policy.Decision) []store.Deadline {
	hours, ok := dec.Deadline(policy.DeadlineRetention)
	if !ok {
		return nil
	}
	return []store.Deadline{{PackageID: pkgID, Kind: policy.DeadlineRetention, Agency: originator,
		Started: now, Due: now.Add(time.Duration(hours) * time.Hour)}}
}

// Add starts clocks in tx.
func Add(tx store.Tx, ds ...[]store.Deadline) error {
	for _, l := range ds {
		for _, d := range l {
			if err := tx.AddDeadline(d); err != nil {
				return err
			}
		}
	}
	return nil
}

// Store is the store as the keeper reads and writes it.
type Store = store.Store

// Auditor is the audit trail as the keeper writes it.
type Auditor interface {
	Append(ctx context.Context, es ...audit.Event)
	Stage(tx audit.Stager, es ...audit.Event) error
	Kick()
}

// Deliverer hands overdue notices to the escalation contacts' mailboxes.
type Deliverer interface {
	Deliver(ctx context.Context, mailbox, originator, pkgID string, extraHeader, msg []byte) error
}

// Keeper raises the overdue alerts and runs retention.
type Keeper struct {
	cfg     *config.Config
	store   Store
	trail   TrailDrainer
	audit   Auditor
	deliver Deliverer
	metrics *metrics.Metrics
	log     *slog.Logger
	now     func() time.Time
	// from is the gateway's own address, the sender of overdue notices.
	from func() string
	// retention is how long quarantined messages are kept (the policy's
	// retention days; a reload may change it).
	retention func() time.Duration

	kick chan struct{}
}

// TrailDrainer moves staged audit events into the chain (audit.SQLite).
type TrailDrainer interface {
	Drain(ctx context.Context) (int, error)
}

// Options are the parts the keeper works with.
type Options struct {
	Store     Store
	Trail     TrailDrainer // nil: none
	Audit     Auditor
	Deliver   Deliverer
	Metrics   *metrics.Metrics
	Log       *slog.Logger
	Now       func() time.Time
	From      func() string
	Retention func() time.Duration
}

// NewKeeper returns a keeper; Run starts it.
func NewKeeper(cfg *config.Config, o Options) *Keeper {
	return &Keeper{cfg: cfg, store: o.Store, trail: o.Trail, audit: o.Audit, deliver: o.Deliver, metrics: o.Metrics,
		log: o.Log, now: o.Now, from: o.From, retention: o.Retention, kick: make(chan struct{}, 1)}
}

// Kick tells the keeper a clock was started, so that it sleeps until the
// earliest.
func (k *Keeper) Kick() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// alertBatch bounds the overdue clocks one round alerts.
const alertBatch = 100

// Run raises an alert for each clock that runs out (a log line for the
// administrators and a notice in each escalation contact's mailbox, each
// clock once), and purges what retention says is due, until ctx is done.
// It sleeps until the earliest open clock is due or the housekeeping
// interval has passed, whichever comes first, and wakes when a clock is
// started; every question it asks the store reads an index.
func (k *Keeper) Run(ctx context.Context) {
	interval := time.Duration(k.cfg.HousekeepingInterval)
	if interval <= 0 {
		interval = time.Minute
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	wake := time.Now() // when the timer fires
	var lastPurge time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-k.kick:
			// A clock was started: look again within kickGather, not at
			// once, so that a busy gateway (a kick per package) asks the
			// store twice a second rather than twice per package. No
			// clock falls due that soon after it starts.
			if soon := time.Now().Add(kickGather); wake.After(soon) {
				if !timer.Stop() {
					select {
					case <-timer.C:
					default:
					}
				}
				timer.Reset(kickGather)
				wake = soon
			}
			continue
		}
		now := k.now()
		due, err := k.store.OverdueDeadlines(ctx, now, alertBatch)
		if err != nil && ctx.Err() == nil {
			k.log.Error("deadlines not read", "err", err)
		}
		for _, d := range due {
			k.alertOverdue(ctx, d, now)
		}
		if time.Since(lastPurge) >= interval {
			lastPurge = time.Now()
			if _, err := PurgeExpired(ctx, k.cfg, k.store, k.trail, now, k.retention(), false); err != nil && ctx.Err() == nil {
				k.log.Error("retention purge failed", "err", err)
			}
		}
		sleep := interval - time.Since(lastPurge)
		if next, err := k.store.NextDeadline(ctx); err == nil && !next.IsZero() {
			sleep = min(sleep, max(next.Sub(k.now()), 0))
		}
		if len(due) == alertBatch {
			sleep = 0 // more overdue than one round takes
		}
		timer.Reset(max(sleep, 0))
		wake = time.Now().Add(max(sleep, 0))
	}
}

// kickGather is how soon after a clock is started the keeper looks at the
// clocks again.
const kickGather = 500 * time.Millisecond

func (k *Keeper) alertOverdue(ctx context.Context, d store.Deadline, now time.Time) {
	what := map[string]string{
		policy.DeadlineAcknowledge: fmt.Sprintf("%s has not acknowledged the immediate escalation", d.Agency),
		policy.DeadlineTriage:      fmt.Sprintf("the report from %s has not been triaged", d.Agency),
		policy.DeadlineHold:        fmt.Sprintf("the package held for %s (handling code 5) still waits for the originator's decision", d.Agency),
	}[d.Kind]
	if what == "" {
		what = d.Kind + " is overdue"
	}
	k.log.Error("admin alert: deadline overdue", "package", d.PackageID, "kind", d.Kind, "agency", d.Agency,
		"due", d.Due.UTC().Format(time.RFC3339), "overdue", now.Sub(d.Due).Round(time.Minute).String())
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Conduit gateway <%s>\r\nSubject: [Conduit] Overdue: %s, package %s\r\nDate: %s\r\n",
		k.from(), d.Kind, d.PackageID, now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Auto-Submitted: auto-generated\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	fmt.Fprintf(&b, "Package %s: %s.\r\nThe clock started %s and ran out %s.\r\n", d.PackageID, what,
		d.Started.UTC().Format(time.RFC3339), d.Due.UTC().Format(time.RFC3339))
	if d.Kind == policy.DeadlineTriage {
		fmt.Fprintf(&b, "\r\nWhen it has been triaged: conduit triage done %s --config <this gateway's config>\r\n", d.PackageID)
	}
	if d.Kind == policy.DeadlineHold {
		fmt.Fprintf(&b, "\r\nRefer it to the originator, then: conduit queue release|drop ID --reason TEXT --config <this gateway's config>\r\n")
	}
	for _, c := range k.cfg.Self().Escalation {
		if err := k.deliver.Deliver(ctx, c.Address, k.cfg.Agency, fmt.Sprintf("overdue-%d", d.ID), nil, b.Bytes()); err != nil {
			k.log.Error("overdue notice not delivered", "contact", c.Address, "err", err)
			return // try again on the next round
		}
	}
	k.metrics.OverdueAlert(d.Kind)
	ev := audit.Event{Kind: audit.Alert, Package: d.PackageID, Destination: d.Agency, Rule: d.Kind, Detail: what}
	if err := k.store.Bookkeep(ctx, func(tx store.Tx) error {
		if err := tx.MarkAlerted(d.ID, now); err != nil {
			return err
		}
		return k.audit.Stage(tx, ev)
	}); err != nil {
		k.log.Error("overdue alert not recorded", "err", err)
		k.audit.Append(ctx, ev)
		return
	}
	k.audit.Kick()
}
