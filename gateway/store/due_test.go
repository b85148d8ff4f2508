package store

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// idleRecords is the size of the store an idle gateway's housekeeping
// must not scan: a few years of an agency's traffic.
const idleRecords = 100_000

// fillIdle fills s with n records an idle gateway keeps: queue items in
// final states (sent, failed, dropped), clocks (mostly retention clocks
// years ahead, closed triage and acknowledgement clocks, a few open
// clocks not yet due, unless open is false: a quiet gateway whose only
// open clocks are retention clocks) and quarantine records (mostly purged, some kept).
// Nothing is due at now: housekeeping finds no work, and must find that
// out without reading the records. Rows go in by SQL in one transaction
// (a generated series), which fills 100,000 in a second where the Tx
// methods, one data key each, would take a minute.
func fillIdle(t testing.TB, s *SQLite, n int, now time.Time, open bool) {
	t.Helper()
	ctx := context.Background()
	items, clocks := n*4/10, n*5/10
	kept := n - items - clocks
	year := int64(365 * 24 * time.Hour)
	nowN := now.UTC().UnixNano()
	stmts := []struct {
		what string
		q    string
		args []any
	}{
		{"queue items", `WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?)
			INSERT INTO queue (package_id, destination, recipients, mail_from, submitter, priority, marking, size,
				state, attempts, next_attempt, created, updated)
			SELECT printf('cdt-idle%07d', i), 'hmp-northgate', '["intel@northgate.example"]', 'conduit@met.example',
				'analyst@met.example', i % 7 = 0, 'OFFICIAL-SENSITIVE', 2048,
				CASE WHEN i % 50 = 0 THEN 'failed' WHEN i % 51 = 0 THEN 'dropped' ELSE 'sent' END,
				1 + i % 3, ? - i * 1000000000, ? - i * 1000000000, ? - i * 1000000000 FROM k`,
			[]any{items, nowN, nowN, nowN}},
		// Nine in ten clocks are retention clocks, running out one to six
		// years ahead; the rest are closed triage and acknowledgement
		// clocks, but for one in a hundred (when open), open and due a day
		// ahead.
		{"clocks", `WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?)
			INSERT INTO deadlines (package_id, kind, agency, started, due, done, alerted)
			SELECT printf('cdt-idle%07d', i),
				CASE WHEN i % 10 <> 0 THEN 'retention' WHEN i % 20 = 0 THEN 'triage' ELSE 'acknowledge' END,
				'northshire-pio', ? - i * 1000000000,
				CASE WHEN i % 10 <> 0 THEN ? + ? + (i % 5) * ? ELSE ? + 86400000000000 END,
				CASE WHEN i % 10 <> 0 OR (? AND i % 1000 = 0) THEN 0 ELSE ? END, 0 FROM k`,
			[]any{clocks, nowN, nowN, year, year, nowN, open, nowN}},
		// Nine in ten quarantined messages were purged; the rest are kept
		// and were received within the last day.
		{"quarantine", `WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?)
			INSERT INTO quarantine (received, remote_addr, helo, mail_from, recipients, check_name, reason, package_id,
				raw, size, state, note, updated)
			SELECT CASE WHEN i % 10 = 0 THEN ? - (i % 86400) * 1000000000 ELSE ? - 2 * ? - i * 1000000000 END,
				'127.0.0.1:25000', 'gw.example', 'conduit@met.example', '["intel@northgate.example"]',
				'tampered', 'the ciphertext was altered', printf('cdt-quar%07d', i),
				CASE WHEN i % 10 = 0 THEN x'00' ELSE NULL END, 1024,
				CASE WHEN i % 10 = 0 THEN 'held' ELSE 'purged' END, '', ? FROM k`,
			[]any{kept, nowN, nowN, year, nowN}},
	}
	tx, err := s.w.BeginTx(ctx, nil)
	tcheck(t, err, "begin")
	defer tx.Rollback()
	for _, st := range stmts {
		_, err := tx.ExecContext(ctx, st.q, st.args...)
		tcheck(t, err, "fill "+st.what)
	}
	tcheck(t, tx.Commit(), "commit")
	var total int
	tcheck(t, s.r.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM queue) + (SELECT count(*) FROM deadlines) + (SELECT count(*) FROM quarantine)`).Scan(&total), "count")
	if total != n {
		t.Fatalf("filled %d records; want %d", total, n)
	}
}

// housekeepingQuery is one query of a housekeeping round (due.go), as
// the store sends it, with the index searches that read only rows that
// can be work (plans): the partial index made for it, or an older index
// whose search is bounded the same way. The test below checks that each
// method gives what its query here gives, so that the two cannot drift
// apart unnoticed.
type housekeepingQuery struct {
	name string
	// first: the query takes the first entry of a partial index in its
	// order (LIMIT 1).
	first bool
	plans *regexp.Regexp
	q     string
	args  []any
}

func housekeepingQueries(now time.Time) []housekeepingQuery {
	nowN := now.UTC().UnixNano()
	return []housekeepingQuery{
		// Only the queued items of each priority: by queue_due on the
		// state and the priority, read as far as the first item this
		// process holds no claim on.
		{"NextDue immediate", true, regexp.MustCompile(`INDEX queue_due \(state=\? AND priority=\?\)`),
			queuedByDue, []any{int(Immediate)}},
		{"NextDue normal", true, regexp.MustCompile(`INDEX queue_due \(state=\? AND priority=\?\)`),
			queuedByDue, []any{int(Normal)}},
		// Only the open clocks that can raise an alert: deadlines_alert.
		// deadlines_due (done, alerted, due) would walk every open
		// retention clock, years ahead, to find that none other is open.
		{"NextDeadline", true, regexp.MustCompile(`INDEX deadlines_alert\b`),
			`SELECT due FROM deadlines INDEXED BY deadlines_alert
		WHERE done = 0 AND alerted = 0 AND kind <> 'retention' ORDER BY due LIMIT 1`, nil},
		// Only the open clocks already due.
		{"OverdueDeadlines", false, regexp.MustCompile(`INDEX (deadlines_alert\b|deadlines_due \(done=\? AND alerted=\? AND due<\?\))`),
			`SELECT ` + deadlineCols + ` FROM deadlines INDEXED BY deadlines_alert
		WHERE done = 0 AND alerted = 0 AND kind <> 'retention' AND due <= ? ORDER BY due, id LIMIT ?`, []any{nowN, 1000}},
		// Only the open retention clocks already due.
		{"DueDeadlines", false, regexp.MustCompile(`INDEX deadlines_open_kind \(kind=\? AND due<\?\)`),
			`SELECT ` + deadlineCols + ` FROM deadlines
			WHERE done = 0 AND kind = ? AND due <= ? ORDER BY due, id LIMIT ?`, []any{"retention", nowN, 1000}},
		// Only the kept messages past their period, never the purged ones.
		{"QuarantinedBefore", false, regexp.MustCompile(`INDEX (quarantine_kept\b|quarantine_state \(state=\? AND received<\?\))`),
			`SELECT ` + qCols + ` FROM quarantine INDEXED BY quarantine_kept
		WHERE state IN ('held', 'released') AND received < ? ORDER BY received, id LIMIT ?`, []any{nowN - int64(30*24*time.Hour), 1000}},
	}
}

// TestIdleHousekeepingReadsIndexesNotTables: on a store of 100,000
// records of which none is due, every query of a housekeeping round is
// answered by an index search that reads only what can be work (SQLite's
// query plan: SEARCH ... USING INDEX, never a SCAN, never a search that
// walks the retention clocks or the finished items), and each finds no
// work. An idle gateway's cost therefore does not grow with what it keeps.
func TestIdleHousekeepingReadsIndexesNotTables(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Now()
	fillIdle(t, s, idleRecords, now, true)
	for _, hq := range housekeepingQueries(now) {
		t.Run(hq.name, func(t *testing.T) {
			rows, err := s.r.QueryContext(ctx, `EXPLAIN QUERY PLAN `+hq.q, hq.args...)
			tcheck(t, err, "explain")
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, notused int
				var detail string
				tcheck(t, rows.Scan(&id, &parent, &notused, &detail), "plan row")
				plan = append(plan, detail)
			}
			tcheck(t, rows.Err(), "plan")
			t.Logf("plan: %s", strings.Join(plan, "; "))
			for _, step := range plan {
				// A scan of a partial index in its order, stopped at the
				// first entry (LIMIT 1), reads one entry of what can be
				// work; any other scan reads what the gateway keeps.
				if strings.HasPrefix(step, "SCAN ") && !(hq.first && hq.plans.MatchString(step)) {
					t.Errorf("%s scans: %q", hq.name, step)
				}
			}
			if !hq.plans.MatchString(plan[0]) {
				t.Errorf("%s searches %q; want a search by %s", hq.name, plan[0], hq.plans)
			}
		})
	}

	// Nothing is due, and the methods say what their queries say.
	next, err := s.NextDue(ctx)
	tcheck(t, err, "NextDue")
	if !next.IsZero() {
		t.Errorf("NextDue = %s on a queue with nothing queued", next)
	}
	nd, err := s.NextDeadline(ctx)
	tcheck(t, err, "NextDeadline")
	if nd.IsZero() || !nd.After(now) {
		t.Errorf("NextDeadline = %s; want the open clocks' due time, after %s", nd, now)
	}
	for name, got := range map[string]func() (int, error){
		"OverdueDeadlines": func() (int, error) { l, err := s.OverdueDeadlines(ctx, now, 0); return len(l), err },
		"DueDeadlines":     func() (int, error) { l, err := s.DueDeadlines(ctx, "retention", now, 0); return len(l), err },
		"QuarantinedBefore": func() (int, error) {
			l, err := s.QuarantinedBefore(ctx, now.Add(-30*24*time.Hour), 0)
			return len(l), err
		},
	} {
		n, err := got()
		tcheck(t, err, name)
		if n != 0 {
			t.Errorf("%s found %d records due on an idle store", name, n)
		}
	}
	// A clock that falls due, a queued item and a kept message old enough
	// to purge are found by the same queries.
	later := now.Add(2 * 24 * time.Hour)
	if l, err := s.OverdueDeadlines(ctx, later, 0); err != nil || len(l) == 0 {
		t.Errorf("OverdueDeadlines two days on: %d, %v; want the open clocks", len(l), err)
	}
	if l, err := s.QuarantinedBefore(ctx, later, 0); err != nil || len(l) == 0 {
		t.Errorf("QuarantinedBefore two days on: %d, %v; want the kept messages", len(l), err)
	}
	tcheck(t, s.Update(ctx, func(tx Tx) error { _, err := tx.Enqueue([]Item{item("cdt-idle-new", "hmp-eastmoor")}); return err }), "enqueue")
	if next, err := s.NextDue(ctx); err != nil || next.IsZero() {
		t.Errorf("NextDue after an enqueue: %s, %v", next, err)
	}
	// The queries above are the methods' own: same answers on the same
	// store (two days on, when each has something to find).
	for _, hq := range housekeepingQueries(later) {
		if !strings.Contains(hq.q, "LIMIT ?") {
			continue
		}
		var n int
		tcheck(t, s.r.QueryRowContext(ctx, `SELECT count(*) FROM (`+hq.q+`)`, hq.args...).Scan(&n), hq.name)
		var m int
		switch {
		case hq.name == "OverdueDeadlines":
			l, err := s.OverdueDeadlines(ctx, later, 0)
			tcheck(t, err, hq.name)
			m = len(l)
		case hq.name == "DueDeadlines":
			l, err := s.DueDeadlines(ctx, "retention", later, 0)
			tcheck(t, err, hq.name)
			m = len(l)
		case hq.name == "QuarantinedBefore":
			l, err := s.QuarantinedBefore(ctx, later.Add(-30*24*time.Hour), 0)
			tcheck(t, err, hq.name)
			m = len(l)
		}
		if n != m {
			t.Errorf("%s: the method finds %d, its query here %d: update housekeepingQueries", hq.name, m, n)
		}
	}
}

// BenchmarkIdleHousekeeping100k times one housekeeping round on the store
// of a quiet gateway (100,000 records; no clock open but retention, none
// due, nothing queued): by the queries of due.go (NextDue, NextDeadline,
// OverdueDeadlines, DueDeadlines, QuarantinedBefore), each alone, and by
// the full reads they replace (every open clock, Deadlines(now, false),
// and every quarantine record, ListQuarantine). Each prints its time per
// round and the rows it returned:
//
//	go test ./gateway/store -run '^$' -bench IdleHousekeeping100k
func BenchmarkIdleHousekeeping100k(b *testing.B) {
	s, _ := openTest(b)
	ctx := context.Background()
	now := time.Now()
	fillIdle(b, s, idleRecords, now, false)
	count := func(n int, err error) (int, error) { return n, err }
	queries := []struct {
		name  string
		query func() (int, error)
	}{
		{"NextDue", func() (int, error) { _, err := s.NextDue(ctx); return 0, err }},
		{"NextDeadline", func() (int, error) { _, err := s.NextDeadline(ctx); return 0, err }},
		{"OverdueDeadlines", func() (int, error) { l, err := s.OverdueDeadlines(ctx, now, 0); return count(len(l), err) }},
		{"DueDeadlines", func() (int, error) { l, err := s.DueDeadlines(ctx, "retention", now, 0); return count(len(l), err) }},
		{"QuarantinedBefore", func() (int, error) {
			l, err := s.QuarantinedBefore(ctx, now.Add(-30*24*time.Hour), 0)
			return count(len(l), err)
		}},
	}
	rounds := []struct {
		name  string
		round func() (int, error)
	}{
		{"round=indexed", func() (int, error) {
			rows := 0
			for _, q := range queries {
				n, err := q.query()
				if err != nil {
					return 0, fmt.Errorf("%s: %w", q.name, err)
				}
				rows += n
			}
			return rows, nil
		}},
		{"round=fullscan", func() (int, error) {
			l, err := s.Deadlines(ctx, now, false)
			if err != nil {
				return 0, err
			}
			q, err := s.ListQuarantine(ctx, "")
			return len(l) + len(q), err
		}},
	}
	for _, q := range queries {
		rounds = append(rounds, struct {
			name  string
			round func() (int, error)
		}{"query=" + q.name, q.query})
	}
	for _, r := range rounds {
		b.Run(r.name, func(b *testing.B) {
			var rows int
			for b.Loop() {
				n, err := r.round()
				if err != nil {
					b.Fatal(err)
				}
				rows = n
			}
			b.ReportMetric(float64(rows), "rows/op")
			b.Logf("%s on %d records: %s per round, %d rows returned", r.name, idleRecords,
				time.Duration(b.Elapsed().Nanoseconds()/int64(max(b.N, 1))), rows)
		})
	}
}
