package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/conduit-gateway/conduit/sqlschema"
)

var _ DecisionLog = (*Postgres)(nil)

var pgDecidedMigrations = []string{`
CREATE TABLE decided (
	id         BIGSERIAL PRIMARY KEY,
	package_id TEXT   NOT NULL,
	decided    BIGINT NOT NULL,
	manifest   BYTEA  NOT NULL,
	outcome    TEXT   NOT NULL
);
`}

func (s *Postgres) migrateDecided(ctx context.Context) error {
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	return sqlschema.MigrateLocked(ctx, db, fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d, 1)`, lockMigrate),
		"decided_schema_version", "the decision log", pgDecidedMigrations)
}

// RecordDecided implements DecisionLog: one log for the agency's
// gateways, the oldest beyond keep forgotten.
func (s *Postgres) RecordDecided(ctx context.Context, d Decided, keep int) error {
	return s.Bookkeep(ctx, func(tx Tx) error { return tx.RecordDecided(d, keep) })
}

// RecordDecided implements Tx.
func (t *pgTx) RecordDecided(d Decided, keep int) error {
	if keep <= 0 {
		keep = 1
	}
	ctx := t.ctx
	return t.atomic(func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO decided (package_id, decided, manifest, outcome) VALUES ($1, $2, $3, $4)`,
			d.PackageID, nanos(d.Decided), d.Manifest, d.Outcome); err != nil {
			return fmt.Errorf("record decision: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM decided WHERE id <= (SELECT max(id) FROM decided) - $1`, keep); err != nil {
			return fmt.Errorf("record decision: %w", err)
		}
		return nil
	})
}

// RecentDecided implements DecisionLog.
func (s *Postgres) RecentDecided(ctx context.Context, n int) ([]Decided, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, package_id, decided, manifest, outcome FROM decided ORDER BY id DESC LIMIT $1`, n)
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
