package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/conduit-gateway/conduit/sqlschema"
)

// Decided is the metadata of one package this gateway decided: what the
// sharing policy routes on (the label, the addressees, the subjects'
// roles, establishments, regions and flags, risk and topic) as the
// manifest's JSON with every subject identity removed, and the decision's
// outcome. It never holds content. An administrator's draft policy is
// tried against these before it is applied (the console's dry run).
type Decided struct {
	ID        int64
	PackageID string
	Decided   time.Time
	// Manifest is the routing manifest as JSON (envelope.Manifest, with
	// Subject.ID empty).
	Manifest []byte
	Outcome  string // policy.Outcome
}

// DecisionLog keeps the last packages this gateway decided.
type DecisionLog interface {
	// RecordDecided keeps one decision's metadata and forgets the oldest
	// beyond keep.
	RecordDecided(ctx context.Context, d Decided, keep int) error
	// RecentDecided returns up to n decisions, newest first.
	RecentDecided(ctx context.Context, n int) ([]Decided, error)
}

var _ DecisionLog = (*SQLite)(nil)

var decidedMigrations = []string{
	// 1: the decision log.
	`
CREATE TABLE decided (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	package_id TEXT    NOT NULL,
	decided    INTEGER NOT NULL,
	manifest   BLOB    NOT NULL,
	outcome    TEXT    NOT NULL
);
`,
}

func (s *SQLite) migrateDecided(ctx context.Context) error {
	return sqlschema.Migrate(ctx, s.w, "decided_schema_version", "the decision log", decidedMigrations)
}

// RecordDecided implements DecisionLog: Tx.RecordDecided in a
// bookkeeping transaction of its own.
func (s *SQLite) RecordDecided(ctx context.Context, d Decided, keep int) error {
	// Not a promise to anyone: a crash may lose the last one.
	return s.Bookkeep(ctx, func(tx Tx) error { return tx.RecordDecided(d, keep) })
}

// RecordDecided implements Tx.
func (t *sqliteTx) RecordDecided(d Decided, keep int) error {
	if keep <= 0 {
		keep = 1
	}
	ctx := t.ctx
	return t.atomic(func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO decided (package_id, decided, manifest, outcome) VALUES (?, ?, ?, ?)`,
			d.PackageID, nanos(d.Decided), d.Manifest, d.Outcome); err != nil {
			return fmt.Errorf("record decision: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM decided WHERE id <= (SELECT max(id) FROM decided) - ?`, keep); err != nil {
			return fmt.Errorf("record decision: %w", err)
		}
		return nil
	})
}

// RecentDecided implements DecisionLog.
func (s *SQLite) RecentDecided(ctx context.Context, n int) ([]Decided, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, package_id, decided, manifest, outcome FROM decided ORDER BY id DESC LIMIT ?`, n)
	if err != nil {
		return nil, fmt.Errorf("recent decisions: %w", err)
	}
	defer rows.Close()
	var out []Decided
	for rows.Next() {
		var d Decided
		var at int64
		if err := rows.Scan(&d.ID, &d.PackageID, &at, &d.Manifest, &d.Outcome); err != nil {
			return nil, fmt.Errorf("recent decisions: %w", err)
		}
		d.Decided = fromNanos(at)
		out = append(out, d)
	}
	return out, rows.Err()
}
