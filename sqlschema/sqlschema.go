// Package sqlschema brings a SQL schema (SQLite or PostgreSQL) forward by
// numbered migrations: the gateway's store and the audit trail, which
// share one database, each keep their own version table and run their own
// list through it.
package sqlschema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Migrate runs, in one transaction, the migrations the database has not
// had yet: migrations[i] takes version i to i+1, and versionTable records
// the version reached. A database newer than the list is refused, so an
// older conduit never writes to a schema it does not know. what names the
// schema in errors ("the store", "the audit trail").
func Migrate(ctx context.Context, db *sql.DB, versionTable, what string, migrations []string) error {
	return MigrateLocked(ctx, db, "", versionTable, what, migrations)
}

// MigrateLocked is Migrate on a database that several processes may
// migrate at once (PostgreSQL shared by several gateways): lock, when not
// empty, is run first in the migration's transaction and must serialise
// them (an advisory lock). The same runner serves SQLite and PostgreSQL;
// each backend brings its own list.
func MigrateLocked(ctx context.Context, db *sql.DB, lock, versionTable, what string, migrations []string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", what, err)
	}
	defer tx.Rollback()
	if lock != "" {
		if _, err := tx.ExecContext(ctx, lock); err != nil {
			return fmt.Errorf("migrate %s: %w", what, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+versionTable+` (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("migrate %s: %w", what, err)
	}
	var v int
	err = tx.QueryRowContext(ctx, `SELECT version FROM `+versionTable).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+versionTable+` (version) VALUES (0)`); err != nil {
			return fmt.Errorf("migrate %s: %w", what, err)
		}
		v = 0
	} else if err != nil {
		return fmt.Errorf("migrate %s: %w", what, err)
	}
	if v > len(migrations) {
		return fmt.Errorf("the schema version %d of %s is newer than this conduit knows (%d): upgrade conduit", v, what, len(migrations))
	}
	for ; v < len(migrations); v++ {
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migrate %s to schema version %d: %w", what, v+1, err)
		}
	}
	// The version inline (an int): the statement is the same in both
	// dialects, which spell placeholders differently.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`UPDATE %s SET version = %d`, versionTable, v)); err != nil {
		return fmt.Errorf("migrate %s: %w", what, err)
	}
	return tx.Commit()
}
