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
	st, err := f.Stat()
	f.Close()
	if err != nil {
		return nil, nil, err
	}
	if st.Size() == 0 {
		if err := createPaged(path); err != nil {
			return nil, nil, err
		}
	}

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

// PageSize is the page size of a database file Open creates. A commit
// writes every page it changed, whole, to the WAL, and the checkpoint
// writes it again to the database file: a queue item's state change
// dirties its row's page and a page of each index on the state, a few
// dozen bytes each. At SQLite's default of 4096 the two gateways wrote
// 233 KiB to the disk for each 16 KiB package (the envelope itself is
// about 22 KiB); at 2048 they write about a fifth less, for the same CPU.
// At 1024 they wrote less again, but the sender made twice the write
// calls and spent a fifth more CPU. A file that exists keeps the size it
// was made with (changing it means rewriting the file).
const PageSize = 2048

// createPaged gives a new, empty database file its page size. The size is
// fixed when the first page is written, and switching to WAL writes the
// header: both happen here, on a connection of their own, before Open's
// pools (whose first statement is the switch to WAL) touch the file.
func createPaged(path string) error {
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, fmt.Sprintf("PRAGMA page_size=%d", PageSize)); err != nil {
		return fmt.Errorf("page size: %w", err)
	}
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode); err != nil {
		return fmt.Errorf("journal mode: %w", err)
	}
	return nil
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
