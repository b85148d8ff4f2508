package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/conduit-gateway/conduit/pgtest"
	"github.com/conduit-gateway/conduit/sqlschema"
)

// randomEnvelope is n random bytes: ciphertext-like, each chunk unlike
// the others, so a chunk out of place cannot compare equal.
func randomEnvelope(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// readEnvelope streams a claimed item's envelope from the store.
func readEnvelope(t testing.TB, s Store, it Item) []byte {
	t.Helper()
	rc, err := s.OpenEnvelope(context.Background(), it.ID, it.Size)
	tcheck(t, err, "open envelope")
	defer rc.Close()
	b, err := io.ReadAll(rc)
	tcheck(t, err, "read envelope")
	return b
}

// memChunks is a chunkSource in memory, for the chunk format's own tests.
type memChunks struct {
	size   int64
	key    []byte
	chunks map[int64][]byte
	legacy []byte
}

func (m *memChunks) envelopeMeta(context.Context, int64) (int64, []byte, error) {
	return m.size, m.key, nil
}

func (m *memChunks) readChunk(_ context.Context, _, seq int64, use func([]byte) error) (bool, error) {
	c, ok := m.chunks[seq]
	if !ok {
		return false, nil
	}
	return true, use(c)
}

func (m *memChunks) legacyEnvelope(context.Context, int64) ([]byte, bool, error) {
	return m.legacy, m.legacy != nil, nil
}

// store writes env as chunks, as Enqueue does.
func (m *memChunks) store(t *testing.T, env []byte) {
	t.Helper()
	m.chunks, m.size = map[int64][]byte{}, int64(len(env))
	tcheck(t, writeChunks(m.key, env, func(seq int64, data []byte) error {
		m.chunks[seq] = bytes.Clone(data)
		return nil
	}), "write chunks")
}

func newMemChunks(t *testing.T) *memChunks {
	key, err := newDataKey()
	tcheck(t, err, "key")
	return &memChunks{key: key}
}

// Every size round-trips through the chunks, and is stored as as many
// chunks as it needs (an empty envelope as one empty chunk).
func TestChunksRoundTripAtTheBoundaries(t *testing.T) {
	for _, tc := range []struct {
		size, chunks int
	}{
		{0, 1}, {1, 1}, {EnvelopeChunk - 1, 1}, {EnvelopeChunk, 1}, {EnvelopeChunk + 1, 2}, {3*EnvelopeChunk + 17, 4},
	} {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) {
			m := newMemChunks(t)
			env := randomEnvelope(tc.size)
			m.store(t, env)
			if len(m.chunks) != tc.chunks {
				t.Fatalf("%d chunks, want %d", len(m.chunks), tc.chunks)
			}
			got, err := getWhole(context.Background(), m, 1, int64(tc.size))
			tcheck(t, err, "read")
			if !bytes.Equal(got, env) {
				t.Fatalf("read back %d bytes, not the %d stored", len(got), tc.size)
			}
		})
	}
}

// A reader never gives a mix or a part: chunks of another write, out of
// place, missing, a size that is not the envelope's, a destroyed key, all
// fail with ErrEnvelopeChanged (or ErrShredded) before or as the bad chunk
// is reached, never after its bytes were given out.
func TestChunkReaderFailsRatherThanMix(t *testing.T) {
	env := randomEnvelope(3*EnvelopeChunk + 100)
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, m *memChunks)
		size   int64 // expected by the reader (0: the stored size)
		want   error
		good   int64 // bytes that may be read before the failure
	}{
		{"size not the stored one", func(*testing.T, *memChunks) {}, int64(len(env)) + 1, ErrEnvelopeChanged, 0},
		{"a chunk of another write", func(t *testing.T, m *memChunks) {
			other := newMemChunks(t)
			other.key = m.key
			other.store(t, randomEnvelope(len(env)))
			m.chunks[2] = other.chunks[2]
		}, 0, ErrEnvelopeChanged, 2 * EnvelopeChunk},
		{"two chunks swapped", func(_ *testing.T, m *memChunks) {
			m.chunks[1], m.chunks[2] = m.chunks[2], m.chunks[1]
		}, 0, ErrEnvelopeChanged, EnvelopeChunk},
		{"a chunk missing", func(_ *testing.T, m *memChunks) { delete(m.chunks, 2) }, 0, ErrEnvelopeChanged, 2 * EnvelopeChunk},
		{"cut after a chunk that is not the last", func(_ *testing.T, m *memChunks) {
			delete(m.chunks, 3)
			m.size = 3 * EnvelopeChunk
		}, 0, ErrEnvelopeChanged, 3 * EnvelopeChunk},
		{"a chunk's byte flipped", func(_ *testing.T, m *memChunks) { m.chunks[1][len(m.chunks[1])-1] ^= 1 }, 0, ErrEnvelopeChanged, EnvelopeChunk},
		{"the data key destroyed", func(_ *testing.T, m *memChunks) { m.key = nil }, 0, ErrShredded, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMemChunks(t)
			m.store(t, env)
			tc.change(t, m)
			size := tc.size
			if size == 0 {
				size = m.size
			}
			var got []byte
			rc, err := openEnvelope(context.Background(), m, 1, size)
			if err == nil {
				got, err = io.ReadAll(rc)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("read: %v, want %v", err, tc.want)
			}
			if int64(len(got)) > tc.good || !bytes.Equal(got, env[:len(got)]) {
				t.Fatalf("%d bytes given before the failure, at most %d of the envelope's allowed", len(got), tc.good)
			}
		})
	}
}

// A reader holds one chunk, not the envelope: the heap while a 16 MiB
// envelope streams grows by a few chunks at most. Streamed from SQLite,
// the driver's copy of each row is garbage once decrypted.
func TestStreamingHoldsAChunkNotTheEnvelope(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	it := item("big", "hmp-northgate")
	it.Envelope = randomEnvelope(16 << 20)
	id, err := s.Enqueue(ctx, []Item{it})
	tcheck(t, err, "enqueue")
	size := int64(len(it.Envelope))
	it.Envelope = nil
	live := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := live()
	rc, err := s.OpenEnvelope(ctx, id[0], size)
	tcheck(t, err, "open")
	defer rc.Close()
	buf := make([]byte, 32<<10)
	var read int64
	var peak uint64
	for {
		n, err := rc.Read(buf)
		read += int64(n)
		if read%(4<<20) < int64(n) {
			peak = max(peak, live())
		}
		if err == io.EOF {
			break
		}
		tcheck(t, err, "read")
	}
	if read != size {
		t.Fatalf("read %d bytes, want %d", read, size)
	}
	grown := int64(peak) - int64(before)
	if grown > 4*EnvelopeChunk+(1<<20) {
		t.Fatalf("the live heap grew by %d KiB while a %d MiB envelope streamed", grown>>10, size>>20)
	}
	t.Logf("the live heap grew by %d KiB at most while a %d MiB envelope streamed", grown>>10, size>>20)
}

// chunkRows counts an item's stored chunks (all items' when id is 0).
func chunkRows(t *testing.T, s Store, id int64) int {
	t.Helper()
	ctx := context.Background()
	var n int
	var err error
	switch s := s.(type) {
	case *SQLite:
		err = s.r.QueryRowContext(ctx, `SELECT count(*) FROM queue_chunk WHERE item_id = ? OR ? = 0`, id, id).Scan(&n)
	case *Postgres:
		err = s.pool.QueryRow(ctx, `SELECT count(*) FROM queue_chunk WHERE item_id = $1 OR $1 = 0`, id).Scan(&n)
	default:
		t.Fatalf("no chunk count for %T", s)
	}
	tcheck(t, err, "count chunks")
	return n
}

// execSQL runs a statement written with $N placeholders on either backend.
func execSQL(t *testing.T, s Store, q string, args ...any) {
	t.Helper()
	ctx := context.Background()
	var err error
	switch s := s.(type) {
	case *SQLite:
		_, err = s.w.ExecContext(ctx, sqliteParams(q), args...)
	case *Postgres:
		_, err = s.pool.Exec(ctx, q, args...)
	}
	tcheck(t, err, q)
}

var chunkSuite = []struct {
	name string
	run  func(t *testing.T, open func() Store)
}{
	{"EnvelopesRoundTripThroughChunks", func(t *testing.T, open func() Store) {
		s := open()
		ctx := context.Background()
		sizes := []int{1, EnvelopeChunk - 1, EnvelopeChunk, EnvelopeChunk + 1, 3*EnvelopeChunk + 17}
		var items []Item
		for _, n := range sizes {
			it := item(fmt.Sprintf("p%d", n), "ccu")
			it.Envelope = randomEnvelope(n)
			items = append(items, it)
		}
		enqueue(t, s, items...)
		claimed, err := s.Claim(ctx, time.Now().Add(time.Hour), len(sizes), time.Minute)
		tcheck(t, err, "claim")
		if len(claimed) != len(sizes) {
			t.Fatalf("claimed %d items, want %d", len(claimed), len(sizes))
		}
		for _, c := range claimed {
			var want []byte
			for _, it := range items {
				if it.PackageID == c.PackageID {
					want = it.Envelope
				}
			}
			if got := readEnvelope(t, s, c); !bytes.Equal(got, want) {
				t.Errorf("%s: streamed %d bytes, not the %d stored", c.PackageID, len(got), len(want))
			}
			if chunks := chunkRows(t, s, c.ID); chunks != (len(want)+EnvelopeChunk-1)/EnvelopeChunk {
				t.Errorf("%s: %d chunks for %d bytes", c.PackageID, chunks, len(want))
			}
			got, err := s.Get(ctx, c.ID)
			tcheck(t, err, "get")
			if !bytes.Equal(got.Envelope, want) {
				t.Errorf("%s: Get read %d bytes, not the %d stored", c.PackageID, len(got.Envelope), len(want))
			}
		}
	}},
	{"ShreddingRemovesEveryChunk", func(t *testing.T, open func() Store) {
		s := open()
		ctx := context.Background()
		mk := func(pkg, dest string) Item {
			it := item(pkg, dest)
			it.Envelope = randomEnvelope(2*EnvelopeChunk + 5)
			return it
		}
		id := enqueue(t, s, mk("p1", "ccu"), mk("p1", "hmpps"), mk("p1", "pas"), mk("p2", "ccu"))
		update(t, s, func(tx Tx) error { return tx.Drop(id[0], "sent by another route") })
		update(t, s, func(tx Tx) error { return tx.MarkSent(id[1], "Q1") })
		// Dropped, an item keeps its envelope (conduit queue show --raw)
		// until retention destroys it with the package's others.
		if n := chunkRows(t, s, id[0]); n != 3 {
			t.Fatalf("the dropped item has %d chunks before retention, want its 3", n)
		}
		var n int
		update(t, s, func(tx Tx) error { var err error; n, err = tx.ShredEnvelopes("p1"); return err })
		if n != 2 {
			t.Fatalf("shredded %d envelopes, want the dropped and the sent one", n)
		}
		for i, want := range []int{0, 0, 3, 3} {
			if got := chunkRows(t, s, id[i]); got != want {
				t.Errorf("item %d: %d chunks after the shred, want %d", i, got, want)
			}
		}
		for _, i := range []int{0, 1} {
			got, err := s.Get(ctx, id[i])
			tcheck(t, err, "get")
			if got.Envelope != nil {
				t.Errorf("item %d: a shredded envelope reads %d bytes", i, len(got.Envelope))
			}
			if _, err := s.OpenEnvelope(ctx, id[i], got.Size); !errors.Is(err, ErrNoEnvelope) {
				t.Errorf("item %d: opening a shredded envelope: %v", i, err)
			}
		}
		// A row deleted takes its chunks with it (the foreign key).
		execSQL(t, s, `DELETE FROM queue WHERE id = $1`, id[3])
		if got := chunkRows(t, s, id[3]); got != 0 {
			t.Errorf("%d chunks left of a deleted item", got)
		}
	}},
	{"ResealReplacesTheChunks", func(t *testing.T, open func() Store) {
		s := open()
		it := item("p1", "ccu")
		it.Envelope = randomEnvelope(3 * EnvelopeChunk)
		id := enqueue(t, s, it)[0]
		update(t, s, func(tx Tx) error { return tx.HoldItem(id, "partner-key: expired") })
		env := randomEnvelope(EnvelopeChunk + 1)
		update(t, s, func(tx Tx) error { return tx.ResealItem(id, env, "sealed again") })
		if n := chunkRows(t, s, id); n != 2 {
			t.Fatalf("%d chunks after the reseal, want the new envelope's 2", n)
		}
		got, err := s.Get(context.Background(), id)
		tcheck(t, err, "get")
		if !bytes.Equal(got.Envelope, env) || got.Size != int64(len(env)) {
			t.Fatalf("resealed item reads %d bytes, size %d", len(got.Envelope), got.Size)
		}
		// A reader opened on the claim's size fails once the envelope is
		// another: the relay sends nothing.
		if _, err := s.OpenEnvelope(context.Background(), id, int64(len(it.Envelope))); !errors.Is(err, ErrEnvelopeChanged) {
			t.Fatalf("opened with the old size: %v, want ErrEnvelopeChanged", err)
		}
	}},
	{"ChunksOfTwoWritesDoNotMix", func(t *testing.T, open func() Store) {
		s := open()
		ctx := context.Background()
		it := item("p1", "ccu")
		it.Envelope = randomEnvelope(3 * EnvelopeChunk)
		id := enqueue(t, s, it)[0]
		// Keep chunk 1 of the first write; seal the item again to an
		// envelope of the same size; put the old chunk 1 back in place.
		old := map[int64][]byte{}
		var err error
		switch st := s.(type) {
		case *SQLite:
			_, err = sqliteChunks{st}.readChunk(ctx, id, 1, func(b []byte) error { old[1] = bytes.Clone(b); return nil })
		case *Postgres:
			_, err = pgChunks{st}.readChunk(ctx, id, 1, func(b []byte) error { old[1] = bytes.Clone(b); return nil })
		}
		tcheck(t, err, "read chunk 1")
		update(t, s, func(tx Tx) error { return tx.ResealItem(id, randomEnvelope(len(it.Envelope)), "sealed again") })
		execSQL(t, s, `UPDATE queue_chunk SET data = $1 WHERE item_id = $2 AND seq = 1`, old[1], id)
		rc, err := s.OpenEnvelope(ctx, id, int64(len(it.Envelope)))
		tcheck(t, err, "open")
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if !errors.Is(err, ErrEnvelopeChanged) || len(got) > EnvelopeChunk {
			t.Fatalf("read %d bytes, %v; want chunk 0 at most, then ErrEnvelopeChanged", len(got), err)
		}
	}},
}

func TestChunkedEnvelopes(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			for _, tc := range chunkSuite {
				t.Run(tc.name, func(t *testing.T) { tc.run(t, b.open(t)) })
			}
		})
	}
}

// legacyBackends make a database at schema version 6, before chunks, with
// a queue row holding an envelope whole, and return a function that opens
// it with the current store (which migrates it).
var legacyBackends = []struct {
	name string
	make func(t *testing.T, rows func(exec func(q string, args ...any) error) error) func() Store
}{
	{"sqlite", func(t *testing.T, rows func(exec func(q string, args ...any) error) error) func() Store {
		ctx := context.Background()
		path := filepath.Join(t.TempDir(), "conduit.db")
		db, err := sqlschema.OpenDB(path, StorePragmas...)
		tcheck(t, err, "open db")
		tcheck(t, sqlschema.Migrate(ctx, db.W, "schema_version", "the store", migrations[:6]), "migrate to 6")
		tcheck(t, rows(func(q string, args ...any) error {
			_, err := db.W.ExecContext(ctx, sqliteParams(q), args...)
			return err
		}), "old rows")
		tcheck(t, db.Close(), "close")
		return func() Store {
			s, err := OpenSQLite(ctx, path)
			tcheck(t, err, "open store")
			t.Cleanup(func() { s.Close() })
			return s
		}
	}},
	{"postgres", func(t *testing.T, rows func(exec func(q string, args ...any) error) error) func() Store {
		ctx := context.Background()
		dsn := pgtest.NewDB(t, sharedPG(t))
		pool, err := pgxpool.New(ctx, dsn)
		tcheck(t, err, "pool")
		db := stdlib.OpenDBFromPool(pool)
		tcheck(t, sqlschema.Migrate(ctx, db, "schema_version", "the store", pgMigrations[:6]), "migrate to 6")
		tcheck(t, rows(func(q string, args ...any) error { _, err := pool.Exec(ctx, q, args...); return err }), "old rows")
		db.Close()
		pool.Close()
		return func() Store {
			s, err := OpenPostgres(ctx, dsn)
			tcheck(t, err, "open store")
			t.Cleanup(func() { s.Close() })
			return s
		}
	}},
}

// sqliteParams turns $N placeholders (N < 10) into SQLite's ?N.
func sqliteParams(q string) string {
	return strings.ReplaceAll(q, "$", "?")
}

// Envelopes stored whole before chunks (schema version 6) are read after
// the migration as they were: sealed under a data key, or from before data
// keys; a reseal stores the new one in chunks, and retention destroys them.
func TestEnvelopesStoredWholeBeforeChunksStillWork(t *testing.T) {
	sealedEnv, plainEnv := randomEnvelope(EnvelopeChunk+9), []byte("-----BEGIN PGP MESSAGE-----\nfrom before data keys\n")
	key, err := newDataKey()
	tcheck(t, err, "key")
	sealed, err := sealAtRest(key, keyQueue, sealedEnv)
	tcheck(t, err, "seal")
	for _, b := range legacyBackends {
		t.Run(b.name, func(t *testing.T) {
			open := b.make(t, func(exec func(q string, args ...any) error) error {
				for i, env := range [][]byte{sealedEnv, plainEnv} {
					if err := exec(`INSERT INTO queue (id, package_id, destination, recipients, mail_from, submitter, priority, marking, size,
						state, next_attempt, created, updated) VALUES ($1, $2, 'ccu', '["pio@ccu.example"]', 'gw@met', '', 0, 'OFFICIAL', $3, 'queued', 1, 1, 1)`,
						i+1, fmt.Sprintf("old-%d", i), len(env)); err != nil {
						return err
					}
				}
				if err := exec(`INSERT INTO data_keys (kind, item_id, key) VALUES ('queue', 1, $1)`, key); err != nil {
					return err
				}
				if err := exec(`INSERT INTO queue_envelope (item_id, data) VALUES (1, $1)`, sealed); err != nil {
					return err
				}
				return exec(`INSERT INTO queue_envelope (item_id, data) VALUES (2, $1)`, plainEnv)
			})
			s := open()
			ctx := context.Background()
			var v int
			switch st := s.(type) {
			case *SQLite:
				v, err = st.SchemaVersion(ctx)
			case *Postgres:
				v, err = st.SchemaVersion(ctx)
			}
			tcheck(t, err, "schema version")
			if v != len(migrations) || len(migrations) != len(pgMigrations) {
				t.Fatalf("schema version %d after the migration, want %d", v, len(migrations))
			}
			claimed, err := s.Claim(ctx, time.Now(), 10, time.Minute)
			tcheck(t, err, "claim")
			if len(claimed) != 2 {
				t.Fatalf("claimed %d old items, want 2", len(claimed))
			}
			for _, c := range claimed {
				want := map[int64][]byte{1: sealedEnv, 2: plainEnv}[c.ID]
				if got := readEnvelope(t, s, c); !bytes.Equal(got, want) {
					t.Fatalf("old item %d streams %d bytes, not its %d", c.ID, len(got), len(want))
				}
				if got, err := s.Get(ctx, c.ID); err != nil || !bytes.Equal(got.Envelope, want) {
					t.Fatalf("old item %d: Get %d bytes, %v", c.ID, len(got.Envelope), err)
				}
				if _, err := s.OpenEnvelope(ctx, c.ID, c.Size+1); !errors.Is(err, ErrEnvelopeChanged) {
					t.Fatalf("old item %d opened with another size: %v", c.ID, err)
				}
			}
			// Sealed again: chunked, and the whole row gone.
			env := randomEnvelope(2*EnvelopeChunk + 1)
			update(t, s, func(tx Tx) error { return tx.ResealItem(1, env, "sealed again") })
			if got, err := s.Get(ctx, 1); err != nil || !bytes.Equal(got.Envelope, env) || chunkRows(t, s, 1) != 3 {
				t.Fatalf("resealed old item: %d bytes, %v, %d chunks", len(got.Envelope), err, chunkRows(t, s, 1))
			}
			// Retention destroys the one still stored whole.
			update(t, s, func(tx Tx) error { return tx.MarkSent(2, "Q") })
			var n int
			update(t, s, func(tx Tx) error { var err error; n, err = tx.ShredEnvelopes("old-1"); return err })
			if got, err := s.Get(ctx, 2); n != 1 || err != nil || got.Envelope != nil {
				t.Fatalf("shredded %d; the old envelope then reads %d bytes, %v", n, len(got.Envelope), err)
			}
		})
	}
}

// BenchmarkEnqueueClaimStream10MiB queues a 10 MiB envelope, claims it,
// streams it to io.Discard as the relay does, and marks it sent, on
// SQLite. The allocated bytes per operation are about the envelope once:
// each chunk's row as the driver returns it, garbage once decrypted, never
// all live at once (TestStreamingHoldsAChunkNotTheEnvelope). The claim
// that loaded envelopes allocated their ciphertext and their decryption,
// and held both.
func BenchmarkEnqueueClaimStream10MiB(b *testing.B) {
	env := randomEnvelope(10 << 20)
	s, _ := openTest(b)
	ctx := context.Background()
	b.SetBytes(int64(len(env)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		it := item(fmt.Sprintf("p%d", i), "ccu")
		i++
		it.Envelope = env
		if _, err := s.Enqueue(ctx, []Item{it}); err != nil {
			b.Fatal(err)
		}
		c, err := s.Claim(ctx, time.Now().Add(time.Hour), 1, time.Minute)
		if err != nil || len(c) != 1 {
			b.Fatal(len(c), err)
		}
		rc, err := s.OpenEnvelope(ctx, c[0].ID, c[0].Size)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, rc); err != nil || n != int64(len(env)) {
			b.Fatal(n, err)
		}
		rc.Close()
		if err := s.MarkSent(ctx, c[0].ID, "Q"); err != nil {
			b.Fatal(err)
		}
	}
}
