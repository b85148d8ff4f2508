package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/conduit-gateway/conduit/sqlschema"
)

// copyTables are the tables of a gateway's database, in an order that
// keeps references valid (queue before its envelopes), with their
// columns: the store's, the partner keys', the audit outbox and chain.
var copyTables = []struct {
	name string
	cols []string
	seq  string // the column whose sequence is moved past the copied ids
}{
	{"queue", []string{"id", "package_id", "destination", "recipients", "mail_from", "submitter", "priority", "marking", "size",
		"state", "attempts", "next_attempt", "last_error", "remote_id", "reason", "created", "updated"}, "id"},
	{"queue_envelope", []string{"item_id", "data"}, ""},
	{"queue_chunk", []string{"item_id", "seq", "data"}, ""},
	{"delivered", []string{"originator", "package_id", "message_id", "date", "recorded"}, ""},
	{"quarantine", []string{"id", "received", "remote_addr", "helo", "mail_from", "recipients", "check_name", "reason",
		"package_id", "raw", "size", "state", "note", "updated"}, "id"},
	{"receipts", []string{"package_id", "agency", "mailboxes", "delivered", "received", "signer"}, ""},
	{"deadlines", []string{"id", "package_id", "kind", "agency", "started", "due", "done", "alerted", "note"}, "id"},
	{"data_keys", []string{"kind", "item_id", "key"}, ""},
	{"partner_keys", []string{"id", "agency", "fingerprint", "replaces", "cert", "state", "source", "seen", "decided",
		"decided_by", "reason"}, "id"},
	{"audit_outbox", []string{"id", "event"}, "id"},
	{"audit_events", []string{"seq", "time", "agency", "kind", "package", "destination", "rule", "actor", "detail",
		"prev_hash", "hash"}, ""},
	{"audit_meta", []string{"id", "keyed", "key_check", "head_seq", "head_hash", "head_mac"}, ""},
	{"decided", []string{"id", "package_id", "decided", "manifest", "outcome"}, "id"},
	{"pending_receipts", []string{"id", "originator", "package_id", "label", "grp", "mailboxes", "delivered", "released",
		"recorded", "lease"}, "id"},
	{"receipt_batches", []string{"originator", "package_id", "batch"}, ""},
}

// CopyCounts is how many rows each table holds.
type CopyCounts map[string]int64

// ErrNotEmpty: the target database already holds a gateway's data.
var ErrNotEmpty = errors.New("the target database is not empty")

// CopyToPostgres copies everything a gateway's SQLite database holds (the
// queue with its envelopes and data keys, the replay cache, receipts,
// clocks, the quarantine, partner keys, the audit outbox and the hash
// chain as it is) into a PostgreSQL store whose schema is in place (both
// NewPostgres and audit.NewPostgres have run on it) and that holds
// nothing yet. It copies in one transaction: all of it or nothing. Rows
// are copied as stored (times in nanoseconds, copies still encrypted
// under their data keys), so the chain's hashes stay valid. The gateways
// on the SQLite file must be stopped.
func CopyToPostgres(ctx context.Context, src *sqlschema.DB, dst *Postgres) (CopyCounts, error) {
	tx, err := dst.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("copy: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	for _, t := range []string{"queue", "delivered", "quarantine", "partner_keys", "audit_events", "audit_meta"} {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+t).Scan(&n); err != nil {
			return nil, fmt.Errorf("copy: %w", err)
		}
		if n > 0 {
			return nil, fmt.Errorf("copy: %w (%s has %d rows)", ErrNotEmpty, t, n)
		}
	}
	counts := CopyCounts{}
	for _, t := range copyTables {
		n, err := copyTable(ctx, src.R, tx, t.name, t.cols)
		if err != nil {
			return nil, fmt.Errorf("copy %s: %w", t.name, err)
		}
		counts[t.name] = n
		if t.seq != "" {
			if _, err := tx.Exec(ctx, fmt.Sprintf(`SELECT setval(pg_get_serial_sequence('%s', '%s'), coalesce((SELECT max(%s) FROM %s), 0) + 1, false)`,
				t.name, t.seq, t.seq, t.name)); err != nil {
				return nil, fmt.Errorf("copy %s: %w", t.name, err)
			}
		}
	}
	var v int64
	if err := src.R.QueryRowContext(ctx, `SELECT n FROM partner_keys_version`).Scan(&v); err != nil {
		return nil, fmt.Errorf("copy partner_keys_version: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE partner_keys_version SET n = $1`, v); err != nil {
		return nil, fmt.Errorf("copy partner_keys_version: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("copy: %w", err)
	}
	return counts, nil
}

func copyTable(ctx context.Context, r *sql.DB, tx pgx.Tx, table string, cols []string) (int64, error) {
	q := "SELECT "
	for i, c := range cols {
		if i > 0 {
			q += ", "
		}
		q += c
	}
	rows, err := r.QueryContext(ctx, q+" FROM "+table)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var n int64
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if !rows.Next() {
			return nil, rows.Err()
		}
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		if table == "audit_meta" {
			// INTEGER 0/1 in SQLite, BOOLEAN here.
			k, _ := vals[1].(int64)
			vals[1] = k != 0
		}
		n++
		return vals, nil
	})
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{table}, cols, src); err != nil {
		return 0, err
	}
	return n, nil
}

// Counts says how many rows each copied table holds in the PostgreSQL
// store.
func (s *Postgres) Counts(ctx context.Context) (CopyCounts, error) {
	out := CopyCounts{}
	for _, t := range copyTables {
		var n int64
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM `+t.name).Scan(&n); err != nil {
			return nil, err
		}
		out[t.name] = n
	}
	return out, nil
}

// SQLiteCounts says how many rows each copied table holds in a SQLite
// database.
func SQLiteCounts(ctx context.Context, db *sqlschema.DB) (CopyCounts, error) {
	out := CopyCounts{}
	for _, t := range copyTables {
		var n int64
		if err := db.R.QueryRowContext(ctx, `SELECT count(*) FROM `+t.name).Scan(&n); err != nil {
			return nil, err
		}
		out[t.name] = n
	}
	return out, nil
}
