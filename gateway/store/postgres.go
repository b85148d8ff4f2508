package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/sqlschema"
)

// Postgres is the Store in a PostgreSQL database that any number of an
// agency's gateway processes share (docs/design.md, "Several gateways").
// It keeps the SQLite store's semantics, table for table (times are unix
// nanoseconds in BIGINT columns, copies are encrypted under data keys),
// so that `conduit store migrate` copies rows as they are.
//
// What changes with several processes:
//   - Claim takes items with FOR UPDATE SKIP LOCKED and leases them by
//     moving their next attempt (the lease) in the same transaction: two
//     gateways never take one item, and an item whose gateway died is
//     taken again when its lease runs out (River's and Oban's discipline;
//     Postfix's "deferred until" time is the same idea).
//   - Every state transition locks its row (SELECT ... FOR UPDATE).
//   - Changes is LISTEN/NOTIFY: a transaction that makes work another
//     gateway should see (new items, a release, a key decision) sends a
//     notification on commit.
//   - LockDelivery and Lead are advisory locks: one delivery of a package
//     at a time, one housekeeper at a time.
//
// Update commits with synchronous_commit on (the commit is flushed, and
// on a replicated cluster the standby's confirmation is awaited as the
// server is configured); Bookkeep with it off: a crash of the gateway
// cannot lose it, a crash of the database server may roll back its last
// moments, which a redelivery repairs (the same contract as the SQLite
// store's synchronous=NORMAL).
type Postgres struct {
	Writes
	pool *pgxpool.Pool
	now  func() time.Time
	// owned: the store opened the pool and closes it.
	owned bool
}

var _ Store = (*Postgres)(nil)

// notifyChannel is the LISTEN/NOTIFY channel of store changes.
const notifyChannel = "conduit_changes"

// Advisory lock namespaces (the first key of the two-key form).
const (
	lockMigrate  = 0x436f6e64 // "Cond"
	lockDelivery = 0x44656c76 // "Delv"
	lockLead     = 0x4c656164 // "Lead"
	LockAudit    = 0x41756474 // "Audt": the audit writer's, in package audit
)

// OpenPostgres connects to the database named by dsn (a postgres:// URL or
// key=value string; the password may come from PGPASSWORD or a .pgpass
// file, as libpq reads them) and brings its schema up to date.
func OpenPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	pool, err := NewPool(ctx, dsn)
	if err != nil {
		return nil, err
	}
	s, err := NewPostgres(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.owned = true
	return s, nil
}

// NewPool opens a connection pool on dsn. It does not connect yet: a
// gateway starts while the database is down and serves 451 until it
// returns. Each connection names itself "conduit" to the server.
func NewPool(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", redact(err))
	}
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "conduit"
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		// pgxpool's default is the number of CPUs (at least 4); a gateway
		// holds up to three for good (LISTEN twice, the housekeeping
		// lease) besides its sessions' and workers' transactions.
		cfg.MaxConns = 16
	}
	cfg.HealthCheckPeriod = 5 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", redact(err))
	}
	return pool, nil
}

// redact keeps a password out of a DSN parse error.
func redact(err error) error {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return errors.New("the connection string is not valid")
	}
	return err
}

// NewPostgres is the store in a pool opened by the caller (shared with the
// audit trail), who closes it after the store.
func NewPostgres(ctx context.Context, pool *pgxpool.Pool) (*Postgres, error) {
	s := &Postgres{pool: pool, now: time.Now}
	s.Writes = Writes{s}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	lock := fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d, 1)`, lockMigrate)
	if err := sqlschema.MigrateLocked(ctx, db, lock, "schema_version", "the store", pgMigrations); err != nil {
		return nil, err
	}
	if err := sqlschema.MigrateLocked(ctx, db, lock, "partner_keys_schema_version", "the partner keys", pgKeyMigrations); err != nil {
		return nil, err
	}
	if err := s.migrateDecided(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Pool is the store's connection pool (for the audit trail and metrics).
func (s *Postgres) Pool() *pgxpool.Pool { return s.pool }

// pgMigrations are the PostgreSQL schema, version for version the SQLite
// store's (migrations): the same tables, columns and meanings.
var pgMigrations = []string{
	`
CREATE TABLE queue (
	id           BIGSERIAL PRIMARY KEY,
	package_id   TEXT    NOT NULL CHECK (package_id <> ''),
	destination  TEXT    NOT NULL CHECK (destination <> ''),
	recipients   TEXT    NOT NULL,
	mail_from    TEXT    NOT NULL,
	submitter    TEXT    NOT NULL,
	priority     INTEGER NOT NULL CHECK (priority IN (0, 1)),
	marking      TEXT    NOT NULL,
	size         BIGINT  NOT NULL,
	state        TEXT    NOT NULL CHECK (state IN ('queued', 'held', 'sent', 'failed', 'dropped')),
	attempts     INTEGER NOT NULL DEFAULT 0,
	next_attempt BIGINT  NOT NULL,
	last_error   TEXT    NOT NULL DEFAULT '',
	remote_id    TEXT    NOT NULL DEFAULT '',
	reason       TEXT    NOT NULL DEFAULT '',
	created      BIGINT  NOT NULL,
	updated      BIGINT  NOT NULL,
	UNIQUE (package_id, destination)
);
CREATE TABLE queue_envelope (
	item_id BIGINT PRIMARY KEY REFERENCES queue (id) ON DELETE CASCADE,
	data    BYTEA  NOT NULL
);
CREATE INDEX queue_due ON queue (state, priority DESC, next_attempt, id);
CREATE INDEX queue_created ON queue (created DESC, id DESC);

CREATE TABLE delivered (
	originator TEXT   NOT NULL,
	package_id TEXT   NOT NULL,
	message_id TEXT   NOT NULL,
	date       BIGINT,
	recorded   BIGINT NOT NULL,
	PRIMARY KEY (originator, package_id)
);
CREATE INDEX delivered_message ON delivered (message_id);

CREATE TABLE quarantine (
	id          BIGSERIAL PRIMARY KEY,
	received    BIGINT NOT NULL,
	remote_addr TEXT   NOT NULL,
	helo        TEXT   NOT NULL,
	mail_from   TEXT   NOT NULL,
	recipients  TEXT   NOT NULL,
	check_name  TEXT   NOT NULL,
	reason      TEXT   NOT NULL,
	package_id  TEXT   NOT NULL,
	raw         BYTEA,
	size        BIGINT NOT NULL,
	state       TEXT   NOT NULL CHECK (state IN ('held', 'released', 'purged')),
	note        TEXT   NOT NULL DEFAULT '',
	updated     BIGINT NOT NULL
);
CREATE INDEX quarantine_state ON quarantine (state, received DESC, id DESC);
`,
	`
CREATE TABLE receipts (
	package_id  TEXT   NOT NULL,
	agency      TEXT   NOT NULL,
	mailboxes   TEXT   NOT NULL,
	delivered   BIGINT NOT NULL,
	received    BIGINT NOT NULL,
	signer      TEXT   NOT NULL,
	PRIMARY KEY (package_id, agency)
);
`,
	`
CREATE TABLE deadlines (
	id         BIGSERIAL PRIMARY KEY,
	package_id TEXT   NOT NULL,
	kind       TEXT   NOT NULL,
	agency     TEXT   NOT NULL,
	started    BIGINT NOT NULL,
	due        BIGINT NOT NULL,
	done       BIGINT NOT NULL DEFAULT 0,
	alerted    BIGINT NOT NULL DEFAULT 0,
	note       TEXT   NOT NULL DEFAULT '',
	UNIQUE (package_id, kind, agency)
);
CREATE INDEX deadlines_due ON deadlines (done, alerted, due);
`,
	`
CREATE TABLE data_keys (
	kind    TEXT   NOT NULL CHECK (kind IN ('queue', 'quarantine')),
	item_id BIGINT NOT NULL,
	key     BYTEA  NOT NULL,
	PRIMARY KEY (kind, item_id)
);
` + audit.PostgresOutboxSchema,
	`
CREATE INDEX queue_next ON queue (next_attempt) WHERE state = 'queued';
CREATE INDEX deadlines_alert ON deadlines (due) WHERE done = 0 AND alerted = 0 AND kind <> 'retention';
CREATE INDEX deadlines_open_kind ON deadlines (kind, due) WHERE done = 0;
CREATE INDEX quarantine_kept ON quarantine (received) WHERE state IN ('held', 'released');
`,
	`
CREATE TABLE pending_receipts (
	id         BIGSERIAL PRIMARY KEY,
	originator TEXT   NOT NULL,
	package_id TEXT   NOT NULL,
	label      TEXT   NOT NULL,
	grp        TEXT   NOT NULL,
	mailboxes  TEXT   NOT NULL,
	delivered  BIGINT NOT NULL,
	released   TEXT   NOT NULL DEFAULT '',
	recorded   BIGINT NOT NULL,
	lease      BIGINT NOT NULL DEFAULT 0,
	UNIQUE (originator, package_id)
);
CREATE INDEX pending_receipts_group ON pending_receipts (originator, grp, id);
CREATE TABLE receipt_batches (
	originator TEXT NOT NULL,
	package_id TEXT NOT NULL,
	batch      TEXT NOT NULL,
	PRIMARY KEY (originator, package_id)
);
CREATE INDEX receipt_batches_batch ON receipt_batches (batch);
CREATE INDEX receipt_batches_package ON receipt_batches (package_id);
`,
	// EXTERNAL storage: chunks are ciphertext, which TOAST's compression
	// would only try and fail to shrink.
	`
CREATE TABLE queue_chunk (
	item_id BIGINT  NOT NULL REFERENCES queue (id) ON DELETE CASCADE,
	seq     INTEGER NOT NULL,
	data    BYTEA   NOT NULL,
	PRIMARY KEY (item_id, seq)
);
ALTER TABLE queue_chunk ALTER COLUMN data SET STORAGE EXTERNAL;
`,
	// 8: queue_next goes, as in the SQLite store: queue_due answers the
	// next due time with one search per priority, and the index cost
	// every intake, claim and sent mark its upkeep.
	`DROP INDEX IF EXISTS queue_next;`,
}

var pgKeyMigrations = []string{`
CREATE TABLE partner_keys (
	id          BIGSERIAL PRIMARY KEY,
	agency      TEXT   NOT NULL,
	fingerprint TEXT   NOT NULL,
	replaces    TEXT   NOT NULL,
	cert        BYTEA  NOT NULL,
	state       TEXT   NOT NULL CHECK (state IN ('pending', 'approved', 'rejected')),
	source      TEXT   NOT NULL,
	seen        BIGINT NOT NULL,
	decided     BIGINT NOT NULL DEFAULT 0,
	decided_by  TEXT   NOT NULL DEFAULT '',
	reason      TEXT   NOT NULL DEFAULT '',
	UNIQUE (agency, fingerprint)
);
CREATE TABLE partner_keys_version (n BIGINT NOT NULL);
INSERT INTO partner_keys_version (n) VALUES (0);
`}

// SchemaVersion reports the database's schema version.
func (s *Postgres) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.pool.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v)
	return v, err
}

// Close closes the pool when the store opened it.
func (s *Postgres) Close() error {
	if s.owned {
		s.pool.Close()
	}
	return nil
}

// pgTx is the PostgreSQL store's Tx.
type pgTx struct {
	ctx    context.Context
	s      *Postgres
	tx     pgx.Tx
	notify bool // send a change notification on commit
}

// Update implements Store: one transaction, flushed at commit.
func (s *Postgres) Update(ctx context.Context, f func(Tx) error) error {
	return s.runTx(ctx, true, f)
}

// Bookkeep implements Store: one transaction whose commit is not waited
// for on disk (synchronous_commit off).
func (s *Postgres) Bookkeep(ctx context.Context, f func(Tx) error) error {
	return s.runTx(ctx, false, f)
}

func (s *Postgres) runTx(ctx context.Context, durable bool, f func(Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if !durable {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return fmt.Errorf("store: %w", err)
		}
	}
	t := &pgTx{ctx: ctx, s: s, tx: tx}
	if err := f(t); err != nil {
		return err
	}
	if t.notify {
		// Delivered by the server at commit, once, however many were sent.
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, notifyChannel); err != nil {
			return fmt.Errorf("store: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// atomic runs one method's writes under a savepoint.
func (t *pgTx) atomic(f func(pgx.Tx) error) error {
	sp, err := t.tx.Begin(t.ctx)
	if err != nil {
		return err
	}
	if err := f(sp); err != nil {
		sp.Rollback(context.WithoutCancel(t.ctx))
		return err
	}
	return sp.Commit(t.ctx)
}

// Audit implements Tx.
func (t *pgTx) Audit(es ...audit.Event) error {
	if len(es) == 0 {
		return nil
	}
	return t.atomic(func(tx pgx.Tx) error {
		for _, e := range es {
			b, err := json.Marshal(e)
			if err != nil {
				return fmt.Errorf("audit outbox: %w", err)
			}
			if _, err := tx.Exec(t.ctx, `INSERT INTO audit_outbox (event) VALUES ($1)`, string(b)); err != nil {
				return fmt.Errorf("audit outbox: %w", err)
			}
		}
		return nil
	})
}

func noRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

// pgStoreAtRest is storeAtRest in a PostgreSQL transaction.
func pgStoreAtRest(ctx context.Context, tx pgx.Tx, kind string, id int64, plain []byte) ([]byte, error) {
	key, err := pgStoreDataKey(ctx, tx, kind, id)
	if err != nil {
		return nil, err
	}
	return sealAtRest(key, kind, plain)
}

// pgStoreDataKey is storeDataKey in a PostgreSQL transaction.
func pgStoreDataKey(ctx context.Context, tx pgx.Tx, kind string, id int64) ([]byte, error) {
	key, err := newDataKey()
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO data_keys (kind, item_id, key) VALUES ($1, $2, $3)`, kind, id, key); err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	return key, nil
}

// pgWriteChunks stores envelope as item id's chunks.
func pgWriteChunks(ctx context.Context, tx pgx.Tx, key []byte, id int64, envelope []byte) error {
	return writeChunks(key, envelope, func(seq int64, data []byte) error {
		_, err := tx.Exec(ctx, `INSERT INTO queue_chunk (item_id, seq, data) VALUES ($1, $2, $3)`, id, seq, data)
		return err
	})
}

// Enqueue implements Tx.
func (t *pgTx) Enqueue(items []Item) ([]int64, error) {
	ctx, s := t.ctx, t.s
	ids := make([]int64, len(items))
	now := s.now().UTC()
	err := t.atomic(func(tx pgx.Tx) error {
		for i := range items {
			it := &items[i]
			if err := checkItem(it); err != nil {
				return fmt.Errorf("item %d: %w", i, err)
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
			// ON CONFLICT DO NOTHING: the same package for the same
			// destination from two gateways at once is stored once.
			err = tx.QueryRow(ctx, `INSERT INTO queue
				(package_id, destination, recipients, mail_from, submitter, priority, marking, size,
				 state, reason, attempts, next_attempt, created, updated)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12, $12)
				ON CONFLICT (package_id, destination) DO NOTHING RETURNING id`,
				it.PackageID, it.Destination, rcpts, it.MailFrom, it.Submitter, int(it.Priority), it.Marking,
				int64(len(it.Envelope)), string(state), reason, next.UnixNano(), now.UnixNano()).Scan(&ids[i])
			if noRows(err) {
				if err := tx.QueryRow(ctx, `SELECT id FROM queue WHERE package_id = $1 AND destination = $2`,
					it.PackageID, it.Destination).Scan(&ids[i]); err != nil {
					return fmt.Errorf("item %d: %w", i, err)
				}
				continue
			}
			if err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
			key, err := pgStoreDataKey(ctx, tx, keyQueue, ids[i])
			if err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
			if err := pgWriteChunks(ctx, tx, key, ids[i], it.Envelope); err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
			t.notify = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("enqueue: %w", err)
	}
	return ids, nil
}

// Claim implements Store: the due items are locked with FOR UPDATE SKIP
// LOCKED (another gateway claiming at the same moment takes the next ones,
// without waiting) and leased in the same transaction.
func (s *Postgres) Claim(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]Item, error) {
	if limit <= 0 {
		return nil, nil
	}
	if lease <= 0 {
		return nil, errors.New("claim: the lease must be positive")
	}
	now = now.UTC()
	until := now.Add(lease)
	stamp := s.now().UTC()
	var items []Item
	err := s.Bookkeep(ctx, func(t Tx) error {
		tx := t.(*pgTx).tx
		rows, err := tx.Query(ctx, `SELECT `+itemCols+` FROM queue q
			WHERE q.state = 'queued' AND q.next_attempt <= $1
			ORDER BY q.priority DESC, q.next_attempt, q.id LIMIT $2 FOR UPDATE OF q SKIP LOCKED`, now.UnixNano(), limit)
		if err != nil {
			return err
		}
		for rows.Next() {
			it, err := scanItem(rows)
			if err != nil {
				rows.Close()
				return err
			}
			items = append(items, it)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(items) == 0 {
			return nil
		}
		ids := make([]int64, len(items))
		for i := range items {
			ids[i] = items[i].ID
		}
		if _, err := tx.Exec(ctx, `UPDATE queue SET next_attempt = $1, attempts = attempts + 1, updated = $2 WHERE id = ANY($3)`,
			until.UnixNano(), stamp.UnixNano(), ids); err != nil {
			return err
		}
		for i := range items {
			items[i].NextAttempt = until
			items[i].Attempts++
			items[i].Updated = stamp
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	return items, nil
}

// transition updates one queue item, locked, if its state is one of from.
// set's placeholders start at $1; the stamp and the id follow them.
func (t *pgTx) transition(op string, id int64, from []State, set string, args ...any) error {
	return t.transitionThen(op, id, from, nil, set, args...)
}

// transitionThen is transition, followed by then in the same savepoint.
func (t *pgTx) transitionThen(op string, id int64, from []State, then func(pgx.Tx) error, set string, args ...any) error {
	ctx, s := t.ctx, t.s
	err := t.atomic(func(tx pgx.Tx) error {
		var st State
		err := tx.QueryRow(ctx, `SELECT state FROM queue WHERE id = $1 FOR UPDATE`, id).Scan(&st)
		if noRows(err) {
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
		n := len(args)
		args = append(args, s.now().UTC().UnixNano(), id)
		if _, err = tx.Exec(ctx, fmt.Sprintf(`UPDATE queue SET %s, updated = $%d WHERE id = $%d`, set, n+1, n+2), args...); err != nil || then == nil {
			return err
		}
		return then(tx)
	})
	if err != nil {
		return fmt.Errorf("%s item %d: %w", op, id, err)
	}
	return nil
}

// MarkSent implements Tx (see SQLite's).
func (t *pgTx) MarkSent(id int64, remoteID string) error {
	return t.transitionThen("mark sent", id, []State{Queued, Dropped}, func(tx pgx.Tx) error {
		_, err := tx.Exec(t.ctx, strings.NewReplacer("?1", "$1", "?2", "$2").Replace(recordBatchSent), t.s.now().UTC().UnixNano(), id)
		return err
	}, `state = 'sent', remote_id = $1, last_error = ''`, remoteID)
}

// MarkRetry implements Tx.
func (t *pgTx) MarkRetry(id int64, next time.Time, lastErr string) error {
	return t.transition("mark retry", id, []State{Queued}, `next_attempt = $1, last_error = $2`, next.UTC().UnixNano(), lastErr)
}

// MarkFailed implements Tx.
func (t *pgTx) MarkFailed(id int64, reason string) error {
	return t.transition("mark failed", id, []State{Queued}, `state = 'failed', reason = $1`, reason)
}

// MarkDeliveredLate implements Tx.
func (t *pgTx) MarkDeliveredLate(id int64, note string) error {
	return t.transition("mark delivered late", id, []State{Failed}, `state = 'sent', reason = $1, last_error = ''`, note)
}

// RetryNow implements Tx.
func (t *pgTx) RetryNow(id int64) error {
	t.notify = true
	return t.transition("retry", id, []State{Queued, Failed}, `state = 'queued', reason = '', next_attempt = $1`, t.s.now().UTC().UnixNano())
}

// Release implements Tx.
func (t *pgTx) Release(id int64, reason string) error {
	if strings.TrimSpace(reason) == "" {
		return fmt.Errorf("release item %d: %w", id, ErrNoReason)
	}
	t.notify = true
	return t.transition("release", id, []State{OnHold}, `state = 'queued', reason = $1, next_attempt = $2`, "released: "+reason, t.s.now().UTC().UnixNano())
}

// Drop implements Tx.
func (t *pgTx) Drop(id int64, reason string) error {
	if strings.TrimSpace(reason) == "" {
		return fmt.Errorf("drop item %d: %w", id, ErrNoReason)
	}
	return t.transition("drop", id, []State{Queued, Failed, OnHold}, `state = 'dropped', reason = $1`, reason)
}

// HoldItem implements Tx.
func (t *pgTx) HoldItem(id int64, reason string) error {
	if strings.TrimSpace(reason) == "" {
		return fmt.Errorf("hold item %d: %w", id, ErrNoReason)
	}
	return t.transition("hold", id, []State{Queued}, `state = 'held', reason = $1`, reason)
}

// ResealItem implements Tx.
func (t *pgTx) ResealItem(id int64, envelope []byte, note string) error {
	ctx, s := t.ctx, t.s
	err := t.atomic(func(tx pgx.Tx) error {
		var st State
		err := tx.QueryRow(ctx, `SELECT state FROM queue WHERE id = $1 FOR UPDATE`, id).Scan(&st)
		if noRows(err) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		if st != Queued && st != OnHold {
			return fmt.Errorf("%w (it is %s)", ErrWrongState, st)
		}
		// The envelope it replaces goes, chunked or stored whole (before
		// chunks); the new one is chunked, under the item's own data key.
		var had int64
		for _, q := range []string{`DELETE FROM queue_chunk WHERE item_id = $1`, `DELETE FROM queue_envelope WHERE item_id = $1`} {
			tag, err := tx.Exec(ctx, q, id)
			if err != nil {
				return err
			}
			had += tag.RowsAffected()
		}
		if had == 0 {
			return fmt.Errorf("item %d has no envelope (purged?)", id)
		}
		var key []byte
		err = tx.QueryRow(ctx, `SELECT key FROM data_keys WHERE kind = $1 AND item_id = $2`, keyQueue, id).Scan(&key)
		if noRows(err) {
			key, err = pgStoreDataKey(ctx, tx, keyQueue, id)
		}
		if err != nil {
			return err
		}
		if err := pgWriteChunks(ctx, tx, key, id, envelope); err != nil {
			return err
		}
		now := s.now().UTC().UnixNano()
		_, err = tx.Exec(ctx, `UPDATE queue SET state = 'queued', size = $1, reason = $2, next_attempt = $3, updated = $3 WHERE id = $4`,
			int64(len(envelope)), note, now, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("reseal item %d: %w", id, err)
	}
	t.notify = true
	return nil
}

// ShredEnvelopes implements Tx: the keys first, then the envelopes.
// PostgreSQL overwrites nothing in place; a destroyed key's bytes remain
// in dead tuples until VACUUM reclaims them, and in the WAL and its
// archive until those are recycled (README, "Retention on PostgreSQL").
func (t *pgTx) ShredEnvelopes(packageID string) (int, error) {
	ctx := t.ctx
	const finished = `(SELECT id FROM queue WHERE package_id = $1 AND state IN ('sent', 'failed', 'dropped'))`
	var n int64
	err := t.atomic(func(tx pgx.Tx) error {
		del := func(q string) (int64, error) {
			tag, err := tx.Exec(ctx, q, packageID)
			return tag.RowsAffected(), err
		}
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
	return int(n), nil
}

// List implements Store.
func (s *Postgres) List(ctx context.Context, f Filter) ([]Item, error) {
	q := `SELECT ` + itemCols + ` FROM queue q WHERE true`
	var args []any
	if f.State != "" {
		args = append(args, string(f.State))
		q += fmt.Sprintf(` AND state = $%d`, len(args))
	}
	if f.Destination != "" {
		args = append(args, f.Destination)
		q += fmt.Sprintf(` AND destination = $%d`, len(args))
	}
	if f.PackageID != "" {
		args = append(args, f.PackageID)
		q += fmt.Sprintf(` AND package_id = $%d`, len(args))
	}
	q += ` ORDER BY created DESC, id DESC`
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += fmt.Sprintf(` LIMIT $%d`, len(args))
	}
	rows, err := s.pool.Query(ctx, q, args...)
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

// Get implements Store: the envelope is read whole, one item at a time,
// for the administrator's tools.
func (s *Postgres) Get(ctx context.Context, id int64) (Item, error) {
	it, err := scanItem(s.pool.QueryRow(ctx, `SELECT `+itemCols+` FROM queue q WHERE q.id = $1`, id))
	if noRows(err) {
		err = ErrNotFound
	}
	if err == nil {
		it.Envelope, err = getWhole(ctx, pgChunks{s}, id, it.Size)
	}
	if err != nil {
		return Item{}, fmt.Errorf("get item %d: %w", id, err)
	}
	return it, nil
}

// OpenEnvelope implements Store (see SQLite's): each chunk is read by a
// statement of its own, outside any transaction.
func (s *Postgres) OpenEnvelope(ctx context.Context, id, size int64) (io.ReadCloser, error) {
	return openEnvelope(ctx, pgChunks{s}, id, size)
}

// pgChunks is the PostgreSQL store's chunkSource.
type pgChunks struct{ s *Postgres }

func (c pgChunks) envelopeMeta(ctx context.Context, id int64) (int64, []byte, error) {
	var size int64
	var key []byte
	err := c.s.pool.QueryRow(ctx, `SELECT q.size, k.key FROM queue q
		LEFT JOIN data_keys k ON k.kind = 'queue' AND k.item_id = q.id WHERE q.id = $1`, id).Scan(&size, &key)
	if noRows(err) {
		err = ErrNotFound
	}
	return size, key, err
}

func (c pgChunks) readChunk(ctx context.Context, id, seq int64, use func([]byte) error) (bool, error) {
	var data []byte
	err := c.s.pool.QueryRow(ctx, `SELECT data FROM queue_chunk WHERE item_id = $1 AND seq = $2`, id, seq).Scan(&data)
	if noRows(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, use(data)
}

func (c pgChunks) legacyEnvelope(ctx context.Context, id int64) ([]byte, bool, error) {
	var data []byte
	err := c.s.pool.QueryRow(ctx, `SELECT data FROM queue_envelope WHERE item_id = $1`, id).Scan(&data)
	if noRows(err) {
		return nil, false, nil
	}
	return data, err == nil, err
}

// Depth implements Store.
func (s *Postgres) Depth(ctx context.Context) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT destination, count(*) FROM queue WHERE state = 'queued' GROUP BY destination`)
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

// Delivered implements Store.
func (s *Postgres) Delivered(ctx context.Context, originator, packageID string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM delivered WHERE originator = $1 AND package_id = $2)`, originator, packageID).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("replay cache: %w", err)
	}
	return ok, nil
}

// RecordDelivered implements Tx: the primary key makes the first record
// win, from whichever gateway.
func (t *pgTx) RecordDelivered(originator, packageID, messageID string, date time.Time) error {
	if originator == "" || packageID == "" {
		return errors.New("record delivered: the originator and the package id are required")
	}
	var d *int64
	if !date.IsZero() {
		n := date.UTC().UnixNano()
		d = &n
	}
	err := t.atomic(func(tx pgx.Tx) error {
		_, err := tx.Exec(t.ctx, `INSERT INTO delivered (originator, package_id, message_id, date, recorded)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (originator, package_id) DO NOTHING`,
			originator, packageID, messageID, d, t.s.now().UTC().UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("record delivered: %w", err)
	}
	return nil
}

// PackagesByMessageID implements Store.
func (s *Postgres) PackagesByMessageID(ctx context.Context, messageID string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT package_id FROM delivered WHERE message_id = $1 ORDER BY recorded`, strings.TrimSpace(messageID))
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

// RecordReceipt implements Tx.
func (t *pgTx) RecordReceipt(r Receipt) error {
	if r.PackageID == "" || r.Agency == "" {
		return errors.New("record receipt: the package id and the agency are required")
	}
	boxes, err := encodeList(r.Mailboxes)
	if err != nil {
		return fmt.Errorf("record receipt: %w", err)
	}
	if r.Received.IsZero() {
		r.Received = t.s.now().UTC()
	}
	err = t.atomic(func(tx pgx.Tx) error {
		_, err := tx.Exec(t.ctx, `INSERT INTO receipts (package_id, agency, mailboxes, delivered, received, signer)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (package_id, agency) DO NOTHING`,
			r.PackageID, r.Agency, boxes, r.Delivered.UTC().UnixNano(), r.Received.UTC().UnixNano(), r.Signer)
		return err
	})
	if err != nil {
		return fmt.Errorf("record receipt: %w", err)
	}
	return nil
}

// Receipts implements Store.
func (s *Postgres) Receipts(ctx context.Context, packageID string) ([]Receipt, error) {
	rows, err := s.pool.Query(ctx, `SELECT package_id, agency, mailboxes, delivered, received, signer
		FROM receipts WHERE package_id = $1 ORDER BY agency`, packageID)
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

// AddDeadline implements Tx.
func (t *pgTx) AddDeadline(d Deadline) error {
	if d.PackageID == "" || d.Kind == "" || d.Due.IsZero() {
		return errors.New("add deadline: package, kind and due are required")
	}
	if d.Started.IsZero() {
		d.Started = t.s.now()
	}
	err := t.atomic(func(tx pgx.Tx) error {
		_, err := tx.Exec(t.ctx, `INSERT INTO deadlines (package_id, kind, agency, started, due)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (package_id, kind, agency) DO NOTHING`,
			d.PackageID, d.Kind, d.Agency, d.Started.UTC().UnixNano(), d.Due.UTC().UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("add deadline: %w", err)
	}
	return nil
}

// CompleteDeadlines implements Tx.
func (t *pgTx) CompleteDeadlines(packageID, kind, agency string, at time.Time, note string) (int, error) {
	var n int64
	err := t.atomic(func(tx pgx.Tx) error {
		q := `UPDATE deadlines SET done = $1, note = $2 WHERE package_id = $3 AND kind = $4 AND done = 0`
		args := []any{at.UTC().UnixNano(), note, packageID, kind}
		if agency != "" {
			q += ` AND agency = $5`
			args = append(args, agency)
		}
		tag, err := tx.Exec(t.ctx, q, args...)
		if err != nil {
			return err
		}
		if n = tag.RowsAffected(); n == 0 {
			return errNothingChanged
		}
		return nil
	})
	if errors.Is(err, errNothingChanged) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("complete deadline: %w", err)
	}
	return int(n), nil
}

// MarkAlerted implements Tx.
func (t *pgTx) MarkAlerted(id int64, at time.Time) error {
	err := t.atomic(func(tx pgx.Tx) error {
		_, err := tx.Exec(t.ctx, `UPDATE deadlines SET alerted = $1 WHERE id = $2`, at.UTC().UnixNano(), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("mark alerted: %w", err)
	}
	return nil
}

// Deadlines implements Store.
func (s *Postgres) Deadlines(ctx context.Context, now time.Time, overdue bool) ([]Deadline, error) {
	q := `SELECT ` + deadlineCols + ` FROM deadlines WHERE done = 0`
	var args []any
	if overdue {
		q += ` AND alerted = 0 AND due <= $1`
		args = append(args, now.UTC().UnixNano())
	}
	return s.queryDeadlines(ctx, q+` ORDER BY due, id`, args...)
}

func (s *Postgres) queryDeadlines(ctx context.Context, q string, args ...any) ([]Deadline, error) {
	rows, err := s.pool.Query(ctx, q, args...)
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

// NextDue implements Store: the earlier of the two priorities' first due
// times, each from queue_due under its state and priority (schema version
// 8 dropped queue_next; see the SQLite store's NextDue).
func (s *Postgres) NextDue(ctx context.Context) (time.Time, error) {
	return earliestOfPriorities(func(p Priority) (time.Time, error) {
		return s.minTime(ctx, "next due", `SELECT min(next_attempt) FROM queue WHERE state = 'queued' AND priority = $1`, int(p))
	})
}

// NextDeadline implements Store (the partial index deadlines_alert).
func (s *Postgres) NextDeadline(ctx context.Context) (time.Time, error) {
	return s.minTime(ctx, "next deadline", `SELECT min(due) FROM deadlines WHERE done = 0 AND alerted = 0 AND kind <> 'retention'`)
}

func (s *Postgres) minTime(ctx context.Context, what, q string, args ...any) (time.Time, error) {
	var n *int64
	if err := s.pool.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", what, err)
	}
	if n == nil {
		return time.Time{}, nil
	}
	return fromNanos(*n), nil
}

// OverdueDeadlines implements Store.
func (s *Postgres) OverdueDeadlines(ctx context.Context, now time.Time, limit int) ([]Deadline, error) {
	return s.queryDeadlines(ctx, `SELECT `+deadlineCols+` FROM deadlines
		WHERE done = 0 AND alerted = 0 AND kind <> 'retention' AND due <= $1 ORDER BY due, id LIMIT $2`,
		now.UTC().UnixNano(), limitOr(limit))
}

// DueDeadlines implements Store.
func (s *Postgres) DueDeadlines(ctx context.Context, kind string, now time.Time, limit int) ([]Deadline, error) {
	return s.queryDeadlines(ctx, `SELECT `+deadlineCols+` FROM deadlines
		WHERE done = 0 AND kind = $1 AND due <= $2 ORDER BY due, id LIMIT $3`,
		kind, now.UTC().UnixNano(), limitOr(limit))
}

// Quarantine implements Tx.
func (t *pgTx) Quarantine(q QItem) (int64, error) {
	ctx := t.ctx
	now := t.s.now().UTC()
	if q.Received.IsZero() {
		q.Received = now
	}
	rcpts, err := encodeList(q.Recipients)
	if err != nil {
		return 0, fmt.Errorf("quarantine: %w", err)
	}
	var id int64
	err = t.atomic(func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO quarantine
			(received, remote_addr, helo, mail_from, recipients, check_name, reason, package_id, raw, size, state, note, updated)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '\x'::bytea, $9, 'held', '', $10) RETURNING id`,
			q.Received.UTC().UnixNano(), q.RemoteAddr, q.Helo, q.MailFrom, rcpts, q.Check, q.Reason, q.PackageID,
			int64(len(q.Raw)), now.UnixNano()).Scan(&id)
		if err != nil {
			return err
		}
		if len(q.Raw) == 0 {
			return nil
		}
		sealed, err := pgStoreAtRest(ctx, tx, keyQuarantine, id, q.Raw)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE quarantine SET raw = $1 WHERE id = $2`, sealed, id)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("quarantine: %w", err)
	}
	return id, nil
}

// ListQuarantine implements Store.
func (s *Postgres) ListQuarantine(ctx context.Context, state QState) ([]QItem, error) {
	q := `SELECT ` + qCols + ` FROM quarantine`
	var args []any
	if state != "" {
		q += ` WHERE state = $1`
		args = append(args, string(state))
	}
	return s.queryQItems(ctx, "list quarantine", q+` ORDER BY received DESC, id DESC`, args...)
}

// QuarantinedBefore implements Store.
func (s *Postgres) QuarantinedBefore(ctx context.Context, t time.Time, limit int) ([]QItem, error) {
	return s.queryQItems(ctx, "quarantine retention", `SELECT `+qCols+` FROM quarantine
		WHERE state IN ('held', 'released') AND received < $1 ORDER BY received, id LIMIT $2`,
		t.UTC().UnixNano(), limitOr(limit))
}

func (s *Postgres) queryQItems(ctx context.Context, what, q string, args ...any) ([]QItem, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []QItem
	for rows.Next() {
		it, err := scanQItem(rows, false)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// GetQuarantine implements Store.
func (s *Postgres) GetQuarantine(ctx context.Context, id int64) (QItem, error) {
	q, err := scanQItem(s.pool.QueryRow(ctx, `SELECT `+qCols+`, raw, (SELECT key FROM data_keys WHERE kind = 'quarantine' AND item_id = quarantine.id)
		FROM quarantine WHERE id = $1`, id), true)
	if noRows(err) {
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

// SetQuarantineState implements Tx.
func (t *pgTx) SetQuarantineState(id int64, state QState, note string) error {
	ctx := t.ctx
	if strings.TrimSpace(note) == "" {
		return fmt.Errorf("quarantine %d: %w", id, ErrNoReason)
	}
	err := t.atomic(func(tx pgx.Tx) error {
		var cur QState
		err := tx.QueryRow(ctx, `SELECT state FROM quarantine WHERE id = $1 FOR UPDATE`, id).Scan(&cur)
		if noRows(err) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		ok := (cur == Held && (state == Released || state == Purged)) || (cur == Released && state == Purged)
		if !ok {
			return fmt.Errorf("%w (it is %s; %s asked)", ErrWrongState, cur, state)
		}
		now := t.s.now().UTC().UnixNano()
		if state == Purged {
			if _, err = tx.Exec(ctx, `DELETE FROM data_keys WHERE kind = 'quarantine' AND item_id = $1`, id); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE quarantine SET state = 'purged', raw = NULL, note = $1, updated = $2 WHERE id = $3`, note, now, id)
		} else {
			_, err = tx.Exec(ctx, `UPDATE quarantine SET state = $1, note = $2, updated = $3 WHERE id = $4`, string(state), note, now, id)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("quarantine %d: %w", id, err)
	}
	if state == Released {
		t.notify = true
	}
	return nil
}

// DataKeyCount says how many data keys are stored.
func (s *Postgres) DataKeyCount(ctx context.Context) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM data_keys`).Scan(&n)
	return n, err
}

// OfferPartnerKey implements Tx.
func (t *pgTx) OfferPartnerKey(k PartnerKey) (PartnerKey, bool, error) {
	ctx, s := t.ctx, t.s
	if k.Agency == "" || k.Fingerprint == "" || len(k.Cert) == 0 {
		return PartnerKey{}, false, errors.New("offer partner key: agency, fingerprint and certificate are required")
	}
	if k.State == "" {
		k.State = KeyPending
	}
	if k.Seen.IsZero() {
		k.Seen = s.now()
	}
	var out PartnerKey
	isNew := false
	err := t.atomic(func(tx pgx.Tx) error {
		// The agency's row lock is the version row's: offers and decisions
		// from several gateways take turns.
		if _, err := tx.Exec(ctx, `SELECT n FROM partner_keys_version FOR UPDATE`); err != nil {
			return err
		}
		cur, err := scanPartnerKey(tx.QueryRow(ctx, `SELECT `+partnerKeyCols+` FROM partner_keys WHERE agency = $1 AND fingerprint = $2`, k.Agency, k.Fingerprint))
		switch {
		case noRows(err):
			isNew = true
			var decided int64
			if k.State != KeyPending {
				if k.Decided.IsZero() {
					k.Decided = s.now()
				}
				decided = k.Decided.UTC().UnixNano()
			}
			if err := tx.QueryRow(ctx, `INSERT INTO partner_keys (agency, fingerprint, replaces, cert, state, source, seen, decided, decided_by, reason)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id`, k.Agency, k.Fingerprint, k.Replaces, k.Cert, string(k.State), k.Source,
				k.Seen.UTC().UnixNano(), decided, k.DecidedBy, k.Reason).Scan(&k.ID); err != nil {
				return err
			}
			out = k
			return pgBumpKeys(ctx, tx)
		case err != nil:
			return err
		}
		out = cur
		if cur.State == KeyApproved && k.State == KeyApproved && string(cur.Cert) != string(k.Cert) {
			if _, err := tx.Exec(ctx, `UPDATE partner_keys SET cert = $1, source = $2, decided = $3, decided_by = $4, reason = $5 WHERE id = $6`,
				k.Cert, k.Source, s.now().UTC().UnixNano(), k.DecidedBy, k.Reason, cur.ID); err != nil {
				return err
			}
			out.Cert, out.Source, out.DecidedBy, out.Reason = k.Cert, k.Source, k.DecidedBy, k.Reason
			return pgBumpKeys(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return PartnerKey{}, false, fmt.Errorf("offer partner key %s for %s: %w", k.Fingerprint, k.Agency, err)
	}
	if isNew {
		t.notify = true
	}
	return out, isNew, nil
}

func pgBumpKeys(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `UPDATE partner_keys_version SET n = n + 1`)
	return err
}

// DecidePartnerKey implements Tx.
func (t *pgTx) DecidePartnerKey(agency, fingerprint string, state KeyState, by, reason string) (PartnerKey, error) {
	ctx, s := t.ctx, t.s
	if state != KeyApproved && state != KeyRejected {
		return PartnerKey{}, fmt.Errorf("decide partner key: %q is not a decision", state)
	}
	if strings.TrimSpace(reason) == "" || strings.TrimSpace(by) == "" {
		return PartnerKey{}, fmt.Errorf("decide partner key: %w", ErrNoReason)
	}
	var out PartnerKey
	err := t.atomic(func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT n FROM partner_keys_version FOR UPDATE`); err != nil {
			return err
		}
		k, err := scanPartnerKey(tx.QueryRow(ctx, `SELECT `+partnerKeyCols+` FROM partner_keys WHERE agency = $1 AND fingerprint = $2`, agency, fingerprint))
		if noRows(err) || err == nil && k.State != KeyPending {
			return ErrKeyNotPending
		} else if err != nil {
			return err
		}
		now := s.now().UTC()
		if state == KeyApproved {
			if _, err := tx.Exec(ctx, `UPDATE partner_keys SET state = 'rejected', decided = $1, decided_by = $2, reason = $3
				WHERE agency = $4 AND state = 'approved'`, now.UnixNano(), by, "superseded by "+fingerprint, agency); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE partner_keys SET state = $1, decided = $2, decided_by = $3, reason = $4 WHERE id = $5`,
			string(state), now.UnixNano(), by, reason, k.ID); err != nil {
			return err
		}
		k.State, k.Decided, k.DecidedBy, k.Reason = state, now, by, reason
		out = k
		return pgBumpKeys(ctx, tx)
	})
	if err != nil {
		return PartnerKey{}, fmt.Errorf("%s key %s of %s: %w", map[KeyState]string{KeyApproved: "approve", KeyRejected: "reject"}[state], fingerprint, agency, err)
	}
	t.notify = true
	return out, nil
}

// ListPartnerKeys implements PartnerKeys.
func (s *Postgres) ListPartnerKeys(ctx context.Context, agency string, state KeyState) ([]PartnerKey, error) {
	q := `SELECT ` + partnerKeyCols + ` FROM partner_keys WHERE true`
	var args []any
	if agency != "" {
		args = append(args, agency)
		q += fmt.Sprintf(` AND agency = $%d`, len(args))
	}
	if state != "" {
		args = append(args, string(state))
		q += fmt.Sprintf(` AND state = $%d`, len(args))
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY seen DESC, id DESC`, args...)
	if err != nil {
		return nil, fmt.Errorf("list partner keys: %w", err)
	}
	defer rows.Close()
	var out []PartnerKey
	for rows.Next() {
		k, err := scanPartnerKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list partner keys: %w", err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// PartnerKeysVersion implements PartnerKeys.
func (s *Postgres) PartnerKeysVersion(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT n FROM partner_keys_version`).Scan(&n); err != nil {
		return 0, fmt.Errorf("partner keys version: %w", err)
	}
	return n, nil
}
