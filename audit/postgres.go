package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/conduit-gateway/conduit/sqlschema"
)

// Trail is an audit trail as the command line and the gateway use it:
// SQLite (one gateway) or PostgreSQL (several gateways of one agency,
// one chain).
type Trail interface {
	Appender
	AppendAll(ctx context.Context, es []Event) ([]Event, error)
	Drain(ctx context.Context) (int, error)
	Staged(ctx context.Context) (int, error)
	Query(ctx context.Context, f Filter) ([]Event, error)
	Export(ctx context.Context, w io.Writer, f Filter) (int64, error)
	Verify(ctx context.Context) (VerifyResult, error)
	Keyed() bool
	SetClock(now func() time.Time)
	Close() error
}

var (
	_ Trail = (*SQLite)(nil)
	_ Trail = (*Postgres)(nil)
)

// Postgres is the audit trail in the PostgreSQL database that an agency's
// gateways share: one hash chain for the agency, whichever gateway
// appends. Appends are serialised by a transaction-scoped advisory lock
// taken before the head is read (the chain's writer lock), so gateways
// appending at once take turns and form one chain; the lock goes with the
// transaction, so a gateway that dies mid-append holds nothing. Each
// append transaction commits with synchronous_commit on.
//
// The tables are the SQLite trail's, in PostgreSQL types; a rule refuses
// UPDATE and DELETE on audit_events (as SQLite's triggers do).
type Postgres struct {
	pool *pgxpool.Pool
	key  []byte

	mu  sync.Mutex
	now func() time.Time
}

// lockChain is the advisory lock (two-key form) of the chain's writer.
const lockChain1, lockChain2 = 0x41756474, 1

// PostgresOutboxSchema is the outbox in PostgreSQL: created by whichever of
// the store and the trail migrates first.
const PostgresOutboxSchema = `
CREATE TABLE IF NOT EXISTS audit_outbox (
	id    BIGSERIAL PRIMARY KEY,
	event TEXT      NOT NULL
);
`

var pgMigrations = []string{
	`
CREATE TABLE audit_events (
	seq         BIGINT PRIMARY KEY,
	time        BIGINT NOT NULL,
	agency      TEXT   NOT NULL,
	kind        TEXT   NOT NULL,
	package     TEXT   NOT NULL,
	destination TEXT   NOT NULL,
	rule        TEXT   NOT NULL,
	actor       TEXT   NOT NULL,
	detail      TEXT   NOT NULL,
	prev_hash   BYTEA  NOT NULL,
	hash        BYTEA  NOT NULL
);
CREATE INDEX audit_events_package ON audit_events (package, seq) WHERE package <> '';
CREATE INDEX audit_events_rule ON audit_events (rule, seq) WHERE rule <> '';
CREATE INDEX audit_events_time ON audit_events (time);
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

CREATE TABLE audit_meta (
	id        INTEGER PRIMARY KEY CHECK (id = 1),
	keyed     BOOLEAN NOT NULL,
	key_check BYTEA,
	head_seq  BIGINT  NOT NULL,
	head_hash BYTEA   NOT NULL,
	head_mac  BYTEA
);
`,
	PostgresOutboxSchema,
}

// NewPostgres is the audit trail in the database of pool (the store's),
// with the chain's HMAC key (nil: unkeyed), as NewSQLite.
func NewPostgres(ctx context.Context, pool *pgxpool.Pool, key []byte) (*Postgres, error) {
	if key != nil && len(key) < 16 {
		return nil, fmt.Errorf("the key is %d bytes, fewer than 16", len(key))
	}
	s := &Postgres{pool: pool, now: time.Now}
	if key != nil {
		s.key = append([]byte(nil), key...)
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	lock := fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d, 1)`, 0x436f6e64)
	if err := sqlschema.MigrateLocked(ctx, db, lock, "audit_schema", "the audit trail", pgMigrations); err != nil {
		return nil, err
	}
	var keyed bool
	var check []byte
	err := pool.QueryRow(ctx, `SELECT keyed, key_check FROM audit_meta WHERE id = 1`).Scan(&keyed, &check)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, err
	}
	if err == nil {
		if err := s.modeError(keyed, check); err != nil {
			return nil, err
		}
	}
	if _, err := s.Drain(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Close does nothing: the pool is the caller's.
func (s *Postgres) Close() error { return nil }

// SetClock implements Trail.
func (s *Postgres) SetClock(now func() time.Time) {
	s.mu.Lock()
	s.now = now
	s.mu.Unlock()
}

// Keyed implements Trail.
func (s *Postgres) Keyed() bool { return s.key != nil }

func (s *Postgres) modeError(keyed bool, check []byte) error {
	switch {
	case keyed && s.key == nil:
		return fmt.Errorf("%w: the log is keyed (HMAC): give its key", ErrKeyMismatch)
	case !keyed && s.key != nil:
		return fmt.Errorf("%w: the log was written without a key but a key is configured", ErrKeyMismatch)
	case keyed && !hmac.Equal(check, keyCheck(s.key)):
		return fmt.Errorf("%w: the log is keyed with another key", ErrKeyMismatch)
	}
	return nil
}

func (s *Postgres) prepare(e *Event) error {
	if e.Time.IsZero() {
		s.mu.Lock()
		e.Time = s.now()
		s.mu.Unlock()
	}
	e.Time = e.Time.UTC()
	return e.check()
}

// Append implements Appender.
func (s *Postgres) Append(ctx context.Context, e Event) (Event, error) {
	out, err := s.AppendAll(ctx, []Event{e})
	if err != nil {
		return Event{}, err
	}
	return out[0], nil
}

// AppendAll implements Trail (see SQLite.AppendAll).
func (s *Postgres) AppendAll(ctx context.Context, es []Event) ([]Event, error) {
	if len(es) == 0 {
		return nil, nil
	}
	out := make([]Event, len(es))
	for i, e := range es {
		if err := s.prepare(&e); err != nil {
			return nil, err
		}
		out[i] = e
	}
	_, out, err := s.appendTx(ctx, out)
	return out, err
}

// Drain implements Trail.
func (s *Postgres) Drain(ctx context.Context) (int, error) {
	var any bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM audit_outbox)`).Scan(&any); err != nil {
		return 0, fmt.Errorf("audit drain: %w", err)
	}
	if !any {
		return 0, nil
	}
	total := 0
	for {
		n, _, err := s.appendTx(ctx, nil)
		total += n
		if err != nil || n < maxDrain {
			return total, err
		}
	}
}

// Staged implements Trail.
func (s *Postgres) Staged(ctx context.Context) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM audit_outbox`).Scan(&n)
	return n, err
}

func (s *Postgres) appendTx(ctx context.Context, es []Event) (int, []Event, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("audit append: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// The chain's writer lock, before the head is read.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockChain1, lockChain2); err != nil {
		return 0, nil, fmt.Errorf("audit append: %w", err)
	}
	staged, ids, err := s.staged(ctx, tx)
	if err != nil {
		return 0, nil, fmt.Errorf("audit append: %w", err)
	}
	if len(staged)+len(es) == 0 {
		return 0, nil, nil
	}
	all := append(staged, es...)
	var prevSeq int64
	var prev []byte
	err = tx.QueryRow(ctx, `SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1`).Scan(&prevSeq, &prev)
	if errors.Is(err, pgx.ErrNoRows) {
		prevSeq, prev, err = 0, Genesis, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("audit append: %w", err)
	}
	var keyed bool
	var check, headHash []byte
	var headSeq int64
	err = tx.QueryRow(ctx, `SELECT keyed, key_check, head_seq, head_hash FROM audit_meta WHERE id = 1`).Scan(&keyed, &check, &headSeq, &headHash)
	switch {
	case errors.Is(err, pgx.ErrNoRows) && prevSeq == 0:
		var kc []byte
		if s.key != nil {
			kc = keyCheck(s.key)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO audit_meta (id, keyed, key_check, head_seq, head_hash) VALUES (1, $1, $2, 0, $3)`,
			s.key != nil, kc, []byte(Genesis)); err != nil {
			return 0, nil, fmt.Errorf("audit append: %w", err)
		}
	case errors.Is(err, pgx.ErrNoRows):
		return 0, nil, fmt.Errorf("audit append: %w: the log has entries but its metadata (audit_meta) is gone", ErrBroken)
	case err != nil:
		return 0, nil, fmt.Errorf("audit append: %w", err)
	default:
		if err := s.modeError(keyed, check); err != nil {
			return 0, nil, fmt.Errorf("audit append: %w", err)
		}
		if headSeq != prevSeq || !bytes.Equal(headHash, prev) {
			return 0, nil, fmt.Errorf("audit append: %w: the newest entry is %d but entry %d was written (run conduit audit verify)", ErrBroken, prevSeq, headSeq)
		}
	}
	rows := make([][]any, len(all))
	for i := range all {
		e := &all[i]
		e.Seq = prevSeq + 1
		e.PrevHash = prev
		e.Hash = eventHash(s.key, e, e.Seq, prev)
		rows[i] = []any{e.Seq, e.Time.UnixNano(), e.Agency, string(e.Kind), e.Package, e.Destination, e.Rule,
			e.Actor, e.Detail, []byte(e.PrevHash), []byte(e.Hash)}
		prevSeq, prev = e.Seq, e.Hash
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"audit_events"},
		[]string{"seq", "time", "agency", "kind", "package", "destination", "rule", "actor", "detail", "prev_hash", "hash"},
		pgx.CopyFromRows(rows)); err != nil {
		return 0, nil, fmt.Errorf("audit append: %w", err)
	}
	var mac []byte
	if s.key != nil {
		mac = headMAC(s.key, prevSeq, prev)
	}
	if _, err := tx.Exec(ctx, `UPDATE audit_meta SET head_seq = $1, head_hash = $2, head_mac = $3 WHERE id = 1`, prevSeq, prev, mac); err != nil {
		return 0, nil, fmt.Errorf("audit append: %w", err)
	}
	if len(ids) > 0 {
		// By id, never by range: an outbox row with a lower id may commit
		// after this read (ids are taken at insert, rows seen at commit).
		if _, err := tx.Exec(ctx, `DELETE FROM audit_outbox WHERE id = ANY($1)`, ids); err != nil {
			return 0, nil, fmt.Errorf("audit append: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, nil, fmt.Errorf("audit append: %w", err)
	}
	return len(staged), all[len(staged):], nil
}

func (s *Postgres) staged(ctx context.Context, tx pgx.Tx) ([]Event, []int64, error) {
	rows, err := tx.Query(ctx, `SELECT id, event FROM audit_outbox ORDER BY id LIMIT $1`, maxDrain)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var out []Event
	var ids []int64
	for rows.Next() {
		var id int64
		var raw string
		if err := rows.Scan(&id, &raw); err != nil {
			return nil, nil, err
		}
		ids = append(ids, id)
		var e Event
		jerr := json.Unmarshal([]byte(raw), &e)
		e.Seq, e.PrevHash, e.Hash = 0, nil, nil
		if jerr == nil {
			jerr = s.prepare(&e)
		}
		if jerr != nil {
			e = Event{Agency: e.Agency, Kind: Alert, Package: e.Package, Rule: "audit-outbox",
				Detail: fmt.Sprintf("a staged %q event could not be chained as written: %v", e.Kind, jerr)}
			if err := s.prepare(&e); err != nil {
				return nil, nil, err
			}
		}
		out = append(out, e)
	}
	return out, ids, rows.Err()
}

func (s *Postgres) query(ctx context.Context, f Filter, fn func(Event) error) error {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Package != "" {
		add("package = $%d", f.Package)
	}
	if f.Rule != "" {
		add("rule = $%d", f.Rule)
	}
	if f.Kind != "" {
		add("kind = $%d", string(f.Kind))
	}
	if !f.Since.IsZero() {
		add("time >= $%d", f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		add("time < $%d", f.Until.UnixNano())
	}
	if f.AfterSeq > 0 {
		add("seq > $%d", f.AfterSeq)
	}
	q := `SELECT ` + eventColumns + ` FROM audit_events`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY seq`
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += fmt.Sprintf(` LIMIT $%d`, len(args))
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("audit query: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return fmt.Errorf("audit query: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("audit query: %w", err)
	}
	return nil
}

// Query implements Trail.
func (s *Postgres) Query(ctx context.Context, f Filter) ([]Event, error) {
	var l []Event
	err := s.query(ctx, f, func(e Event) error { l = append(l, e); return nil })
	return l, err
}

// Export implements Trail.
func (s *Postgres) Export(ctx context.Context, w io.Writer, f Filter) (int64, error) {
	var n int64
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	err := s.query(ctx, f, func(e Event) error {
		if err := enc.Encode(e); err != nil {
			return fmt.Errorf("audit export: %w", err)
		}
		n++
		return nil
	})
	return n, err
}

// Verify implements Trail: the whole chain in sequence order, streamed
// from one repeatable-read snapshot (appends meanwhile are not seen), then
// the head recorded in the metadata, by the SQLite trail's rules.
func (s *Postgres) Verify(ctx context.Context) (VerifyResult, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return VerifyResult{}, fmt.Errorf("audit verify: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var maxSeq int64
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM audit_events`).Scan(&maxSeq); err != nil {
		return VerifyResult{}, fmt.Errorf("audit verify: %w", err)
	}
	// A second connection for the diagnosis of a broken entry (the
	// snapshot's connection is busy streaming).
	exists := func(h []byte) bool {
		var ok bool
		err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM audit_events WHERE hash = $1)`, h).Scan(&ok)
		return err != nil || ok
	}
	w := newChainWalker(s.key, exists, maxSeq)
	rows, err := tx.Query(ctx, `SELECT `+eventColumns+` FROM audit_events ORDER BY seq`)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("audit verify: %w", err)
	}
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			rows.Close()
			return VerifyResult{}, fmt.Errorf("audit verify: %w", err)
		}
		if bad := w.add(&e); bad != nil {
			rows.Close()
			return *bad, nil
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return VerifyResult{}, fmt.Errorf("audit verify: %w", err)
	}
	var h Head
	err = tx.QueryRow(ctx, `SELECT head_seq, head_hash, head_mac FROM audit_meta WHERE id = 1`).Scan(&h.Seq, &h.Hash, &h.MAC)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return w.finish(nil), nil
	case err != nil:
		return VerifyResult{}, fmt.Errorf("audit verify: %w", err)
	}
	return w.finish(&h), nil
}
