package store

import (
	"context"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/audit"
)

func outboxRows(t *testing.T, s *SQLite) int {
	t.Helper()
	var n int
	tcheck(t, s.r.QueryRowContext(context.Background(), `SELECT count(*) FROM audit_outbox`).Scan(&n), "count")
	return n
}

// TestStagedEventsCommitWithTheirChange: events staged on a write
// (WithAudit) are in the outbox exactly when the write committed: with an
// enqueue that stored its items, not with one refused halfway, and not
// with a write that changed nothing.
func TestStagedEventsCommitWithTheirChange(t *testing.T) {
	ev := audit.Event{Time: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), Agency: "met-pio", Kind: audit.Queued, Package: "cdt-x"}
	bad := item("cdt-y", "ccu-north")
	bad.Recipients = nil
	for _, tc := range []struct {
		name  string
		write func(ctx context.Context, s *SQLite) error
		rows  int
	}{
		{"an enqueue that stored its items", func(ctx context.Context, s *SQLite) error {
			_, err := s.Enqueue(ctx, []Item{item("cdt-x", "ccu-north")})
			return err
		}, 1},
		{"an enqueue refused halfway", func(ctx context.Context, s *SQLite) error {
			_, err := s.Enqueue(ctx, []Item{item("cdt-x", "ccu-north"), bad})
			if err == nil {
				t.Error("the bad item was accepted")
			}
			return nil
		}, 0},
		{"a clock stop that stopped nothing", func(ctx context.Context, s *SQLite) error {
			_, err := s.CompleteDeadlines(ctx, "cdt-x", "triage", "", time.Now(), "done")
			return err
		}, 0},
		{"a quarantine, naming its id", func(ctx context.Context, s *SQLite) error {
			_, err := s.Quarantine(WithAudit(ctx, audit.Event{Kind: audit.Quarantined, Detail: QuarantineIDMark + ": tampered"}), QItem{Raw: []byte("x")})
			return err
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openTest(t)
			tcheck(t, tc.write(WithAudit(context.Background(), ev), s), "write")
			if n := outboxRows(t, s); n != tc.rows {
				t.Errorf("%d events staged, want %d", n, tc.rows)
			}
			var named int
			tcheck(t, s.r.QueryRow(`SELECT count(*) FROM audit_outbox WHERE event LIKE '%Q1: tampered%'`).Scan(&named), "named")
			if want := tc.rows == 2; (named == 1) != want {
				t.Errorf("the quarantine id is named in %d staged events", named)
			}
		})
	}
}
