package sqlschema

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
)

// The settings every promise rests on, read back from SQLite itself on
// both handles: WAL, a full sync at commit, statement journals kept in
// memory, the read pool unable to write, and the file its owner's alone.
func TestOpenSetsTheDatabaseUp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	w, r, err := Open(path, "foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	defer r.Close()
	ctx := context.Background()
	tests := []struct {
		pragma string
		w, r   string
	}{
		{"journal_mode", "wal", "wal"},
		{"synchronous", "2", "2"}, // FULL
		{"temp_store", "2", "2"},  // MEMORY
		{"query_only", "0", "1"},
		{"foreign_keys", "1", "1"}, // a caller's pragma, on both
	}
	for _, tt := range tests {
		for _, h := range []struct {
			name string
			db   *sql.DB
			want string
		}{{"writer", w, tt.w}, {"reader", r, tt.r}} {
			var got string
			if err := h.db.QueryRowContext(ctx, "PRAGMA "+tt.pragma).Scan(&got); err != nil {
				t.Fatalf("%s: PRAGMA %s: %v", h.name, tt.pragma, err)
			}
			if got != h.want {
				t.Errorf("%s: PRAGMA %s = %s, want %s", h.name, tt.pragma, got, h.want)
			}
		}
	}
	if _, err := r.ExecContext(ctx, `CREATE TABLE t (k INTEGER)`); err == nil {
		t.Error("the read pool created a table")
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("database file mode %o, want 600", perm)
	}
}

// A new file gets PageSize (the size is fixed by its first page, so it is
// set before WAL mode writes the header); a file made with another size
// keeps it, and its rows, when opened again.
func TestOpenPageSize(t *testing.T) {
	ctx := context.Background()
	pageSize := func(t *testing.T, db *sql.DB) int {
		t.Helper()
		var n int
		if err := db.QueryRowContext(ctx, "PRAGMA page_size").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	t.Run("new", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "new.db")
		w, r, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		defer r.Close()
		if _, err := w.ExecContext(ctx, `CREATE TABLE t (k INTEGER)`); err != nil {
			t.Fatal(err)
		}
		if got := pageSize(t, w); got != PageSize {
			t.Errorf("page_size %d, want %d", got, PageSize)
		}
		if got := pageSize(t, r); got != PageSize {
			t.Errorf("reader: page_size %d, want %d", got, PageSize)
		}
	})
	t.Run("existing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "old.db")
		old, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{"PRAGMA page_size=4096", "PRAGMA journal_mode=WAL", "CREATE TABLE t (k INTEGER)", "INSERT INTO t VALUES (7)"} {
			if _, err := old.ExecContext(ctx, q); err != nil {
				t.Fatal(q, err)
			}
		}
		old.Close()
		w, r, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		defer r.Close()
		if got := pageSize(t, w); got != 4096 {
			t.Errorf("page_size %d, want the file's own 4096", got)
		}
		var k int
		if err := r.QueryRowContext(ctx, "SELECT k FROM t").Scan(&k); err != nil || k != 7 {
			t.Errorf("row after reopening: %d, %v", k, err)
		}
	})
}
