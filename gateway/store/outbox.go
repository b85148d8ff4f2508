package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/conduit-gateway/conduit/audit"
)

// The audit outbox. An audit event that records a state change is written
// in the same transaction as the change: the caller stages it on the
// context of the write (WithAudit), and the write's transaction inserts it
// into audit_outbox before it commits, fully synced. The gateway's audit
// writer then moves staged events into the hash chain (audit.SQLite.Drain,
// in one transaction with their removal from the outbox), and opening the
// trail moves whatever a crashed process left. So a change is never
// durable without its event, and the chain never holds an event whose
// change was rolled back.

type auditKey struct{}

// WithAudit returns a context on which the next store write also writes
// events (complete: agency, kind, time...) to the audit outbox, in its own
// transaction. The context is for that one call: a second write made with
// it would stage the events again.
func WithAudit(ctx context.Context, es ...audit.Event) context.Context {
	if len(es) == 0 {
		return ctx
	}
	prev, _ := ctx.Value(auditKey{}).([]audit.Event)
	return context.WithValue(ctx, auditKey{}, append(append([]audit.Event(nil), prev...), es...))
}

// WithoutAudit returns ctx without the events WithAudit staged on it.
func WithoutAudit(ctx context.Context) context.Context {
	return context.WithValue(ctx, auditKey{}, []audit.Event(nil))
}

// QuarantineIDMark, in the detail of an event staged with a Quarantine
// call, stands for the quarantine id the call gives ("Q7").
const QuarantineIDMark = "{quarantine-id}"

// stagedEvents returns the events WithAudit put on ctx.
func stagedEvents(ctx context.Context) []audit.Event {
	es, _ := ctx.Value(auditKey{}).([]audit.Event)
	return es
}

// stage writes the events on ctx into the outbox within tx.
func stage(ctx context.Context, tx *sql.Tx, es []audit.Event) error {
	for _, e := range es {
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("audit outbox: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_outbox (event) VALUES (?)`, string(b)); err != nil {
			return fmt.Errorf("audit outbox: %w", err)
		}
	}
	return nil
}
