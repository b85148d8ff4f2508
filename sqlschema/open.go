package sqlschema

import (
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
// synchronous=FULL and the busy timeout, plus the given pragmas ("name(v)").
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

	path   string
	stopCk chan struct{} // closed to stop the background checkpoints
	ckDone chan struct{}
}

// OpenDB opens a database file as Open does.
func OpenDB(path string, pragmas ...string) (*DB, error) {
	w, r, err := Open(path, pragmas...)
	if err != nil {
		return nil, err
	}
	return &DB{W: w, R: r, path: path}, nil
}

// Close stops the background checkpoints, if any, and closes both pools.
func (d *DB) Close() error {
	if d.stopCk != nil {
		close(d.stopCk)
		<-d.ckDone
		d.stopCk = nil
	}
	return errors.Join(d.R.Close(), d.W.Close())
}

// CheckpointInBackground moves the WAL into the database file from a
// connection of its own, every interval, instead of in the writer's
// commits. By default SQLite checkpoints in the commit that takes the WAL
// past 1000 pages: that commit copies the pages and syncs the database
// file before it returns, and every package waiting on the writer waits
// with it, a stall of tens of milliseconds at the tail of the latency. A
// passive checkpoint beside the writer copies what no reader still needs
// while commits go on; the writer starts the WAL again from its beginning
// once all of it has been copied. For a long-running gateway: Close stops
// it.
func (d *DB) CheckpointInBackground(interval time.Duration, log func(error)) error {
	if d.stopCk != nil {
		return nil
	}
	ck, err := sql.Open(cachedDriver, d.path+"?"+url.Values{"_pragma": {fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds())}}.Encode())
	if err != nil {
		return err
	}
	ck.SetMaxOpenConns(1)
	if _, err := d.W.Exec(`PRAGMA wal_autocheckpoint = 0`); err != nil {
		ck.Close()
		return err
	}
	d.stopCk, d.ckDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(d.ckDone)
		defer ck.Close()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-d.stopCk:
				return
			case <-t.C:
			}
			var busy, logFrames, done int
			if err := ck.QueryRow(`PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logFrames, &done); err != nil && log != nil {
				log(err)
			}
		}
	}()
	return nil
}
