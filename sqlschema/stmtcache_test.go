package sqlschema

import (
	"context"
	"path/filepath"
	"testing"
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
