package store

import (
	"context"
	"testing"
	"time"
)

// The claim book's races, step by step (claims.go): a claim reads the
// queue outside the book's lock, so an outcome can commit between the
// claim's start and its taking the items it read.
func TestClaimBookRaces(t *testing.T) {
	now := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	item := Item{ID: 7, Attempts: 3}
	newBook := func() *claimBook { return &claimBook{leases: map[int64]*claimLease{}} }
	// take is a whole claim at at whose read finds the item due.
	take := func(b *claimBook, at time.Time) []Item {
		if b.sweep(at)[item.ID] {
			return nil
		}
		return b.take([]Item{item}, at, at.Add(time.Minute))
	}
	commit := func(b *claimBook) int {
		var after []func()
		n := b.settle(item.ID, func(f func()) { after = append(after, f) })
		for _, f := range after {
			f()
		}
		return n
	}

	t.Run("an outcome committed while a claim read", func(t *testing.T) {
		b := newBook()
		got := b.take([]Item{item}, now, now.Add(time.Minute))
		if len(got) != 1 || got[0].Attempts != 4 || !got[0].NextAttempt.Equal(now.Add(time.Minute)) {
			t.Fatalf("first claim: %+v", got)
		}
		// A second claim began (its read may show the item still due),
		// then the first one's outcome committed.
		if n := commit(b); n != 1 {
			t.Fatalf("the outcome counted %d attempts, want 1", n)
		}
		if got := b.take([]Item{item}, now, now.Add(time.Minute)); len(got) != 0 {
			t.Fatalf("a claim that read before the outcome committed took the item: %+v", got)
		}
		// A claim that begins after the commit reads what it wrote, and
		// counts no attempt twice.
		if got := take(b, now); len(got) != 1 || got[0].Attempts != 4 {
			t.Fatalf("claim after the commit: %+v, want the item at attempt 4", got)
		}
	})

	t.Run("a lease that ran out is taken over with its attempts", func(t *testing.T) {
		b := newBook()
		b.take([]Item{item}, now, now.Add(time.Minute))
		if got := take(b, now.Add(time.Minute-time.Nanosecond)); len(got) != 0 {
			t.Fatal("taken before the lease ran out")
		}
		got := take(b, now.Add(time.Minute))
		if len(got) != 1 || got[0].Attempts != 5 {
			t.Fatalf("taken over: %+v, want attempt 5 (3 stored, 2 begun)", got)
		}
		if n := commit(b); n != 2 {
			t.Fatalf("the outcome counted %d attempts, want both begun", n)
		}
	})

	t.Run("an outcome whose transaction failed", func(t *testing.T) {
		b := newBook()
		b.take([]Item{item}, now, now.Add(time.Minute))
		if n := b.settle(item.ID, func(func()) {}); n != 1 { // never committed
			t.Fatalf("settle counted %d", n)
		}
		if got := take(b, now.Add(30*time.Second)); len(got) != 0 {
			t.Fatal("taken while the failed outcome's lease runs")
		}
		if got := take(b, now.Add(time.Minute)); len(got) != 1 {
			t.Fatal("not taken once the lease ran out")
		}
		if n := b.settle(item.ID, func(func()) {}); n != 1 {
			t.Fatalf("second outcome counted %d, want 1", n)
		}
	})

	t.Run("no claim, nothing counted", func(t *testing.T) {
		b := newBook()
		called := false
		if n := b.settle(item.ID, func(func()) { called = true }); n != 0 || called {
			t.Fatalf("settle without a claim: %d, release registered %v", n, called)
		}
	})
}

// NextDue passes over what this process is delivering: a claimed item's
// stored due time is in the past, and the relay would spin on it.
func TestNextDuePassesOverClaimedItems(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	due, later := item("cdt-due", "hmp-northgate"), item("cdt-later", "hmp-northgate")
	due.NextAttempt, later.NextAttempt = now.Add(-time.Minute), now.Add(5*time.Minute)
	enqueue(t, s, due, later)
	c, err := s.Claim(ctx, now, 10, time.Hour)
	tcheck(t, err, "claim")
	if len(c) != 1 || c[0].PackageID != "cdt-due" {
		t.Fatalf("claimed %v", c)
	}
	next, err := s.NextDue(ctx)
	tcheck(t, err, "next due")
	if !next.Equal(later.NextAttempt) {
		t.Fatalf("NextDue %v, want the unclaimed item's %v", next, later.NextAttempt)
	}
	// Its outcome recorded, the item is due when the outcome says.
	retry := now.Add(2 * time.Minute)
	tcheck(t, s.MarkRetry(ctx, c[0].ID, retry, "451 4.3.0 try later"), "retry")
	if next, err := s.NextDue(ctx); err != nil || !next.Equal(retry) {
		t.Fatalf("NextDue after the retry %v, %v; want %v", next, err, retry)
	}
	got, err := s.Get(ctx, c[0].ID)
	tcheck(t, err, "get")
	if got.Attempts != 1 {
		t.Fatalf("stored attempts %d after one claim and its outcome, want 1", got.Attempts)
	}
}
