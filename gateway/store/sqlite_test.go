package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func tcheck(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func openTest(t testing.TB) (*SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "conduit.db")
	s, err := OpenSQLite(context.Background(), path)
	tcheck(t, err, "open")
	t.Cleanup(func() { s.Close() })
	return s, path
}

func item(pkg, dest string) Item {
	return Item{
		PackageID:   pkg,
		Destination: dest,
		Recipients:  []string{"pio@" + dest + ".example"},
		MailFrom:    "conduit@met.example",
		Submitter:   "analyst@met.example",
		Marking:     "OFFICIAL-SENSITIVE",
		Envelope:    []byte("-----BEGIN PGP MESSAGE-----\n" + pkg + "\n-----END PGP MESSAGE-----\n"),
	}
}

func ids(items []Item) []int64 {
	var out []int64
	for _, it := range items {
		out = append(out, it.ID)
	}
	return out
}

func TestOpenSetsWALFullSyncAndPrivateFile(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	var mode string
	var sync, fk int
	tcheck(t, s.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode), "journal_mode")
	tcheck(t, s.w.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync), "synchronous")
	tcheck(t, s.w.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk), "foreign_keys")
	if mode != "wal" || sync != 2 || fk != 1 {
		t.Fatalf("journal_mode %q synchronous %d foreign_keys %d; want wal, 2 (FULL), 1", mode, sync, fk)
	}
	st, err := os.Stat(path)
	tcheck(t, err, "stat")
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("database file mode %v, want 0600", st.Mode().Perm())
	}
	v, err := s.SchemaVersion(ctx)
	tcheck(t, err, "schema version")
	if v != len(migrations) {
		t.Fatalf("schema version %d, want %d", v, len(migrations))
	}
}

func TestOpenRefusesANewerSchema(t *testing.T) {
	s, path := openTest(t)
	_, err := s.w.Exec(`UPDATE schema_version SET version = ?`, len(migrations)+1)
	tcheck(t, err, "bump version")
	s.Close()
	_, err = OpenSQLite(context.Background(), path)
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("open of a newer schema: %v, want a refusal", err)
	}
}

func TestReopenKeepsSchemaAndData(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	_, err := s.Enqueue(ctx, []Item{item("p1", "hmp-northgate")})
	tcheck(t, err, "enqueue")
	s.Close()
	s2, err := OpenSQLite(ctx, path)
	tcheck(t, err, "reopen")
	defer s2.Close()
	l, err := s2.List(ctx, Filter{})
	tcheck(t, err, "list")
	if len(l) != 1 {
		t.Fatalf("after reopen %d items, want 1", len(l))
	}
}

func TestEnqueueIsAllOrNothing(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	noDest := item("p2", "")
	noPkg := item("", "hmp-northgate")
	noEnv := item("p2", "hmp-northgate")
	noEnv.Envelope = nil
	noRcpt := item("p2", "hmp-northgate")
	noRcpt.Recipients = nil
	badPrio := item("p2", "hmp-northgate")
	badPrio.Priority = 7
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		second Item
	}{
		{"second item has no destination", context.Background(), noDest},
		{"second item has no package id", context.Background(), noPkg},
		{"second item has no envelope", context.Background(), noEnv},
		{"second item has no recipients", context.Background(), noRcpt},
		{"second item has an unknown priority", context.Background(), badPrio},
		{"context cancelled", cancelled, item("p2", "hmp-northgate")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openTest(t)
			got, err := s.Enqueue(tc.ctx, []Item{item("p1", "hmp-northgate"), tc.second})
			if err == nil {
				t.Fatalf("enqueue succeeded with ids %v", got)
			}
			l, err := s.List(context.Background(), Filter{})
			tcheck(t, err, "list")
			if len(l) != 0 {
				t.Fatalf("%d items stored after a failed enqueue, want none", len(l))
			}
			// The store is still usable and the first item can be queued.
			_, err = s.Enqueue(context.Background(), []Item{item("p1", "hmp-northgate")})
			tcheck(t, err, "enqueue after failure")
		})
	}
}

// A constraint of the schema (not only the Go checks) rolls back the whole
// transaction: the envelope's chunks of an item reference the item.
func TestEnqueueRollsBackOnADatabaseError(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	// Occupy the chunk row that the second item's insert will need.
	_, err := s.Enqueue(ctx, []Item{item("p0", "hmp-northgate")})
	tcheck(t, err, "enqueue p0")
	_, err = s.w.ExecContext(ctx, `PRAGMA foreign_keys = OFF`)
	tcheck(t, err, "fk off")
	_, err = s.w.ExecContext(ctx, `INSERT INTO queue_chunk (item_id, seq, data) VALUES (3, 0, x'00')`)
	tcheck(t, err, "squat")
	_, err = s.w.ExecContext(ctx, `PRAGMA foreign_keys = ON`)
	tcheck(t, err, "fk on")
	if _, err := s.Enqueue(ctx, []Item{item("p1", "hmp-northgate"), item("p2", "hmp-northgate")}); err == nil {
		t.Fatal("enqueue succeeded despite a conflicting envelope row")
	}
	l, err := s.List(ctx, Filter{})
	tcheck(t, err, "list")
	if len(l) != 1 || l[0].PackageID != "p0" {
		t.Fatalf("items after the failed enqueue: %+v, want only p0", l)
	}
}

func TestEnqueueDedupesByPackageAndDestination(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	first, err := s.Enqueue(ctx, []Item{item("p1", "hmp-northgate"), item("p1", "nw-ccu")})
	tcheck(t, err, "enqueue")
	if first[0] == first[1] {
		t.Fatalf("two destinations share id %d", first[0])
	}
	// Again, plus a duplicate inside the same call, plus a new one.
	again, err := s.Enqueue(ctx, []Item{item("p1", "nw-ccu"), item("p1", "hmp-northgate"), item("p2", "nw-ccu"), item("p2", "nw-ccu")})
	tcheck(t, err, "enqueue again")
	if again[0] != first[1] || again[1] != first[0] || again[2] != again[3] {
		t.Fatalf("ids %v after %v: duplicates must return the existing id", again, first)
	}
	// Still deduped once sent: a package is delivered once per destination.
	tcheck(t, s.MarkSent(ctx, first[0], "q1"), "sent")
	again2, err := s.Enqueue(ctx, []Item{item("p1", "hmp-northgate")})
	tcheck(t, err, "enqueue after sent")
	if again2[0] != first[0] {
		t.Fatalf("re-enqueue of a sent item gave id %d, want %d", again2[0], first[0])
	}
	l, err := s.List(ctx, Filter{})
	tcheck(t, err, "list")
	if len(l) != 3 {
		t.Fatalf("%d items, want 3", len(l))
	}
}

func TestClaimTakesImmediateFirstThenOldestThenID(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	mk := func(pkg string, p Priority, next time.Time) Item {
		it := item(pkg, "hmp-northgate")
		it.Priority, it.NextAttempt = p, next
		return it
	}
	got, err := s.Enqueue(ctx, []Item{
		mk("normal-old", Normal, base),
		mk("normal-new", Normal, base.Add(2*time.Minute)),
		mk("immediate-new", Immediate, base.Add(3*time.Minute)),
		mk("normal-old-2", Normal, base),
		mk("immediate-old", Immediate, base.Add(time.Minute)),
		mk("not-due", Immediate, base.Add(time.Hour)),
	})
	tcheck(t, err, "enqueue")
	c, err := s.Claim(ctx, base.Add(10*time.Minute), 10, time.Minute)
	tcheck(t, err, "claim")
	var order []string
	for _, it := range c {
		order = append(order, it.PackageID)
	}
	want := []string{"immediate-old", "immediate-new", "normal-old", "normal-old-2", "normal-new"}
	if !slices.Equal(order, want) {
		t.Fatalf("claim order %v, want %v (ids %v)", order, want, got)
	}
	for _, it := range c {
		// The envelope stays in the store: the relay streams it.
		if it.Envelope != nil || it.Size != int64(len(item(it.PackageID, "").Envelope)) || it.Attempts != 1 || !it.NextAttempt.Equal(base.Add(11*time.Minute)) {
			t.Fatalf("claimed %s: envelope %d bytes, size %d, attempts %d, next %v", it.PackageID, len(it.Envelope), it.Size, it.Attempts, it.NextAttempt)
		}
	}
}

func TestClaimLimit(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	for i := range 5 {
		_, err := s.Enqueue(ctx, []Item{item(fmt.Sprint("p", i), "hmp-northgate")})
		tcheck(t, err, "enqueue")
	}
	now := time.Now()
	for _, want := range []int{2, 2, 1, 0} {
		c, err := s.Claim(ctx, now, 2, time.Hour)
		tcheck(t, err, "claim")
		if len(c) != want {
			t.Fatalf("claimed %d, want %d", len(c), want)
		}
	}
}

func TestClaimedItemIsHiddenUntilTheLeasePasses(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	_, err := s.Enqueue(ctx, []Item{item("p1", "hmp-northgate")})
	tcheck(t, err, "enqueue")
	now := time.Now()
	lease := 5 * time.Minute
	c, err := s.Claim(ctx, now, 10, lease)
	tcheck(t, err, "claim")
	if len(c) != 1 {
		t.Fatalf("claimed %d, want 1", len(c))
	}
	for _, tc := range []struct {
		at   time.Duration
		want int
	}{
		{0, 0},
		{lease - time.Nanosecond, 0},
		{lease, 1}, // the worker crashed: the item is taken again, attempts counted
	} {
		c, err := s.Claim(ctx, now.Add(tc.at), 10, lease)
		tcheck(t, err, "claim")
		if len(c) != tc.want {
			t.Fatalf("claim at +%v took %d, want %d", tc.at, len(c), tc.want)
		}
		if tc.want == 1 && c[0].Attempts != 2 {
			t.Fatalf("attempts %d after two claims, want 2", c[0].Attempts)
		}
	}
	// A claim writes nothing (claims.go): the stored item is as queued
	// until an outcome, which counts both attempts.
	got, err := s.Get(ctx, c[0].ID)
	tcheck(t, err, "get")
	if got.Attempts != 0 || got.NextAttempt.After(now) {
		t.Fatalf("stored after two claims: attempts %d next %v", got.Attempts, got.NextAttempt)
	}
	next := now.Add(time.Hour)
	tcheck(t, s.MarkRetry(ctx, c[0].ID, next, "451 4.3.0 try later"), "retry")
	got, err = s.Get(ctx, c[0].ID)
	tcheck(t, err, "get")
	if got.Attempts != 2 || !got.NextAttempt.Equal(next) {
		t.Fatalf("stored after the outcome: attempts %d next %v, want 2 and %v", got.Attempts, got.NextAttempt, next)
	}
}

// claimAll runs claimers concurrently until the queue is empty and checks
// that every item was claimed exactly once.
func claimAll(t *testing.T, stores []*SQLite, want []int64, perStore int) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	var mu sync.Mutex
	seen := map[int64]int{}
	var wg sync.WaitGroup
	errc := make(chan error, len(stores)*perStore)
	for _, s := range stores {
		for range perStore {
			wg.Go(func() {
				for {
					c, err := s.Claim(ctx, now, 3, time.Hour)
					if err != nil {
						errc <- err
						return
					}
					if len(c) == 0 {
						return
					}
					mu.Lock()
					for _, it := range c {
						seen[it.ID]++
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("claim: %v", err)
	}
	for _, id := range want {
		if seen[id] != 1 {
			t.Errorf("item %d claimed %d times", id, seen[id])
		}
	}
	if len(seen) != len(want) {
		t.Errorf("%d distinct items claimed, want %d", len(seen), len(want))
	}
}

func enqueueN(t *testing.T, s *SQLite, n int) []int64 {
	t.Helper()
	var items []Item
	for i := range n {
		items = append(items, item(fmt.Sprint("p", i), "hmp-northgate"))
	}
	got, err := s.Enqueue(context.Background(), items)
	tcheck(t, err, "enqueue")
	return got
}

func TestConcurrentClaimersTakeEachItemOnce(t *testing.T) {
	s, _ := openTest(t)
	want := enqueueN(t, s, 200)
	claimAll(t, []*SQLite{s}, want, 8)
}

// Two gateway processes sharing one database file: two handles, each with
// its own connections, claiming at once.
func TestTwoHandlesOnOneFileTakeEachItemOnce(t *testing.T) {
	a, path := openTest(t)
	b, err := OpenSQLite(context.Background(), path)
	tcheck(t, err, "open second handle")
	defer b.Close()
	want := enqueueN(t, a, 200)
	claimAll(t, []*SQLite{a, b}, want, 4)
}

// Separate gateway processes on one file: child processes started
// together (each waits for a line on its stdin) claim until the queue is
// empty, report what they took or that they were refused, and hold on
// (their claims with them) until their stdin closes.
const claimEnv = "CONDUIT_STORE_CLAIM_DB"

func TestClaimChild(t *testing.T) {
	path := os.Getenv(claimEnv)
	if path == "" {
		t.Skip("run by TestOneProcessClaimsFromASQLiteFile")
	}
	ctx := context.Background()
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	in := bufio.NewReader(os.Stdin)
	in.ReadString('\n') // the start signal
	now := time.Now()
	for {
		c, err := s.Claim(ctx, now, 2, time.Hour)
		if errors.Is(err, ErrClaimedElsewhere) {
			fmt.Println("refused")
			break
		}
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		if len(c) == 0 {
			break
		}
		for _, it := range c {
			fmt.Println("claimed", it.ID, it.Attempts)
		}
	}
	fmt.Println("end")
	io.Copy(io.Discard, in) // hold the claims until stdin closes
	s.Close()
}

// claimChild is a TestClaimChild process on the database at path.
type claimChild struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string // its output up to "end"
}

func startClaimChild(t *testing.T, path string) *claimChild {
	t.Helper()
	c := &claimChild{cmd: exec.Command(os.Args[0], "-test.run=^TestClaimChild$", "-test.count=1"), lines: make(chan string, 1000)}
	c.cmd.Env = append(os.Environ(), claimEnv+"="+path)
	out, err := c.cmd.StdoutPipe()
	tcheck(t, err, "stdout")
	c.in, err = c.cmd.StdinPipe()
	tcheck(t, err, "stdin")
	tcheck(t, c.cmd.Start(), "start child")
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
			if sc.Text() == "end" {
				io.Copy(io.Discard, out)
				return
			}
		}
	}()
	t.Cleanup(func() { c.in.Close(); c.cmd.Wait() })
	return c
}

// result waits for the child's report: the items it claimed (id to the
// attempts the claim gave), or refused.
func (c *claimChild) result(t *testing.T) (claimed map[int64]int, refused bool) {
	t.Helper()
	claimed = map[int64]int{}
	timeout := time.After(time.Minute)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				t.Fatalf("child ended without reporting: %v", c.cmd.Wait())
			}
			switch {
			case line == "end":
				return claimed, refused
			case line == "refused":
				refused = true
			case strings.HasPrefix(line, "claimed "):
				var id int64
				var attempts int
				if _, err := fmt.Sscan(strings.TrimPrefix(line, "claimed "), &id, &attempts); err != nil {
					t.Fatalf("child output %q: %v", line, err)
				}
				claimed[id] = attempts
			default:
				t.Fatalf("child: %s", line)
			}
		case <-timeout:
			t.Fatal("child did not report within a minute")
		}
	}
}

// One gateway process relays from a SQLite file: of three processes
// claiming at once, one takes every item once and the others are refused
// (ErrClaimedElsewhere) while it runs. When it ends, however it ends,
// its claims end with it: the next process takes every item again at
// once, with the first attempt counted.
func TestOneProcessClaimsFromASQLiteFile(t *testing.T) {
	s, path := openTest(t)
	want := enqueueN(t, s, 300)
	var cs []*claimChild
	for range 3 {
		cs = append(cs, startClaimChild(t, path))
	}
	for _, c := range cs {
		io.WriteString(c.in, "go\n")
	}
	holders, refused := 0, 0
	for i, c := range cs {
		claimed, ref := c.result(t)
		switch {
		case ref && len(claimed) == 0:
			refused++
		case !ref && len(claimed) == len(want):
			holders++
			for _, id := range want {
				if a, ok := claimed[id]; !ok || a != 1 {
					t.Errorf("child %d: item %d claimed %v (attempts %d), want once, attempt 1", i, id, ok, a)
				}
			}
		default:
			t.Fatalf("child %d claimed %d of %d items, refused %v", i, len(claimed), len(want), ref)
		}
	}
	if holders != 1 || refused != 2 {
		t.Fatalf("%d processes claimed and %d were refused; want 1 and 2", holders, refused)
	}
	// The holder is killed, not stopped: its lock and claims go with it.
	for _, c := range cs {
		c.cmd.Process.Kill()
		c.cmd.Wait()
	}
	next := startClaimChild(t, path)
	io.WriteString(next.in, "go\n")
	claimed, ref := next.result(t)
	if ref || len(claimed) != len(want) {
		t.Fatalf("after the holder ended: %d of %d items claimed, refused %v", len(claimed), len(want), ref)
	}
	// This process never claimed: it holds no lock and records nothing.
	if _, err := s.Claim(context.Background(), time.Now(), 1, time.Minute); !errors.Is(err, ErrClaimedElsewhere) {
		t.Fatalf("claim beside a live claimer: %v, want ErrClaimedElsewhere", err)
	}
}

func TestDeliveryTransitions(t *testing.T) {
	ctx := context.Background()
	type step struct {
		name string
		do   func(s *SQLite, id int64) error
		err  error // expected, matched with errors.Is
	}
	sent := step{"sent", func(s *SQLite, id int64) error { return s.MarkSent(ctx, id, "250 2.0.0 Ok: queued as 4XyZ") }, nil}
	retry := step{"retry", func(s *SQLite, id int64) error {
		return s.MarkRetry(ctx, id, time.Now().Add(time.Hour), "451 4.3.0 try later")
	}, nil}
	failed := step{"failed", func(s *SQLite, id int64) error { return s.MarkFailed(ctx, id, "maximum age reached") }, nil}
	drop := step{"drop", func(s *SQLite, id int64) error { return s.Drop(ctx, id, "sent to the wrong unit") }, nil}
	retryNow := step{"retry now", func(s *SQLite, id int64) error { return s.RetryNow(ctx, id) }, nil}
	wrong := func(st step) step { st.name += " refused"; st.err = ErrWrongState; return st }
	for _, tc := range []struct {
		name  string
		steps []step
		want  State
	}{
		{"queued item is sent", []step{sent}, Sent},
		{"retried then sent", []step{retry, retry, sent}, Sent},
		{"failed after retries", []step{retry, failed}, Failed},
		{"failed item retried now is queued", []step{failed, retryNow}, Queued},
		{"failed item dropped", []step{failed, drop}, Dropped},
		{"sent item cannot be dropped", []step{sent, wrong(drop)}, Sent},
		{"sent item cannot be retried", []step{sent, wrong(retryNow), wrong(retry), wrong(failed)}, Sent},
		{"dropped item cannot be retried", []step{drop, wrong(retryNow), wrong(retry), wrong(drop)}, Dropped},
		{"dropped during delivery, then accepted: sent", []step{drop, sent}, Sent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openTest(t)
			id := enqueueN(t, s, 1)[0]
			for _, st := range tc.steps {
				err := st.do(s, id)
				if !errors.Is(err, st.err) {
					t.Fatalf("%s: %v, want %v", st.name, err, st.err)
				}
			}
			got, err := s.Get(ctx, id)
			tcheck(t, err, "get")
			if got.State != tc.want {
				t.Fatalf("state %s, want %s", got.State, tc.want)
			}
		})
	}
}

func TestTransitionsRecordWhatHappened(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	id := enqueueN(t, s, 2)
	next := time.Now().Add(time.Hour)
	tcheck(t, s.MarkRetry(ctx, id[0], next, "451 4.3.0 try later"), "retry")
	it, err := s.Get(ctx, id[0])
	tcheck(t, err, "get")
	if !it.NextAttempt.Equal(next) || it.LastError != "451 4.3.0 try later" {
		t.Fatalf("after retry: next %v last error %q", it.NextAttempt, it.LastError)
	}
	if c, _ := s.Claim(ctx, time.Now(), 10, time.Minute); len(c) != 1 || c[0].ID != id[1] {
		t.Fatalf("claim took %v, want only the item not waiting for a retry", ids(c))
	}
	tcheck(t, s.RetryNow(ctx, id[0]), "retry now")
	if c, _ := s.Claim(ctx, time.Now(), 10, time.Minute); len(c) != 1 || c[0].ID != id[0] {
		t.Fatalf("after retry now, claim took %v", ids(c))
	}
	tcheck(t, s.MarkSent(ctx, id[0], "4XyZ"), "sent")
	tcheck(t, s.Drop(ctx, id[1], "duplicate of a phone call"), "drop")
	a, _ := s.Get(ctx, id[0])
	b, _ := s.Get(ctx, id[1])
	if a.State != Sent || a.RemoteID != "4XyZ" || a.LastError != "" || b.State != Dropped || b.Reason != "duplicate of a phone call" {
		t.Fatalf("sent %+v\ndropped %+v", a, b)
	}
	depth, err := s.Depth(ctx)
	tcheck(t, err, "depth")
	if len(depth) != 0 {
		t.Fatalf("depth %v after everything left the queue", depth)
	}
}

func TestListFiltersNewestFirstWithoutEnvelopes(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	clock := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	s.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	var all []int64
	for _, it := range []Item{item("p1", "a"), item("p1", "b"), item("p2", "a"), item("p3", "b")} {
		got, err := s.Enqueue(ctx, []Item{it})
		tcheck(t, err, "enqueue")
		all = append(all, got[0])
	}
	tcheck(t, s.MarkSent(ctx, all[0], "x"), "sent")
	for _, tc := range []struct {
		name string
		f    Filter
		want []int64
	}{
		{"everything newest first", Filter{}, []int64{all[3], all[2], all[1], all[0]}},
		{"by destination", Filter{Destination: "a"}, []int64{all[2], all[0]}},
		{"by package", Filter{PackageID: "p1"}, []int64{all[1], all[0]}},
		{"by state", Filter{State: Queued}, []int64{all[3], all[2], all[1]}},
		{"combined", Filter{State: Queued, Destination: "a"}, []int64{all[2]}},
		{"limit", Filter{Limit: 2}, []int64{all[3], all[2]}},
		{"nothing matches", Filter{State: Dropped}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := s.List(ctx, tc.f)
			tcheck(t, err, "list")
			if !slices.Equal(ids(l), tc.want) {
				t.Fatalf("ids %v, want %v", ids(l), tc.want)
			}
			for _, it := range l {
				if it.Envelope != nil || it.Size == 0 {
					t.Fatalf("listed item %d carries %d envelope bytes, size %d", it.ID, len(it.Envelope), it.Size)
				}
			}
		})
	}
	d, err := s.Depth(ctx)
	tcheck(t, err, "depth")
	if !reflect.DeepEqual(d, map[string]int{"a": 1, "b": 2}) {
		t.Fatalf("depth %v", d)
	}
}

func TestItemsSurviveCloseAndReopenExactly(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	created := time.Date(2026, 11, 23, 9, 30, 1, 123456789, time.UTC)
	s.now = func() time.Time { return created.In(time.FixedZone("BST", 3600)) }
	in := item("pkg-7f3a", "hmp-northgate")
	in.Recipients = []string{"pio@northgate.example", "security@northgate.example"}
	in.Priority = Immediate
	in.NextAttempt = time.Date(2026, 11, 23, 9, 30, 2, 987654321, time.FixedZone("X", -5*3600))
	in.Envelope = bytes.Repeat([]byte{0, 1, 2, 0xff}, 4096)
	id, err := s.Enqueue(ctx, []Item{in})
	tcheck(t, err, "enqueue")
	q := QItem{Received: created.Add(time.Nanosecond), RemoteAddr: "127.0.0.1:40000", Helo: "gw.rpiu.example",
		MailFrom: "conduit@rpiu.example", Recipients: []string{"pio@met.example"}, Check: "tampered",
		Reason: "the signature does not verify", PackageID: "pkg-1", Raw: []byte("raw\r\nmessage\r\n")}
	qid, err := s.Quarantine(ctx, q)
	tcheck(t, err, "quarantine")
	tcheck(t, s.RecordDelivered(ctx, "rpiu", "pkg-1", "<m@rpiu>", created), "record")
	tcheck(t, s.Close(), "close")

	s2, err := OpenSQLite(ctx, path)
	tcheck(t, err, "reopen")
	defer s2.Close()
	got, err := s2.Get(ctx, id[0])
	tcheck(t, err, "get")
	want := in
	want.ID, want.Size, want.State = id[0], int64(len(in.Envelope)), Queued
	want.NextAttempt = in.NextAttempt.UTC()
	want.Created, want.Updated = created, created
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after reopen\n got %+v\nwant %+v", got, want)
	}
	gq, err := s2.GetQuarantine(ctx, qid)
	tcheck(t, err, "get quarantine")
	wq := q
	wq.ID, wq.Size, wq.State, wq.Updated = qid, int64(len(q.Raw)), Held, created
	if !reflect.DeepEqual(gq, wq) {
		t.Fatalf("quarantine after reopen\n got %+v\nwant %+v", gq, wq)
	}
	ok, err := s2.Delivered(ctx, "rpiu", "pkg-1")
	tcheck(t, err, "delivered")
	if !ok {
		t.Fatal("replay cache lost across reopen")
	}
}

func TestReplayCacheIsIdempotent(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	for _, tc := range []struct {
		orig, pkg string
		want      bool
	}{
		{"rpiu", "pkg-1", true},
		{"rpiu", "pkg-2", false},
		{"met-pio", "pkg-1", false}, // same package id from another originator
	} {
		if tc.want {
			for range 3 {
				tcheck(t, s.RecordDelivered(ctx, tc.orig, tc.pkg, "<m@x>", time.Now()), "record")
			}
		}
		got, err := s.Delivered(ctx, tc.orig, tc.pkg)
		tcheck(t, err, "delivered")
		if got != tc.want {
			t.Errorf("Delivered(%s, %s) = %v, want %v", tc.orig, tc.pkg, got, tc.want)
		}
	}
	tcheck(t, s.RecordDelivered(ctx, "rpiu", "pkg-3", "", time.Time{}), "record without date")
}

func TestQuarantineKeepListGetReleasePurge(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	clock := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	s.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	// A marker that must not survive a purge anywhere in the files.
	marker := "QUARANTINE-MARKER-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	raw := []byte(strings.Repeat(marker+"\r\n", 600)) // spans overflow pages
	var qid []int64
	for i, check := range []string{"tampered", "signer-not-pinned", "replay"} {
		id, err := s.Quarantine(ctx, QItem{RemoteAddr: "127.0.0.1:1", Check: check, Reason: "r", Raw: raw, PackageID: fmt.Sprint("pkg-", i)})
		tcheck(t, err, "quarantine")
		qid = append(qid, id)
	}
	list := func(st QState) []int64 {
		l, err := s.ListQuarantine(ctx, st)
		tcheck(t, err, "list quarantine")
		for _, q := range l {
			if q.Raw != nil {
				t.Fatalf("listed message %d carries its raw bytes", q.ID)
			}
			if q.Size != int64(len(raw)) {
				t.Fatalf("listed size %d", q.Size)
			}
		}
		return ids2(l)
	}
	if got := list(Held); !slices.Equal(got, []int64{qid[2], qid[1], qid[0]}) {
		t.Fatalf("held %v", got)
	}
	tcheck(t, s.SetQuarantineState(ctx, qid[0], Released, "admin: signer re-pinned"), "release")
	tcheck(t, s.SetQuarantineState(ctx, qid[1], Purged, "admin: junk"), "purge held")
	tcheck(t, s.SetQuarantineState(ctx, qid[0], Purged, "re-processed"), "purge released")
	if got := list(Held); !slices.Equal(got, []int64{qid[2]}) {
		t.Fatalf("held %v", got)
	}
	if got := list(Purged); !slices.Equal(got, []int64{qid[1], qid[0]}) {
		t.Fatalf("purged %v", got)
	}
	if got := list(""); len(got) != 3 {
		t.Fatalf("all %v", got)
	}
	for _, tc := range []struct {
		id      int64
		state   QState
		note    string
		withRaw bool
	}{
		{qid[0], Purged, "re-processed", false},
		{qid[1], Purged, "admin: junk", false},
		{qid[2], Held, "", true},
	} {
		q, err := s.GetQuarantine(ctx, tc.id)
		tcheck(t, err, "get")
		if q.State != tc.state || q.Note != tc.note || (q.Raw != nil) != tc.withRaw || q.Size != int64(len(raw)) || q.Check == "" {
			t.Fatalf("message %d: state %s note %q raw %d bytes size %d", tc.id, q.State, q.Note, len(q.Raw), q.Size)
		}
	}
	// Wrong transitions.
	for _, tc := range []struct {
		id    int64
		state QState
	}{
		{qid[0], Released}, {qid[0], Held}, {qid[2], Held}, {qid[1], Purged},
	} {
		if err := s.SetQuarantineState(ctx, tc.id, tc.state, "x"); !errors.Is(err, ErrWrongState) {
			t.Errorf("%d → %s: %v, want ErrWrongState", tc.id, tc.state, err)
		}
	}
	// Purge the last one too: then no file holds the marker.
	tcheck(t, s.SetQuarantineState(ctx, qid[2], Purged, "admin: done"), "purge")
	tcheck(t, s.Close(), "close")
	for _, f := range []string{path, path + "-wal"} {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		tcheck(t, err, "read "+f)
		if bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s still holds purged content", filepath.Base(f))
		}
	}
}

func ids2(l []QItem) []int64 {
	var out []int64
	for _, q := range l {
		out = append(out, q.ID)
	}
	return out
}

func TestReasonsRequiredAndUnknownIDs(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	id := enqueueN(t, s, 1)[0]
	qid, err := s.Quarantine(ctx, QItem{Check: "tampered", Raw: []byte("x")})
	tcheck(t, err, "quarantine")
	for _, tc := range []struct {
		name string
		err  error
		do   func() error
	}{
		{"drop without reason", ErrNoReason, func() error { return s.Drop(ctx, id, "") }},
		{"drop with a blank reason", ErrNoReason, func() error { return s.Drop(ctx, id, "  \t") }},
		{"release without note", ErrNoReason, func() error { return s.SetQuarantineState(ctx, qid, Released, "") }},
		{"purge without note", ErrNoReason, func() error { return s.SetQuarantineState(ctx, qid, Purged, " ") }},
		{"get unknown", ErrNotFound, func() error { _, err := s.Get(ctx, 999); return err }},
		{"drop unknown", ErrNotFound, func() error { return s.Drop(ctx, 999, "r") }},
		{"retry unknown", ErrNotFound, func() error { return s.RetryNow(ctx, 999) }},
		{"mark sent unknown", ErrNotFound, func() error { return s.MarkSent(ctx, 999, "") }},
		{"mark retry unknown", ErrNotFound, func() error { return s.MarkRetry(ctx, 999, time.Now(), "") }},
		{"mark failed unknown", ErrNotFound, func() error { return s.MarkFailed(ctx, 999, "r") }},
		{"get unknown quarantine", ErrNotFound, func() error { _, err := s.GetQuarantine(ctx, 999); return err }},
		{"release unknown", ErrNotFound, func() error { return s.SetQuarantineState(ctx, 999, Released, "n") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); !errors.Is(err, tc.err) {
				t.Fatalf("%v, want %v", err, tc.err)
			}
		})
	}
	it, err := s.Get(ctx, id)
	tcheck(t, err, "get")
	q, err := s.GetQuarantine(ctx, qid)
	tcheck(t, err, "get quarantine")
	if it.State != Queued || q.State != Held || q.Raw == nil {
		t.Fatalf("refused calls changed state: %s, %s", it.State, q.State)
	}
}

// The crash test: a child process enqueues batches (one package to three
// destinations) and reports each batch after Enqueue returns; the parent
// kills it with SIGKILL at a moment it does not choose (while the child is
// in the middle of its next transactions), reopens the database and finds
// every reported batch, whole, and no partial batch at all.
const crashEnv = "CONDUIT_STORE_CRASH_DB"

var crashDests = []string{"hmp-northgate", "nw-ccu", "nw-rpiu"}

func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("run by TestEnqueuedItemsSurviveSIGKILL")
	}
	ctx := context.Background()
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	prefix := os.Getenv(crashEnv + "_PREFIX")
	for i := 0; ; i++ {
		pkg := fmt.Sprintf("%s-%d", prefix, i)
		var items []Item
		for _, d := range crashDests {
			items = append(items, item(pkg, d))
		}
		if _, err := s.Enqueue(ctx, items); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		// Written straight to the pipe (os.Stdout is unbuffered).
		fmt.Println("ok", pkg)
		if i == 1000 {
			// Not killed yet: kill ourselves right after a return.
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}

func TestEnqueuedItemsSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	path := filepath.Join(t.TempDir(), "conduit.db")
	acked := map[string]bool{}
	for round, killAfter := range []int{1, 7, 30, -1} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+path, fmt.Sprintf("%s_PREFIX=r%d", crashEnv, round))
		out, err := cmd.StdoutPipe()
		tcheck(t, err, "pipe")
		tcheck(t, cmd.Start(), "start child")
		sc := bufio.NewScanner(out)
		n := 0
		for sc.Scan() {
			line := sc.Text()
			if pkg, ok := strings.CutPrefix(line, "ok "); ok {
				acked[pkg] = true
				n++
				if n == killAfter {
					cmd.Process.Signal(syscall.SIGKILL)
				}
			} else if strings.HasPrefix(line, "error") {
				t.Fatalf("child: %s", line)
			}
		}
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v, want killed", round, err)
		}
		if n == 0 {
			t.Fatalf("round %d: the child acknowledged nothing", round)
		}

		s, err := OpenSQLite(context.Background(), path)
		tcheck(t, err, "reopen after kill")
		var res string
		tcheck(t, s.w.QueryRow("PRAGMA integrity_check").Scan(&res), "integrity check")
		if res != "ok" {
			t.Fatalf("integrity check: %s", res)
		}
		l, err := s.List(context.Background(), Filter{})
		tcheck(t, err, "list")
		per := map[string]int{}
		for _, it := range l {
			per[it.PackageID]++
			got, err := s.Get(context.Background(), it.ID)
			tcheck(t, err, "get")
			if !bytes.Equal(got.Envelope, item(it.PackageID, it.Destination).Envelope) {
				t.Fatalf("item %d: envelope damaged", it.ID)
			}
		}
		for pkg := range acked {
			if per[pkg] != len(crashDests) {
				t.Errorf("round %d: acknowledged package %s has %d of %d items", round, pkg, per[pkg], len(crashDests))
			}
		}
		for pkg, c := range per {
			if c != len(crashDests) {
				t.Errorf("round %d: package %s is partly stored (%d items)", round, pkg, c)
			}
		}
		t.Logf("round %d: %d acknowledged in this round, %d packages stored in all", round, n, len(per))
		s.Close()
	}
}

// BenchmarkEnqueueClaimSent measures items/s through the queue's whole
// path, each step its own durable transaction: enqueue (16 KiB envelope),
// claim, mark sent.
func BenchmarkEnqueueClaimSent(b *testing.B) {
	s, _ := openTest(b)
	ctx := context.Background()
	env := bytes.Repeat([]byte("0123456789abcdef"), 1024)
	b.SetBytes(int64(len(env)))
	i := 0
	for ; b.Loop(); i++ {
		it := item(fmt.Sprint("bench-", i), "hmp-northgate")
		it.Envelope = env
		if _, err := s.Enqueue(ctx, []Item{it}); err != nil {
			b.Fatal(err)
		}
		c, err := s.Claim(ctx, time.Now(), 1, time.Minute)
		if err != nil || len(c) != 1 {
			b.Fatalf("claim: %v, %d items", err, len(c))
		}
		if err := s.MarkSent(ctx, c[0].ID, "q"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "items/s")
}

// BenchmarkEnqueueClaimSentBatch16 is the same path with 16 items per
// Enqueue and per Claim, as a gateway with a backlog runs it; MarkSent
// stays one transaction per item.
func BenchmarkEnqueueClaimSentBatch16(b *testing.B) {
	s, _ := openTest(b)
	ctx := context.Background()
	env := bytes.Repeat([]byte("0123456789abcdef"), 1024)
	b.SetBytes(16 * int64(len(env)))
	i := 0
	for ; b.Loop(); i++ {
		var items []Item
		for j := range 16 {
			it := item(fmt.Sprint("bench-", i, "-", j), "hmp-northgate")
			it.Envelope = env
			items = append(items, it)
		}
		if _, err := s.Enqueue(ctx, items); err != nil {
			b.Fatal(err)
		}
		c, err := s.Claim(ctx, time.Now(), 16, time.Minute)
		if err != nil || len(c) != 16 {
			b.Fatalf("claim: %v, %d items", err, len(c))
		}
		for _, it := range c {
			if err := s.MarkSent(ctx, it.ID, "q"); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(16*i)/b.Elapsed().Seconds(), "items/s")
}

// BenchmarkClaimVaryingLimit is the relay's claim under a backlog: it
// asks for as many items as it has free workers, one to four, so the
// limit changes from one claim to the next.
func BenchmarkClaimVaryingLimit(b *testing.B) {
	s, _ := openTest(b)
	ctx := context.Background()
	env := bytes.Repeat([]byte("0123456789abcdef"), 1024)
	var items []Item
	for i := range 4000 {
		it := item(fmt.Sprint("bench-", i), "hmp-northgate")
		it.Envelope = env
		items = append(items, it)
	}
	if _, err := s.Enqueue(ctx, items); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	claimed := 0
	// As in the relay, at most inFlight items are held at once: past
	// that, the oldest claims end (untimed), as their outcomes would,
	// and their items are due again.
	const inFlight = 16
	var held []int64
	for i := 0; b.Loop(); i++ {
		limit := 1 + i%4
		c, err := s.Claim(ctx, now, limit, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		if len(c) < limit {
			b.Fatalf("claimed %d of %d with %d held", len(c), limit, len(held))
		}
		claimed += len(c)
		b.StopTimer()
		for _, it := range c {
			held = append(held, it.ID)
		}
		s.claims.mu.Lock()
		for len(held) > inFlight {
			delete(s.claims.leases, held[0])
			held = held[1:]
		}
		s.claims.mu.Unlock()
		b.StartTimer()
	}
	b.ReportMetric(float64(claimed)/b.Elapsed().Seconds(), "items/s")
}

func TestHeldItemWaitsUntilReleased(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "q.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ids, err := s.Enqueue(ctx, []Item{{PackageID: "cdt-held", Destination: "hmp-northgate", Recipients: []string{"a@b"},
		MailFrom: "gw@x", Envelope: []byte("sealed"), State: OnHold, Reason: "handling-code: refer to the originator"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Claim(ctx, time.Now().Add(time.Hour), 10, time.Minute); len(got) != 0 {
		t.Fatalf("a held item was claimed: %+v", got)
	}
	it, err := s.Get(ctx, ids[0])
	if err != nil || it.State != OnHold || !strings.Contains(it.Reason, "handling-code") {
		t.Fatalf("held item = %+v, %v", it, err)
	}
	if err := s.Release(ctx, ids[0], ""); !errors.Is(err, ErrNoReason) {
		t.Fatalf("release without a reason: %v", err)
	}
	if err := s.Release(ctx, ids[0], "admin: originator consulted"); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, ids[0], "again"); !errors.Is(err, ErrWrongState) {
		t.Fatalf("second release: %v", err)
	}
	got, err := s.Claim(ctx, time.Now().Add(time.Second), 10, time.Minute)
	if err != nil || len(got) != 1 || got[0].ID != ids[0] {
		t.Fatalf("released item not claimable: %+v, %v", got, err)
	}
}

// TestDurableCommitsStayFullySynced: the light bookkeeping transactions
// commit at synchronous=NORMAL (1), and an Enqueue, the promise behind a
// 250, at synchronous=FULL (2), whatever ran before it.
func TestDurableCommitsStayFullySynced(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "q.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The level the last write left on the single writer connection.
	level := func() int {
		conn, err := s.w.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var v int
		if err := conn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := s.AddDeadline(ctx, Deadline{PackageID: "p", Kind: "triage", Due: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if v := level(); v != 1 {
		t.Fatalf("synchronous = %d after bookkeeping, want 1 (NORMAL)", v)
	}
	if _, err := s.Enqueue(ctx, []Item{{PackageID: "p", Destination: "d", Recipients: []string{"a@b"}, MailFrom: "g@x", Envelope: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if v := level(); v != 2 {
		t.Fatalf("synchronous = %d after Enqueue, want 2 (FULL)", v)
	}
}
