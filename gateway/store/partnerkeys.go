package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/conduit-gateway/conduit/sqlschema"
)

// KeyState is where a partner certificate stands with this gateway.
type KeyState string

const (
	// KeyPending: offered with a fingerprint other than the pinned one;
	// never used until an administrator approves it.
	KeyPending KeyState = "pending"
	// KeyApproved: in force for its agency (an administrator approved a
	// change, or the pinned key itself signed an update).
	KeyApproved KeyState = "approved"
	// KeyRejected: an administrator refused it; offered again, it stays
	// rejected.
	KeyRejected KeyState = "rejected"
)

// PartnerKey is a partner certificate this gateway has been offered.
type PartnerKey struct {
	ID          int64
	Agency      string
	Fingerprint string
	// Replaces is the fingerprint pinned for the agency when the key was
	// offered (the same as Fingerprint for an update the key signed).
	Replaces string
	Cert     []byte // armored public certificate: public data only
	State    KeyState
	// Source says where it came from: "directory", "notice from AGENCY",
	// "operator".
	Source    string
	Seen      time.Time
	Decided   time.Time
	DecidedBy string
	Reason    string
}

// PartnerKeys is the record of partner key changes: pending changes an
// administrator inspects, approvals and rejections. It shares the
// gateway's database.
type PartnerKeys interface {
	// ListPartnerKeys lists the records of an agency ("" for all) in a
	// state ("" for any), newest first.
	ListPartnerKeys(ctx context.Context, agency string, state KeyState) ([]PartnerKey, error)
	// PartnerKeysVersion changes whenever a record does, so that a
	// running gateway can reload its partners when the CLI decides.
	PartnerKeysVersion(ctx context.Context) (int64, error)
}

// ErrKeyNotPending is returned when approving or rejecting a key that is
// not waiting for a decision.
var ErrKeyNotPending = errors.New("no pending key change with that fingerprint")

var keyMigrations = []string{`
CREATE TABLE partner_keys (
	id          INTEGER PRIMARY KEY,
	agency      TEXT NOT NULL,
	fingerprint TEXT NOT NULL,
	replaces    TEXT NOT NULL,
	cert        BLOB NOT NULL,
	state       TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected')),
	source      TEXT NOT NULL,
	seen        INTEGER NOT NULL,
	decided     INTEGER NOT NULL DEFAULT 0,
	decided_by  TEXT NOT NULL DEFAULT '',
	reason      TEXT NOT NULL DEFAULT '',
	UNIQUE (agency, fingerprint)
);
CREATE TABLE partner_keys_version (n INTEGER NOT NULL);
INSERT INTO partner_keys_version (n) VALUES (0);
`}

func (s *SQLite) migrateKeys(ctx context.Context) error {
	return sqlschema.Migrate(ctx, s.w, "partner_keys_schema_version", "the partner keys", keyMigrations)
}

const partnerKeyCols = `id, agency, fingerprint, replaces, cert, state, source, seen, decided, decided_by, reason`

func scanPartnerKey(sc interface{ Scan(...any) error }) (PartnerKey, error) {
	var k PartnerKey
	var seen, decided int64
	err := sc.Scan(&k.ID, &k.Agency, &k.Fingerprint, &k.Replaces, &k.Cert, &k.State, &k.Source, &seen, &decided, &k.DecidedBy, &k.Reason)
	k.Seen = time.Unix(0, seen).UTC()
	if decided != 0 {
		k.Decided = time.Unix(0, decided).UTC()
	}
	return k, err
}

func bumpKeys(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `UPDATE partner_keys_version SET n = n + 1`)
	return err
}

// OfferPartnerKey implements Tx.
func (t *sqliteTx) OfferPartnerKey(k PartnerKey) (PartnerKey, bool, error) {
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
	err := t.atomic(func(tx *sql.Tx) error {
		cur, err := scanPartnerKey(tx.QueryRowContext(ctx, `SELECT `+partnerKeyCols+` FROM partner_keys WHERE agency = ? AND fingerprint = ?`, k.Agency, k.Fingerprint))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			isNew = true
			var decided int64
			if k.State != KeyPending {
				if k.Decided.IsZero() {
					k.Decided = s.now()
				}
				decided = k.Decided.UTC().UnixNano()
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO partner_keys (agency, fingerprint, replaces, cert, state, source, seen, decided, decided_by, reason)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, k.Agency, k.Fingerprint, k.Replaces, k.Cert, string(k.State), k.Source,
				k.Seen.UTC().UnixNano(), decided, k.DecidedBy, k.Reason)
			if err != nil {
				return err
			}
			k.ID, _ = res.LastInsertId()
			out = k
			return bumpKeys(ctx, tx)
		case err != nil:
			return err
		}
		out = cur
		if cur.State == KeyApproved && k.State == KeyApproved && string(cur.Cert) != string(k.Cert) {
			// An update the key itself signed (new subkey, expiry,
			// revocation): the newer copy replaces the stored one.
			if _, err := tx.ExecContext(ctx, `UPDATE partner_keys SET cert = ?, source = ?, decided = ?, decided_by = ?, reason = ? WHERE id = ?`,
				k.Cert, k.Source, s.now().UTC().UnixNano(), k.DecidedBy, k.Reason, cur.ID); err != nil {
				return err
			}
			out.Cert, out.Source, out.DecidedBy, out.Reason = k.Cert, k.Source, k.DecidedBy, k.Reason
			return bumpKeys(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return PartnerKey{}, false, fmt.Errorf("offer partner key %s for %s: %w", k.Fingerprint, k.Agency, err)
	}
	return out, isNew, nil
}

// ListPartnerKeys implements PartnerKeys.
func (s *SQLite) ListPartnerKeys(ctx context.Context, agency string, state KeyState) ([]PartnerKey, error) {
	q := `SELECT ` + partnerKeyCols + ` FROM partner_keys WHERE 1 = 1`
	var args []any
	if agency != "" {
		q += ` AND agency = ?`
		args = append(args, agency)
	}
	if state != "" {
		q += ` AND state = ?`
		args = append(args, string(state))
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY seen DESC, id DESC`, args...)
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

// DecidePartnerKey implements Tx.
func (t *sqliteTx) DecidePartnerKey(agency, fingerprint string, state KeyState, by, reason string) (PartnerKey, error) {
	ctx, s := t.ctx, t.s
	if state != KeyApproved && state != KeyRejected {
		return PartnerKey{}, fmt.Errorf("decide partner key: %q is not a decision", state)
	}
	if strings.TrimSpace(reason) == "" || strings.TrimSpace(by) == "" {
		return PartnerKey{}, fmt.Errorf("decide partner key: %w", ErrNoReason)
	}
	var out PartnerKey
	err := t.atomic(func(tx *sql.Tx) error {
		k, err := scanPartnerKey(tx.QueryRowContext(ctx, `SELECT `+partnerKeyCols+` FROM partner_keys WHERE agency = ? AND fingerprint = ?`, agency, fingerprint))
		if errors.Is(err, sql.ErrNoRows) || err == nil && k.State != KeyPending {
			return ErrKeyNotPending
		} else if err != nil {
			return err
		}
		now := s.now().UTC()
		if state == KeyApproved {
			if _, err := tx.ExecContext(ctx, `UPDATE partner_keys SET state = 'rejected', decided = ?, decided_by = ?, reason = ?
				WHERE agency = ? AND state = 'approved'`, now.UnixNano(), by, "superseded by "+fingerprint, agency); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE partner_keys SET state = ?, decided = ?, decided_by = ?, reason = ? WHERE id = ?`,
			string(state), now.UnixNano(), by, reason, k.ID); err != nil {
			return err
		}
		k.State, k.Decided, k.DecidedBy, k.Reason = state, now, by, reason
		out = k
		return bumpKeys(ctx, tx)
	})
	if err != nil {
		return PartnerKey{}, fmt.Errorf("%s key %s of %s: %w", map[KeyState]string{KeyApproved: "approve", KeyRejected: "reject"}[state], fingerprint, agency, err)
	}
	return out, nil
}

// PartnerKeysVersion implements PartnerKeys.
func (s *SQLite) PartnerKeysVersion(ctx context.Context) (int64, error) {
	var n int64
	if err := s.r.QueryRowContext(ctx, `SELECT n FROM partner_keys_version`).Scan(&n); err != nil {
		return 0, fmt.Errorf("partner keys version: %w", err)
	}
	return n, nil
}

// HoldItem implements PartnerKeys.
func (t *sqliteTx) HoldItem(id int64, reason string) error {
	if strings.TrimSpace(reason) == "" {
		return fmt.Errorf("hold item %d: %w", id, ErrNoReason)
	}
	return t.outcome("hold", id, []State{Queued}, nil, `state = 'held', reason = ?`, reason)
}

// ResealItem implements PartnerKeys.
func (t *sqliteTx) ResealItem(id int64, envelope []byte, note string) error {
	ctx, s := t.ctx, t.s
	err := t.atomic(func(tx *sql.Tx) error {
		var st State
		err := tx.QueryRowContext(ctx, `SELECT state FROM queue WHERE id = ?`, id).Scan(&st)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		if st != Queued && st != OnHold {
			return fmt.Errorf("%w (it is %s)", ErrWrongState, st)
		}
		// The envelope it replaces goes, chunked or stored whole (before
		// chunks); the new one is chunked.
		var had int64
		for _, q := range []string{`DELETE FROM queue_chunk WHERE item_id = ?`, `DELETE FROM queue_envelope WHERE item_id = ?`} {
			res, err := tx.ExecContext(ctx, q, id)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			had += n
		}
		if had == 0 {
			return fmt.Errorf("item %d has no envelope (purged?)", id)
		}
		// Under the item's own data key, like the envelope it replaces,
		// so that retention's crypto-shredding covers it.
		var key []byte
		err = tx.QueryRowContext(ctx, `SELECT key FROM data_keys WHERE kind = ? AND item_id = ?`, keyQueue, id).Scan(&key)
		if errors.Is(err, sql.ErrNoRows) {
			key, err = storeDataKey(ctx, tx, keyQueue, id)
		}
		if err != nil {
			return err
		}
		if err := writeChunks(key, envelope, func(seq int64, data []byte) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO queue_chunk (item_id, seq, data) VALUES (?, ?, ?)`, id, seq, data)
			return err
		}); err != nil {
			return err
		}
		now := s.now().UTC().UnixNano()
		_, err = tx.ExecContext(ctx, `UPDATE queue SET state = 'queued', size = ?, reason = ?, next_attempt = ?, updated = ? WHERE id = ?`,
			len(envelope), note, now, now, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("reseal item %d: %w", id, err)
	}
	return nil
}
