package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/sqlschema"
)

// SQLite is the embedded Store: one database file in WAL mode with
// synchronous=FULL, so a write is on disk (in the WAL, fsynced) when the
// call returns.
//
// Writes go through one connection whose transactions begin IMMEDIATE: the
// write lock is taken at BEGIN, so a select-then-update (Claim) cannot be
// interleaved with another writer, in this process or in another process
// sharing the file (the busy timeout makes the second one wait). Reads use
// a pool of read-only connections and see the last committed state
// without waiting for writers (WAL).
type SQLite struct {
	Writes
	w *sql.DB // one connection, BEGIN IMMEDIATE
	r *sql.DB // read-only pool
	// now is the clock for Created/Updated stamps; tests may replace it.
	now func() time.Time
	// owned: the store opened the file and closes it.
	owned bool
	// group batches concurrent write transactions (group.go).
	group txGroup
	// claims holds what this process's relay is delivering (claims.go).
	claims *claimBook
}

var _ Store = (*SQLite)(nil)

// StorePragmas are the pragmas the store needs of its database file
// (freed pages zeroed, so that a purged message's bytes do not linger in
// the file; foreign keys enforced). A file shared with the audit trail is
// opened with them.
var StorePragmas = []string{"foreign_keys(1)", "secure_delete(1)"}

// OpenSQLite opens (creating it if needed, readable by its owner only) the
// database at path and brings its schema up to date.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	db, err := sqlschema.OpenDB(path, StorePragmas...)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s, err := NewSQLite(ctx, db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s.owned = true
	return s, nil
}

// NewSQLite is the store in a database file opened by the caller (shared
// with the audit trail: one writer per file), who closes it after the
// store.
func NewSQLite(ctx context.Context, db *sqlschema.DB) (*SQLite, error) {
	w, r := db.W, db.R
	s := &SQLite{w: w, r: r, now: time.Now}
	s.Writes = Writes{s}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	if err := s.migrateKeys(ctx); err != nil {
		return nil, err
	}
	if err := s.migrateDecided(ctx); err != nil {
		return nil, err
	}
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return nil, err
	}
	if !strings.EqualFold(mode, "wal") {
		return nil, fmt.Errorf("journal mode is %q, not WAL", mode)
	}
	path, err := dbPath(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("claim book: %w", err)
	}
	if s.claims, err = openClaimBook(path); err != nil {
		return nil, fmt.Errorf("claim book: %w", err)
	}
	return s, nil
}

// migrations bring the schema forward; migrations[i] takes version i to
// i+1. Never edit one that has shipped: append a new one.
var migrations = []string{
	// 1: the queue, the replay cache and the quarantine.
	`
CREATE TABLE queue (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	package_id   TEXT    NOT NULL CHECK (package_id <> ''),
	destination  TEXT    NOT NULL CHECK (destination <> ''),
	recipients   TEXT    NOT NULL, -- JSON array of addresses
	mail_from    TEXT    NOT NULL,
	submitter    TEXT    NOT NULL,
	priority     INTEGER NOT NULL CHECK (priority IN (0, 1)),
	marking      TEXT    NOT NULL,
	size         INTEGER NOT NULL,
	state        TEXT    NOT NULL CHECK (state IN ('queued', 'held', 'sent', 'failed', 'dropped')),
	attempts     INTEGER NOT NULL DEFAULT 0,
	next_attempt INTEGER NOT NULL, -- unix nanoseconds, UTC
	last_error   TEXT    NOT NULL DEFAULT '',
	remote_id    TEXT    NOT NULL DEFAULT '',
	reason       TEXT    NOT NULL DEFAULT '',
	created      INTEGER NOT NULL,
	updated      INTEGER NOT NULL,
	UNIQUE (package_id, destination)
);
-- The envelope lives apart from the row, so that the frequent updates of
-- a row (claim, retry, sent) rewrite a few dozen bytes, not the envelope.
CREATE TABLE queue_envelope (
	item_id INTEGER PRIMARY KEY REFERENCES queue (id) ON DELETE CASCADE,
	data    BLOB    NOT NULL
);
CREATE INDEX queue_due ON queue (state, priority DESC, next_attempt, id);
CREATE INDEX queue_created ON queue (created DESC, id DESC);

CREATE TABLE delivered (
	originator TEXT    NOT NULL,
	package_id TEXT    NOT NULL,
	message_id TEXT    NOT NULL,
	date       INTEGER, -- unix nanoseconds, UTC; NULL when unknown
	recorded   INTEGER NOT NULL,
	PRIMARY KEY (originator, package_id)
) WITHOUT ROWID;

CREATE TABLE quarantine (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	received    INTEGER NOT NULL,
	remote_addr TEXT    NOT NULL,
	helo        TEXT    NOT NULL,
	mail_from   TEXT    NOT NULL,
	recipients  TEXT    NOT NULL, -- JSON array
	check_name  TEXT    NOT NULL,
	reason      TEXT    NOT NULL,
	package_id  TEXT    NOT NULL,
	raw         BLOB,             -- NULL once purged
	size        INTEGER NOT NULL,
	state       TEXT    NOT NULL CHECK (state IN ('held', 'released', 'purged')),
	note        TEXT    NOT NULL DEFAULT '',
	updated     INTEGER NOT NULL
);
CREATE INDEX quarantine_state ON quarantine (state, received DESC, id DESC);
`,
	// 2: receipts the destination gateways sent back for our packages.
	`
CREATE TABLE receipts (
	package_id  TEXT    NOT NULL,
	agency      TEXT    NOT NULL,
	mailboxes   TEXT    NOT NULL, -- JSON array
	delivered   INTEGER NOT NULL,
	received    INTEGER NOT NULL,
	signer      TEXT    NOT NULL,
	PRIMARY KEY (package_id, agency)
) WITHOUT ROWID;
`,
	// 3: deadlines the policy started (acknowledge, triage).
	`
CREATE TABLE deadlines (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	package_id TEXT    NOT NULL,
	kind       TEXT    NOT NULL,
	agency     TEXT    NOT NULL,
	started    INTEGER NOT NULL,
	due        INTEGER NOT NULL,
	done       INTEGER NOT NULL DEFAULT 0,
	alerted    INTEGER NOT NULL DEFAULT 0,
	note       TEXT    NOT NULL DEFAULT '',
	UNIQUE (package_id, kind, agency)
);
CREATE INDEX deadlines_due ON deadlines (done, alerted, due);
`,
	// 4: a data key per stored copy (crypto-shredding, datakey.go), and
	// the audit outbox: events written in the same transaction as the
	// state change they record, moved into the hash chain by the gateway's
	// audit writer (audit.SQLite.Drain).
	`
CREATE TABLE data_keys (
	kind    TEXT    NOT NULL CHECK (kind IN ('queue', 'quarantine')),
	item_id INTEGER NOT NULL,
	key     BLOB    NOT NULL,
	PRIMARY KEY (kind, item_id)
) WITHOUT ROWID;
` + audit.OutboxSchema,
	// 5: indexes for work by due time: the relay's next wake-up, the
	// overdue alerts, retention and the quarantine's retention each read
	// an index, so an idle gateway scans nothing.
	`
CREATE INDEX queue_next ON queue (next_attempt) WHERE state = 'queued';
CREATE INDEX deadlines_alert ON deadlines (due) WHERE done = 0 AND alerted = 0 AND kind <> 'retention';
CREATE INDEX deadlines_open_kind ON deadlines (kind, due) WHERE done = 0;
CREATE INDEX quarantine_kept ON quarantine (received) WHERE state IN ('held', 'released');
`,
	// 6: receipts recorded at delivery and not sealed yet, and which
	// batch envelope carried each receipt sent with others (receipts.go).
	`
CREATE TABLE pending_receipts (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	originator TEXT    NOT NULL,
	package_id TEXT    NOT NULL,
	label      TEXT    NOT NULL, -- the package's canonical handling label
	grp        TEXT    NOT NULL, -- what receipts sealed together share
	mailboxes  TEXT    NOT NULL, -- JSON array
	delivered  INTEGER NOT NULL,
	released   TEXT    NOT NULL DEFAULT '',
	recorded   INTEGER NOT NULL,
	lease      INTEGER NOT NULL DEFAULT 0, -- taken by a batcher until then
	UNIQUE (originator, package_id)
);
CREATE INDEX pending_receipts_group ON pending_receipts (originator, grp, id);
CREATE TABLE receipt_batches (
	originator TEXT NOT NULL,
	package_id TEXT NOT NULL,
	batch      TEXT NOT NULL, -- the package id of the queue item that carries it
	PRIMARY KEY (originator, package_id)
) WITHOUT ROWID;
CREATE INDEX receipt_batches_batch ON receipt_batches (batch);
CREATE INDEX receipt_batches_package ON receipt_batches (package_id);
`,
	// 7: envelopes stored in chunks (chunk.go), which the relay streams.
	// The envelopes stored before stay whole in queue_envelope and are
	// read whole until they are sent and shredded: nothing is rewritten
	// at the upgrade, however large the queue. A rowid table, not WITHOUT
	// ROWID: its rows are large.
	`
CREATE TABLE queue_chunk (
	item_id INTEGER NOT NULL REFERENCES queue (id) ON DELETE CASCADE,
	seq     INTEGER NOT NULL,
	data    BLOB    NOT NULL,
	PRIMARY KEY (item_id, seq)
);
`,
	// 8: queue_next goes. It answered one question (when the next queued
	// item falls due), which queue_due answers as well with one search per
	// priority, and every intake, claim and sent mark kept it inside the
	// writer's transaction: a page more written by most commits, and the
	// sender's writer is the gateway's bottleneck.
	`DROP INDEX IF EXISTS queue_next;`,
}

func (s *SQLite) migrate(ctx context.Context) error {
	return sqlschema.Migrate(ctx, s.w, "schema_version", "the store", migrations)
}

// SchemaVersion reports the database's schema version.
func (s *SQLite) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.r.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	return v, err
}

// Close closes the database when the store opened it. Everything written
// is already durable.
func (s *SQLite) Close() error {
	err := s.claims.close()
	if !s.owned {
		return err
	}
	return errors.Join(err, s.r.Close(), s.w.Close())
}

// Times are stored as unix nanoseconds (UTC); the zero time.Time as NULL
// or 0, so that it round-trips as the zero value.

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func nullNanos(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}
}

func encodeList(l []string) (string, error) {
	if l == nil {
		l = []string{}
	}
	b, err := json.Marshal(l)
	return string(b), err
}

func decodeList(s string) ([]string, error) {
	var l []string
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return nil, fmt.Errorf("stored recipients: %w", err)
	}
	if len(l) == 0 {
		return nil, nil
	}
	return l, nil
}

// checkItem refuses what would make an undeliverable or unfindable item.
func checkItem(it *Item) error {
	switch {
	case it.PackageID == "":
		return errors.New("the package id is empty")
	case it.Destination == "":
		return errors.New("the destination is empty")
	case len(it.Envelope) == 0:
		return errors.New("the envelope is empty")
	case len(it.Recipients) == 0:
		return errors.New("there are no recipients")
	case it.Priority != Normal && it.Priority != Immediate:
		return fmt.Errorf("priority %d is unknown", it.Priority)
	case it.State != "" && it.State != Queued && it.State != OnHold:
		return fmt.Errorf("a new item cannot be in state %s", it.State)
	}
	return nil
}

// Enqueue stores items in one transaction. A new item is queued, due at
// its NextAttempt (or at once when that is zero). Items are checked inside
// the transaction, so a bad item after good ones leaves nothing behind.
func (t *sqliteTx) Enqueue(items []Item) ([]int64, error) {
	ctx, s := t.ctx, t.s
	ids := make([]int64, len(items))
	now := s.now().UTC()
	err := t.atomic(func(tx *sql.Tx) error {
		find, err := tx.PrepareContext(ctx, `SELECT id FROM queue WHERE package_id = ? AND destination = ?`)
		if err != nil {
			return err
		}
		defer find.Close()
		ins, err := tx.PrepareContext(ctx, `INSERT INTO queue
			(package_id, destination, recipients, mail_from, submitter, priority, marking, size,
			 state, reason, attempts, next_attempt, created, updated)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer ins.Close()
		insChunk, err := tx.PrepareContext(ctx, `INSERT INTO queue_chunk (item_id, seq, data) VALUES (?, ?, ?)`)
		if err != nil {
			return err
		}
		defer insChunk.Close()
		for i := range items {
			it := &items[i]
			if err := checkItem(it); err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
			var id int64
			err := find.QueryRowContext(ctx, it.PackageID, it.Destination).Scan(&id)
			if err == nil {
				ids[i] = id // already queued for this destination
				continue
			} else if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			rcpts, err := encodeList(it.Recipients)
			if err != nil {
				return err
			}
			next := it.NextAttempt
			if next.IsZero() {
				next = now
			}
			state, reason := Queued, ""
			if it.State == OnHold {
				state, reason = OnHold, it.Reason
			}
			res, err := ins.ExecContext(ctx, it.PackageID, it.Destination, rcpts, it.MailFrom, it.Submitter,
				int(it.Priority), it.Marking, len(it.Envelope), string(state), reason, next.UnixNano(), now.UnixNano(), now.UnixNano())
			if err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
			if ids[i], err = res.LastInsertId(); err != nil {
				return err
			}
			key, err := storeDataKey(ctx, tx, keyQueue, ids[i])
			if err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
			if err := writeChunks(key, it.Envelope, func(seq int64, data []byte) error {
				_, err := insChunk.ExecContext(ctx, ids[i], seq, data)
				return err
			}); err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("enqueue: %w", err)
	}
	return ids, nil
}

const itemCols = `q.id, q.package_id, q.destination, q.recipients, q.mail_from, q.submitter, q.priority, q.marking, q.size,
	q.state, q.attempts, q.next_attempt, q.last_error, q.remote_id, q.reason, q.created, q.updated`

// itemByID reads one item's itemCols.
const itemByID = `SELECT ` + itemCols + ` FROM queue q WHERE q.id = ?`

type scanner interface{ Scan(...any) error }

// scanItem reads itemCols.
func scanItem(row scanner) (Item, error) {
	var it Item
	var rcpts string
	var prio int
	var next, created, updated int64
	if err := row.Scan(&it.ID, &it.PackageID, &it.Destination, &rcpts, &it.MailFrom, &it.Submitter, &prio, &it.Marking,
		&it.Size, &it.State, &it.Attempts, &next, &it.LastError, &it.RemoteID, &it.Reason, &created, &updated); err != nil {
		return Item{}, err
	}
	it.Priority = Priority(prio)
	it.NextAttempt, it.Created, it.Updated = fromNanos(next), fromNanos(created), fromNanos(updated)
	var err error
	it.Recipients, err = decodeList(rcpts)
	return it, err
}

// Claim takes up to limit due items that no claim of this process holds,
// immediate ones first, then the oldest, and leases them in the claim book
// (claims.go): a read, not a write. The outcome's transaction counts the
// attempt.
func (s *SQLite) Claim(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]Item, error) {
	if limit <= 0 {
		return nil, nil
	}
	if lease <= 0 {
		return nil, errors.New("claim: the lease must be positive")
	}
	now = now.UTC()
	skip, err := s.claims.begin(now)
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	// One read transaction, so that the items fetched are as the search
	// found them. The search reads queue_due alone (it holds the id), in
	// its order and with no LIMIT, only as far as limit items this process
	// does not hold already: the items it holds (as many as are in
	// flight) come first, since their stored due time has not moved, and
	// reading their rows whole each time cost most of a claim.
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT id FROM queue INDEXED BY queue_due
		WHERE state = 'queued' AND next_attempt <= ?
		ORDER BY priority DESC, next_attempt, id`, now.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	defer rows.Close()
	var ids []int64
	for len(ids) < limit && rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("claim: %w", err)
		}
		if !skip[id] {
			ids = append(ids, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	rows.Close() // read no further: the search stops at limit
	cands := make([]Item, 0, len(ids))
	for _, id := range ids {
		it, err := scanItem(tx.QueryRowContext(ctx, itemByID, id))
		if err != nil {
			return nil, fmt.Errorf("claim: item %d: %w", id, err)
		}
		cands = append(cands, it)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	return s.claims.take(cands, now, now.Add(lease)), nil
}

// transition updates one queue item if its state is one of from; it
// returns ErrNotFound or ErrWrongState otherwise.
func (t *sqliteTx) transition(op string, id int64, from []State, set string, args ...any) error {
	return t.update(op, id, from, nil, false, set, args...)
}

// outcome is transition for the result of a claimed delivery (sent,
// retry, failed, held), followed by then (when given) in the same
// savepoint: it also counts the attempts begun under this process's claim
// of the item and ends the claim once the transaction commits.
func (t *sqliteTx) outcome(op string, id int64, from []State, then func(*sql.Tx) error, set string, args ...any) error {
	return t.update(op, id, from, then, true, set, args...)
}

// update is transition and outcome (claimed).
func (t *sqliteTx) update(op string, id int64, from []State, then func(*sql.Tx) error, claimed bool, set string, args ...any) error {
	ctx, s := t.ctx, t.s
	err := t.atomic(func(tx *sql.Tx) error {
		var st State
		err := tx.QueryRowContext(ctx, `SELECT state FROM queue WHERE id = ?`, id).Scan(&st)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		ok := false
		for _, f := range from {
			ok = ok || st == f
		}
		if !ok {
			return fmt.Errorf("%w (it is %s)", ErrWrongState, st)
		}
		if claimed {
			set += `, attempts = attempts + ?`
			args = append(args, s.claims.settle(id, t.afterCommit))
		}
		args = append(args, s.now().UTC().UnixNano(), id)
		if _, err = tx.ExecContext(ctx, `UPDATE queue SET `+set+`, updated = ? WHERE id = ?`, args...); err != nil || then == nil {
			return err
		}
		return then(tx)
	})
	if err != nil {
		return fmt.Errorf("%s item %d: %w", op, id, err)
	}
	return nil
}

// MarkSent records the destination's acceptance. An item dropped while its
// delivery was under way is marked sent all the same (the reason is kept):
// the record must say what happened.
//
// When the item is a receipt batch, each receipt it listed is recorded
// sent too, as an item of its own without an envelope (ReceiptID): the
// queue answers "was the receipt for this package sent" as it did when
// every receipt travelled alone.
func (t *sqliteTx) MarkSent(id int64, remoteID string) error {
	return t.outcome("mark sent", id, []State{Queued, Dropped}, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(t.ctx, recordBatchSent, t.s.now().UTC().UnixNano(), id)
		return err
	}, `state = 'sent', remote_id = ?, last_error = ''`, remoteID)
}

// recordBatchSent records, for a receipt batch just sent (its item id the
// second parameter, the time the first), each receipt it carried.
const recordBatchSent = `INSERT INTO queue (package_id, destination, recipients, mail_from, submitter, priority, marking, size,
	state, reason, attempts, next_attempt, remote_id, created, updated)
	SELECT 'rcpt-' || b.package_id, q.destination, q.recipients, q.mail_from, '', q.priority, q.marking, 0,
		'sent', '` + receiptBatchSent + `' || q.package_id, 0, 0, q.remote_id, ?1, ?1
	FROM queue q JOIN receipt_batches b ON b.batch = q.package_id AND b.originator = q.destination
	WHERE q.id = ?2
	ON CONFLICT (package_id, destination) DO NOTHING`

// MarkRetry schedules the next attempt of a queued item.
func (t *sqliteTx) MarkRetry(id int64, next time.Time, lastErr string) error {
	return t.outcome("mark retry", id, []State{Queued}, nil,
		`next_attempt = ?, last_error = ?`, next.UTC().UnixNano(), lastErr)
}

// MarkFailed gives up on a queued item.
func (t *sqliteTx) MarkFailed(id int64, reason string) error {
	return t.outcome("mark failed", id, []State{Queued}, nil,
		`state = 'failed', reason = ?`, reason)
}

// MarkDeliveredLate makes a failed item sent, keeping why in its reason.
func (t *sqliteTx) MarkDeliveredLate(id int64, note string) error {
	return t.transition("mark delivered late", id, []State{Failed},
		`state = 'sent', reason = ?, last_error = ''`, note)
}

// RetryNow makes a queued or failed item due at once; a failed one is
// queued again (its attempts count is kept).
func (t *sqliteTx) RetryNow(id int64) error {
	s := t.s
	return t.transition("retry", id, []State{Queued, Failed},
		`state = 'queued', reason = '', next_attempt = ?`, s.now().UTC().UnixNano())
}

// Release queues a held item, due at once, keeping who released it and why.
func (t *sqliteTx) Release(id int64, reason string) error {
	s := t.s
	if strings.TrimSpace(reason) == "" {
		return fmt.Errorf("release item %d: %w", id, ErrNoReason)
	}
	return t.transition("release", id, []State{OnHold},
		`state = 'queued', reason = ?, next_attempt = ?`, "released: "+reason, s.now().UTC().UnixNano())
}

// Drop removes a queued, failed or held item from delivery, keeping the
// reason.
func (t *sqliteTx) Drop(id int64, reason string) error {
	if strings.TrimSpace(reason) == "" {
		return fmt.Errorf("drop item %d: %w", id, ErrNoReason)
	}
	return t.transition("drop", id, []State{Queued, Failed, OnHold}, `state = 'dropped', reason = ?`, reason)
}

// List returns items without their envelopes, newest first.
func (s *SQLite) List(ctx context.Context, f Filter) ([]Item, error) {
	q := `SELECT ` + itemCols + ` FROM queue q WHERE 1 = 1`
	var args []any
	if f.State != "" {
		q += ` AND state = ?`
		args = append(args, string(f.State))
	}
	if f.Destination != "" {
		q += ` AND destination = ?`
		args = append(args, f.Destination)
	}
	if f.PackageID != "" {
		q += ` AND package_id = ?`
		args = append(args, f.PackageID)
	}
	q += ` ORDER BY created DESC, id DESC`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list queue: %w", err)
	}
	defer rows.Close()
	var items []Item
	for rows.Next() {
		it, err := scanItem(rows)
		if err != nil {
			return nil, fmt.Errorf("list queue: %w", err)
		}
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list queue: %w", err)
	}
	return items, nil
}

// Get returns one item with its envelope, read whole (nil when it has
// none): one at a time, for the administrator's tools.
func (s *SQLite) Get(ctx context.Context, id int64) (Item, error) {
	it, err := scanItem(s.r.QueryRowContext(ctx, itemByID, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err == nil {
		it.Envelope, err = getWhole(ctx, sqliteChunks{s}, id, it.Size)
	}
	if err != nil {
		return Item{}, fmt.Errorf("get item %d: %w", id, err)
	}
	return it, nil
}

// OpenEnvelope streams item id's envelope, which the caller expects to be
// size bytes (the item's Size), a chunk at a time (chunk.go). The reader
// reads the store with ctx.
func (s *SQLite) OpenEnvelope(ctx context.Context, id, size int64) (io.ReadCloser, error) {
	return openEnvelope(ctx, sqliteChunks{s}, id, size)
}

// sqliteChunks is the SQLite store's chunkSource: each read is one
// statement on the read pool, over as soon as its row is used.
type sqliteChunks struct{ s *SQLite }

func (c sqliteChunks) envelopeMeta(ctx context.Context, id int64) (int64, []byte, error) {
	var size int64
	var key []byte
	err := c.s.r.QueryRowContext(ctx, `SELECT q.size, k.key FROM queue q
		LEFT JOIN data_keys k ON k.kind = 'queue' AND k.item_id = q.id WHERE q.id = ?`, id).Scan(&size, &key)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	return size, key, err
}

func (c sqliteChunks) readChunk(ctx context.Context, id, seq int64, use func([]byte) error) (bool, error) {
	rows, err := c.s.r.QueryContext(ctx, `SELECT data FROM queue_chunk WHERE item_id = ? AND seq = ?`, id, seq)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	if !rows.Next() {
		return false, rows.Err()
	}
	// RawBytes: the driver's copy of the row, not copied again; used
	// before the statement ends.
	var data sql.RawBytes
	if err := rows.Scan(&data); err != nil {
		return false, err
	}
	if err := use(data); err != nil {
		return false, err
	}
	return true, rows.Close()
}

func (c sqliteChunks) legacyEnvelope(ctx context.Context, id int64) ([]byte, bool, error) {
	var data []byte
	err := c.s.r.QueryRowContext(ctx, `SELECT data FROM queue_envelope WHERE item_id = ?`, id).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	return data, err == nil, err
}

// Depth counts queued items per destination.
func (s *SQLite) Depth(ctx context.Context) (map[string]int, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT destination, count(*) FROM queue WHERE state = 'queued' GROUP BY destination`)
	if err != nil {
		return nil, fmt.Errorf("queue depth: %w", err)
	}
	defer rows.Close()
	m := map[string]int{}
	for rows.Next() {
		var d string
		var n int
		if err := rows.Scan(&d, &n); err != nil {
			return nil, fmt.Errorf("queue depth: %w", err)
		}
		m[d] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("queue depth: %w", err)
	}
	return m, nil
}

// Delivered reports whether the replay cache holds the package.
func (s *SQLite) Delivered(ctx context.Context, originator, packageID string) (bool, error) {
	var one int
	err := s.r.QueryRowContext(ctx, `SELECT 1 FROM delivered WHERE originator = ? AND package_id = ?`, originator, packageID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("replay cache: %w", err)
	}
	return true, nil
}

// RecordDelivered adds a package to the replay cache; the first record
// wins, a second is not an error.
func (t *sqliteTx) RecordDelivered(originator, packageID, messageID string, date time.Time) error {
	ctx, s := t.ctx, t.s
	if originator == "" || packageID == "" {
		return errors.New("record delivered: the originator and the package id are required")
	}
	err := t.atomic(func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO delivered (originator, package_id, message_id, date, recorded)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (originator, package_id) DO NOTHING`,
			originator, packageID, messageID, nullNanos(date.UTC()), s.now().UTC().UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("record delivered: %w", err)
	}
	return nil
}

// PackagesByMessageID returns the delivered packages whose signed
// Message-ID is messageID, oldest first.
func (s *SQLite) PackagesByMessageID(ctx context.Context, messageID string) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT package_id FROM delivered WHERE message_id = ? ORDER BY recorded`, strings.TrimSpace(messageID))
	if err != nil {
		return nil, fmt.Errorf("replay cache: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("replay cache: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// RecordReceipt keeps a destination's signed receipt; a second receipt
// from the same agency for the same package is not an error and changes
// nothing.
func (t *sqliteTx) RecordReceipt(r Receipt) error {
	ctx, s := t.ctx, t.s
	if r.PackageID == "" || r.Agency == "" {
		return errors.New("record receipt: the package id and the agency are required")
	}
	boxes, err := encodeList(r.Mailboxes)
	if err != nil {
		return fmt.Errorf("record receipt: %w", err)
	}
	now := s.now().UTC()
	if r.Received.IsZero() {
		r.Received = now
	}
	err = t.atomic(func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO receipts (package_id, agency, mailboxes, delivered, received, signer)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (package_id, agency) DO NOTHING`,
			r.PackageID, r.Agency, boxes, r.Delivered.UTC().UnixNano(), r.Received.UTC().UnixNano(), r.Signer)
		return err
	})
	if err != nil {
		return fmt.Errorf("record receipt: %w", err)
	}
	return nil
}

// Receipts returns the receipts for a package, by agency.
func (s *SQLite) Receipts(ctx context.Context, packageID string) ([]Receipt, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT package_id, agency, mailboxes, delivered, received, signer
		FROM receipts WHERE package_id = ? ORDER BY agency`, packageID)
	if err != nil {
		return nil, fmt.Errorf("receipts: %w", err)
	}
	defer rows.Close()
	var out []Receipt
	for rows.Next() {
		var r Receipt
		var boxes string
		var delivered, received int64
		if err := rows.Scan(&r.PackageID, &r.Agency, &boxes, &delivered, &received, &r.Signer); err != nil {
			return nil, fmt.Errorf("receipts: %w", err)
		}
		if r.Mailboxes, err = decodeList(boxes); err != nil {
			return nil, fmt.Errorf("receipts: %w", err)
		}
		r.Delivered, r.Received = fromNanos(delivered), fromNanos(received)
		out = append(out, r)
	}
	return out, rows.Err()
}

// ShredEnvelopes destroys the stored envelopes of a package's items that
// are finished (sent, failed or dropped): the rows' bytes are removed
// (secure_delete overwrites them) and the items keep their metadata. It
// returns how many it destroyed; items still queued or held are kept.
func (t *sqliteTx) ShredEnvelopes(packageID string) (int, error) {
	ctx, s := t.ctx, t.s
	const finished = `(SELECT id FROM queue WHERE package_id = ? AND state IN ('sent', 'failed', 'dropped'))`
	var n int64
	err := t.atomic(func(tx *sql.Tx) error {
		del := func(q string) (int64, error) {
			res, err := tx.ExecContext(ctx, q, packageID)
			if err != nil {
				return 0, err
			}
			return res.RowsAffected()
		}
		// The keys first: once they are gone, no copy of the envelopes
		// can be read, wherever its bytes may linger.
		if _, err := del(`DELETE FROM data_keys WHERE kind = 'queue' AND item_id IN ` + finished); err != nil {
			return err
		}
		// An envelope is counted by its chunk 0, or by its row when it
		// was stored whole, before chunks.
		chunked, err := del(`DELETE FROM queue_chunk WHERE seq = 0 AND item_id IN ` + finished)
		if err != nil {
			return err
		}
		if _, err := del(`DELETE FROM queue_chunk WHERE item_id IN ` + finished); err != nil {
			return err
		}
		whole, err := del(`DELETE FROM queue_envelope WHERE item_id IN ` + finished)
		n = chunked + whole
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("shred %s: %w", packageID, err)
	}
	if n > 0 {
		// Push the deleted pages out of the WAL too, once they are
		// deleted for good.
		t.afterCommit(func() {
			if err := s.checkpoint(context.WithoutCancel(ctx)); err != nil {
				slog.Warn("store: after shredding", "package", packageID, "err", err)
			}
		})
	}
	return int(n), nil
}

// AddDeadline starts a clock; the same (package, kind, agency) is started
// once.
func (t *sqliteTx) AddDeadline(d Deadline) error {
	ctx, s := t.ctx, t.s
	if d.PackageID == "" || d.Kind == "" || d.Due.IsZero() {
		return errors.New("add deadline: package, kind and due are required")
	}
	if d.Started.IsZero() {
		d.Started = s.now()
	}
	err := t.atomic(func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO deadlines (package_id, kind, agency, started, due)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (package_id, kind, agency) DO NOTHING`,
			d.PackageID, d.Kind, d.Agency, d.Started.UTC().UnixNano(), d.Due.UTC().UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("add deadline: %w", err)
	}
	return nil
}

// errNothingChanged rolls back a write that changed nothing.
var errNothingChanged = errors.New("nothing changed")

// CompleteDeadlines stops the open clocks of a package of one kind (and
// one agency, unless agency is empty) and reports how many it stopped.
// When it stops none, the audit events staged with it are not written.
func (t *sqliteTx) CompleteDeadlines(packageID, kind, agency string, at time.Time, note string) (int, error) {
	ctx := t.ctx
	var n int64
	err := t.atomic(func(tx *sql.Tx) error {
		q := `UPDATE deadlines SET done = ?, note = ? WHERE package_id = ? AND kind = ? AND done = 0`
		args := []any{at.UTC().UnixNano(), note, packageID, kind}
		if agency != "" {
			q += ` AND agency = ?`
			args = append(args, agency)
		}
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err == nil && n == 0 {
			// Nothing stopped: nothing to keep.
			return errNothingChanged
		}
		return err
	})
	if errors.Is(err, errNothingChanged) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("complete deadline: %w", err)
	}
	return int(n), nil
}

// Deadlines lists clocks: the overdue ones not yet alerted (overdue true,
// due before now), or every open one.
func (s *SQLite) Deadlines(ctx context.Context, now time.Time, overdue bool) ([]Deadline, error) {
	q := `SELECT ` + deadlineCols + ` FROM deadlines WHERE done = 0`
	args := []any{}
	if overdue {
		q += ` AND alerted = 0 AND due <= ?`
		args = append(args, now.UTC().UnixNano())
	}
	return s.queryDeadlines(ctx, q+` ORDER BY due, id`, args...)
}

const deadlineCols = `id, package_id, kind, agency, started, due, done, alerted, note`

func (s *SQLite) queryDeadlines(ctx context.Context, q string, args ...any) ([]Deadline, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("deadlines: %w", err)
	}
	defer rows.Close()
	var out []Deadline
	for rows.Next() {
		var d Deadline
		var started, due, done, alerted int64
		if err := rows.Scan(&d.ID, &d.PackageID, &d.Kind, &d.Agency, &started, &due, &done, &alerted, &d.Note); err != nil {
			return nil, fmt.Errorf("deadlines: %w", err)
		}
		d.Started, d.Due = fromNanos(started), fromNanos(due)
		if done != 0 {
			d.Done = fromNanos(done)
		}
		if alerted != 0 {
			d.Alerted = fromNanos(alerted)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// MarkAlerted records that an overdue clock was alerted, so it is alerted
// once.
func (t *sqliteTx) MarkAlerted(id int64, at time.Time) error {
	ctx := t.ctx
	err := t.atomic(func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE deadlines SET alerted = ? WHERE id = ?`, at.UTC().UnixNano(), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("mark alerted: %w", err)
	}
	return nil
}

// Quarantine keeps a message, held, and returns its id. A zero Received is
// the current time.
func (t *sqliteTx) Quarantine(q QItem) (int64, error) {
	ctx, s := t.ctx, t.s
	now := s.now().UTC()
	if q.Received.IsZero() {
		q.Received = now
	}
	rcpts, err := encodeList(q.Recipients)
	if err != nil {
		return 0, fmt.Errorf("quarantine: %w", err)
	}
	var id int64
	err = t.atomic(func(tx *sql.Tx) error {
		// The row first, for its id; then the message, under a data key of
		// its own (NULL raw means purged, so an empty one is stored as it is).
		res, err := tx.ExecContext(ctx, `INSERT INTO quarantine
			(received, remote_addr, helo, mail_from, recipients, check_name, reason, package_id, raw, size, state, note, updated)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, x'', ?, 'held', '', ?)`,
			q.Received.UTC().UnixNano(), q.RemoteAddr, q.Helo, q.MailFrom, rcpts, q.Check, q.Reason, q.PackageID,
			len(q.Raw), now.UnixNano())
		if err != nil {
			return err
		}
		if id, err = res.LastInsertId(); err != nil {
			return err
		}
		if len(q.Raw) == 0 {
			return nil
		}
		sealed, err := storeAtRest(ctx, tx, keyQuarantine, id, q.Raw)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE quarantine SET raw = ? WHERE id = ?`, sealed, id)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("quarantine: %w", err)
	}
	return id, nil
}

const qCols = `id, received, remote_addr, helo, mail_from, recipients, check_name, reason, package_id, size, state, note, updated`

func scanQItem(row scanner, withRaw bool) (QItem, error) {
	var q QItem
	var received, updated int64
	var rcpts string
	var key []byte
	dest := []any{&q.ID, &received, &q.RemoteAddr, &q.Helo, &q.MailFrom, &rcpts, &q.Check, &q.Reason, &q.PackageID,
		&q.Size, &q.State, &q.Note, &updated}
	if withRaw {
		dest = append(dest, &q.Raw, &key)
	}
	if err := row.Scan(dest...); err != nil {
		return QItem{}, err
	}
	if withRaw && q.State != Purged {
		var err error
		if q.Raw, err = openAtRest(key, keyQuarantine, q.Raw); err != nil {
			return QItem{}, fmt.Errorf("Q%d: %w", q.ID, err)
		}
	}
	q.Received, q.Updated = fromNanos(received), fromNanos(updated)
	var err error
	q.Recipients, err = decodeList(rcpts)
	return q, err
}

// ListQuarantine returns quarantined messages in a state (all when state
// is empty), without Raw, newest first.
func (s *SQLite) ListQuarantine(ctx context.Context, state QState) ([]QItem, error) {
	q := `SELECT ` + qCols + ` FROM quarantine`
	var args []any
	if state != "" {
		q += ` WHERE state = ?`
		args = append(args, string(state))
	}
	q += ` ORDER BY received DESC, id DESC`
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list quarantine: %w", err)
	}
	defer rows.Close()
	var out []QItem
	for rows.Next() {
		it, err := scanQItem(rows, false)
		if err != nil {
			return nil, fmt.Errorf("list quarantine: %w", err)
		}
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list quarantine: %w", err)
	}
	return out, nil
}

// GetQuarantine returns one quarantined message with Raw (nil once purged).
func (s *SQLite) GetQuarantine(ctx context.Context, id int64) (QItem, error) {
	q, err := scanQItem(s.r.QueryRowContext(ctx, `SELECT `+qCols+`, raw, (SELECT key FROM data_keys WHERE kind = 'quarantine' AND item_id = quarantine.id)
		FROM quarantine WHERE id = ?`, id), true)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return QItem{}, fmt.Errorf("get quarantined message %d: %w", id, err)
	}
	if q.State == Purged {
		q.Raw = nil
	} else if q.Raw == nil {
		q.Raw = []byte{}
	}
	return q, nil
}

// SetQuarantineState moves a message held → released, held → purged or
// released → purged; anything else is ErrWrongState. Purging overwrites
// Raw with NULL and keeps the record (size, check, reason, note).
func (t *sqliteTx) SetQuarantineState(id int64, state QState, note string) error {
	ctx, s := t.ctx, t.s
	if strings.TrimSpace(note) == "" {
		return fmt.Errorf("quarantine %d: %w", id, ErrNoReason)
	}
	err := t.atomic(func(tx *sql.Tx) error {
		var cur QState
		err := tx.QueryRowContext(ctx, `SELECT state FROM quarantine WHERE id = ?`, id).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		ok := (cur == Held && (state == Released || state == Purged)) || (cur == Released && state == Purged)
		if !ok {
			return fmt.Errorf("%w (it is %s; %s asked)", ErrWrongState, cur, state)
		}
		now := s.now().UTC().UnixNano()
		if state == Purged {
			// The key first (crypto-shredding), then the bytes.
			if _, err = tx.ExecContext(ctx, `DELETE FROM data_keys WHERE kind = 'quarantine' AND item_id = ?`, id); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `UPDATE quarantine SET state = 'purged', raw = NULL, note = ?, updated = ? WHERE id = ?`, note, now, id)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE quarantine SET state = ?, note = ?, updated = ? WHERE id = ?`, string(state), note, now, id)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("quarantine %d: %w", id, err)
	}
	if state == Purged {
		// The WAL still holds the pages written when the message was
		// kept; copy the WAL into the database (where secure_delete has
		// zeroed the freed pages) and truncate it. Best effort: a reader
		// in another process can hold the WAL, and the next checkpoint
		// will complete the job.
		t.afterCommit(func() {
			if err := s.checkpoint(context.WithoutCancel(ctx)); err != nil {
				slog.Warn("store: after purge", "quarantine", id, "err", err)
			}
		})
	}
	return nil
}
