package authlimit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/conduit-gateway/conduit/sqlschema"
)

// SQLLocks keeps lockouts in the gateway's SQLite database, in a table of
// their own, so that they outlast a restart and `conduit user unlock`
// (another process) can lift them.
type SQLLocks struct {
	w, r *sql.DB
	own  bool // opened here, closed by Close
}

var lockMigrations = []string{
	`CREATE TABLE auth_lockouts (key TEXT PRIMARY KEY, until_unix INTEGER NOT NULL, reason TEXT NOT NULL, locked_unix INTEGER NOT NULL)`,
}

// OpenSQLLocks opens (and creates, if needed) the lockout table in the
// database at path, on connections of its own (the command line).
func OpenSQLLocks(ctx context.Context, path string) (*SQLLocks, error) {
	w, r, err := sqlschema.Open(path)
	if err != nil {
		return nil, fmt.Errorf("authlimit: open %s: %w", path, err)
	}
	s, err := NewSQLLocks(ctx, &sqlschema.DB{W: w, R: r})
	if err != nil {
		w.Close()
		r.Close()
		return nil, err
	}
	s.own = true
	return s, nil
}

// NewSQLLocks keeps lockouts in a database file whose connections the
// gateway shares with its store and audit trail (one writer per file).
func NewSQLLocks(ctx context.Context, db *sqlschema.DB) (*SQLLocks, error) {
	if err := sqlschema.Migrate(ctx, db.W, "auth_lockouts_schema_version", "the login lockouts", lockMigrations); err != nil {
		return nil, err
	}
	return &SQLLocks{w: db.W, r: db.R}, nil
}

// Close closes the database handles it opened itself.
func (s *SQLLocks) Close() error {
	if s == nil || !s.own {
		return nil
	}
	return errors.Join(s.w.Close(), s.r.Close())
}

// Lock records or extends a lockout.
func (s *SQLLocks) Lock(ctx context.Context, key string, until time.Time, reason string) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO auth_lockouts (key, until_unix, reason, locked_unix) VALUES (?, ?, ?, ?)
		ON CONFLICT(key) DO UPDATE SET until_unix = MAX(until_unix, excluded.until_unix), reason = excluded.reason`,
		key, until.Unix(), reason, time.Now().Unix())
	return err
}

// LockedUntil returns the end of the lockout in force for key, or zero.
func (s *SQLLocks) LockedUntil(ctx context.Context, key string, now time.Time) (time.Time, error) {
	var u int64
	err := s.r.QueryRowContext(ctx, `SELECT until_unix FROM auth_lockouts WHERE key = ? AND until_unix > ?`, key, now.Unix()).Scan(&u)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(u, 0), nil
}

// Unlock removes a lockout; it reports whether one was in force.
func (s *SQLLocks) Unlock(ctx context.Context, key string) (bool, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM auth_lockouts WHERE key = ? AND until_unix > ?`, key, time.Now().Unix())
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	if _, err := s.w.ExecContext(ctx, `DELETE FROM auth_lockouts WHERE key = ?`, key); err != nil {
		return false, err
	}
	return n > 0, nil
}

// Lockout is one lockout in force.
type Lockout struct {
	Key, Reason   string
	Locked, Until time.Time
}

// List returns the lockouts in force.
func (s *SQLLocks) List(ctx context.Context, now time.Time) ([]Lockout, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT key, reason, locked_unix, until_unix FROM auth_lockouts WHERE until_unix > ? ORDER BY key`, now.Unix())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Lockout
	for rows.Next() {
		var l Lockout
		var a, b int64
		if err := rows.Scan(&l.Key, &l.Reason, &a, &b); err != nil {
			return nil, err
		}
		l.Locked, l.Until = time.Unix(a, 0), time.Unix(b, 0)
		out = append(out, l)
	}
	return out, rows.Err()
}
