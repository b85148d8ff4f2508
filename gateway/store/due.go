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

// queuedByDue lists the queued items of one priority by due time (from
// queue_due, read only as far as the caller goes).
const queuedByDue = `SELECT id, next_attempt FROM queue INDEXED BY queue_due
	WHERE state = 'queued' AND priority = ? ORDER BY next_attempt, id`

// NextDue implements Store: the earliest of the two priorities' first due
// times among the items this process holds no claim on, and of the ends
// of its claims (an item whose delivery has no outcome when its claim runs
// out is due again then). Schema version 5 had a partial index on the
// queued items' due time for this one question; every intake, claim and
// sent mark kept it, in the writer's critical section, and version 8
// drops it (queue_due answers with one search per priority; there are
// two).
func (s *SQLite) NextDue(ctx context.Context) (time.Time, error) {
	held, leaseEnd := s.claims.leased()
	next, err := earliestOfPriorities(func(p Priority) (time.Time, error) {
		return s.firstUnclaimed(ctx, p, held)
	})
	if err != nil {
		return time.Time{}, err
	}
	return earlier(next, leaseEnd), nil
}

// firstUnclaimed is the due time of the first queued item of priority p
// not in held (zero when there is none).
func (s *SQLite) firstUnclaimed(ctx context.Context, p Priority, held map[int64]bool) (time.Time, error) {
	rows, err := s.r.QueryContext(ctx, queuedByDue, int(p))
	if err != nil {
		return time.Time{}, fmt.Errorf("next due: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, next int64
		if err := rows.Scan(&id, &next); err != nil {
			return time.Time{}, fmt.Errorf("next due: %w", err)
		}
		if !held[id] {
			return fromNanos(next), nil
		}
	}
	if err := rows.Err(); err != nil {
		return time.Time{}, fmt.Errorf("next due: %w", err)
	}
	return time.Time{}, nil
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
		next = earlier(next, t)
	}
	return next, nil
}

// earlier is the earlier of two due times, the zero time meaning none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
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
