package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/conduit-gateway/conduit/sqlschema"
)

// SQLite is the audit trail in the gateway's SQLite database, in tables of
// its own (audit_events, audit_meta, audit_schema) beside the store's.
//
// Appends go through one connection whose transactions begin IMMEDIATE:
// the write lock is taken before the last hash is read, so appends from
// goroutines, from several handles and from several processes sharing
// the file form one chain (a second writer waits up to sqlschema.BusyTimeout).
// With WAL and synchronous=FULL an event is on disk when Append returns.
// Triggers refuse UPDATE and DELETE on audit_events, so that no code path
// of ours can change history by mistake; someone with the file can drop
// them, which is what Verify is for.
type SQLite struct {
	w   *sql.DB // one connection, BEGIN IMMEDIATE
	r   *sql.DB // read-only pool
	key []byte

	mu  sync.Mutex
	now func() time.Time
	// owned: the trail opened the file and closes it.
	owned bool
}

// OpenSQLite opens the audit trail in the database at path, creating the
// file (mode 0600) and the audit tables if needed. key, when not nil, is
// the HMAC key (at least 16 bytes) that chains the events; a log keeps
// the mode it was created with, and opening it with the wrong key, or
// without its key, fails with ErrKeyMismatch.
func OpenSQLite(ctx context.Context, path string, key []byte) (*SQLite, error) {
	db, err := sqlschema.OpenDB(path)
	if err != nil {
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	s, err := NewSQLite(ctx, db, key)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	s.owned = true
	return s, nil
}

// NewSQLite is the audit trail in a database file opened by the caller
// (shared with the store: one writer per file), who closes it after the
// trail.
func NewSQLite(ctx context.Context, db *sqlschema.DB, key []byte) (*SQLite, error) {
	if key != nil && len(key) < 16 {
		return nil, fmt.Errorf("the key is %d bytes, fewer than 16", len(key))
	}
	s := &SQLite{w: db.W, r: db.R, now: time.Now}
	if key != nil {
		s.key = append([]byte(nil), key...)
	}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	if err := s.checkMode(ctx); err != nil {
		return nil, err
	}
	// Events staged by a process that died before moving them are chained
	// now: a crash between a state change and its chaining is repaired on
	// the next open.
	if _, err := s.Drain(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Close closes the database when the trail opened it. Every appended
// event is already durable.
func (s *SQLite) Close() error {
	if !s.owned {
		return nil
	}
	return errors.Join(s.r.Close(), s.w.Close())
}

// SetClock replaces the clock that stamps events appended without a
// Time (a gateway whose clock tests move).
func (s *SQLite) SetClock(now func() time.Time) {
	s.mu.Lock()
	s.now = now
	s.mu.Unlock()
}

// Keyed reports whether the chain is keyed (HMAC).
func (s *SQLite) Keyed() bool { return s.key != nil }

// OutboxSchema is the audit outbox: events written by the gateway's store
// in the same transaction as the state change they record (store.WithAudit),
// waiting to be moved into the chain. Both the store's migrations and these
// create it, whichever opens the database first.
const OutboxSchema = `
CREATE TABLE IF NOT EXISTS audit_outbox (
	id    INTEGER PRIMARY KEY AUTOINCREMENT,
	event TEXT    NOT NULL -- JSON of an Event, without seq and hashes
);
`

// maxDrain bounds the staged events one transaction moves into the chain.
const maxDrain = 4096

// migrations bring the audit schema forward; migrations[i] takes version i
// to i+1. Never edit one that has shipped: append a new one. The version
// is kept in audit_schema, apart from the store's schema_version.
var migrations = []string{
	`
CREATE TABLE audit_events (
	seq         INTEGER PRIMARY KEY, -- 1, 2, 3... no gaps
	time        INTEGER NOT NULL,    -- unix nanoseconds, UTC
	agency      TEXT    NOT NULL,
	kind        TEXT    NOT NULL,
	package     TEXT    NOT NULL,
	destination TEXT    NOT NULL,
	rule        TEXT    NOT NULL,
	actor       TEXT    NOT NULL,
	detail      TEXT    NOT NULL,
	prev_hash   BLOB    NOT NULL,
	hash        BLOB    NOT NULL
);
CREATE INDEX audit_events_package ON audit_events (package, seq) WHERE package <> '';
CREATE INDEX audit_events_rule ON audit_events (rule, seq) WHERE rule <> '';
CREATE INDEX audit_events_time ON audit_events (time);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;

-- One row: the chain's mode and its head (the newest entry), so that a
-- truncated log is found, and in keyed mode the head's MAC.
CREATE TABLE audit_meta (
	id        INTEGER PRIMARY KEY CHECK (id = 1),
	keyed     INTEGER NOT NULL,
	key_check BLOB,
	head_seq  INTEGER NOT NULL,
	head_hash BLOB    NOT NULL,
	head_mac  BLOB
);
`,
	// 2: the outbox.
	OutboxSchema,
}

func (s *SQLite) migrate(ctx context.Context) error {
	return sqlschema.Migrate(ctx, s.w, "audit_schema", "the audit trail", migrations)
}

// checkMode checks the key against the mode the log was created with
// (by its first Append); a log without entries takes any mode.
func (s *SQLite) checkMode(ctx context.Context) error {
	var keyed bool
	var check []byte
	err := s.r.QueryRowContext(ctx, `SELECT keyed, key_check FROM audit_meta WHERE id = 1`).Scan(&keyed, &check)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.modeError(keyed, check)
}

func (s *SQLite) modeError(keyed bool, check []byte) error {
	switch {
	case keyed && s.key == nil:
		return fmt.Errorf("%w: the log is keyed (HMAC): give its key", ErrKeyMismatch)
	case !keyed && s.key != nil:
		return fmt.Errorf("%w: the log was written without a key but a key is configured: it was created before the key was, or it has been rewritten", ErrKeyMismatch)
	case keyed && !hmac.Equal(check, keyCheck(s.key)):
		return fmt.Errorf("%w: the log is keyed with another key", ErrKeyMismatch)
	}
	return nil
}

func (s *SQLite) headMAC(seq int64, h []byte) []byte {
	if s.key == nil {
		return nil
	}
	return headMAC(s.key, seq, h)
}

// Append adds e to the trail and returns it as stored, with its Seq,
// Time (set to now when zero), PrevHash and Hash, and its text made to
// fit (invalid UTF-8 replaced, over-long fields cut to MaxField and
// MaxDetail). It fails on an unknown Kind or a time outside 1970-2261,
// when the log's key does not match (ErrKeyMismatch), when the log's head
// shows entries were removed (ErrBroken), and when the event could not be
// made durable: each is an administrator alert.
func (s *SQLite) Append(ctx context.Context, e Event) (Event, error) {
	out, err := s.AppendAll(ctx, []Event{e})
	if err != nil {
		return Event{}, err
	}
	return out[0], nil
}

// AppendAll appends events in order in one transaction: one disk sync for
// all of them, which is how a busy gateway keeps up (group commit). Either
// all are stored or none is; the errors are Append's. Events staged in the
// outbox are moved into the chain first, in the same transaction, so that
// an event never overtakes one staged before it.
func (s *SQLite) AppendAll(ctx context.Context, es []Event) ([]Event, error) {
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

// Drain moves the events staged in the outbox into the chain, in the order
// they were staged, and says how many it moved.
func (s *SQLite) Drain(ctx context.Context) (int, error) {
	// A read first: an empty outbox (the usual case) costs no write lock.
	var any bool
	if err := s.r.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM audit_outbox)`).Scan(&any); err != nil {
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

// Staged counts the events waiting in the outbox.
func (s *SQLite) Staged(ctx context.Context) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM audit_outbox`).Scan(&n)
	return n, err
}

// prepare stamps a zero time and checks an event.
func (s *SQLite) prepare(e *Event) error {
	if e.Time.IsZero() {
		s.mu.Lock()
		e.Time = s.now()
		s.mu.Unlock()
	}
	e.Time = e.Time.UTC()
	return e.check()
}

// appendTx chains, in one transaction, the staged events (up to maxDrain)
// and then es, and removes the staged ones from the outbox. It returns how
// many staged events it moved and es as stored.
func (s *SQLite) appendTx(ctx context.Context, es []Event) (int, []Event, error) {
	// The writer may be shared with the store, whose bookkeeping commits
	// leave synchronous=NORMAL behind: the level is set here, on the
	// connection this transaction holds. Direct appends are durable when
	// they return (FULL); moving staged events needs no sync of its own,
	// since a move lost to a power cut is lost whole and the outbox still
	// holds the events, moved again when the trail is next opened.
	level := sqlschema.SyncNormal
	if len(es) > 0 {
		level = sqlschema.SyncFull
	}
	tx, release, err := sqlschema.BeginSync(ctx, s.w, level) // IMMEDIATE: the write lock first
	if err != nil {
		return 0, nil, fmt.Errorf("audit append: %w", err)
	}
	defer release()
	defer tx.Rollback()
	staged, lastID, err := s.staged(ctx, tx)
	if err != nil {
		return 0, nil, fmt.Errorf("audit append: %w", err)
	}
	if len(staged)+len(es) == 0 {
		return 0, nil, nil
	}
	all := append(staged, es...)
	var prevSeq int64
	var prev []byte
	err = tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1`).Scan(&prevSeq, &prev)
	if errors.Is(err, sql.ErrNoRows) {
		prevSeq, prev, err = 0, Genesis, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("audit append: %w", err)
	}
	var keyed bool
	var check, headHash []byte
	var headSeq int64
	err = tx.QueryRowContext(ctx, `SELECT keyed, key_check, head_seq, head_hash FROM audit_meta WHERE id = 1`).Scan(&keyed, &check, &headSeq, &headHash)
	switch {
	case errors.Is(err, sql.ErrNoRows) && prevSeq == 0:
		// The first event fixes the log's mode.
		var kc []byte
		if s.key != nil {
			kc = keyCheck(s.key)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_meta (id, keyed, key_check, head_seq, head_hash) VALUES (1, ?, ?, 0, ?)`,
			s.key != nil, kc, Genesis); err != nil {
			return 0, nil, fmt.Errorf("audit append: %w", err)
		}
	case errors.Is(err, sql.ErrNoRows):
		return 0, nil, fmt.Errorf("audit append: %w: the log has entries but its metadata (audit_meta) is gone", ErrBroken)
	case err != nil:
		return 0, nil, fmt.Errorf("audit append: %w", err)
	default:
		if err := s.modeError(keyed, check); err != nil {
			return 0, nil, fmt.Errorf("audit append: %w", err)
		}
		if headSeq != prevSeq || !bytes.Equal(headHash, prev) {
			// Chaining on would hide the removal of the newest entries.
			return 0, nil, fmt.Errorf("audit append: %w: the newest entry is %d but entry %d was written (run conduit audit verify)", ErrBroken, prevSeq, headSeq)
		}
	}
	ins, err := tx.PrepareContext(ctx, `INSERT INTO audit_events (seq, time, agency, kind, package, destination, rule, actor, detail, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return 0, nil, fmt.Errorf("audit append: %w", err)
	}
	defer ins.Close()
	for i := range all {
		e := &all[i]
		e.Seq = prevSeq + 1
		e.PrevHash = prev
		e.Hash = eventHash(s.key, e, e.Seq, prev)
		if _, err := ins.ExecContext(ctx, e.Seq, e.Time.UnixNano(), e.Agency, string(e.Kind), e.Package, e.Destination, e.Rule,
			e.Actor, e.Detail, []byte(e.PrevHash), []byte(e.Hash)); err != nil {
			return 0, nil, fmt.Errorf("audit append: %w", err)
		}
		prevSeq, prev = e.Seq, e.Hash
	}
	if _, err := tx.ExecContext(ctx, `UPDATE audit_meta SET head_seq = ?, head_hash = ?, head_mac = ? WHERE id = 1`,
		prevSeq, prev, s.headMAC(prevSeq, prev)); err != nil {
		return 0, nil, fmt.Errorf("audit append: %w", err)
	}
	if len(staged) > 0 {
		if _, err := tx.ExecContext(ctx, `DELETE FROM audit_outbox WHERE id <= ?`, lastID); err != nil {
			return 0, nil, fmt.Errorf("audit append: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, nil, fmt.Errorf("audit append: %w", err)
	}
	return len(staged), all[len(staged):], nil
}

// staged reads the oldest staged events (up to maxDrain) and the outbox id
// of the last one. A staged event that cannot be chained as it is (an
// unknown kind, a time out of range: a bug in the code that staged it) is
// not left to block the outbox: it is chained as an alert that says so.
func (s *SQLite) staged(ctx context.Context, tx *sql.Tx) ([]Event, int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, event FROM audit_outbox ORDER BY id LIMIT ?`, maxDrain)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []Event
	var last int64
	for rows.Next() {
		var raw string
		if err := rows.Scan(&last, &raw); err != nil {
			return nil, 0, err
		}
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
				return nil, 0, err
			}
		}
		out = append(out, e)
	}
	return out, last, rows.Err()
}

const eventColumns = `seq, time, agency, kind, package, destination, rule, actor, detail, prev_hash, hash`

type scanner interface{ Scan(...any) error }

func scanEvent(r scanner) (Event, error) {
	var e Event
	var t int64
	var kind string
	var prev, h []byte
	if err := r.Scan(&e.Seq, &t, &e.Agency, &kind, &e.Package, &e.Destination, &e.Rule, &e.Actor, &e.Detail, &prev, &h); err != nil {
		return Event{}, err
	}
	e.Time = time.Unix(0, t).UTC()
	e.Kind = Kind(kind)
	e.PrevHash, e.Hash = prev, h
	return e, nil
}

// query runs f on every event the filter selects, in sequence order.
func (s *SQLite) query(ctx context.Context, f Filter, fn func(Event) error) error {
	var where []string
	var args []any
	if f.Package != "" {
		where, args = append(where, "package = ?"), append(args, f.Package)
	}
	if f.Rule != "" {
		where, args = append(where, "rule = ?"), append(args, f.Rule)
	}
	if f.Kind != "" {
		where, args = append(where, "kind = ?"), append(args, string(f.Kind))
	}
	if !f.Since.IsZero() {
		where, args = append(where, "time >= ?"), append(args, f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		where, args = append(where, "time < ?"), append(args, f.Until.UnixNano())
	}
	if f.AfterSeq > 0 {
		where, args = append(where, "seq > ?"), append(args, f.AfterSeq)
	}
	q := `SELECT ` + eventColumns + ` FROM audit_events`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY seq`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
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

// Query returns the events the filter selects, oldest first.
func (s *SQLite) Query(ctx context.Context, f Filter) ([]Event, error) {
	var l []Event
	err := s.query(ctx, f, func(e Event) error { l = append(l, e); return nil })
	return l, err
}

// Export writes the events the filter selects to w as JSON lines, oldest
// first, one Event object a line (fields in a fixed order, hashes in hex),
// and returns how many it wrote. It streams: the trail is never held in
// memory whole.
func (s *SQLite) Export(ctx context.Context, w io.Writer, f Filter) (int64, error) {
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

// Problem is what Verify found wrong.
type Problem string

// The problems Verify names.
const (
	Edited    Problem = "edited"    // the entry's fields do not match its hash
	Deleted   Problem = "deleted"   // entries are missing (a gap in seq, or the newest removed)
	Reordered Problem = "reordered" // the entry is valid but not where it was written
	Rewritten Problem = "rewritten" // the hash was recomputed without the key
)

// VerifyResult is Verify's verdict.
type VerifyResult struct {
	Entries  int64   // entries checked
	Keyed    bool    // the chain is HMAC-keyed
	HeadSeq  int64   // the newest entry's seq (0 when empty)
	HeadHash HexHash // the newest entry's hash (Genesis when empty); record it elsewhere to anchor the trail
	// OK is true when the chain is intact; otherwise Seq names the first
	// bad entry, Problem says what happened to it, and Reason explains.
	OK      bool
	Seq     int64
	Problem Problem
	Reason  string
}

// String is the verdict in one line.
func (r VerifyResult) String() string {
	if r.OK {
		return fmt.Sprintf("%d entries, chain intact", r.Entries)
	}
	return fmt.Sprintf("entry %d: %s: %s", r.Seq, r.Problem, r.Reason)
}

// Verify walks the whole chain in sequence order, recomputing each hash,
// and reports the first bad entry. An error means the check could not be
// made (the database could not be read), not that the chain is broken.
func (s *SQLite) Verify(ctx context.Context) (VerifyResult, error) {
	res := VerifyResult{Keyed: s.key != nil, HeadHash: Genesis}
	fail := func(seq int64, p Problem, format string, a ...any) (VerifyResult, error) {
		res.OK, res.Seq, res.Problem, res.Reason = false, seq, p, fmt.Sprintf(format, a...)
		return res, nil
	}
	// One statement reads one snapshot (WAL), whatever is appended meanwhile.
	rows, err := s.r.QueryContext(ctx, `SELECT `+eventColumns+`, m.head_seq, m.head_hash, m.head_mac
		FROM (SELECT 1) LEFT JOIN audit_events ON 1 LEFT JOIN audit_meta m ON m.id = 1 ORDER BY seq`)
	if err != nil {
		return res, fmt.Errorf("audit verify: %w", err)
	}
	defer rows.Close()
	want, prev := int64(1), []byte(Genesis)
	var headSeq sql.NullInt64
	var headHash, headMac []byte
	var bad *VerifyResult
	for rows.Next() {
		var (
			seq, t                                       sql.NullInt64
			agency, kind, pkg, dest, rule, actor, detail sql.NullString
			ph, h                                        []byte
		)
		if err := rows.Scan(&seq, &t, &agency, &kind, &pkg, &dest, &rule, &actor, &detail, &ph, &h, &headSeq, &headHash, &headMac); err != nil {
			return res, fmt.Errorf("audit verify: %w", err)
		}
		if !seq.Valid {
			break // an empty log: the one row of the left join
		}
		e := Event{Seq: seq.Int64, Time: time.Unix(0, t.Int64).UTC(), Agency: agency.String, Kind: Kind(kind.String),
			Package: pkg.String, Destination: dest.String, Rule: rule.String, Actor: actor.String, Detail: detail.String, PrevHash: ph, Hash: h}
		if r, ok := s.checkEntry(ctx, &e, want, prev); !ok {
			r.Entries, r.Keyed = res.Entries, res.Keyed
			bad = &r
			break
		}
		res.Entries++
		res.HeadSeq, res.HeadHash = e.Seq, e.Hash
		want, prev = e.Seq+1, e.Hash
	}
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("audit verify: %w", err)
	}
	rows.Close()
	if bad != nil {
		return *bad, nil
	}
	// The head in the metadata: the newest entries must not have gone.
	switch {
	case !headSeq.Valid && res.HeadSeq == 0:
		// A log nothing was ever appended to.
	case !headSeq.Valid:
		return fail(res.HeadSeq, Edited, "the log's metadata (audit_meta) is missing")
	case s.key != nil && !hmac.Equal(headMac, headMAC(s.key, headSeq.Int64, headHash)):
		return fail(res.HeadSeq, Edited, "the recorded head of the log does not match its MAC: the log's metadata was changed")
	case headSeq.Int64 > res.HeadSeq:
		return fail(res.HeadSeq+1, Deleted, "the log ends at entry %d but entry %d was written: the newest entries were removed", res.HeadSeq, headSeq.Int64)
	case headSeq.Int64 < res.HeadSeq:
		return fail(headSeq.Int64+1, Edited, "entries after %d are not recorded in the log's head: they were added outside conduit", headSeq.Int64)
	case !bytes.Equal(headHash, res.HeadHash):
		return fail(res.HeadSeq, Edited, "the newest entry is not the one recorded in the log's head: it was replaced")
	}
	res.OK = true
	return res, nil
}

// checkEntry checks the entry found at the position that should hold
// seq want after prev, and says what is wrong with it.
func (s *SQLite) checkEntry(ctx context.Context, e *Event, want int64, prev []byte) (VerifyResult, bool) {
	bad := func(seq int64, p Problem, format string, a ...any) (VerifyResult, bool) {
		return VerifyResult{Seq: seq, Problem: p, Reason: fmt.Sprintf(format, a...)}, false
	}
	if len(e.Hash) != HashSize || len(e.PrevHash) != HashSize {
		return bad(e.Seq, Edited, "its hash is not %d bytes", HashSize)
	}
	contentOK := hmac.Equal(e.Hash, eventHash(s.key, e, e.Seq, e.PrevHash))
	switch {
	case contentOK && e.Seq > want:
		if want == 1 {
			return bad(want, Deleted, "the log starts at entry %d: %s missing", e.Seq, span(1, e.Seq-1))
		}
		if e.Seq == want+1 {
			return bad(want, Deleted, "entry %d is missing: entry %d follows entry %d", want, e.Seq, want-1)
		}
		return bad(want, Deleted, "entries %d to %d are missing: entry %d follows entry %d", want, e.Seq-1, e.Seq, want-1)
	case contentOK && e.Seq < want:
		return bad(e.Seq, Reordered, "entry %d appears again after entry %d", e.Seq, want-1)
	case contentOK && !bytes.Equal(e.PrevHash, prev):
		return bad(e.Seq, Reordered, "it does not follow entry %d: its previous-hash is not entry %d's hash (out of order, or taken from another log)", want-1, want-1)
	case contentOK:
		return VerifyResult{}, true
	}
	// The fields do not match the hash. An entry moved to another seq
	// still matches its hash at its original seq: find that seq.
	if orig, ok := s.originalSeq(ctx, e); ok {
		var n int64
		err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM audit_events WHERE hash = ?`, []byte(e.PrevHash)).Scan(&n)
		if err == nil && n == 0 && orig > e.Seq && orig > 1 {
			// Its predecessor is nowhere: deleted, and the rest renumbered.
			return bad(e.Seq, Deleted, "it holds the event written as entry %d, and the entry written before that is gone: entries were deleted and the rest renumbered", orig)
		}
		return bad(e.Seq, Reordered, "it holds the event written as entry %d: entries were put in another order", orig)
	}
	if s.key != nil && bytes.Equal(e.Hash, eventHash(nil, e, e.Seq, e.PrevHash)) {
		return bad(e.Seq, Rewritten, "its hash was recomputed without the key: the chain was rewritten from here")
	}
	return bad(e.Seq, Edited, "its contents do not match its hash")
}

// originalSeq looks for the seq at which e's fields match its hash. It
// runs only on a broken chain, so it may try every seq in the log.
func (s *SQLite) originalSeq(ctx context.Context, e *Event) (int64, bool) {
	var max int64
	if err := s.r.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM audit_events`).Scan(&max); err != nil {
		return 0, false
	}
	if max < e.Seq {
		max = e.Seq
	}
	max += 1024 // the newest entries may have been deleted
	for seq := int64(1); seq <= max; seq++ {
		if seq != e.Seq && hmac.Equal(e.Hash, eventHash(s.key, e, seq, e.PrevHash)) {
			return seq, true
		}
		if seq%65536 == 0 && ctx.Err() != nil {
			return 0, false
		}
	}
	return 0, false
}

// span names entries a to b.
func span(a, b int64) string {
	if a == b {
		return fmt.Sprintf("entry %d is", a)
	}
	return fmt.Sprintf("entries %d to %d are", a, b)
}
