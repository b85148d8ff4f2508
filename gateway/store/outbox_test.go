package store

import (
	"context"
	"errors"
	"fmt"
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

// TestStagedEventsCommitWithTheirChange: events written with a change
// (Tx.Audit) are in the outbox exactly when the change committed: with an
// enqueue that stored its items, not with one refused halfway, and not
// with a transaction its caller abandoned.
func TestStagedEventsCommitWithTheirChange(t *testing.T) {
	ev := audit.Event{Time: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), Agency: "met-pio", Kind: audit.Queued, Package: "cdt-x"}
	bad := item("cdt-y", "ccu-north")
	bad.Recipients = nil
	errAbandon := errors.New("abandoned")
	for _, tc := range []struct {
		name  string
		write func(tx Tx) error
		rows  int
		items int
	}{
		{"an enqueue that stored its items", func(tx Tx) error {
			if _, err := tx.Enqueue([]Item{item("cdt-x", "ccu-north")}); err != nil {
				return err
			}
			return tx.Audit(ev)
		}, 1, 1},
		{"an enqueue refused halfway", func(tx Tx) error {
			if err := tx.Audit(ev); err != nil {
				return err
			}
			_, err := tx.Enqueue([]Item{item("cdt-x", "ccu-north"), bad})
			if err == nil {
				t.Error("the bad item was accepted")
			}
			return err
		}, 0, 0},
		{"a transaction its caller abandoned", func(tx Tx) error {
			if err := tx.AddDeadline(Deadline{PackageID: "cdt-x", Kind: "triage", Due: time.Now()}); err != nil {
				return err
			}
			if err := tx.Audit(ev); err != nil {
				return err
			}
			return errAbandon
		}, 0, 0},
		{"a quarantine, naming its id", func(tx Tx) error {
			id, err := tx.Quarantine(QItem{Raw: []byte("x")})
			if err != nil {
				return err
			}
			return tx.Audit(ev, audit.Event{Kind: audit.Quarantined, Detail: fmt.Sprintf("Q%d: tampered", id)})
		}, 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openTest(t)
			err := s.Update(context.Background(), tc.write)
			if tc.rows > 0 {
				tcheck(t, err, "write")
			} else if err == nil {
				t.Fatal("the failed transaction committed")
			}
			if n := outboxRows(t, s); n != tc.rows {
				t.Errorf("%d events staged, want %d", n, tc.rows)
			}
			items, err := s.List(context.Background(), Filter{})
			tcheck(t, err, "list")
			if len(items) != tc.items {
				t.Errorf("%d items stored, want %d", len(items), tc.items)
			}
			var named int
			tcheck(t, s.r.QueryRow(`SELECT count(*) FROM audit_outbox WHERE event LIKE '%Q1: tampered%'`).Scan(&named), "named")
			if want := tc.rows == 2; (named == 1) != want {
				t.Errorf("the quarantine id is named in %d staged events", named)
			}
		})
	}
}

// TestAFailedMethodLeavesNothingOfItself: each Tx method is atomic on its
// own, so a caller that handles one method's failure and commits keeps
// what the other methods wrote and nothing of the failed one.
func TestAFailedMethodLeavesNothingOfItself(t *testing.T) {
	s, _ := openTest(t)
	bad := item("cdt-y", "ccu-north")
	bad.Recipients = nil
	err := s.Update(context.Background(), func(tx Tx) error {
		if _, err := tx.Enqueue([]Item{item("cdt-x", "ccu-north")}); err != nil {
			return err
		}
		if _, err := tx.Enqueue([]Item{item("cdt-y", "hmp-northgate"), bad}); err == nil {
			t.Error("the bad item was accepted")
		}
		return tx.Audit(audit.Event{Kind: audit.Queued, Package: "cdt-x"})
	})
	tcheck(t, err, "update")
	items, err := s.List(context.Background(), Filter{})
	tcheck(t, err, "list")
	if len(items) != 1 || items[0].PackageID != "cdt-x" {
		t.Errorf("stored %+v, want only cdt-x", items)
	}
	if n := outboxRows(t, s); n != 1 {
		t.Errorf("%d events staged, want 1", n)
	}
}
