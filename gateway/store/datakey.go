package store

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
)

// Crypto-shredding (retention rule; MoU Annex A, Description of method of
// sharing: "destroy it or dispose of it in a secure manner"). Every stored
// copy, a queued envelope or a quarantined message, is encrypted at rest
// under a data key of its own, kept in the data_keys table. Destroying the
// copy destroys its key first, in the same transaction as the copy: the
// row is deleted with secure_delete on (its bytes overwritten in the page)
// and the WAL is checkpointed and truncated afterwards, so that neither
// the database file nor its WAL keeps the key. Whatever ciphertext might
// survive elsewhere (a freed page not yet reused, a backup taken before
// the purge of the key's page) cannot be read without it.
//
// The data key is AES-256-GCM with a random 96-bit nonce. A quarantined
// message is sealed whole (QItem.Raw is held whole); a queued envelope is
// sealed a chunk at a time, each chunk with a nonce of its own (chunk.go),
// so that it can be read a chunk at a time.

// Kinds of stored copy, with the item id the key of their data_keys row.
const (
	keyQueue      = "queue"
	keyQuarantine = "quarantine"
)

// atRestMagic starts every copy encrypted under a data key. A copy without
// it was stored before data keys existed (schema version 3) and is read as
// it is.
var atRestMagic = []byte("CDK1")

// ErrShredded: the copy's data key has been destroyed (retention); its
// bytes can no longer be read.
var ErrShredded = errors.New("the stored copy was crypto-shredded")

// newDataKey returns a fresh random AES-256 key.
func newDataKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	return k, nil
}

func gcmOf(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// sealAtRest encrypts a copy of the given kind under key. The kind is
// bound as additional data, so a queued envelope's ciphertext cannot be
// passed off as a quarantined message's.
func sealAtRest(key []byte, kind string, plain []byte) ([]byte, error) {
	a, err := gcmOf(key)
	if err != nil {
		return nil, fmt.Errorf("seal at rest: %w", err)
	}
	out := make([]byte, 0, len(atRestMagic)+a.NonceSize()+len(plain)+a.Overhead())
	out = append(out, atRestMagic...)
	nonce := make([]byte, a.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal at rest: %w", err)
	}
	out = append(out, nonce...)
	return a.Seal(out, nonce, plain, []byte(kind)), nil
}

// openAtRest decrypts what sealAtRest wrote. A copy stored before data keys
// existed is returned as it is; a sealed copy whose key is gone is
// ErrShredded.
func openAtRest(key []byte, kind string, data []byte) ([]byte, error) {
	if data == nil || !bytes.HasPrefix(data, atRestMagic) {
		return data, nil
	}
	if key == nil {
		return nil, ErrShredded
	}
	a, err := gcmOf(key)
	if err != nil {
		return nil, fmt.Errorf("open at rest: %w", err)
	}
	body := data[len(atRestMagic):]
	if len(body) < a.NonceSize() {
		return nil, errors.New("open at rest: the stored copy is cut short")
	}
	plain, err := a.Open(nil, body[:a.NonceSize()], body[a.NonceSize():], []byte(kind))
	if err != nil {
		return nil, fmt.Errorf("open at rest: the stored copy does not match its key: %w", err)
	}
	return plain, nil
}

// storeAtRest makes a data key for a new copy, records it in tx, and
// returns the copy encrypted under it.
func storeAtRest(ctx context.Context, tx *sql.Tx, kind string, id int64, plain []byte) ([]byte, error) {
	key, err := storeDataKey(ctx, tx, kind, id)
	if err != nil {
		return nil, err
	}
	return sealAtRest(key, kind, plain)
}

// storeDataKey makes a data key for a new copy and records it in tx.
func storeDataKey(ctx context.Context, tx *sql.Tx, kind string, id int64) ([]byte, error) {
	key, err := newDataKey()
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO data_keys (kind, item_id, key) VALUES (?, ?, ?)`, kind, id, key); err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	return key, nil
}

// DataKeyCount says how many data keys are stored, of both kinds: the
// copies that can still be read. For tests and `conduit purge`.
func (s *SQLite) DataKeyCount(ctx context.Context) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM data_keys`).Scan(&n)
	return n, err
}

// checkpoint copies the WAL into the database file and truncates it, so
// that a destroyed key or copy does not linger in the WAL. Best effort: a
// reader in another process can hold the WAL, and the next checkpoint
// completes the job.
func (s *SQLite) checkpoint(ctx context.Context) error {
	var busy, logFrames, done int
	if err := s.w.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logFrames, &done); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if busy != 0 {
		return errors.New("checkpoint: the WAL is in use by a reader; it is truncated at the next checkpoint")
	}
	return nil
}
