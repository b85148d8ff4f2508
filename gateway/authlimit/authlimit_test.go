package authlimit

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

var (
	ctx   = context.Background()
	addrA = netip.MustParseAddr("192.0.2.10")
	addrB = netip.MustParseAddr("198.51.100.7")
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)} }
func tcheck(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func TestPenaltyDoublesFromTheFirstFailureUpToTheCap(t *testing.T) {
	c := newClock()
	th := New(Config{Penalty: time.Second, MaxPenalty: 8 * time.Second, AccountLimit: 100, AddressLimit: 100}, nil)
	th.Now = c.now
	want := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	for i, w := range want {
		d, err := th.Check(ctx, addrA, "dpatel")
		tcheck(t, err, "check")
		if d != w {
			t.Fatalf("after %d failures: penalty %s, want %s", i, d, w)
		}
		_, err = th.Failure(ctx, addrA, "dpatel")
		tcheck(t, err, "failure")
	}
	th.Success(addrA, "dpatel")
	if d, _ := th.Check(ctx, addrA, "dpatel"); d != 0 {
		t.Fatalf("penalty after a success: %s", d)
	}
}

func TestAccountLocksAcrossAddressesAndTheRightPasswordIsNotTried(t *testing.T) {
	c := newClock()
	th := New(Config{AccountLimit: 5, AddressLimit: 100}, nil)
	th.Now = c.now
	var lock *LockedError
	for i := 0; i < 5; i++ {
		addr := netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
		var err error
		lock, err = th.Failure(ctx, addr, "dpatel")
		tcheck(t, err, "failure")
	}
	if lock == nil || lock.Scope != "account" {
		t.Fatalf("five failures from five addresses: lock %v", lock)
	}
	_, err := th.Check(ctx, addrB, "dpatel")
	var le *LockedError
	if !errors.As(err, &le) || le.Scope != "account" || !errors.Is(err, ErrLocked) {
		t.Fatalf("a fresh address after the account locked: %v", err)
	}
	if _, err := th.Check(ctx, addrB, "other"); err != nil {
		t.Fatalf("another account is locked too: %v", err)
	}
	c.add(DefaultLockout + time.Second)
	if _, err := th.Check(ctx, addrB, "dpatel"); err != nil {
		t.Fatalf("the lockout did not end with its time: %v", err)
	}
}

func TestAddressLocksWhateverNamesItTries(t *testing.T) {
	c := newClock()
	th := New(Config{AccountLimit: 100, AddressLimit: 4}, nil)
	th.Now = c.now
	for i, name := range []string{"a", "b", "c", "d"} {
		_, err := th.Failure(ctx, addrA, name)
		tcheck(t, err, "failure")
		c.add(time.Duration(i) * time.Second)
	}
	if _, err := th.Check(ctx, addrA, "e"); !errors.Is(err, ErrLocked) {
		t.Fatalf("an address spraying names was not locked: %v", err)
	}
	if _, err := th.Check(ctx, addrB, "e"); err != nil {
		t.Fatalf("another address was locked: %v", err)
	}
	// IPv6: one /64 is one client.
	a1, a2 := netip.MustParseAddr("2001:db8:1:2::10"), netip.MustParseAddr("2001:db8:1:2::99")
	for i := 0; i < 4; i++ {
		th.Failure(ctx, a1, "x")
	}
	if _, err := th.Check(ctx, a2, "y"); !errors.Is(err, ErrLocked) {
		t.Fatalf("another address in the same /64 escaped the lockout: %v", err)
	}
}

func TestFailuresOutsideTheWindowAreForgotten(t *testing.T) {
	c := newClock()
	th := New(Config{AccountLimit: 3, AddressLimit: 100, Window: time.Minute}, nil)
	th.Now = c.now
	for i := 0; i < 10; i++ {
		lock, err := th.Failure(ctx, addrA, "dpatel")
		tcheck(t, err, "failure")
		if lock != nil {
			t.Fatalf("locked after %d failures 40 s apart with a 1-minute window of 3", i+1)
		}
		c.add(40 * time.Second)
	}
}

func TestUnlockByAnotherProcessIsSeenAtOnce(t *testing.T) {
	db := filepath.Join(t.TempDir(), "conduit.db")
	locks, err := OpenSQLLocks(ctx, db)
	tcheck(t, err, "open")
	defer locks.Close()
	c := newClock()
	c.t = time.Now() // the table stores Unix seconds; unlock compares with the real clock
	th := New(Config{AccountLimit: 2}, locks)
	th.Now = c.now
	th.Failure(ctx, addrA, "dpatel")
	th.Failure(ctx, addrA, "dpatel")
	if _, err := th.Check(ctx, addrA, "dpatel"); !errors.Is(err, ErrLocked) {
		t.Fatalf("not locked: %v", err)
	}
	// A restart keeps the lockout.
	th2 := New(Config{AccountLimit: 2}, locks)
	th2.Now = c.now
	if _, err := th2.Check(ctx, addrB, "dpatel"); !errors.Is(err, ErrLocked) {
		t.Fatalf("a new process forgot the lockout: %v", err)
	}
	// `conduit user unlock` opens the database on its own.
	cli, err := OpenSQLLocks(ctx, db)
	tcheck(t, err, "open from the CLI")
	ok, err := cli.Unlock(ctx, AccountKey("dpatel"))
	tcheck(t, err, "unlock")
	cli.Close()
	if !ok {
		t.Fatal("unlock found no lockout")
	}
	if _, err := th.Check(ctx, addrA, "dpatel"); err != nil {
		t.Fatalf("still locked after unlock: %v", err)
	}
	if ls, err := locks.List(ctx, time.Now()); err != nil || len(ls) != 0 {
		t.Fatalf("lockouts left: %v %v", ls, err)
	}
}

func TestUnknownAccountsCostOneBcryptOfTheSameCost(t *testing.T) {
	h, err := bcrypt.GenerateFromPassword([]byte("right"), bcrypt.MinCost+2)
	tcheck(t, err, "hash")
	a := NewAccounts([]Account{{Name: "dpatel", Hash: string(h)}})
	if c, _ := bcrypt.Cost(a.dummy); c != bcrypt.MinCost+2 {
		// An unknown name costs what the account costs, neither less
		// (the old leak) nor more (the same leak, reversed).
		t.Fatalf("dummy cost %d, want the account's %d", c, bcrypt.MinCost+2)
	}
	for _, tc := range []struct {
		name, pw string
		want     int
	}{{"dpatel", "right", 0}, {"dpatel", "wrong", -1}, {"nobody", "right", -1}, {"", "", -1}} {
		if got := a.Verify(tc.name, tc.pw); got != tc.want {
			t.Errorf("Verify(%q, %q) = %d, want %d", tc.name, tc.pw, got, tc.want)
		}
	}
	dear, _ := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost+3)
	b := NewAccounts([]Account{{Name: "a", Hash: string(h)}, {Name: "b", Hash: string(dear)}})
	if c, _ := bcrypt.Cost(b.dummy); c != bcrypt.MinCost+3 {
		t.Fatalf("dummy cost %d, want the dearest account's", c)
	}
}

// BenchmarkVerify prints the cost of a known and an unknown name: they
// should be the same (go test -bench Verify ./gateway/authlimit).
func BenchmarkVerify(b *testing.B) {
	h, _ := bcrypt.GenerateFromPassword([]byte("right"), bcrypt.DefaultCost)
	a := NewAccounts([]Account{{Name: "dpatel", Hash: string(h)}})
	b.Run("known", func(b *testing.B) {
		for b.Loop() {
			a.Verify("dpatel", "wrong")
		}
	})
	b.Run("unknown", func(b *testing.B) {
		for b.Loop() {
			a.Verify("nobody", "wrong")
		}
	})
}
