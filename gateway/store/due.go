package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Work by due time. The relay and housekeeping ask when the next piece of
// work falls due and sleep until then (or until work is added), rather
// than polling; each question is answered from a partial index (schema
// version 5), so its cost does not grow with the records kept.

// NextDue implements Store.
func (s *SQLite) NextDue(ctx context.Context) (time.Time, error) {
	// INDEXED BY: the planner would otherwise take the wider queue_due.
	return s.minTime(ctx, "next due", `SELECT next_attempt FROM queue INDEXED BY queue_next
		WHERE state = 'queued' ORDER BY next_attempt LIMIT 1`)
}

// NextDeadline implements Store: the earliest open clock not yet alerted,
// retention aside (retention is housekeeping, not an alert).
func (s *SQLite) NextDeadline(ctx context.Context) (time.Time, error) {
	return s.minTime(ctx, "next deadline",
		`SELECT due FROM deadlines INDEXED BY deadlines_alert
		WHERE done = 0 AND alerted = 0 AND kind <> 'retention' ORDER BY due LIMIT 1`)
}

func (s *SQLite) minTime(ctx context.Context, what, q string) (time.Time, error) {
	var n sql.NullInt64
	if err := s.r.QueryRowContext(ctx, q).Scan(&n); err != nil && !errors.Is(err, sql.ErrNoRows) {
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
	return s.queryDeadlines(ctx, `SELECT `+deadlineCols+` FROM deadlines INDEXED BY deadlines_alert
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
	rows, err := s.r.QueryContext(ctx, `SELECT `+qCols+` FROM quarantine INDEXED BY quarantine_kept
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

// Changes implements Store. It asks SQLite's data version (PRAGMA
// data_version, which moves when another connection commits: the command
// line in another process, or this process's own writer) on one pinned
// read connection every interval: one integer, no table read. It is the
// SQLite stand-in for PostgreSQL's LISTEN/NOTIFY.
func (s *SQLite) Changes(ctx context.Context, every time.Duration) <-chan struct{} {
	ch := make(chan struct{}, 1)
	go func() {
		defer close(ch)
		conn, err := s.r.Conn(ctx)
		if err != nil {
			return
		}
		defer conn.Close()
		var last int64 = -1
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			var v int64
			if err := conn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v); err != nil {
				if ctx.Err() != nil {
					return
				}
			} else if last >= 0 && v != last {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
			if err == nil {
				last = v
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return ch
}
