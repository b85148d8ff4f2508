package audit

import (
	"context"
	"database/sql"
	"encoding/json"
	"testing"
	"time"
)

// stageRaw writes rows into the outbox as the store does (in its own
// transaction, through its own connection).
func stageRaw(t *testing.T, path string, events ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	tcheck(t, err, "open")
	defer db.Close()
	for _, e := range events {
		_, err := db.Exec(`INSERT INTO audit_outbox (event) VALUES (?)`, e)
		tcheck(t, err, "stage")
	}
}

func staged(t *testing.T, e Event) string {
	t.Helper()
	b, err := json.Marshal(e)
	tcheck(t, err, "marshal")
	return string(b)
}

// TestStagedEventsAreChainedInOrder: events the store staged in its
// transactions are moved into the chain in the order they were staged,
// before any event appended directly, once only, and the chain verifies.
// A staged row that cannot be chained as written does not block the rest:
// it becomes an alert that says so.
func TestStagedEventsAreChainedInOrder(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t, testKey)
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	stageRaw(t, path,
		staged(t, Event{Time: at, Agency: "met-pio", Kind: Queued, Package: "cdt-a", Destination: "hmp-northgate"}),
		`{"kind": "no-such-kind", "package": "cdt-b"}`,
		staged(t, Event{Time: at.Add(time.Second), Agency: "met-pio", Kind: Sent, Package: "cdt-a"}),
	)
	if n, err := s.Staged(ctx); err != nil || n != 3 {
		t.Fatalf("staged = %d, %v", n, err)
	}
	direct, err := s.Append(ctx, Event{Time: at.Add(2 * time.Second), Agency: "met-pio", Kind: Alert, Detail: "direct"})
	tcheck(t, err, "append")
	if direct.Seq != 4 {
		t.Errorf("the direct event is entry %d; the three staged before it come first", direct.Seq)
	}
	if n, err := s.Drain(ctx); err != nil || n != 0 {
		t.Errorf("drain after the append moved %d, %v; want 0 (moved once only)", n, err)
	}
	l, err := s.Query(ctx, Filter{})
	tcheck(t, err, "query")
	for i, want := range []struct {
		kind Kind
		pkg  string
	}{{Queued, "cdt-a"}, {Alert, "cdt-b"}, {Sent, "cdt-a"}, {Alert, ""}} {
		if i >= len(l) || l[i].Kind != want.kind || l[i].Package != want.pkg {
			t.Fatalf("entry %d: %+v; want %s %s", i+1, l, want.kind, want.pkg)
		}
	}
	if l[1].Rule != "audit-outbox" {
		t.Errorf("the unchainable row became %+v", l[1])
	}
	res, err := s.Verify(ctx)
	tcheck(t, err, "verify")
	if !res.OK || res.Entries != 4 {
		t.Errorf("verify: %s", res)
	}
}

// TestOpenChainsWhatACrashLeftStaged: a process that staged events and
// died before moving them leaves them in the outbox; the next open of the
// trail (the restarted gateway, or any conduit audit command) chains them.
func TestOpenChainsWhatACrashLeftStaged(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t, nil)
	s.Close()
	stageRaw(t, path, staged(t, Event{Time: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), Agency: "met-pio", Kind: Delivered, Package: "cdt-c"}))
	s2, err := OpenSQLite(ctx, path, nil)
	tcheck(t, err, "reopen")
	defer s2.Close()
	if n, _ := s2.Staged(ctx); n != 0 {
		t.Errorf("%d events still staged after the open", n)
	}
	l, err := s2.Query(ctx, Filter{Package: "cdt-c"})
	tcheck(t, err, "query")
	if len(l) != 1 || l[0].Kind != Delivered {
		t.Errorf("after the open: %+v", l)
	}
}

// A direct append is synced (FULL) whatever level the shared writer was
// left at by the store's bookkeeping; moving staged events is not (NORMAL:
// a move lost to a power cut leaves them in the outbox).
func TestAppendSetsItsOwnSyncLevel(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t, testKey)
	level := func() int {
		t.Helper()
		conn, err := s.w.Conn(ctx)
		tcheck(t, err, "conn")
		defer conn.Close()
		var v int
		tcheck(t, conn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&v), "level")
		return v
	}
	set := func(l string) {
		t.Helper()
		conn, err := s.w.Conn(ctx)
		tcheck(t, err, "conn")
		defer conn.Close()
		_, err = conn.ExecContext(ctx, "PRAGMA synchronous="+l)
		tcheck(t, err, "set level")
	}
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	set("NORMAL")
	_, err := s.Append(ctx, Event{Time: at, Agency: "met-pio", Kind: Alert, Detail: "direct"})
	tcheck(t, err, "append")
	if got := level(); got != 2 {
		t.Errorf("a direct append committed at synchronous=%d, want 2 (FULL)", got)
	}
	stageRaw(t, path, staged(t, Event{Time: at, Agency: "met-pio", Kind: Queued, Package: "cdt-a", Destination: "hmp-northgate"}))
	if n, err := s.Drain(ctx); err != nil || n != 1 {
		t.Fatalf("drain = %d, %v", n, err)
	}
	if got := level(); got != 1 {
		t.Errorf("moving staged events committed at synchronous=%d, want 1 (NORMAL)", got)
	}
}
