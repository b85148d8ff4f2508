package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/audit"
)

// TestGroupCommitKeepsEachCallersOutcome: concurrent Updates share
// batches; one whose function fails leaves nothing behind, and the others
// in its batch are kept.
func TestGroupCommitKeepsEachCallersOutcome(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	errOdd := errors.New("odd package refused")
	var wg sync.WaitGroup
	errs := make([]error, 64)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Update(ctx, func(tx Tx) error {
				if _, err := tx.Enqueue([]Item{item(fmt.Sprint("grp-", i), "hmp-northgate")}); err != nil {
					return err
				}
				if i%2 == 1 {
					return errOdd // after its write: the write must go
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if want := i%2 == 1; (err != nil) != want || (want && !errors.Is(err, errOdd)) {
			t.Fatalf("update %d: %v", i, err)
		}
	}
	got, err := s.List(ctx, Filter{})
	tcheck(t, err, "list")
	kept := map[string]bool{}
	for _, it := range got {
		kept[it.PackageID] = true
	}
	for i := range errs {
		if kept[fmt.Sprint("grp-", i)] != (i%2 == 0) {
			t.Fatalf("package grp-%d kept=%v", i, kept[fmt.Sprint("grp-", i)])
		}
	}
	if len(kept) != len(errs)/2 {
		t.Fatalf("%d items kept, want %d", len(kept), len(errs)/2)
	}
}

// TestGroupCommitSurvivesACanceledCaller: a caller whose context ends
// before its batch runs gets the context's error and writes nothing; the
// others are unaffected.
func TestGroupCommitSurvivesACanceledCaller(t *testing.T) {
	s, _ := openTest(t)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Update(canceled, func(tx Tx) error {
		_, err := tx.Enqueue([]Item{item("grp-canceled", "hmp-northgate")})
		return err
	}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled update: %v", err)
	}
	if _, err := s.Enqueue(context.Background(), []Item{item("grp-ok", "hmp-northgate")}); err != nil {
		t.Fatal(err)
	}
	got, err := s.List(context.Background(), Filter{})
	tcheck(t, err, "list")
	if len(got) != 1 || got[0].PackageID != "grp-ok" {
		t.Fatalf("items %+v", got)
	}
}

// BenchmarkUpdateParallel measures durable Enqueues (16 KiB envelope, one
// Update each) from several concurrent callers, as SMTP sessions make
// them: with group commit they share fsyncs. Run with -cpu 1,4,16 for the
// number of callers per core.
func BenchmarkUpdateParallel(b *testing.B) {
	s, _ := openTest(b)
	ctx := context.Background()
	env := bytes.Repeat([]byte("0123456789abcdef"), 1024)
	b.SetBytes(int64(len(env)))
	var mu sync.Mutex
	n := 0
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			n++
			id := n
			mu.Unlock()
			it := item(fmt.Sprint("bench-", id), "hmp-northgate")
			it.Envelope = env
			if err := s.Update(ctx, func(tx Tx) error {
				_, err := tx.Enqueue([]Item{it})
				return err
			}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "items/s")
}

// BenchmarkBookkeepMarkRetry measures a transaction that is not synced by
// itself (a retry mark and its audit event): its cost is the CPU around
// SQLite's statements, parsing included, not the disk.
func BenchmarkBookkeepMarkRetry(b *testing.B) {
	s, _ := openTest(b)
	ctx := context.Background()
	ids, err := s.Enqueue(ctx, []Item{item("bench-retry", "hmp-northgate")})
	tcheck(b, err, "enqueue")
	next := time.Now().Add(time.Hour)
	for b.Loop() {
		if err := s.Bookkeep(ctx, func(tx Tx) error {
			if err := tx.MarkRetry(ids[0], next, "421 try later"); err != nil {
				return err
			}
			return tx.Audit(audit.Event{Kind: audit.Retried, Package: "bench-retry", Destination: "hmp-northgate", Detail: "421 try later"})
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// A method that fails leaves nothing of itself and takes nothing else
// with it, whether it ran after another or inside another (atomic's
// savepoints all have one name and must still unwind as a stack).
func TestAtomicUndoesOnlyItself(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	if _, err := s.w.ExecContext(ctx, `CREATE TABLE scratch (v TEXT)`); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	put := func(tx *sql.Tx, v string) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO scratch (v) VALUES (?)`, v)
		return err
	}
	// putThenFail writes v and then fails.
	putThenFail := func(v string) func(*sql.Tx) error {
		return func(tx *sql.Tx) error {
			if err := put(tx, v); err != nil {
				return err
			}
			return boom
		}
	}
	err := s.Update(ctx, func(tx Tx) error {
		st := tx.(*sqliteTx)
		if err := st.atomic(func(tx *sql.Tx) error { return put(tx, "a") }); err != nil {
			return err
		}
		if err := st.atomic(putThenFail("b")); !errors.Is(err, boom) {
			t.Fatalf("failed method: %v", err)
		}
		return st.atomic(func(tx *sql.Tx) error {
			if err := put(tx, "c"); err != nil {
				return err
			}
			if err := st.atomic(putThenFail("d")); !errors.Is(err, boom) {
				t.Fatalf("failed inner method: %v", err)
			}
			if err := st.atomic(func(tx *sql.Tx) error { return put(tx, "e") }); err != nil {
				return err
			}
			return put(tx, "f")
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT group_concat(v, '') FROM (SELECT v FROM scratch ORDER BY v)`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got string
	for rows.Next() {
		if err := rows.Scan(&got); err != nil {
			t.Fatal(err)
		}
	}
	if got != "acef" {
		t.Errorf("kept %q, want acef (b and d undone, the rest kept)", got)
	}
}
