package main

import (
	"database/sql"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/testbed"
)

// TestIdleGatewayDoesNotReadWhatItKeeps runs an idle gateway on a store
// of 100,000 records (queue items in final states, clocks that are mostly
// retention clocks years ahead, purged quarantine records; none
// due) with a one-second housekeeping interval, and counts the bytes the
// process reads (/proc/PID/io rchar: SQLite reads its pages with pread,
// no memory map) over an idle window of several housekeeping intervals.
// A round that scanned the clocks or the quarantine would read megabytes
// each time (the tables do not fit SQLite's page cache); the indexed
// round reads a few pages.
func TestIdleGatewayDoesNotReadWhatItKeeps(t *testing.T) {
	if _, err := os.Stat("/proc/self/io"); err != nil {
		t.Skip("needs /proc/PID/io (Linux)")
	}
	const (
		id      = "northshire-pio"
		records = 100_000
		window  = 6 * time.Second
		bound   = 1 << 20 // bytes read in the window
	)
	b := newE2EBed(t, testbed.Options{Extra: "housekeeping-interval: 1s\n"}, id)
	tcheck(t, b.Stop(id), "stop")
	fillKept(t, b.StorePath(id), records, time.Now())
	st, err := os.Stat(b.StorePath(id))
	tcheck(t, err, "store size")
	p := startServe(t, b, id)
	pid := p.cmd.Process.Pid
	// What it reads at start (keys, certificates, the schema, a first
	// round) is not counted: the window opens two intervals later.
	time.Sleep(2 * time.Second)
	before := readBytes(t, pid)
	time.Sleep(window) // the idle period itself is what is measured
	read := readBytes(t, pid) - before
	t.Logf("idle %s on %d records (store %d MiB): %d KiB read", window, records, st.Size()>>20, read>>10)
	if read > bound {
		t.Errorf("the idle gateway read %d KiB in %s on a store of %d records (bound %d KiB): its housekeeping reads what it keeps, not an index",
			read>>10, window, records, bound>>10)
	}
	p.terminate(t, 30*time.Second)
}

// readBytes is the bytes a process has read (rchar).
func readBytes(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	tcheck(t, err, "read /proc/PID/io")
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			tcheck(t, err, "rchar")
			return n
		}
	}
	t.Fatalf("no rchar in /proc/%d/io", pid)
	return 0
}

// fillKept fills a stopped gateway's store with n records none of which
// is due at now: queue items in final states, clocks (nine in ten
// retention clocks one to six years ahead, the rest closed triage and
// acknowledgement clocks) and purged quarantine records, by SQL in one
// transaction.
func fillKept(t *testing.T, path string, n int, now time.Time) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	tcheck(t, err, "open the store")
	defer db.Close()
	items, clocks := n*4/10, n*5/10
	kept := n - items - clocks
	year := int64(365 * 24 * time.Hour)
	nowN := now.UTC().UnixNano()
	tx, err := db.Begin()
	tcheck(t, err, "begin")
	defer tx.Rollback()
	for _, st := range []struct {
		what string
		q    string
		args []any
	}{
		{"queue items", `WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?)
			INSERT INTO queue (package_id, destination, recipients, mail_from, submitter, priority, marking, size,
				state, attempts, next_attempt, created, updated)
			SELECT printf('cdt-kept%07d', i), 'hmp-northgate', '["intel@northgate.hmpps.example"]', 'conduit@northshire-pio.example',
				'pio@northshire-pio.example', i % 7 = 0, 'OFFICIAL-SENSITIVE', 2048,
				CASE WHEN i % 50 = 0 THEN 'failed' WHEN i % 51 = 0 THEN 'dropped' ELSE 'sent' END,
				1 + i % 3, ? - i * 1000000000, ? - i * 1000000000, ? - i * 1000000000 FROM k`,
			[]any{items, nowN, nowN, nowN}},
		{"clocks", `WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?)
			INSERT INTO deadlines (package_id, kind, agency, started, due, done, alerted)
			SELECT printf('cdt-kept%07d', i),
				CASE WHEN i % 10 <> 0 THEN 'retention' WHEN i % 20 = 0 THEN 'triage' ELSE 'acknowledge' END,
				'northshire-pio', ? - i * 1000000000,
				CASE WHEN i % 10 <> 0 THEN ? + ? + (i % 5) * ? ELSE ? - 3600000000000 END,
				CASE WHEN i % 10 <> 0 THEN 0 ELSE ? END, 0 FROM k`,
			[]any{clocks, nowN, nowN, year, year, nowN, nowN}},
		{"quarantine", `WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?)
			INSERT INTO quarantine (received, remote_addr, helo, mail_from, recipients, check_name, reason, package_id,
				raw, size, state, note, updated)
			SELECT ? - 2 * ? - i * 1000000000,
				'127.0.0.1:25000', 'gw.example', 'conduit@hmp-northgate.example', '["pio@northshire-pio.example"]',
				'tampered', 'the ciphertext was altered', printf('cdt-quar%07d', i),
				NULL, 1024, 'purged', 'retention: kept the retention period', ? FROM k`,
			[]any{kept, nowN, year, nowN}},
	} {
		_, err := tx.Exec(st.q, st.args...)
		tcheck(t, err, "fill "+st.what)
	}
	tcheck(t, tx.Commit(), "commit")
}
