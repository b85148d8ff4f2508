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
// than polling; each question is answered by an index search that reads
// only what can be work (schema version 5), so its cost does not grow
// with the records kept.

// nextDueOf is the earliest due time among the queued items of one
// priority: the first entry of queue_due under its state and priority.
const nextDueOf = `SELECT next_attempt FROM queue WHERE state = 'queued' AND priority = ?
	ORDER BY next_attempt LIMIT 1`

// NextDue implements Store: the earlier of the two priorities' first due
// times. Schema version 5 had a partial index on the queued items' due
// time for this one question; every intake, claim and sent mark kept it,
// in the writer's critical section, and version 8 drops it (queue_due
// answers with one search per priority; there are two).
func (s *SQLite) NextDue(ctx context.Context) (time.Time, error) {
	return earliestOfPriorities(func(p Priority) (time.Time, error) {
		return s.minTime(ctx, "next due", nextDueOf, int(p))
	})
}

// earliestOfPriorities is the earliest of the priorities' first due times
// (the zero time when none has any), each given by first.
func earliestOfPriorities(first func(Priority) (time.Time, error)) (time.Time, error) {
	var next time.Time
	for _, p := range []Priority{Immediate, Normal} {
		t, err := first(p)
		if err != nil {
			return time.Time{}, err
		}
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next, nil
}

// NextDeadline implements Store: the earliest open clock not yet alerted,
// retention aside (retention is housekeeping, not an alert).
func (s *SQLite) NextDeadline(ctx context.Context) (time.Time, error) {
	return s.minTime(ctx, "next deadline",
		`SELECT due FROM deadlines INDEXED BY deadlines_alert
		WHERE done = 0 AND alerted = 0 AND kind <> 'retention' ORDER BY due LIMIT 1`)
}

func (s *SQLite) minTime(ctx context.Context, what, q string, args ...any) (time.Time, error) {
	var n sql.NullInt64
	if err := s.r.QueryRowContext(ctx, q, args...).Scan(&n); err != nil && !errors.Is(err, sql.ErrNoRows) {
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
