package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/pki"
	"github.com/conduit-gateway/conduit/sqlschema"
)

func TestBackoffDoublesWithJitterUpToMax(t *testing.T) {
	min, max := 10*time.Second, 80*time.Second
	for attempts, base := range map[int]time.Duration{1: 10 * time.Second, 2: 20 * time.Second, 3: 40 * time.Second, 4: 80 * time.Second, 9: 80 * time.Second} {
		for i := 0; i < 50; i++ {
			d := backoff(attempts, min, max)
			if d < base*3/4 || d > base*5/4 {
				t.Fatalf("attempt %d: %s outside %s ±25%%", attempts, d, base)
			}
		}
	}
}

// dottedEnvelope is an armored-looking envelope of several store chunks
// whose chunk boundaries fall where streaming could go wrong: a line that
// starts with a dot begins exactly at the first boundary (DATA must stuff
// it though it is the first byte of a read), and a CRLF is split by the
// second.
func dottedEnvelope() []byte {
	var b []byte
	line := func(s string) { b = append(append(b, s...), "\r\n"...) }
	endAt := func(n int) {
		for n-len(b) > 160 {
			line(strings.Repeat("A", 76))
		}
		line(strings.Repeat("B", n-len(b)-2))
	}
	line("-----BEGIN PGP MESSAGE-----")
	endAt(store.EnvelopeChunk)
	line(".a line that starts with a dot, at a chunk's first byte")
	line("..two")
	endAt(2*store.EnvelopeChunk + 1) // its CR ends chunk 1, its LF starts chunk 2
	line(".")
	for len(b) < 3*store.EnvelopeChunk+100 {
		line(strings.Repeat("C", 76))
	}
	line("-----END PGP MESSAGE-----")
	return b
}

// stageAudit stages the relay's events in the store's transaction, as the
// gateway's audit writer does, without a trail behind it.
type stageAudit struct{}

func (stageAudit) Append(context.Context, ...audit.Event)         {}
func (stageAudit) Stage(tx audit.Stager, es ...audit.Event) error { return tx.Audit(es...) }
func (stageAudit) Kick()                                          {}

// storeRelay is a relay delivering items from a real SQLite store, and
// the store's file.
func storeRelay(t *testing.T, g *Relay) (*store.SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "conduit.db")
	st, err := store.OpenSQLite(context.Background(), path)
	tcheck(t, err, "store")
	t.Cleanup(func() { st.Close() })
	g.store, g.audit = st, stageAudit{}
	g.queue = config.Queue{RetryMin: config.Duration(time.Minute), RetryMax: config.Duration(time.Hour), MaxAge: config.Duration(72 * time.Hour)}
	return st, path
}

// queued stores env as an item for hmp-northgate (to rcpts, when given)
// and claims it, as the relay's loop does: the claimed item carries no
// envelope.
func queued(t *testing.T, st *store.SQLite, pkg string, env []byte, rcpts ...string) store.Item {
	t.Helper()
	ctx := context.Background()
	it := relayItem(pkg)
	it.Envelope = env
	if len(rcpts) > 0 {
		it.Recipients = rcpts
	}
	_, err := st.Enqueue(ctx, []store.Item{it})
	tcheck(t, err, "enqueue")
	c, err := st.Claim(ctx, time.Now().Add(time.Hour), 1, time.Minute)
	tcheck(t, err, "claim")
	if len(c) != 1 || c[0].Envelope != nil {
		t.Fatalf("claimed %d items", len(c))
	}
	return c[0]
}

// peerUnderTest is a partner's server as a delivery test sees it.
type peerUnderTest struct {
	name  string
	start func(t *testing.T) (addr string, tc *tls.Config, ca *pki.CA, received func() [][]byte)
}

var streamPeers = []peerUnderTest{
	{"go-smtp, PIPELINING and CHUNKING: BDAT", func(t *testing.T) (string, *tls.Config, *pki.CA, func() [][]byte) {
		ca := newTestCA(t)
		p := startRelayPeer(t, ca)
		return p.addr, nil, ca, func() [][]byte { p.mu.Lock(); defer p.mu.Unlock(); return slices.Clone(p.raw) }
	}},
	{"neither offered: DATA, dot-stuffed", func(t *testing.T) (string, *tls.Config, *pki.CA, func() [][]byte) {
		p, tc := startScriptPeer(t)
		return p.addr, tc, newTestCA(t), func() [][]byte {
			p.mu.Lock()
			defer p.mu.Unlock()
			var out [][]byte
			for _, d := range p.data {
				out = append(out, []byte(d))
			}
			return out
		}
	}},
}

// streamSetup is a peer of the kind pt, and a relay that delivers to it
// from a real SQLite store (its file at path), with a pool closed when the
// test ends.
func streamSetup(t *testing.T, pt peerUnderTest) (g *Relay, st *store.SQLite, path string, pool *relayPool, received func() [][]byte) {
	t.Helper()
	addr, tc, ca, received := pt.start(t)
	g = testRelay(t, ca, addr)
	if tc != nil {
		g.clientTLS.RootCAs = tc.RootCAs
	}
	st, path = storeRelay(t, g)
	pool = newRelayPool(4, sessionIdle)
	t.Cleanup(pool.close)
	return g, st, path, pool, received
}

// A claimed item's envelope of several chunks is streamed from the store
// to the partner over verified TLS and arrives byte for byte, by BDAT (its
// pieces pipelined with the commands for one recipient, after the
// recipients' replies for two) or by DATA; the item is then recorded as
// sent.
func TestRelayStreamsAStoredEnvelopeByteForByte(t *testing.T) {
	env := dottedEnvelope()
	for _, pt := range streamPeers {
		for _, rcpts := range [][]string{{"intel@northgate.hmpps.example"}, {"intel@northgate.hmpps.example", "governor@northgate.hmpps.example"}} {
			t.Run(fmt.Sprintf("%s/%d recipients", pt.name, len(rcpts)), func(t *testing.T) {
				g, st, _, pool, received := streamSetup(t, pt)
				it := queued(t, st, "streamed", env, rcpts...)
				if o := g.deliverItem(context.Background(), pool, it); o != outcomeSent {
					got, _ := st.Get(context.Background(), it.ID)
					t.Fatalf("delivery outcome %v: %s", o, got.LastError)
				}
				got := received()
				if len(got) != 1 || !bytes.Equal(got[0], env) {
					t.Fatalf("the peer received %d messages; the first is not the %d bytes stored", len(got), len(env))
				}
				if after, err := st.Get(context.Background(), it.ID); err != nil || after.State != store.Sent {
					t.Fatalf("after delivery: %s, %v", after.State, err)
				}
			})
		}
	}
}

// An envelope that is not what was claimed (sealed again since: another
// size; or cut short in the store part way through) fails the attempt:
// the partner keeps nothing, and the item is not marked sent but retried.
func TestRelayFailsTheAttemptWhenTheStoredEnvelopeChanged(t *testing.T) {
	env := dottedEnvelope()
	for _, pt := range streamPeers {
		for _, tc := range []struct {
			name   string
			change func(t *testing.T, st *store.SQLite, path string, it store.Item)
		}{
			{"sealed again since the claim", func(t *testing.T, st *store.SQLite, _ string, it store.Item) {
				tcheck(t, st.ResealItem(context.Background(), it.ID, env[:len(env)-100], "sealed again"), "reseal")
			}},
			{"a chunk missing part way", func(t *testing.T, _ *store.SQLite, path string, it store.Item) {
				db, err := sqlschema.OpenDB(path, store.StorePragmas...)
				tcheck(t, err, "open")
				defer db.Close()
				_, err = db.W.Exec(`DELETE FROM queue_chunk WHERE item_id = ? AND seq = 2`, it.ID)
				tcheck(t, err, "delete chunk")
			}},
		} {
			t.Run(pt.name+"/"+tc.name, func(t *testing.T) {
				g, st, path, pool, received := streamSetup(t, pt)
				it := queued(t, st, "changed", env)
				tc.change(t, st, path, it)
				if o := g.deliverItem(context.Background(), pool, it); o != outcomeDeferred {
					t.Fatalf("delivery outcome %v, want deferred", o)
				}
				if got := received(); len(got) != 0 {
					t.Fatalf("the peer kept %d messages, want none", len(got))
				}
				l, err := st.List(context.Background(), store.Filter{PackageID: "changed"})
				tcheck(t, err, "list")
				if len(l) != 1 || l[0].State != store.Queued || !strings.Contains(l[0].LastError, "changed") {
					t.Fatalf("after the attempt: %+v", l)
				}
			})
		}
	}
}

// lookingKeys is a key ring whose last look before a send opened the
// envelope from the store and read its start, as the key ring does to
// read the key ids: it hands that reader on, from the start.
type lookingKeys struct {
	noKeys
	st     *store.SQLite
	closed atomic.Int32
}

func (k *lookingKeys) CheckSealedTo(ctx context.Context, it store.Item) (store.Item, io.ReadCloser, bool) {
	rc, err := k.st.OpenEnvelope(ctx, it.ID, it.Size)
	if err != nil {
		return it, nil, false
	}
	head := make([]byte, 1000)
	n, _ := io.ReadFull(rc, head)
	return it, struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head[:n]), rc), closeCounter{rc, &k.closed}}, true
}

type closeCounter struct {
	c io.Closer
	n *atomic.Int32
}

func (c closeCounter) Close() error { c.n.Add(1); return c.c.Close() }

// countingQueue counts the envelopes the relay opens from the store.
type countingQueue struct {
	Queue
	opened atomic.Int32
}

func (q *countingQueue) OpenEnvelope(ctx context.Context, id, size int64) (io.ReadCloser, error) {
	q.opened.Add(1)
	return q.Queue.OpenEnvelope(ctx, id, size)
}

// The envelope the key ring opened for its look is the one sent, from its
// start: the store is not read a second time, the partner gets every
// byte, and the reader is closed.
func TestRelaySendsTheEnvelopeTheKeyRingOpened(t *testing.T) {
	env := dottedEnvelope()
	for _, pt := range streamPeers {
		t.Run(pt.name, func(t *testing.T) {
			g, st, _, pool, received := streamSetup(t, pt)
			keys := &lookingKeys{st: st}
			q := &countingQueue{Queue: st}
			g.keys, g.store = keys, q
			it := queued(t, st, "looked-at", env)
			if o := g.deliverItem(context.Background(), pool, it); o != outcomeSent {
				got, _ := st.Get(context.Background(), it.ID)
				t.Fatalf("delivery outcome %v: %s", o, got.LastError)
			}
			if got := received(); len(got) != 1 || !bytes.Equal(got[0], env) {
				t.Fatalf("the peer received %d messages; the first is not the %d bytes stored", len(got), len(env))
			}
			if n := q.opened.Load(); n != 0 {
				t.Errorf("the relay opened the envelope from the store %d times after the key ring's look", n)
			}
			if n := keys.closed.Load(); n != 1 {
				t.Errorf("the key ring's reader was closed %d times, want once", n)
			}
		})
	}
}

// failingClaims is the store with claims that fail (another process
// holds the SQLite store's claimer lock), counting them.
type failingClaims struct {
	*store.SQLite
	calls atomic.Int64
}

func (f *failingClaims) Claim(context.Context, time.Time, int, time.Duration) ([]store.Item, error) {
	f.calls.Add(1)
	return nil, store.ErrClaimedElsewhere
}

// A claim that fails while work is due is not retried in a loop: the
// queue says work is due now, and the relay waits a second before it asks
// again (a loop logged the error thousands of times a second).
func TestRunWaitsAfterAFailedClaim(t *testing.T) {
	g := testRelay(t, newTestCA(t), "127.0.0.1:1")
	st, _ := storeRelay(t, g)
	_, err := st.Enqueue(context.Background(), []store.Item{relayItem("cdt-due")})
	tcheck(t, err, "enqueue")
	fc := &failingClaims{SQLite: st}
	g.store = fc
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	g.Run(ctx)
	if n := fc.calls.Load(); n < 2 || n > 4 {
		t.Fatalf("%d claims in 2.5 s with work due and every claim failing; want one a second", n)
	}
}
