package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
)

// onDisk reads the database file and its WAL as they are on disk.
func onDisk(t *testing.T, path string) []byte {
	t.Helper()
	var all []byte
	for _, f := range []string{path, path + "-wal"} {
		b, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

// TestStoredCopiesAreCryptoShredded: a queued envelope and a quarantined
// message are each stored under a data key of their own (never as they
// came), and purging one destroys its key and its bytes: afterwards
// neither the key, nor the ciphertext, nor the copy is anywhere in the
// database file or its WAL (retention rule; MoU Annex A, Description of
// method of sharing: destroy "in a secure manner").
func TestStoredCopiesAreCryptoShredded(t *testing.T) {
	// Larger than a page, so that the copy spills into overflow pages,
	// which the purge must free and zero as well.
	canary := bytes.Repeat([]byte("CANARY-COPY-7f3a9c: the bytes of a stored copy. "), 600)
	for _, tc := range []struct {
		name  string
		kind  string
		store func(t *testing.T, s *SQLite) int64
		read  func(s *SQLite, id int64) ([]byte, error)
		purge func(t *testing.T, s *SQLite, id int64)
	}{
		{
			name: "queued envelope", kind: keyQueue,
			store: func(t *testing.T, s *SQLite) int64 {
				it := item("cdt-shred", "ccu-north")
				it.Envelope = canary
				ids, err := s.Enqueue(context.Background(), []Item{it})
				tcheck(t, err, "enqueue")
				return ids[0]
			},
			read: func(s *SQLite, id int64) ([]byte, error) {
				it, err := s.Get(context.Background(), id)
				return it.Envelope, err
			},
			purge: func(t *testing.T, s *SQLite, id int64) {
				ctx := context.Background()
				tcheck(t, s.MarkSent(ctx, id, "250 ok"), "sent")
				n, err := s.ShredEnvelopes(ctx, "cdt-shred")
				tcheck(t, err, "shred")
				if n != 1 {
					t.Fatalf("shredded %d envelopes, want 1", n)
				}
			},
		},
		{
			name: "quarantined message", kind: keyQuarantine,
			store: func(t *testing.T, s *SQLite) int64 {
				id, err := s.Quarantine(context.Background(), QItem{Check: "tampered", Reason: "MDC", Raw: canary})
				tcheck(t, err, "quarantine")
				return id
			},
			read: func(s *SQLite, id int64) ([]byte, error) {
				q, err := s.GetQuarantine(context.Background(), id)
				return q.Raw, err
			},
			purge: func(t *testing.T, s *SQLite, id int64) {
				tcheck(t, s.SetQuarantineState(context.Background(), id, Purged, "retention"), "purge")
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s, path := openTest(t)
			id := tc.store(t, s)
			got, err := tc.read(s, id)
			tcheck(t, err, "read")
			if !bytes.Equal(got, canary) {
				t.Fatalf("read back %q", got)
			}
			var key, sealed []byte
			tcheck(t, s.r.QueryRowContext(ctx, `SELECT key FROM data_keys WHERE kind = ? AND item_id = ?`, tc.kind, id).Scan(&key), "key")
			magic, header := atRestMagic, len(atRestMagic)
			if tc.kind == keyQueue {
				tcheck(t, s.r.QueryRowContext(ctx, `SELECT data FROM queue_chunk WHERE item_id = ? AND seq = 0`, id).Scan(&sealed), "data")
				magic, header = chunkMagic, chunkHeader
			} else {
				tcheck(t, s.r.QueryRowContext(ctx, `SELECT raw FROM quarantine WHERE id = ?`, id).Scan(&sealed), "raw")
			}
			if len(key) != 32 || !bytes.HasPrefix(sealed, magic) {
				t.Fatalf("not encrypted at rest: key %d bytes, stored %q", len(key), sealed[:min(8, len(sealed))])
			}
			if bytes.Contains(onDisk(t, path), canary[:64]) {
				t.Fatal("the copy is on disk as it came, not encrypted under its data key")
			}

			tc.purge(t, s, id)
			if got, err := tc.read(s, id); err != nil || len(got) != 0 {
				t.Errorf("after the purge the copy reads %q, %v", got, err)
			}
			if n, err := s.DataKeyCount(ctx); err != nil || n != 0 {
				t.Errorf("%d data keys left, %v", n, err)
			}
			disk := onDisk(t, path)
			for what, b := range map[string][]byte{"the data key": key, "the ciphertext": sealed[header : header+48], "its tail": sealed[len(sealed)-48:], "the copy": canary[:64]} {
				if bytes.Contains(disk, b) {
					t.Errorf("%s is still in the database file or its WAL", what)
				}
			}
		})
	}
}

// TestShreddedCopyCannotBeOpened: ciphertext that survived its key is
// ErrShredded, and a copy stored before data keys existed is read as it is.
func TestShreddedCopyCannotBeOpened(t *testing.T) {
	key, err := newDataKey()
	tcheck(t, err, "key")
	sealed, err := sealAtRest(key, keyQueue, []byte("envelope"))
	tcheck(t, err, "seal")
	for _, tc := range []struct {
		name    string
		key     []byte
		kind    string
		data    []byte
		want    string
		wantErr error
	}{
		{name: "its key opens it", key: key, kind: keyQueue, data: sealed, want: "envelope"},
		{name: "without its key", kind: keyQueue, data: sealed, wantErr: ErrShredded},
		{name: "as another kind", key: key, kind: keyQuarantine, data: sealed, wantErr: errAny},
		{name: "stored before data keys", kind: keyQueue, data: []byte("From: legacy"), want: "From: legacy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := openAtRest(tc.key, tc.kind, tc.data)
			switch {
			case tc.wantErr == errAny && err == nil, tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			case tc.wantErr == nil && (err != nil || string(got) != tc.want):
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

var errAny = errors.New("any error")
