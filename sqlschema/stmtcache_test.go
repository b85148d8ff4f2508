package sqlschema

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// Statements prepared in a transaction are the connection's kept ones,
// lent and given back: the same text prepared again, twice at once, or
// run while its rows are open, still gives the right results.
func TestPreparedStatementsAreLentAndGivenBack(t *testing.T) {
	w, r, err := Open(filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	defer r.Close()
	ctx := context.Background()
	if _, err := w.ExecContext(ctx, `CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)`); err != nil {
		t.Fatal(err)
	}
	const ins = `INSERT INTO t (k, v) VALUES (?, ?)`
	for round := 0; round < 3; round++ {
		tx, err := w.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		a, err := tx.PrepareContext(ctx, ins)
		if err != nil {
			t.Fatal(err)
		}
		// The same text while the first is lent: compiled apart.
		b, err := tx.PrepareContext(ctx, ins)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			if _, err := a.ExecContext(ctx, round*100+i, "a"); err != nil {
				t.Fatal(err)
			}
			if _, err := b.ExecContext(ctx, round*100+50+i, "b"); err != nil {
				t.Fatal(err)
			}
		}
		// A query through a lent statement, its rows read while the same
		// text runs again unprepared.
		q, err := tx.PrepareContext(ctx, `SELECT k FROM t WHERE v = ? ORDER BY k`)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := q.QueryContext(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var other int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM t WHERE v = ?`, "b").Scan(&other); err != nil {
				t.Fatal(err)
			}
			if other != 5*(round+1) {
				t.Fatalf("round %d: %d b rows, want %d", round, other, 5*(round+1))
			}
			n++
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		for _, s := range []interface{ Close() error }{a, b, q} {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if n != 5*(round+1) {
			t.Fatalf("round %d: %d a rows, want %d", round, n, 5*(round+1))
		}
	}
	var total int
	if err := r.QueryRowContext(ctx, `SELECT count(*) FROM t`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total != 30 {
		t.Fatalf("%d rows, want 30", total)
	}
}

// With checkpoints in the background the writer's commits never copy the
// WAL themselves (autocheckpoint off), yet the database file receives
// what was written, and Close stops the checkpointer.
func TestCheckpointInBackground(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	d, err := OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	var failed atomic.Int64
	if err := d.CheckpointInBackground(20*time.Millisecond, func(error) { failed.Add(1) }); err != nil {
		t.Fatal(err)
	}
	var auto int
	if err := d.W.QueryRow(`PRAGMA wal_autocheckpoint`).Scan(&auto); err != nil || auto != 0 {
		t.Fatalf("the writer checkpoints every %d pages (%v), want never", auto, err)
	}
	if _, err := d.W.Exec(`CREATE TABLE t (v BLOB)`); err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 64<<10)
	for i := 0; i < 64; i++ { // 4 MiB, about 1000 pages
		if _, err := d.W.Exec(`INSERT INTO t (v) VALUES (?)`, blob); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() >= 4<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the database file is %d bytes after 4 MiB were written: nothing checkpointed it", st.Size())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if failed.Load() != 0 {
		t.Errorf("%d checkpoints failed", failed.Load())
	}
}
