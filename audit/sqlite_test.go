package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

func tcheck(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

var testKey = []byte("0123456789abcdef0123456789abcdef")

func openTest(t testing.TB, key []byte) (*SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "conduit.db")
	s, err := OpenSQLite(context.Background(), path, key)
	tcheck(t, err, "open")
	t.Cleanup(func() { s.Close() })
	return s, path
}

// appendN appends n events about packages pkg-1..pkg-n.
func appendN(t testing.TB, s *SQLite, n int) []Event {
	t.Helper()
	var l []Event
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for i := 1; i <= n; i++ {
		e, err := s.Append(context.Background(), Event{
			Time: base.Add(time.Duration(i) * time.Minute), Agency: "met-pio", Kind: Kinds[i%len(Kinds)],
			Package: fmt.Sprintf("pkg-%d", i), Destination: "hmp-northgate", Rule: "handling-code",
			Actor: "gateway", Detail: fmt.Sprintf("step %d", i),
		})
		tcheck(t, err, "append")
		l = append(l, e)
	}
	return l
}

// attacker opens the database file directly, as someone with file access
// would, and drops the triggers that make the table append-only.
func attacker(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	tcheck(t, err, "attacker open")
	t.Cleanup(func() { db.Close() })
	for _, q := range []string{`DROP TRIGGER audit_events_no_update`, `DROP TRIGGER audit_events_no_delete`} {
		_, err := db.Exec(q)
		tcheck(t, err, q)
	}
	return db
}

func exec1(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	_, err := db.Exec(q, args...)
	tcheck(t, err, q)
}

func verify(t *testing.T, s *SQLite) VerifyResult {
	t.Helper()
	r, err := s.Verify(context.Background())
	tcheck(t, err, "verify")
	return r
}

func wantBad(t *testing.T, r VerifyResult, seq int64, p Problem) {
	t.Helper()
	if r.OK || r.Seq != seq || r.Problem != p {
		t.Fatalf("verify: got %+v (%s), want entry %d %s", r, r, seq, p)
	}
	t.Logf("verify: %s", r)
}

func TestAppendChainsAndVerifies(t *testing.T) {
	s, _ := openTest(t, nil)
	r := verify(t, s)
	if !r.OK || r.Entries != 0 {
		t.Fatalf("empty log: %+v", r)
	}
	l := appendN(t, s, 10)
	if !bytes.Equal(l[0].PrevHash, Genesis) {
		t.Fatalf("first event does not chain from genesis")
	}
	for i, e := range l {
		if e.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
		if i > 0 && !bytes.Equal(e.PrevHash, l[i-1].Hash) {
			t.Fatalf("event %d does not chain from %d", e.Seq, l[i-1].Seq)
		}
	}
	r = verify(t, s)
	if !r.OK || r.Entries != 10 || r.HeadSeq != 10 || !bytes.Equal(r.HeadHash, l[9].Hash) {
		t.Fatalf("verify: %+v", r)
	}
	if got := r.String(); got != "10 entries, chain intact" {
		t.Fatalf("verdict %q", got)
	}
}

func TestAppendStampsTimeWithTheClock(t *testing.T) {
	s, _ := openTest(t, nil)
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	s.SetClock(func() time.Time { return at })
	e, err := s.Append(context.Background(), Event{Kind: PolicyReload, Actor: "admin"})
	tcheck(t, err, "append")
	if !e.Time.Equal(at) {
		t.Fatalf("time %s, want %s", e.Time, at)
	}
	got, err := s.Query(context.Background(), Filter{})
	tcheck(t, err, "query")
	if len(got) != 1 || !got[0].Time.Equal(at) || got[0].Kind != PolicyReload {
		t.Fatalf("query: %+v", got)
	}
}

func TestAppendRefusesUnknownKindsAndTimes(t *testing.T) {
	s, _ := openTest(t, nil)
	for _, e := range []Event{
		{Kind: "exploded"},
		{Kind: ""},
		{Kind: Sent, Time: time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if _, err := s.Append(context.Background(), e); err == nil {
			t.Errorf("append %+v: no error", e)
		}
	}
	if r := verify(t, s); !r.OK || r.Entries != 0 {
		t.Fatalf("verify after refusals: %+v", r)
	}
}

// Text never costs an event: it is made valid and cut to its limit.
func TestAppendFitsText(t *testing.T) {
	s, _ := openTest(t, nil)
	long := strings.Repeat("é", MaxDetail) // 2 bytes each
	e, err := s.Append(context.Background(), Event{Kind: Retried, Detail: long, Package: strings.Repeat("p", MaxField+10),
		Actor: "bad\xffutf8", Rule: "nul\x00"})
	tcheck(t, err, "append")
	if len(e.Detail) > MaxDetail || !strings.HasSuffix(e.Detail, truncMark) || !utf8.ValidString(e.Detail) {
		t.Errorf("detail: %d bytes, %q...", len(e.Detail), e.Detail[len(e.Detail)-20:])
	}
	if len(e.Package) > MaxField || e.Actor != "bad\uFFFDutf8" || e.Rule != "nul\uFFFD" {
		t.Errorf("fields: %q %q %q", e.Package, e.Actor, e.Rule)
	}
	got, err := s.Query(context.Background(), Filter{})
	tcheck(t, err, "query")
	if len(got) != 1 || got[0].Detail != e.Detail || got[0].Actor != e.Actor {
		t.Fatalf("stored event differs from the returned one")
	}
	if r := verify(t, s); !r.OK {
		t.Fatalf("verify: %s", r)
	}
}

func TestTableIsAppendOnly(t *testing.T) {
	s, path := openTest(t, nil)
	appendN(t, s, 2)
	db, err := sql.Open("sqlite", path)
	tcheck(t, err, "open")
	defer db.Close()
	if _, err := db.Exec(`UPDATE audit_events SET detail = 'x' WHERE seq = 1`); err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("update: %v", err)
	}
	if _, err := db.Exec(`DELETE FROM audit_events WHERE seq = 1`); err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("delete: %v", err)
	}
}

func TestVerifyFindsEditedEntry(t *testing.T) {
	for _, col := range []string{"detail", "package", "rule", "kind", "actor", "destination", "agency"} {
		t.Run(col, func(t *testing.T) {
			s, path := openTest(t, nil)
			appendN(t, s, 8)
			db := attacker(t, path)
			exec1(t, db, `UPDATE audit_events SET `+col+` = 'forged' WHERE seq = 5`)
			wantBad(t, verify(t, s), 5, Edited)
		})
	}
	t.Run("time", func(t *testing.T) {
		s, path := openTest(t, nil)
		appendN(t, s, 8)
		exec1(t, attacker(t, path), `UPDATE audit_events SET time = time - 3600000000000 WHERE seq = 3`)
		wantBad(t, verify(t, s), 3, Edited)
	})
	t.Run("hash", func(t *testing.T) {
		s, path := openTest(t, nil)
		appendN(t, s, 8)
		exec1(t, attacker(t, path), `UPDATE audit_events SET hash = zeroblob(32) WHERE seq = 4`)
		wantBad(t, verify(t, s), 4, Edited)
	})
	t.Run("newest", func(t *testing.T) {
		s, path := openTest(t, nil)
		appendN(t, s, 8)
		exec1(t, attacker(t, path), `UPDATE audit_events SET detail = 'forged' WHERE seq = 8`)
		wantBad(t, verify(t, s), 8, Edited)
	})
}

// An attacker without a key can recompute the hashes of an unkeyed log
// from the edited entry on; then only the head recorded apart from the
// log (here: by an earlier Verify) shows it. This is what unkeyed mode
// does not prove, and the test documents it.
func TestUnkeyedRecomputedChainNeedsAnAnchor(t *testing.T) {
	s, path := openTest(t, nil)
	appendN(t, s, 5)
	before := verify(t, s)
	db := attacker(t, path)
	exec1(t, db, `UPDATE audit_events SET detail = 'forged' WHERE seq = 3`)
	rechain(t, db, nil, 3)
	after := verify(t, s)
	if !after.OK {
		t.Fatalf("a recomputed unkeyed chain verifies: %s", after)
	}
	if bytes.Equal(before.HeadHash, after.HeadHash) {
		t.Fatalf("the head did not change: an anchor would not show the rewrite")
	}
}

func TestVerifyFindsDeletedEntry(t *testing.T) {
	t.Run("middle", func(t *testing.T) {
		s, path := openTest(t, nil)
		appendN(t, s, 8)
		exec1(t, attacker(t, path), `DELETE FROM audit_events WHERE seq = 4`)
		r := verify(t, s)
		wantBad(t, r, 4, Deleted)
	})
	t.Run("several", func(t *testing.T) {
		s, path := openTest(t, nil)
		appendN(t, s, 8)
		exec1(t, attacker(t, path), `DELETE FROM audit_events WHERE seq BETWEEN 2 AND 5`)
		r := verify(t, s)
		wantBad(t, r, 2, Deleted)
		if !strings.Contains(r.Reason, "entries 2 to 5 are missing") {
			t.Fatalf("reason %q", r.Reason)
		}
	})
	t.Run("first", func(t *testing.T) {
		s, path := openTest(t, nil)
		appendN(t, s, 3)
		exec1(t, attacker(t, path), `DELETE FROM audit_events WHERE seq = 1`)
		wantBad(t, verify(t, s), 1, Deleted)
	})
	t.Run("deleted and renumbered", func(t *testing.T) {
		s, path := openTest(t, nil)
		appendN(t, s, 6)
		db := attacker(t, path)
		exec1(t, db, `DELETE FROM audit_events WHERE seq = 3`)
		exec1(t, db, `UPDATE audit_events SET seq = seq - 1 WHERE seq > 3`)
		exec1(t, db, `UPDATE audit_meta SET head_seq = 5`)
		wantBad(t, verify(t, s), 3, Deleted)
	})
	t.Run("newest", func(t *testing.T) {
		s, path := openTest(t, nil)
		appendN(t, s, 8)
		exec1(t, attacker(t, path), `DELETE FROM audit_events WHERE seq >= 7`)
		wantBad(t, verify(t, s), 7, Deleted)
		// The gateway refuses to chain on from a truncated log, which
		// would hide the truncation.
		if _, err := s.Append(context.Background(), Event{Kind: Alert}); !errors.Is(err, ErrBroken) {
			t.Fatalf("append on a truncated log: %v", err)
		}
	})
	t.Run("all", func(t *testing.T) {
		s, path := openTest(t, nil)
		appendN(t, s, 3)
		exec1(t, attacker(t, path), `DELETE FROM audit_events`)
		wantBad(t, verify(t, s), 1, Deleted)
	})
}

func TestVerifyFindsReorderedPair(t *testing.T) {
	t.Run("swapped rows", func(t *testing.T) {
		s, path := openTest(t, nil)
		appendN(t, s, 8)
		db := attacker(t, path)
		// Swap entries 5 and 6: renumber them through a free seq.
		exec1(t, db, `UPDATE audit_events SET seq = -1 WHERE seq = 5`)
		exec1(t, db, `UPDATE audit_events SET seq = 5 WHERE seq = 6`)
		exec1(t, db, `UPDATE audit_events SET seq = 6 WHERE seq = -1`)
		r := verify(t, s)
		wantBad(t, r, 5, Reordered)
		if !strings.Contains(r.Reason, "written as entry 6") {
			t.Fatalf("reason %q", r.Reason)
		}
	})
	t.Run("swapped times", func(t *testing.T) {
		// The same pair, "reordered" by exchanging times so that a reader
		// sorting by time sees them the other way round.
		s, path := openTest(t, nil)
		l := appendN(t, s, 8)
		db := attacker(t, path)
		exec1(t, db, `UPDATE audit_events SET time = ? WHERE seq = 2`, l[2].Time.UnixNano())
		exec1(t, db, `UPDATE audit_events SET time = ? WHERE seq = 3`, l[1].Time.UnixNano())
		wantBad(t, verify(t, s), 2, Edited)
	})
	t.Run("spliced from another log", func(t *testing.T) {
		s, path := openTest(t, nil)
		appendN(t, s, 4)
		other, _ := openTest(t, nil)
		o := appendN(t, other, 4)
		db := attacker(t, path)
		exec1(t, db, `DELETE FROM audit_events WHERE seq = 3`)
		exec1(t, db, `INSERT INTO audit_events (seq, time, agency, kind, package, destination, rule, actor, detail, prev_hash, hash) VALUES (3, ?, ?, ?, ?, ?, ?, ?, 'spliced', ?, ?)`,
			o[2].Time.UnixNano(), o[2].Agency, string(o[2].Kind), o[2].Package, o[2].Destination, o[2].Rule, o[2].Actor, []byte(o[2].PrevHash), []byte(o[2].Hash))
		r := verify(t, s)
		if r.OK || r.Seq != 3 {
			t.Fatalf("verify: %s", r)
		}
	})
}

// rechain recomputes every hash from seq from on, with key (nil:
// SHA-256), as an attacker who can rewrite the file would, and fixes the
// head.
func rechain(t *testing.T, db *sql.DB, key []byte, from int64) {
	t.Helper()
	rows, err := db.Query(`SELECT ` + eventColumns + ` FROM audit_events ORDER BY seq`)
	tcheck(t, err, "read")
	var l []Event
	for rows.Next() {
		e, err := scanEvent(rows)
		tcheck(t, err, "scan")
		l = append(l, e)
	}
	rows.Close()
	prev := []byte(Genesis)
	for _, e := range l {
		if e.Seq >= from {
			e.PrevHash = prev
			e.Hash = eventHash(key, &e, e.Seq, prev)
			exec1(t, db, `UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?`, []byte(e.PrevHash), []byte(e.Hash), e.Seq)
		}
		prev = e.Hash
	}
	last := l[len(l)-1]
	exec1(t, db, `UPDATE audit_meta SET head_seq = ?, head_hash = ?`, last.Seq, prev)
}

func TestKeyedChainRecomputedWithoutKeyIsFound(t *testing.T) {
	s, path := openTest(t, testKey)
	appendN(t, s, 6)
	if r := verify(t, s); !r.OK || !r.Keyed {
		t.Fatalf("keyed verify: %+v", r)
	}
	db := attacker(t, path)
	exec1(t, db, `UPDATE audit_events SET detail = 'forged' WHERE seq = 4`)
	rechain(t, db, nil, 4)
	wantBad(t, verify(t, s), 4, Rewritten)

	// A guessed key is no better.
	rechain(t, db, []byte("guessed-key-guessed-key"), 1)
	wantBad(t, verify(t, s), 1, Edited)

	// Turning the log into an unkeyed one is refused when opened with the
	// key.
	exec1(t, db, `UPDATE audit_meta SET keyed = 0, key_check = NULL, head_mac = NULL`)
	rechain(t, db, nil, 1)
	if _, err := OpenSQLite(context.Background(), path, testKey); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("open a rewritten unkeyed log with the key: %v", err)
	}
}

func TestKeyedLogFindsTruncationAndForgedHead(t *testing.T) {
	s, path := openTest(t, testKey)
	appendN(t, s, 6)
	db := attacker(t, path)
	exec1(t, db, `DELETE FROM audit_events WHERE seq > 4`)
	wantBad(t, verify(t, s), 5, Deleted)
	// Moving the head back without the key is found too.
	var h []byte
	tcheck(t, db.QueryRow(`SELECT hash FROM audit_events WHERE seq = 4`).Scan(&h), "head")
	exec1(t, db, `UPDATE audit_meta SET head_seq = 4, head_hash = ?`, h)
	wantBad(t, verify(t, s), 4, Edited)
}

func TestOpenChecksTheKey(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t, testKey)
	appendN(t, s, 1)
	for _, key := range [][]byte{nil, []byte("another-key-another-key-another")} {
		if _, err := OpenSQLite(ctx, path, key); !errors.Is(err, ErrKeyMismatch) {
			t.Errorf("open with key %q: %v", key, err)
		}
	}
	if _, err := OpenSQLite(ctx, path, []byte("short")); err == nil {
		t.Errorf("a short key was accepted")
	}
	u, upath := openTest(t, nil)
	appendN(t, u, 1)
	if _, err := OpenSQLite(ctx, upath, testKey); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("open an unkeyed log with a key: %v", err)
	}
	// A log nothing was written to takes the mode of its first writer.
	empty := filepath.Join(t.TempDir(), "empty.db")
	e1, err := OpenSQLite(ctx, empty, nil)
	tcheck(t, err, "open empty")
	e1.Close()
	e2, err := OpenSQLite(ctx, empty, testKey)
	tcheck(t, err, "open empty with a key")
	defer e2.Close()
	appendN(t, e2, 1)
	if r := verify(t, e2); !r.OK || !r.Keyed {
		t.Fatalf("verify: %+v", r)
	}
}

func TestConcurrentAppendsFormOneChain(t *testing.T) {
	s, path := openTest(t, testKey)
	s2, err := OpenSQLite(context.Background(), path, testKey)
	tcheck(t, err, "second handle")
	defer s2.Close()
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		h := s
		if w%2 == 1 {
			h = s2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := h.Append(context.Background(), Event{Kind: Queued, Package: fmt.Sprintf("w%d-%d", w, i), Actor: "gateway"}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r := verify(t, s)
	if !r.OK || r.Entries != workers*each {
		t.Fatalf("verify: %s (%+v)", r, r)
	}
}

// The helper process of TestTwoProcessesFormOneChain: it appends
// AUDIT_HELPER_N events to AUDIT_HELPER_DB.
func TestHelperAppender(t *testing.T) {
	path := os.Getenv("AUDIT_HELPER_DB")
	if path == "" {
		t.Skip("helper process only")
	}
	n, _ := strconv.Atoi(os.Getenv("AUDIT_HELPER_N"))
	s, err := OpenSQLite(context.Background(), path, testKey)
	tcheck(t, err, "open")
	defer s.Close()
	for i := 0; i < n; i++ {
		_, err := s.Append(context.Background(), Event{Kind: Sent, Package: fmt.Sprintf("p%d-%d", os.Getpid(), i), Actor: "helper"})
		tcheck(t, err, "append")
	}
}

func TestTwoProcessesFormOneChain(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	s, path := openTest(t, testKey)
	const n = 60
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for i := 0; i < 2; i++ {
		c := exec.Command(os.Args[0], "-test.run=^TestHelperAppender$", "-test.count=1")
		c.Env = append(os.Environ(), "AUDIT_HELPER_DB="+path, "AUDIT_HELPER_N="+strconv.Itoa(n))
		var out bytes.Buffer
		c.Stdout, c.Stderr = &out, &out
		tcheck(t, c.Start(), "start helper")
		cmds, outs = append(cmds, c), append(outs, &out)
	}
	// This process appends too.
	for i := 0; i < n; i++ {
		_, err := s.Append(context.Background(), Event{Kind: Queued, Package: fmt.Sprintf("main-%d", i)})
		tcheck(t, err, "append")
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("helper %d: %v\n%s", i, err, outs[i])
		}
	}
	r := verify(t, s)
	if !r.OK || r.Entries != 3*n {
		t.Fatalf("verify: %s (%+v)", r, r)
	}
}

func TestQueryAndExport(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t, nil)
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for i, e := range []Event{
		{Kind: Received, Package: "pkg-a", Actor: "pio@met.example"},
		{Kind: Redirected, Package: "pkg-a", Destination: "ne-ccu", Rule: "governor-to-regional-ccu", Detail: "governing governor is a subject"},
		{Kind: Refused, Package: "pkg-b", Rule: "handling-code", Detail: "handling 4 never leaves the originating agency"},
		{Kind: Sealed, Package: "pkg-a", Destination: "ne-ccu"},
		{Kind: Queued, Package: "pkg-a", Destination: "ne-ccu"},
		{Kind: PolicyReload, Actor: "admin"},
	} {
		e.Time = base.Add(time.Duration(i) * time.Hour)
		e.Agency = "met-pio"
		_, err := s.Append(ctx, e)
		tcheck(t, err, "append")
	}
	seqs := func(l []Event) (r []int64) {
		for _, e := range l {
			r = append(r, e.Seq)
		}
		return r
	}
	for _, c := range []struct {
		f    Filter
		want []int64
	}{
		{Filter{Package: "pkg-a"}, []int64{1, 2, 4, 5}},
		{Filter{Rule: "handling-code"}, []int64{3}},
		{Filter{Kind: Refused}, []int64{3}},
		{Filter{Since: base.Add(3 * time.Hour)}, []int64{4, 5, 6}},
		{Filter{Since: base.Add(time.Hour), Until: base.Add(3 * time.Hour)}, []int64{2, 3}},
		{Filter{Package: "pkg-a", Limit: 2}, []int64{1, 2}},
		{Filter{AfterSeq: 4}, []int64{5, 6}},
		{Filter{Package: "nope"}, nil},
	} {
		l, err := s.Query(ctx, c.f)
		tcheck(t, err, "query")
		if fmt.Sprint(seqs(l)) != fmt.Sprint(c.want) {
			t.Errorf("query %+v: %v, want %v", c.f, seqs(l), c.want)
		}
	}

	var buf bytes.Buffer
	n, err := s.Export(ctx, &buf, Filter{})
	tcheck(t, err, "export")
	if n != 6 {
		t.Fatalf("exported %d", n)
	}
	sc := bufio.NewScanner(&buf)
	var prev HexHash = Genesis
	var lines int
	for sc.Scan() {
		lines++
		var e Event
		tcheck(t, json.Unmarshal(sc.Bytes(), &e), "parse line")
		if !bytes.Equal(e.PrevHash, prev) || !bytes.Equal(e.Hash, eventHash(nil, &e, e.Seq, e.PrevHash)) {
			t.Fatalf("exported event %d does not verify", e.Seq)
		}
		prev = e.Hash
		if lines == 1 && !strings.HasPrefix(sc.Text(), `{"seq":1,"time":"2026-11-23T10:00:00Z","agency":"met-pio","kind":"received"`) {
			t.Fatalf("line %s", sc.Text())
		}
	}
	if lines != 6 {
		t.Fatalf("%d lines", lines)
	}
}

// The canonical encoding is unambiguous: moving bytes between fields
// changes the hash.
func TestEncodingIsUnambiguous(t *testing.T) {
	a := Event{Kind: Sent, Package: "ab", Destination: "c"}
	b := Event{Kind: Sent, Package: "a", Destination: "bc"}
	if bytes.Equal(eventHash(nil, &a, 1, Genesis), eventHash(nil, &b, 1, Genesis)) {
		t.Fatal("two events with the same hash")
	}
	want := sha256.Sum256([]byte("conduit audit genesis v1"))
	if !bytes.Equal(Genesis, want[:]) {
		t.Fatal("genesis changed")
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2026-11-23T10:00:00Z":      time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
		"2026-11-23T10:00:00+01:00": time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC),
		"2026-11-20":                time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC),
		"36h":                       now.Add(-36 * time.Hour),
		"90m":                       now.Add(-90 * time.Minute),
		"7d":                        now.Add(-7 * 24 * time.Hour),
	} {
		got, err := ParseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseSince(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yesterday", "-5h", "d", "99999999d", "0001-01-01", "1e9h", "2026-13-01"} {
		if got, err := ParseSince(in, now); err == nil {
			t.Errorf("ParseSince(%q) = %s, want an error", in, got)
		}
	}
}

func FuzzParseSince(f *testing.F) {
	for _, s := range []string{"2026-11-23T10:00:00Z", "2026-11-23", "36h", "7d", "", "-1h", "99999d", "1.5h"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSince(s, now)
		if err != nil {
			return
		}
		if got.Before(minTime) || got.After(maxTime) || got.Location() != time.UTC {
			t.Fatalf("ParseSince(%q) = %s: out of range or not UTC", s, got)
		}
		// A time it accepts can stamp an event and round-trips.
		e := Event{Kind: Sent, Time: got}
		if err := e.check(); err != nil {
			t.Fatalf("ParseSince(%q) = %s, which an event refuses: %v", s, got, err)
		}
		if !time.Unix(0, got.UnixNano()).Equal(got) {
			t.Fatalf("ParseSince(%q) = %s does not round-trip", s, got)
		}
	})
}

// FuzzEventJSON feeds exported lines (what a SIEM or an import reads):
// parsing never panics, and an event that parses hashes the same after
// a write and a read.
func FuzzEventJSON(f *testing.F) {
	s, _ := openTest(f, nil)
	appendN(f, s, 2)
	var buf bytes.Buffer
	_, err := s.Export(context.Background(), &buf, Filter{})
	tcheck(f, err, "export")
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		f.Add([]byte(l))
	}
	f.Add([]byte(`{"seq":1,"hash":"zz"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Event
		if json.Unmarshal(b, &e) != nil {
			return
		}
		out, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var e2 Event
		if err := json.Unmarshal(out, &e2); err != nil {
			t.Fatalf("re-read %s: %v", out, err)
		}
		if e.check() == nil && e2.check() == nil && !bytes.Equal(eventHash(nil, &e, e.Seq, e.PrevHash), eventHash(nil, &e2, e2.Seq, e2.PrevHash)) {
			t.Fatalf("hash changed across a JSON round trip: %s", out)
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	for _, keyed := range []bool{false, true} {
		b.Run(fmt.Sprintf("keyed=%v", keyed), func(b *testing.B) {
			var key []byte
			if keyed {
				key = testKey
			}
			s, _ := openTest(b, key)
			e := Event{Agency: "met-pio", Kind: Sent, Package: "MET-2026-000123", Destination: "hmp-northgate", Rule: "police-to-prison-via-pio", Actor: "gateway", Detail: "250 2.0.0 queued as 4f2a"}
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Append(ctx, e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The trail has no place for content: Event's fields are exactly these.
// Adding one (a body, a subject) must be a deliberate change to this test
// and to the security review (docs/design.md, security invariant 2).
func TestEventHasNoContentField(t *testing.T) {
	want := "Seq Time Agency Kind Package Destination Rule Actor Detail PrevHash Hash"
	var got []string
	ty := reflect.TypeOf(Event{})
	for i := 0; i < ty.NumField(); i++ {
		got = append(got, ty.Field(i).Name)
	}
	if strings.Join(got, " ") != want {
		t.Fatalf("Event fields %v, want %s", got, want)
	}
}

func BenchmarkVerify10k(b *testing.B) {
	s, _ := openTest(b, testKey)
	ctx := context.Background()
	e := Event{Agency: "met-pio", Kind: Sent, Package: "MET-2026-000123", Destination: "hmp-northgate", Actor: "gateway", Detail: "250 2.0.0 queued as 4f2a"}
	tx, err := s.w.BeginTx(ctx, nil)
	tcheck(b, err, "begin")
	prev := []byte(Genesis)
	now := time.Now().UTC()
	for i := int64(1); i <= 10000; i++ {
		e.Time = now
		h := eventHash(s.key, &e, i, prev)
		_, err := tx.ExecContext(ctx, `INSERT INTO audit_events (`+eventColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			i, now.UnixNano(), e.Agency, string(e.Kind), e.Package, e.Destination, e.Rule, e.Actor, e.Detail, prev, h)
		tcheck(b, err, "insert")
		prev = h
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_meta (id, keyed, key_check, head_seq, head_hash, head_mac) VALUES (1, 1, ?, 10000, ?, ?)`,
		keyCheck(s.key), prev, headMAC(s.key, 10000, prev))
	tcheck(b, err, "meta")
	tcheck(b, tx.Commit(), "commit")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := s.Verify(ctx)
		if err != nil || !r.OK || r.Entries != 10000 {
			b.Fatalf("verify: %+v %v", r, err)
		}
	}
}

func exportAll(t testing.TB, s *SQLite, f Filter) string {
	t.Helper()
	var buf bytes.Buffer
	_, err := s.Export(context.Background(), &buf, f)
	tcheck(t, err, "export")
	return buf.String()
}

func TestVerifyJSONL(t *testing.T) {
	s, _ := openTest(t, testKey)
	appendN(t, s, 6)
	head := verify(t, s)
	all := exportAll(t, s, Filter{})
	r, err := VerifyJSONL(strings.NewReader(all), testKey)
	tcheck(t, err, "verify export")
	if !r.OK || r.Entries != 6 || !bytes.Equal(r.HeadHash, head.HeadHash) {
		t.Fatalf("verify export: %s %+v", r, r)
	}
	// A resumed export (a contiguous tail) verifies on its own.
	tail := exportAll(t, s, Filter{AfterSeq: 3})
	if r, err := VerifyJSONL(strings.NewReader(tail), testKey); err != nil || !r.OK || r.Entries != 3 {
		t.Fatalf("verify tail: %s %v", r, err)
	}
	lines := strings.SplitAfter(strings.TrimSpace(all), "\n")
	for _, c := range []struct {
		name string
		in   string
		seq  int64
		p    Problem
	}{
		{"edited", strings.Replace(all, `"detail":"step 3"`, `"detail":"step 33"`, 1), 3, Edited},
		{"deleted", strings.Join(append(append([]string{}, lines[:2]...), lines[3:]...), ""), 3, Deleted},
		{"reordered", lines[0] + lines[1] + lines[3] + lines[2] + lines[4] + lines[5], 3, Deleted}, // a stream cannot look ahead
		{"duplicated", lines[0] + lines[1] + lines[1] + lines[2], 2, Reordered},
		{"first deleted", strings.Join(lines[1:], ""), 0, ""},
	} {
		r, err := VerifyJSONL(strings.NewReader(c.in), testKey)
		tcheck(t, err, c.name)
		if c.p == "" {
			if !r.OK {
				t.Errorf("%s: %s", c.name, r)
			}
			continue
		}
		if r.OK || r.Seq != c.seq || r.Problem != c.p {
			t.Errorf("%s: %s, want entry %d %s", c.name, r, c.seq, c.p)
		}
	}
	if r, _ := VerifyJSONL(strings.NewReader(all), nil); r.OK {
		t.Errorf("a keyed export verifies without the key")
	}
	for _, in := range []string{"not json\n", `{"seq":1,"extra":2}` + "\n", strings.Repeat("x", MaxLine+1)} {
		if _, err := VerifyJSONL(strings.NewReader(in), nil); err == nil {
			t.Errorf("VerifyJSONL(%.20q): no error", in)
		}
	}
}

// FuzzVerifyJSONL: whatever a file holds, VerifyJSONL answers without
// panicking, and never calls a changed export intact.
func FuzzVerifyJSONL(f *testing.F) {
	s, _ := openTest(f, nil)
	appendN(f, s, 4)
	all := exportAll(f, s, Filter{})
	f.Add([]byte(all))
	f.Add([]byte(strings.Replace(all, "step 2", "step 9", 1)))
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := VerifyJSONL(bytes.NewReader(b), nil)
		if err != nil || !r.OK {
			return
		}
		// Intact: every event must re-verify from its own hash.
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, MaxLine)
		for sc.Scan() {
			var e Event
			if json.Unmarshal(sc.Bytes(), &e) != nil {
				continue
			}
			if !bytes.Equal(e.Hash, eventHash(nil, &e, e.Seq, e.PrevHash)) {
				t.Fatalf("intact, but entry %d does not match its hash", e.Seq)
			}
		}
	})
}

// TestAppendAllChainsABatchInOneTransaction: a batch (the gateway's group
// commit) chains exactly as single appends do, and a bad event in it
// stores none of it.
func TestAppendAllChainsABatchInOneTransaction(t *testing.T) {
	ctx := context.Background()
	for _, key := range [][]byte{nil, []byte("0123456789abcdef-batch")} {
		s, _ := openTest(t, key)
		if _, err := s.Append(ctx, Event{Agency: "a", Kind: Received, Package: "p0"}); err != nil {
			t.Fatal(err)
		}
		batch := []Event{{Agency: "a", Kind: Sealed, Package: "p1"}, {Agency: "a", Kind: Queued, Package: "p1"}, {Agency: "a", Kind: Sent, Package: "p1"}}
		got, err := s.AppendAll(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		if got[0].Seq != 2 || got[2].Seq != 4 || !bytes.Equal(got[1].PrevHash, got[0].Hash) {
			t.Fatalf("batch not chained: %+v", got)
		}
		if _, err := s.AppendAll(ctx, []Event{{Agency: "a", Kind: Sent}, {Agency: "a", Kind: "bogus"}}); err == nil {
			t.Fatal("a batch with an unknown kind was accepted")
		}
		r, err := s.Verify(ctx)
		if err != nil || !r.OK || r.HeadSeq != 4 {
			t.Fatalf("verify after batch: %+v, %v", r, err)
		}
	}
}
