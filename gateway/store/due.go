package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Work by due time. The relay and housekeeping ask when the next piece of
// work falls due and sleep until then (or until work is added), rather
// than polling; each question is answered from a partial index (schema
// version 5), so its cost does not grow with the records kept.

// NextDue implements Store.
func (s *SQLite) NextDue(ctx context.Context) (time.Time, error) {
	return s.minTime(ctx, "next due", `SELECT min(next_attempt) FROM queue WHERE state = 'queued'`)
}

// NextDeadline implements Store: the earliest open clock not yet alerted,
// retention aside (retention is housekeeping, not an alert).
func (s *SQLite) NextDeadline(ctx context.Context) (time.Time, error) {
	return s.minTime(ctx, "next deadline",
		`SELECT min(due) FROM deadlines WHERE done = 0 AND alerted = 0 AND kind <> 'retention'`)
}

func (s *SQLite) minTime(ctx context.Context, what, q string) (time.Time, error) {
	var n sql.NullInt64
	if err := s.r.QueryRowContext(ctx, q).Scan(&n); err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", what, err)
	}
	if !n.Valid {
		return time.Time{}, nil
	}
	return fromNanos(n.Int64), nil
}

// OverdueDeadlines lists the open clocks due at or before now that were
// not alerted yet, retention aside, oldest first.
func (s *SQLite) OverdueDeadlines(ctx context.Context, now time.Time, limit int) ([]Deadline, error) {
	return s.queryDeadlines(ctx, `SELECT `+deadlineCols+` FROM deadlines
		WHERE done = 0 AND alerted = 0 AND kind <> 'retention' AND due <= ? ORDER BY due, id LIMIT ?`,
		now.UTC().UnixNano(), limitOr(limit))
}

// DueDeadlines implements Store.
func (s *SQLite) DueDeadlines(ctx context.Context, kind string, now time.Time, limit int) ([]Deadline, error) {
	return s.queryDeadlines(ctx, `SELECT `+deadlineCols+` FROM deadlines
		WHERE done = 0 AND kind = ? AND due <= ? ORDER BY due, id LIMIT ?`,
		kind, now.UTC().UnixNano(), limitOr(limit))
}

// QuarantinedBefore implements Store.
func (s *SQLite) QuarantinedBefore(ctx context.Context, t time.Time, limit int) ([]QItem, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+qCols+` FROM quarantine
		WHERE state IN ('held', 'released') AND received < ? ORDER BY received, id LIMIT ?`,
		t.UTC().UnixNano(), limitOr(limit))
	if err != nil {
		return nil, fmt.Errorf("quarantine retention: %w", err)
	}
	defer rows.Close()
	var out []QItem
	for rows.Next() {
		q, err := scanQItem(rows, false)
		if err != nil {
			return nil, fmt.Errorf("quarantine retention: %w", err)
		}
		out = append(out, q)
	}
	return out, rows.Err()
}

func limitOr(n int) int {
	if n <= 0 {
		return 1000
	}
	return n
}
