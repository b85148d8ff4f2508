package store

// The store suite: every behaviour the gateway relies on, run on both
// backends (SQLite in a temp file, PostgreSQL on a throwaway server). A
// test named TestSuite/<backend>/<behaviour> fails on the backend that
// breaks it. Under CI=true a missing PostgreSQL fails the suite.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/pgtest"
	"github.com/conduit-gateway/conduit/sqlschema"
)

var pgServer struct {
	once sync.Once
	s    *pgtest.Server
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pgServer.s != nil {
		pgServer.s.Close()
	}
	os.Exit(code)
}

// sharedPG is one PostgreSQL server for the package's tests; each test
// gets a database of its own.
func sharedPG(t testing.TB) *pgtest.Server {
	t.Helper()
	pgServer.once.Do(func() { pgServer.s, pgServer.err = pgtest.New(context.Background(), pgtest.Options{}) })
	if errors.Is(pgServer.err, pgtest.ErrNoPostgres) && os.Getenv("CI") != "true" {
		t.Skip(pgServer.err)
	}
	if pgServer.err != nil {
		t.Fatal(pgServer.err)
	}
	return pgServer.s
}

// backend opens stores on one database: the first call makes it, later
// calls open more handles on the same one (another gateway process).
type backend struct {
	name string
	open func(t *testing.T) func() Store
}

var backends = []backend{
	{"sqlite", func(t *testing.T) func() Store {
		path := filepath.Join(t.TempDir(), "conduit.db")
		return func() Store {
			s, err := OpenSQLite(context.Background(), path)
			tcheck(t, err, "open sqlite")
			t.Cleanup(func() { s.Close() })
			return s
		}
	}},
	{"postgres", func(t *testing.T) func() Store {
		dsn := pgtest.NewDB(t, sharedPG(t))
		return func() Store {
			s, err := OpenPostgres(context.Background(), dsn)
			tcheck(t, err, "open postgres")
			t.Cleanup(func() { s.Close() })
			return s
		}
	}},
}

// setClock replaces a store's clock for Created/Updated stamps.
func setClock(s Store, now func() time.Time) {
	switch s := s.(type) {
	case *SQLite:
		s.now = now
	case *Postgres:
		s.now = now
	}
}

func update(t *testing.T, s Store, f func(Tx) error) {
	t.Helper()
	tcheck(t, s.Update(context.Background(), f), "update")
}

func enqueue(t *testing.T, s Store, items ...Item) []int64 {
	t.Helper()
	var out []int64
	update(t, s, func(tx Tx) error {
		var err error
		out, err = tx.Enqueue(items)
		return err
	})
	return out
}

var suite = []struct {
	name string
	run  func(t *testing.T, open func() Store)
}{
	{"EnqueueDedupesAndIsAllOrNothing", func(t *testing.T, open func() Store) {
		s := open()
		a := enqueue(t, s, item("p1", "ccu"), item("p1", "hmpps"))
		b := enqueue(t, s, item("p1", "ccu"))
		if b[0] != a[0] || a[0] == a[1] {
			t.Fatalf("ids %v then %v: the same (package, destination) must keep its id", a, b)
		}
		bad := item("p2", "ccu")
		bad.Recipients = nil
		err := s.Update(context.Background(), func(tx Tx) error { _, err := tx.Enqueue([]Item{item("p3", "ccu"), bad}); return err })
		if err == nil {
			t.Fatal("an item without recipients was accepted")
		}
		l, err := s.List(context.Background(), Filter{})
		tcheck(t, err, "list")
		if len(l) != 2 {
			t.Fatalf("%d items stored, want the 2 good ones only", len(l))
		}
	}},
	{"ClaimOrderLimitAndLease", func(t *testing.T, open func() Store) {
		s := open()
		ctx := context.Background()
		base := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
		old, newer, urgent := item("old", "ccu"), item("new", "ccu"), item("urgent", "ccu")
		old.NextAttempt, newer.NextAttempt, urgent.NextAttempt = base, base.Add(time.Minute), base.Add(2*time.Minute)
		urgent.Priority = Immediate
		id := enqueue(t, s, newer, old, urgent)
		now := base.Add(time.Hour)
		got, err := s.Claim(ctx, now, 2, time.Minute)
		tcheck(t, err, "claim")
		if fmt.Sprint(ids(got)) != fmt.Sprint([]int64{id[2], id[1]}) {
			t.Fatalf("claimed %v, want immediate %d then oldest %d", ids(got), id[2], id[1])
		}
		if got[0].Attempts != 1 || !got[0].NextAttempt.Equal(now.Add(time.Minute)) || got[0].Envelope != nil || got[0].Size != int64(len(urgent.Envelope)) {
			t.Fatalf("claimed item: attempts %d next %v envelope %q size %d", got[0].Attempts, got[0].NextAttempt, got[0].Envelope, got[0].Size)
		}
		if env := readEnvelope(t, s, got[0]); string(env) != string(urgent.Envelope) {
			t.Fatalf("claimed item's envelope streams as %q", env)
		}
		rest, err := s.Claim(ctx, now, 10, time.Minute)
		tcheck(t, err, "claim")
		if len(rest) != 1 || rest[0].ID != id[0] {
			t.Fatalf("second claim %v, want only %d: leased items stay hidden", ids(rest), id[0])
		}
		again, err := s.Claim(ctx, now.Add(2*time.Minute), 10, time.Minute)
		tcheck(t, err, "claim")
		if len(again) != 3 || again[0].Attempts != 2 {
			t.Fatalf("after the lease: %d items (attempts %v), want all 3 taken over", len(again), again)
		}
		next, err := s.NextDue(ctx)
		tcheck(t, err, "next due")
		if !next.Equal(now.Add(3 * time.Minute)) {
			t.Fatalf("next due %v, want the lease's end %v", next, now.Add(3*time.Minute))
		}
	}},
	// NextDue is the earliest due time of the queued items whatever their
	// priority: either priority's may come first, and an item not queued
	// (held here, at an earlier time) does not count.
	{"NextDueAcrossPriorities", func(t *testing.T, open func() Store) {
		ctx := context.Background()
		base := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
		at := func(m int) time.Time { return base.Add(time.Duration(m) * time.Minute) }
		for i, tt := range []struct {
			normal, immediate int // minutes; -1: none
			want              int
		}{{50, 60, 50}, {45, 40, 40}, {30, -1, 30}, {-1, 20, 20}} {
			// One database for all: each case's earliest time comes
			// before every earlier case's items, which stay queued.
			s := open()
			var items []Item
			if tt.normal >= 0 {
				it := item(fmt.Sprintf("cdt-next-normal-%d", i), "hmp-eastmoor")
				it.NextAttempt, it.Priority = at(tt.normal), Normal
				items = append(items, it)
			}
			if tt.immediate >= 0 {
				it := item(fmt.Sprintf("cdt-next-immediate-%d", i), "hmp-eastmoor")
				it.NextAttempt, it.Priority = at(tt.immediate), Immediate
				items = append(items, it)
			}
			held := item(fmt.Sprintf("cdt-next-held-%d", i), "hmp-eastmoor")
			held.NextAttempt, held.State, held.Reason = at(1), OnHold, "test"
			items = append(items, held)
			tcheck(t, s.Update(ctx, func(tx Tx) error { _, err := tx.Enqueue(items); return err }), "enqueue")
			next, err := s.NextDue(ctx)
			tcheck(t, err, "NextDue")
			if !next.Equal(at(tt.want)) {
				t.Errorf("normal at %d, immediate at %d: NextDue = %s, want %s", tt.normal, tt.immediate, next, at(tt.want))
			}
		}
	}},
	{"ConcurrentHandlesTakeEachItemOnce", func(t *testing.T, open func() Store) {
		stores := []Store{open(), open(), open()}
		const n = 60
		var items []Item
		for i := range n {
			items = append(items, item(fmt.Sprintf("c%03d", i), "ccu"))
		}
		want := enqueue(t, stores[0], items...)
		var mu sync.Mutex
		seen := map[int64]int{}
		var wg sync.WaitGroup
		for _, s := range stores {
			for range 2 {
				wg.Go(func() {
					for {
						got, err := s.Claim(context.Background(), time.Now(), 3, time.Hour)
						if err != nil {
							t.Error(err)
							return
						}
						if len(got) == 0 {
							return
						}
						mu.Lock()
						for _, it := range got {
							seen[it.ID]++
						}
						mu.Unlock()
					}
				})
			}
		}
		wg.Wait()
		if len(seen) != len(want) {
			t.Fatalf("%d items claimed, want %d", len(seen), len(want))
		}
		for id, c := range seen {
			if c != 1 {
				t.Errorf("item %d claimed %d times", id, c)
			}
		}
	}},
	{"DeliveryTransitions", func(t *testing.T, open func() Store) {
		s := open()
		ctx := context.Background()
		held := item("h", "ccu")
		held.State, held.Reason = OnHold, "handling code 5"
		id := enqueue(t, s, item("a", "ccu"), item("b", "ccu"), item("c", "ccu"), held)
		get := func(i int64) Item { it, err := s.Get(ctx, i); tcheck(t, err, "get"); return it }
		update(t, s, func(tx Tx) error { return tx.MarkSent(id[0], "250 queued as X1") })
		update(t, s, func(tx Tx) error { return tx.MarkRetry(id[1], time.Unix(2e9, 0), "451 busy") })
		update(t, s, func(tx Tx) error { return tx.MarkFailed(id[2], "too old") })
		if it := get(id[0]); it.State != Sent || it.RemoteID != "250 queued as X1" {
			t.Errorf("sent: %+v", it)
		}
		if it := get(id[1]); it.State != Queued || it.LastError != "451 busy" || !it.NextAttempt.Equal(time.Unix(2e9, 0)) {
			t.Errorf("retry: %+v", it)
		}
		for _, tc := range []struct {
			name string
			f    func(Tx) error
			want error
		}{
			{"sent twice", func(tx Tx) error { return tx.MarkSent(id[2], "") }, ErrWrongState},
			{"retry a sent item", func(tx Tx) error { return tx.MarkRetry(id[0], time.Now(), "") }, ErrWrongState},
			{"drop without reason", func(tx Tx) error { return tx.Drop(id[1], " ") }, ErrNoReason},
			{"release without reason", func(tx Tx) error { return tx.Release(id[3], "") }, ErrNoReason},
			{"release a queued item", func(tx Tx) error { return tx.Release(id[1], "x") }, ErrWrongState},
			{"unknown item", func(tx Tx) error { return tx.Drop(999999, "x") }, ErrNotFound},
		} {
			if err := s.Update(ctx, tc.f); !errors.Is(err, tc.want) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			}
		}
		if c, _ := s.Claim(ctx, time.Now().Add(24*365*time.Hour*50), 10, time.Minute); len(c) != 1 || c[0].ID != id[1] {
			t.Errorf("claim took %v: a held, failed or sent item must not be claimed", ids(c))
		}
		update(t, s, func(tx Tx) error { return tx.Release(id[3], "ops: checked") })
		update(t, s, func(tx Tx) error { return tx.RetryNow(id[2]) })
		update(t, s, func(tx Tx) error { return tx.Drop(id[1], "ops: superseded") })
		if it := get(id[3]); it.State != Queued || it.Reason != "released: ops: checked" {
			t.Errorf("released: %+v", it)
		}
		if it := get(id[2]); it.State != Queued {
			t.Errorf("retried: %+v", it)
		}
		if it := get(id[1]); it.State != Dropped || it.Reason != "ops: superseded" {
			t.Errorf("dropped: %+v", it)
		}
		d, err := s.Depth(ctx)
		tcheck(t, err, "depth")
		if d["ccu"] != 2 {
			t.Errorf("depth %v, want ccu: 2", d)
		}
		l, err := s.List(ctx, Filter{State: Queued, Limit: 1})
		tcheck(t, err, "list")
		if len(l) != 1 || l[0].Envelope != nil || l[0].Size == 0 {
			t.Errorf("list: %+v", l)
		}
	}},
	{"ItemsRoundTripExactly", func(t *testing.T, open func() Store) {
		s := open()
		created := time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC)
		setClock(s, func() time.Time { return created })
		in := item("exact", "ccu")
		in.Recipients = []string{"a@ccu.example", "b@ccu.example"}
		in.Priority = Immediate
		in.NextAttempt = created.Add(time.Second)
		id := enqueue(t, s, in)[0]
		got, err := open().Get(context.Background(), id)
		tcheck(t, err, "get")
		if got.PackageID != in.PackageID || fmt.Sprint(got.Recipients) != fmt.Sprint(in.Recipients) || got.Priority != Immediate ||
			!got.Created.Equal(created) || !got.NextAttempt.Equal(in.NextAttempt) || string(got.Envelope) != string(in.Envelope) ||
			got.MailFrom != in.MailFrom || got.Submitter != in.Submitter || got.Marking != in.Marking || got.Size != int64(len(in.Envelope)) {
			t.Fatalf("got %+v", got)
		}
		if _, err := s.Get(context.Background(), id+100); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown id: %v", err)
		}
	}},
	{"ReplayCacheAndReceiptsAreIdempotent", func(t *testing.T, open func() Store) {
		s := open()
		ctx := context.Background()
		date := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
		for range 2 {
			update(t, s, func(tx Tx) error { return tx.RecordDelivered("met", "p1", "<m1@met>", date) })
			update(t, s, func(tx Tx) error {
				return tx.RecordReceipt(Receipt{PackageID: "p1", Agency: "ccu", Mailboxes: []string{"x@ccu"}, Delivered: date, Signer: "FP"})
			})
		}
		ok, err := s.Delivered(ctx, "met", "p1")
		tcheck(t, err, "delivered")
		other, _ := s.Delivered(ctx, "hmpps", "p1")
		if !ok || other {
			t.Fatalf("delivered %v, by another originator %v", ok, other)
		}
		p, err := s.PackagesByMessageID(ctx, " <m1@met> ")
		tcheck(t, err, "by message id")
		if fmt.Sprint(p) != "[p1]" {
			t.Fatalf("by message id: %v", p)
		}
		r, err := s.Receipts(ctx, "p1")
		tcheck(t, err, "receipts")
		if len(r) != 1 || !r[0].Delivered.Equal(date) || r[0].Mailboxes[0] != "x@ccu" {
			t.Fatalf("receipts %+v", r)
		}
	}},
	{"Deadlines", func(t *testing.T, open func() Store) {
		s := open()
		ctx := context.Background()
		t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
		update(t, s, func(tx Tx) error {
			for _, d := range []Deadline{
				{PackageID: "p1", Kind: "acknowledge", Agency: "ccu", Due: t0.Add(time.Hour)},
				{PackageID: "p1", Kind: "acknowledge", Agency: "ccu", Due: t0.Add(9 * time.Hour)}, // the same clock: once
				{PackageID: "p1", Kind: "acknowledge", Agency: "hmpps", Due: t0.Add(2 * time.Hour)},
				{PackageID: "p2", Kind: "retention", Due: t0.Add(time.Minute)},
			} {
				if err := tx.AddDeadline(d); err != nil {
					return err
				}
			}
			return nil
		})
		next, err := s.NextDeadline(ctx)
		tcheck(t, err, "next deadline")
		if !next.Equal(t0.Add(time.Hour)) {
			t.Fatalf("next deadline %v (retention does not alert)", next)
		}
		over, err := s.OverdueDeadlines(ctx, t0.Add(3*time.Hour), 10)
		tcheck(t, err, "overdue")
		if len(over) != 2 {
			t.Fatalf("overdue %+v", over)
		}
		update(t, s, func(tx Tx) error { return tx.MarkAlerted(over[0].ID, t0.Add(3*time.Hour)) })
		var n int
		update(t, s, func(tx Tx) error {
			var err error
			n, err = tx.CompleteDeadlines("p1", "acknowledge", "hmpps", t0, "acked")
			return err
		})
		if n != 1 {
			t.Fatalf("completed %d", n)
		}
		update(t, s, func(tx Tx) error {
			var err error
			n, err = tx.CompleteDeadlines("p1", "acknowledge", "hmpps", t0, "again")
			return err
		})
		if n != 0 {
			t.Fatalf("completed again: %d", n)
		}
		over, _ = s.OverdueDeadlines(ctx, t0.Add(3*time.Hour), 10)
		openDL, _ := s.Deadlines(ctx, t0, false)
		due, _ := s.DueDeadlines(ctx, "retention", t0.Add(time.Hour), 10)
		if len(over) != 0 || len(openDL) != 2 || len(due) != 1 {
			t.Fatalf("overdue %d open %d due retention %d", len(over), len(openDL), len(due))
		}
	}},
	{"QuarantineKeepReleasePurge", func(t *testing.T, open func() Store) {
		s := open()
		ctx := context.Background()
		t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
		var ids []int64
		for i, raw := range []string{"first message", "second message"} {
			update(t, s, func(tx Tx) error {
				id, err := tx.Quarantine(QItem{Received: t0.Add(time.Duration(i) * time.Hour), RemoteAddr: "192.0.2.1:1", Helo: "gw",
					MailFrom: "a@b", Recipients: []string{"c@d"}, Check: "tampered", Reason: "bad MDC", PackageID: "p", Raw: []byte(raw)})
				ids = append(ids, id)
				return err
			})
		}
		q, err := s.GetQuarantine(ctx, ids[0])
		tcheck(t, err, "get")
		if string(q.Raw) != "first message" || q.State != Held || q.Check != "tampered" {
			t.Fatalf("kept: %+v", q)
		}
		update(t, s, func(tx Tx) error { return tx.SetQuarantineState(ids[0], Released, "ops: false alarm") })
		update(t, s, func(tx Tx) error { return tx.SetQuarantineState(ids[1], Purged, "ops: retention") })
		if err := s.Update(ctx, func(tx Tx) error { return tx.SetQuarantineState(ids[1], Released, "x") }); !errors.Is(err, ErrWrongState) {
			t.Fatalf("release a purged message: %v", err)
		}
		p, err := s.GetQuarantine(ctx, ids[1])
		tcheck(t, err, "get purged")
		if p.Raw != nil || p.State != Purged || p.Size != int64(len("second message")) {
			t.Fatalf("purged: %+v", p)
		}
		held, _ := s.ListQuarantine(ctx, Held)
		all, _ := s.ListQuarantine(ctx, "")
		before, _ := s.QuarantinedBefore(ctx, t0.Add(2*time.Hour), 10)
		if len(held) != 0 || len(all) != 2 || all[0].ID != ids[1] || len(before) != 1 || before[0].ID != ids[0] {
			t.Fatalf("held %d, all %v, before %v", len(held), ids2(all), ids2(before))
		}
	}},
	{"ShreddedEnvelopesCannotBeRead", func(t *testing.T, open func() Store) {
		s := open()
		ctx := context.Background()
		id := enqueue(t, s, item("p1", "ccu"), item("p1", "hmpps"))
		update(t, s, func(tx Tx) error { return tx.MarkSent(id[0], "") })
		var n int
		update(t, s, func(tx Tx) error { var err error; n, err = tx.ShredEnvelopes("p1"); return err })
		if n != 1 {
			t.Fatalf("shredded %d, want the sent one only", n)
		}
		sent, err := s.Get(ctx, id[0])
		tcheck(t, err, "get")
		queued, err := s.Get(ctx, id[1])
		tcheck(t, err, "get")
		if sent.Envelope != nil || len(queued.Envelope) == 0 {
			t.Fatalf("sent envelope %q, queued %q", sent.Envelope, queued.Envelope)
		}
		type counter interface {
			DataKeyCount(context.Context) (int, error)
		}
		k, err := s.(counter).DataKeyCount(ctx)
		tcheck(t, err, "keys")
		if k != 1 {
			t.Fatalf("%d data keys left, want 1", k)
		}
	}},
	{"PartnerKeyDecisions", func(t *testing.T, open func() Store) {
		s := open()
		ctx := context.Background()
		v0, err := s.PartnerKeysVersion(ctx)
		tcheck(t, err, "version")
		var k PartnerKey
		var isNew bool
		update(t, s, func(tx Tx) error {
			var err error
			k, isNew, err = tx.OfferPartnerKey(PartnerKey{Agency: "ccu", Fingerprint: "AA", Replaces: "OLD", Cert: []byte("cert"), Source: "notice"})
			return err
		})
		if !isNew || k.State != KeyPending || k.ID == 0 {
			t.Fatalf("offer: %+v new %v", k, isNew)
		}
		update(t, s, func(tx Tx) error {
			_, _, err := tx.OfferPartnerKey(PartnerKey{Agency: "ccu", Fingerprint: "OLD", Cert: []byte("old"), State: KeyApproved})
			return err
		})
		update(t, s, func(tx Tx) error {
			_, err := tx.DecidePartnerKey("ccu", "AA", KeyApproved, "ops", "phoned CCU")
			return err
		})
		if err := s.Update(ctx, func(tx Tx) error { _, err := tx.DecidePartnerKey("ccu", "AA", KeyRejected, "ops", "x"); return err }); !errors.Is(err, ErrKeyNotPending) {
			t.Fatalf("decide twice: %v", err)
		}
		l, err := s.ListPartnerKeys(ctx, "ccu", "")
		tcheck(t, err, "list")
		states := map[string]KeyState{}
		for _, k := range l {
			states[k.Fingerprint] = k.State
		}
		if states["AA"] != KeyApproved || states["OLD"] != KeyRejected {
			t.Fatalf("states %v: approving supersedes the approved key", states)
		}
		v1, _ := s.PartnerKeysVersion(ctx)
		if v1 <= v0 {
			t.Fatalf("version %d → %d", v0, v1)
		}
	}},
	{"HoldAndResealKeepTheItem", func(t *testing.T, open func() Store) {
		s := open()
		ctx := context.Background()
		id := enqueue(t, s, item("p1", "ccu"))[0]
		update(t, s, func(tx Tx) error { return tx.HoldItem(id, "key expired") })
		if c, _ := s.Claim(ctx, time.Now().Add(time.Hour), 10, time.Minute); len(c) != 0 {
			t.Fatal("a held item was claimed")
		}
		update(t, s, func(tx Tx) error { return tx.ResealItem(id, []byte("resealed"), "resealed to the new key") })
		it, err := s.Get(ctx, id)
		tcheck(t, err, "get")
		if it.State != Queued || string(it.Envelope) != "resealed" || it.Size != 8 {
			t.Fatalf("resealed: %+v", it)
		}
	}},
	{"StagedEventsCommitWithTheirChangeOnly", func(t *testing.T, open func() Store) {
		s := open()
		ctx := context.Background()
		ev := audit.Event{Time: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), Agency: "met", Kind: audit.Queued, Package: "p"}
		bad := item("p9", "ccu")
		bad.Recipients = nil
		// A method that fails leaves nothing of itself; the transaction
		// goes on and commits the rest, events included.
		update(t, s, func(tx Tx) error {
			if _, err := tx.Enqueue([]Item{item("p1", "ccu"), bad}); err == nil {
				t.Error("bad item accepted")
			}
			if _, err := tx.Enqueue([]Item{item("p2", "ccu")}); err != nil {
				return err
			}
			return tx.Audit(ev)
		})
		// An abandoned transaction keeps neither change nor event.
		errAbandon := errors.New("abandoned")
		if err := s.Update(ctx, func(tx Tx) error {
			tx.Enqueue([]Item{item("p3", "ccu")})
			tx.Audit(ev)
			return errAbandon
		}); !errors.Is(err, errAbandon) {
			t.Fatalf("abandon: %v", err)
		}
		l, _ := s.List(ctx, Filter{})
		if len(l) != 1 || l[0].PackageID != "p2" {
			t.Fatalf("items %+v", l)
		}
		// Opening the trail chains what is staged.
		tr := openTrail(t, s)
		n, err := tr.Staged(ctx)
		tcheck(t, err, "staged")
		v, err := tr.Verify(ctx)
		tcheck(t, err, "verify")
		if n != 0 || !v.OK || v.Entries != 1 {
			t.Fatalf("%d left staged, verify %v (%d entries), want the one event chained", n, v, v.Entries)
		}
	}},
	{"TrailHandlesFormOneChain", func(t *testing.T, open func() Store) {
		ctx := context.Background()
		var trails []audit.Trail
		for range 3 {
			trails = append(trails, openTrail(t, open()))
		}
		var wg sync.WaitGroup
		for i, tr := range trails {
			wg.Go(func() {
				for j := range 20 {
					if _, err := tr.AppendAll(ctx, []audit.Event{
						{Agency: "met", Kind: audit.Sent, Package: fmt.Sprintf("p%d-%d", i, j)},
						{Agency: "met", Kind: audit.Receipt, Package: fmt.Sprintf("p%d-%d", i, j)},
					}); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		v, err := trails[0].Verify(ctx)
		tcheck(t, err, "verify")
		if !v.OK || v.Entries != 120 {
			t.Fatalf("verify: %v (%d entries)", v, v.Entries)
		}
	}},
	{"ChangesHearAnotherHandle", func(t *testing.T, open func() Store) {
		a, b := open(), open()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch := a.Changes(ctx, 20*time.Millisecond)
		// Until the listener is up, a change may go unheard: write until
		// one is heard, then check a release is heard too.
		heard := func() bool {
			for i := range 400 {
				enqueue(t, b, item(fmt.Sprintf("w%d-%d", time.Now().UnixNano(), i), "ccu"))
				select {
				case <-ch:
					return true
				case <-time.After(25 * time.Millisecond):
				}
			}
			return false
		}
		if !heard() {
			t.Fatal("no change heard from another handle")
		}
		held := item("held", "ccu")
		held.State, held.Reason = OnHold, "h"
		id := enqueue(t, b, held)[0]
		drain(ch)
		update(t, b, func(tx Tx) error { return tx.Release(id, "ops") })
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("a release on another handle was not heard")
		}
	}},
	{"DeliveryLockSerialises", func(t *testing.T, open func() Store) {
		a, b := open().(DeliveryLocker), open().(DeliveryLocker)
		ctx := context.Background()
		unlock, err := a.LockDelivery(ctx, "met", "p1")
		tcheck(t, err, "lock")
		got := make(chan func(), 1)
		go func() {
			u, err := b.LockDelivery(ctx, "met", "p1")
			if err != nil {
				t.Error(err)
				close(got)
				return
			}
			got <- u
		}()
		other, err := b.LockDelivery(ctx, "met", "p2")
		tcheck(t, err, "another package's lock")
		other()
		select {
		case <-got:
			t.Fatal("the second gateway took a held delivery lock")
		case <-time.After(200 * time.Millisecond):
		}
		unlock()
		select {
		case u := <-got:
			u()
		case <-time.After(10 * time.Second):
			t.Fatal("the lock was not passed on")
		}
	}},
	{"DecisionLogKeepsTheLatest", func(t *testing.T, open func() Store) {
		s := open().(DecisionLog)
		ctx := context.Background()
		for i := range 5 {
			tcheck(t, s.RecordDecided(ctx, Decided{PackageID: fmt.Sprintf("p%d", i), Decided: time.Unix(int64(i), 0), Manifest: []byte("{}"), Outcome: "allow"}, 3), "record")
		}
		l, err := s.RecentDecided(ctx, 10)
		tcheck(t, err, "recent")
		if len(l) != 3 || l[0].PackageID != "p4" || l[2].PackageID != "p2" || !l[0].Decided.Equal(time.Unix(4, 0)) {
			t.Fatalf("recent: %+v", l)
		}
	}},
	{"OneLeaderAtATimeAndTakeover", func(t *testing.T, open func() Store) {
		a, b := open().(Leader), open().(Leader)
		if _, ok := a.(*SQLite); ok {
			t.Skip("a SQLite store has one gateway, which leads")
		}
		ctx := context.Background()
		actx, stopA := context.WithCancel(ctx)
		bctx, stopB := context.WithCancel(ctx)
		defer stopB()
		led := make(chan string, 2)
		lead := func(name string) func(context.Context) {
			return func(c context.Context) { led <- name; <-c.Done() }
		}
		doneA := make(chan struct{})
		go func() { a.Lead(actx, "housekeeping", 50*time.Millisecond, lead("a")); close(doneA) }()
		if who := <-led; who != "a" {
			t.Fatalf("%s led first", who)
		}
		go b.Lead(bctx, "housekeeping", 50*time.Millisecond, lead("b"))
		select {
		case who := <-led:
			t.Fatalf("%s leads while a does", who)
		case <-time.After(300 * time.Millisecond):
		}
		if pa, ok := a.(*Postgres); ok {
			// The leader's database connection dies (its gateway was
			// killed, its machine cut off): the server drops the lock, the
			// leader notices and stops, the other takes over.
			_, err := pa.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND granted`, lockLead)
			tcheck(t, err, "terminate the leader's connection")
			select {
			case who := <-led:
				if who != "b" {
					t.Fatalf("%s took over", who)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("nobody took over from a leader whose connection died")
			}
			stopA()
			<-doneA
			return
		}
		stopA() // a gateway stops
		<-doneA
		select {
		case who := <-led:
			if who != "b" {
				t.Fatalf("%s took over", who)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("nobody took over the lease")
		}
	}},
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// openTrail is the audit trail in the store's database.
func openTrail(t *testing.T, s Store) audit.Trail {
	t.Helper()
	ctx := context.Background()
	switch s := s.(type) {
	case *Postgres:
		tr, err := audit.NewPostgres(ctx, s.Pool(), nil)
		tcheck(t, err, "trail")
		return tr
	case *SQLite:
		tr, err := audit.NewSQLite(ctx, sqliteDB(s), nil)
		tcheck(t, err, "trail")
		return tr
	}
	t.Fatalf("no trail for %T", s)
	return nil
}

func TestSuite(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			for _, tc := range suite {
				t.Run(tc.name, func(t *testing.T) { tc.run(t, b.open(t)) })
			}
		})
	}
}

func sqliteDB(s *SQLite) *sqlschema.DB { return &sqlschema.DB{W: s.w, R: s.r} }
