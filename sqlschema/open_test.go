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
