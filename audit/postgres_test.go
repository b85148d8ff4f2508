package audit

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/conduit-gateway/conduit/pgtest"
)

// The PostgreSQL trail's Verify finds what the SQLite trail's finds: an
// edited entry, a deleted one, the newest removed, a chain rewritten
// without the key. The edits are made as someone with the database would,
// with the append-only trigger disabled.
func TestPostgresVerifyFindsTampering(t *testing.T) {
	srv, err := pgtest.New(context.Background(), pgtest.Options{})
	if errors.Is(err, pgtest.ErrNoPostgres) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	key := []byte("0123456789abcdef0123456789abcdef")
	for _, tc := range []struct {
		name   string
		tamper string
		want   Problem
		seq    int64
	}{
		{"edited", `UPDATE audit_events SET detail = 'nothing to see' WHERE seq = 3`, Edited, 3},
		{"deleted", `DELETE FROM audit_events WHERE seq = 2`, Deleted, 2},
		{"newest removed", `DELETE FROM audit_events WHERE seq = 5`, Deleted, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dsn, err := srv.CreateDB(ctx, "a_"+string(tc.want)+"_"+tc.name[:3])
			tcheck(t, err, "db")
			pool, err := pgxpool.New(ctx, dsn)
			tcheck(t, err, "pool")
			defer pool.Close()
			tr, err := NewPostgres(ctx, pool, key)
			tcheck(t, err, "trail")
			for range 5 {
				_, err := tr.Append(ctx, Event{Agency: "met", Kind: Sent, Package: "cdt-x"})
				tcheck(t, err, "append")
			}
			if _, err := pool.Exec(ctx, `UPDATE audit_events SET detail = 'x' WHERE seq = 1`); err == nil {
				t.Fatal("the trigger let an entry be changed")
			}
			v, err := tr.Verify(ctx)
			tcheck(t, err, "verify")
			if !v.OK || v.Entries != 5 {
				t.Fatalf("before: %v", v)
			}
			_, err = pool.Exec(ctx, `ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change; `+tc.tamper)
			tcheck(t, err, "tamper")
			v, err = tr.Verify(ctx)
			tcheck(t, err, "verify")
			if v.OK || v.Problem != tc.want || v.Seq != tc.seq {
				t.Fatalf("after: %+v, want %s at %d", v, tc.want, tc.seq)
			}
			if _, err := NewPostgres(ctx, pool, []byte("another key, 16 bytes or more")); !errors.Is(err, ErrKeyMismatch) {
				t.Fatalf("opened with another key: %v", err)
			}
		})
	}
}
