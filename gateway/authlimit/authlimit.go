// Package authlimit is in charge of slowing and stopping password guessing
// on the submission listener: a penalty delay that grows with the failures
// from a client address (after Dovecot's auth_penalty: doubling, capped at
// 15 s), a lockout per address and per account after too many failures in
// a window (after mox's per-IP and per-account authentication failure
// limits), lockouts kept in the gateway's database so that a restart does
// not lift them and `conduit user unlock` can, and password checks whose
// cost does not depend on whether the account exists.
package authlimit

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Defaults. Dovecot's auth_penalty starts at 2 s after the second failure
// and caps at 15 s; mox locks an address out after 10 failures per minute
// and 50 per hour. A gateway's staff are few and log in from known
// machines: 10 failures for one account or 20 from one address in 15
// minutes is far beyond mistyping.
const (
	DefaultPenalty      = time.Second
	DefaultMaxPenalty   = 15 * time.Second
	DefaultAccountLimit = 10
	DefaultAddressLimit = 20
	DefaultWindow       = 15 * time.Minute
	DefaultLockout      = 15 * time.Minute
	DefaultSessionLimit = 3
)

// Config tunes a Throttle; zero fields take the defaults.
type Config struct {
	// Penalty is the delay after the first failure from an address; it
	// doubles with each further failure, up to MaxPenalty.
	Penalty, MaxPenalty time.Duration
	// AccountLimit and AddressLimit are the failures within Window after
	// which the account or the address is locked for Lockout.
	AccountLimit, AddressLimit int
	Window, Lockout            time.Duration
	// SessionLimit is the failures after which one SMTP session is
	// closed (RFC 4954 section 4 lets the server end it).
	SessionLimit int
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defi := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Penalty, DefaultPenalty)
	def(&c.MaxPenalty, DefaultMaxPenalty)
	def(&c.Window, DefaultWindow)
	def(&c.Lockout, DefaultLockout)
	defi(&c.AccountLimit, DefaultAccountLimit)
	defi(&c.AddressLimit, DefaultAddressLimit)
	defi(&c.SessionLimit, DefaultSessionLimit)
	return c
}

// LockStore keeps lockouts beyond the process: keys are "account:NAME" and
// "address:PREFIX".
type LockStore interface {
	Lock(ctx context.Context, key string, until time.Time, reason string) error
	// LockedUntil returns the end of a lockout in force, or zero.
	LockedUntil(ctx context.Context, key string, now time.Time) (time.Time, error)
	Unlock(ctx context.Context, key string) (bool, error)
}

// LockedError: the account or the address is locked out.
type LockedError struct {
	Scope string // "account" or "address"
	Until time.Time
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("%s locked out after too many failed logins until %s", e.Scope, e.Until.UTC().Format(time.RFC3339))
}

// ErrLocked matches any *LockedError with errors.Is.
var ErrLocked = errors.New("locked out")

func (e *LockedError) Is(target error) bool { return target == ErrLocked }

type counter struct {
	fails []time.Time // within the window, oldest first
}

func (c *counter) add(now time.Time, window time.Duration) int {
	c.prune(now, window)
	c.fails = append(c.fails, now)
	return len(c.fails)
}

func (c *counter) prune(now time.Time, window time.Duration) {
	i := 0
	for i < len(c.fails) && now.Sub(c.fails[i]) > window {
		i++
	}
	c.fails = c.fails[i:]
}

// Throttle counts failed logins. It is safe for concurrent use.
type Throttle struct {
	cfg   Config
	locks LockStore
	Now   func() time.Time

	mu      sync.Mutex
	address map[netip.Prefix]*counter
	account map[string]*counter
	// locked caches lockouts known in this process; the LockStore is
	// asked again before one is enforced, so an unlock by another process
	// takes effect.
	locked map[string]time.Time
}

// New returns a throttle; locks may be nil (lockouts then last only as
// long as the process).
func New(cfg Config, locks LockStore) *Throttle {
	if locks == nil {
		locks = newMemLocks()
	}
	return &Throttle{cfg: cfg.withDefaults(), locks: locks, Now: time.Now,
		address: map[netip.Prefix]*counter{}, account: map[string]*counter{}, locked: map[string]time.Time{}}
}

// Config returns the settings in force.
func (t *Throttle) Config() Config { return t.cfg }

// Prefix is the unit an address is counted in: an IPv4 address, or an
// IPv6 /64.
func Prefix(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits)
	return p
}

// AccountKey and AddressKey name lockouts in the LockStore.
func AccountKey(name string) string { return "account:" + strings.ToLower(name) }

// AddressKey names an address's lockout.
func AddressKey(p netip.Prefix) string { return "address:" + p.String() }

// Check is asked before a password is verified. It returns a *LockedError
// when the address or the account is locked out (the password is then not
// checked at all: a locked account cannot be confirmed by guessing), and
// otherwise the penalty to wait before answering, grown by the address's
// recent failures.
func (t *Throttle) Check(ctx context.Context, addr netip.Addr, account string) (time.Duration, error) {
	now := t.Now()
	p := Prefix(addr)
	for _, k := range []struct{ scope, key string }{{"address", AddressKey(p)}, {"account", AccountKey(account)}} {
		t.mu.Lock()
		until, cached := t.locked[k.key]
		t.mu.Unlock()
		if !cached || !until.After(now) {
			continue
		}
		// Confirm with the store: `conduit user unlock` may have lifted it.
		u, err := t.locks.LockedUntil(ctx, k.key, now)
		if err != nil {
			return 0, fmt.Errorf("authlimit: %w", err)
		}
		if u.After(now) {
			return 0, &LockedError{Scope: k.scope, Until: u}
		}
		t.forget(k.key, p, account)
	}
	// A lockout made by another gateway process sharing the database.
	if u, err := t.locks.LockedUntil(ctx, AccountKey(account), now); err != nil {
		return 0, fmt.Errorf("authlimit: %w", err)
	} else if u.After(now) {
		t.mu.Lock()
		t.locked[AccountKey(account)] = u
		t.mu.Unlock()
		return 0, &LockedError{Scope: "account", Until: u}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.address[p]
	if c == nil {
		return 0, nil
	}
	c.prune(now, t.cfg.Window)
	return t.penalty(len(c.fails)), nil
}

// penalty after n failures: 0, then Penalty doubling up to MaxPenalty.
func (t *Throttle) penalty(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	d := t.cfg.Penalty
	for i := 1; i < n && d < t.cfg.MaxPenalty; i++ {
		d *= 2
	}
	return min(d, t.cfg.MaxPenalty)
}

// forget drops a lifted lockout and its counts.
func (t *Throttle) forget(key string, p netip.Prefix, account string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.locked, key)
	if strings.HasPrefix(key, "address:") {
		delete(t.address, p)
	} else {
		delete(t.account, strings.ToLower(account))
	}
}

// Failure records a failed login. It returns the lockout it caused, if
// any (already stored), so the caller can audit it.
func (t *Throttle) Failure(ctx context.Context, addr netip.Addr, account string) (*LockedError, error) {
	now := t.Now()
	p := Prefix(addr)
	acct := strings.ToLower(account)
	t.mu.Lock()
	ca := t.address[p]
	if ca == nil {
		ca = &counter{}
		t.address[p] = ca
	}
	na := ca.add(now, t.cfg.Window)
	cu := t.account[acct]
	if cu == nil {
		cu = &counter{}
		t.account[acct] = cu
	}
	nu := cu.add(now, t.cfg.Window)
	t.mu.Unlock()
	var lock *LockedError
	until := now.Add(t.cfg.Lockout)
	if nu >= t.cfg.AccountLimit {
		if err := t.lock(ctx, AccountKey(account), until, fmt.Sprintf("%d failed logins in %s", nu, t.cfg.Window)); err != nil {
			return nil, err
		}
		lock = &LockedError{Scope: "account", Until: until}
	}
	if na >= t.cfg.AddressLimit {
		if err := t.lock(ctx, AddressKey(p), until, fmt.Sprintf("%d failed logins in %s", na, t.cfg.Window)); err != nil {
			return nil, err
		}
		if lock == nil {
			lock = &LockedError{Scope: "address", Until: until}
		}
	}
	return lock, nil
}

func (t *Throttle) lock(ctx context.Context, key string, until time.Time, reason string) error {
	if err := t.locks.Lock(ctx, key, until, reason); err != nil {
		return fmt.Errorf("authlimit: %w", err)
	}
	t.mu.Lock()
	t.locked[key] = until
	t.mu.Unlock()
	return nil
}

// Success clears the account's and the address's failures, as Dovecot
// clears the penalty after a successful login.
func (t *Throttle) Success(addr netip.Addr, account string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.address, Prefix(addr))
	delete(t.account, strings.ToLower(account))
}

// Unlock lifts an account's lockout and its failure count.
func (t *Throttle) Unlock(ctx context.Context, account string) (bool, error) {
	ok, err := t.locks.Unlock(ctx, AccountKey(account))
	t.forget(AccountKey(account), netip.Prefix{}, account)
	return ok, err
}

// Wait sleeps for d or until ctx is done.
func Wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// memLocks keeps lockouts in memory only.
type memLocks struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func newMemLocks() *memLocks { return &memLocks{m: map[string]time.Time{}} }

func (m *memLocks) Lock(_ context.Context, key string, until time.Time, _ string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.m[key] = until
	return nil
}

func (m *memLocks) LockedUntil(_ context.Context, key string, now time.Time) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if u := m.m[key]; u.After(now) {
		return u, nil
	}
	return time.Time{}, nil
}

func (m *memLocks) Unlock(_ context.Context, key string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.m[key]
	delete(m.m, key)
	return ok, nil
}
