package sqlschema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// BusyTimeout is how long a writer waits for another writer (another
// gateway process, the CLI, the store and the audit trail sharing a file)
// before the database is reported busy.
const BusyTimeout = 10 * time.Second

// readConns bounds a read pool.
const readConns = 4

// Open opens a SQLite database file (created readable by its owner only)
// as a single pinned writer connection, which takes its write lock at BEGIN
// (immediate), and a query-only read pool. Both run WAL with
// synchronous=FULL, temp_store=MEMORY and the busy timeout, plus the given
// pragmas ("name(v)").
// It does not name the database in errors: the caller does.
func Open(path string, pragmas ...string) (w, r *sql.DB, err error) {
	if path == "" {
		return nil, nil, errors.New("no database path")
	}
	if strings.ContainsAny(path, "?#") || strings.HasPrefix(path, "file:") {
		// The driver would read what follows as connection parameters.
		return nil, nil, errors.New("the path must not contain '?' or '#' or start with file:")
	}
	// Create the file ourselves so that it is 0600: SQLite gives the WAL
	// and shared-memory files the database file's permissions.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, err
	}
	f.Close()

	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	// Statement journals (every write statement after the first in a
	// transaction keeps one, for its own rollback) spill to an unlinked
	// file past 64 KiB: at 16 KiB packages that was 37 writes a package
	// to files nobody reads back. A transaction's statements are bounded
	// by the message size limit, which is held in memory already.
	q.Add("_pragma", "temp_store(MEMORY)")
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	wq := url.Values{}
	for k, v := range q {
		wq[k] = append([]string(nil), v...)
	}
	wq.Set("_txlock", "immediate")
	if w, err = sql.Open(cachedDriver, path+"?"+wq.Encode()); err != nil {
		return nil, nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)

	q.Add("_pragma", "query_only(1)")
	if r, err = sql.Open(cachedDriver, path+"?"+q.Encode()); err != nil {
		w.Close()
		return nil, nil, err
	}
	r.SetMaxOpenConns(readConns)
	r.SetMaxIdleConns(readConns)
	return w, r, nil
}

// DB is one database file's connections: the single writer and the read
// pool. The parts that keep tables in the same file (the store and the
// audit trail) share one DB, so that the file has one writer and their
// transactions queue in the process rather than on SQLite's file lock.
type DB struct {
	W, R *sql.DB
}

// OpenDB opens a database file as Open does.
func OpenDB(path string, pragmas ...string) (*DB, error) {
	w, r, err := Open(path, pragmas...)
	if err != nil {
		return nil, err
	}
	return &DB{W: w, R: r}, nil
}

// Close closes both pools.
func (d *DB) Close() error {
	return errors.Join(d.R.Close(), d.W.Close())
}

// Sync levels for BeginSync: FULL syncs the WAL at every commit (a
// promise made when the call returns); NORMAL leaves that to the next
// checkpoint (durable across a crash of the process, not of the machine).
const (
	SyncFull   = "FULL"
	SyncNormal = "NORMAL"
)

// BeginSync begins a write transaction on the writer w whose commit syncs
// at level. The level is a setting of the connection and outlives the
// transaction, and the writer is shared (the store's batches, the audit
// trail): every transaction sets its own, on the connection it holds,
// rather than trust whatever the last one left. release gives the
// connection back, after Commit or Rollback.
func BeginSync(ctx context.Context, w *sql.DB, level string) (tx *sql.Tx, release func(), err error) {
	conn, err := w.Conn(ctx)
	if err != nil {
		return nil, nil, err
	}
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous="+level); err != nil {
		conn.Close()
		return nil, nil, err
	}
	if tx, err = conn.BeginTx(ctx, nil); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return tx, func() { conn.Close() }, nil
}
