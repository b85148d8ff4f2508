package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// What several gateways sharing one store need of it besides the Store
// interface. Each is an interface of its own, checked by type assertion
// where it is used; the SQLite store implements them for one process.

// DeliveryLocker serialises the delivery of one package: two gateways
// receiving the same envelope at the same moment take turns, and the
// second finds the first's replay record (one delivery).
type DeliveryLocker interface {
	// LockDelivery waits for the package's lock and returns its release.
	LockDelivery(ctx context.Context, originator, packageID string) (unlock func(), err error)
}

// Leader runs work that must run on one gateway at a time (housekeeping:
// clocks, retention, purges, key-expiry warnings).
type Leader interface {
	// Lead runs f while this process holds the named lease, with a
	// context that ends when the lease is lost; it retries every retry
	// while another holds it. It returns when ctx is done.
	Lead(ctx context.Context, name string, retry time.Duration, f func(context.Context)) error
}

// Pinger tells whether the database answers and takes writes (/readyz).
type Pinger interface {
	Ping(ctx context.Context) error
}

// ErrReadOnly: the database takes no writes (a standby, or
// default_transaction_read_only).
var ErrReadOnly = errors.New("the database is read-only")

// --- SQLite: one process.

// sqliteLocks is the in-process table of delivery locks of the SQLite
// store (one gateway per file).
var sqliteLocks struct {
	mu   sync.Mutex
	held map[string]chan struct{}
}

// LockDelivery implements DeliveryLocker within this process.
func (s *SQLite) LockDelivery(ctx context.Context, originator, packageID string) (func(), error) {
	key := originator + "\x00" + packageID
	for {
		sqliteLocks.mu.Lock()
		if sqliteLocks.held == nil {
			sqliteLocks.held = map[string]chan struct{}{}
		}
		ch, busy := sqliteLocks.held[key]
		if !busy {
			ch = make(chan struct{})
			sqliteLocks.held[key] = ch
			sqliteLocks.mu.Unlock()
			return func() {
				sqliteLocks.mu.Lock()
				delete(sqliteLocks.held, key)
				sqliteLocks.mu.Unlock()
				close(ch)
			}, nil
		}
		sqliteLocks.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Lead implements Leader: a SQLite store has one gateway, which leads.
func (s *SQLite) Lead(ctx context.Context, name string, retry time.Duration, f func(context.Context)) error {
	f(ctx)
	return ctx.Err()
}

// Ping implements Pinger.
func (s *SQLite) Ping(ctx context.Context) error {
	_, err := s.Depth(ctx)
	return err
}

// --- PostgreSQL: advisory locks and LISTEN/NOTIFY.

// lockKey is the second key of a two-key advisory lock: 32 bits of a hash
// (a collision only makes two packages take turns).
func lockKey(parts ...string) int32 {
	h := fnv.New32a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return int32(h.Sum32())
}

// LockDelivery implements DeliveryLocker with a session advisory lock on a
// connection of its own: released when unlock is called, or by the server
// when the gateway dies (its connection closes).
func (s *Postgres) LockDelivery(ctx context.Context, originator, packageID string) (func(), error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("delivery lock: %w", err)
	}
	k := lockKey(originator, packageID)
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1, $2)`, lockDelivery, k); err != nil {
		conn.Release()
		return nil, fmt.Errorf("delivery lock: %w", err)
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1, $2)`, lockDelivery, k); err != nil {
			// The lock must not outlive us on a pooled connection.
			conn.Conn().Close(uctx)
		}
		conn.Release()
	}, nil
}

// leaseCheck is how often a leader checks that its lock's connection is
// still alive; a leader cut from the database stops within it.
const leaseCheck = 2 * time.Second

// Lead implements Leader with a session advisory lock held on a connection
// of its own for as long as this gateway leads. When the gateway dies, its
// connection closes and the server releases the lock: another gateway,
// retrying every retry, takes it (a SIGKILL closes the socket at once; a
// machine that vanishes is found by TCP keepalives).
func (s *Postgres) Lead(ctx context.Context, name string, retry time.Duration, f func(context.Context)) error {
	k := lockKey(name)
	for {
		_, err := s.tryLead(ctx, k, name, f)
		if err != nil && ctx.Err() == nil {
			slog.Debug("lease not taken", "lease", name, "err", err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Lost or not taken: wait before trying again, so that a gateway
		// that lost its connection does not snatch the lease straight back
		// from one that is healthy.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retry):
		}
	}
}

func (s *Postgres) tryLead(ctx context.Context, k int32, name string, f func(context.Context)) (bool, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, lockLead, k).Scan(&got); err != nil {
		return false, err
	}
	if !got {
		return false, nil
	}
	slog.Info("lease taken: this gateway runs it", "lease", name)
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(lctx)
	}()
	t := time.NewTicker(leaseCheck)
	defer t.Stop()
	for {
		select {
		case <-done:
			cancel()
			s.unlead(conn, k)
			return true, nil
		case <-t.C:
			pctx, pcancel := context.WithTimeout(ctx, leaseCheck)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil {
				slog.Warn("lease lost: the database connection failed", "lease", name, "err", err)
				cancel()
				<-done
				conn.Conn().Close(context.Background())
				return true, err
			}
		}
	}
}

func (s *Postgres) unlead(conn *pgxpool.Conn, k int32) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1, $2)`, lockLead, k); err != nil {
		conn.Conn().Close(ctx)
	}
}

// Ping implements Pinger: the database answers and takes writes.
func (s *Postgres) Ping(ctx context.Context) error {
	var ro string
	if err := s.pool.QueryRow(ctx, `SELECT current_setting('transaction_read_only')`).Scan(&ro); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if ro == "on" {
		return ErrReadOnly
	}
	return nil
}

// Changes implements Store with LISTEN: it receives after a transaction
// that sent a notification (new work, a release, a key decision) commits,
// on any gateway or the command line. While the listening connection is
// down it reconnects every interval and reports a change once it is back
// (what happened meanwhile was not heard).
func (s *Postgres) Changes(ctx context.Context, every time.Duration) <-chan struct{} {
	ch := make(chan struct{}, 1)
	go func() {
		defer close(ch)
		for range s.listen(ctx, notifyChannel, every, true) {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return ch
}

// policyChannel carries policy reloads between an agency's gateways.
const policyChannel = "conduit_policy"

// PolicyReloads receives the payload of every policy-reload notification
// (NotifyPolicyReload) from any gateway of the agency, this one's too.
func (s *Postgres) PolicyReloads(ctx context.Context, every time.Duration) <-chan string {
	return s.listen(ctx, policyChannel, every, false)
}

// NotifyPolicyReload tells the agency's other gateways that this one
// reloaded its policy; from names the sender, so that it can ignore its
// own notification.
func (s *Postgres) NotifyPolicyReload(ctx context.Context, from string) error {
	_, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, policyChannel, from)
	return err
}

// listen delivers the payloads of the channel's notifications until ctx
// is done, on a connection of its own, reconnecting every interval while
// the database is down. With reconnected, a reconnection is reported as an
// empty payload.
func (s *Postgres) listen(ctx context.Context, channel string, every time.Duration, reconnected bool) <-chan string {
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		first := true
		for ctx.Err() == nil {
			conn, err := s.pool.Acquire(ctx)
			if err == nil {
				if _, err = conn.Exec(ctx, `LISTEN `+pgx.Identifier{channel}.Sanitize()); err == nil {
					if !first && reconnected {
						ch <- ""
					}
					first = false
					for {
						n, err := conn.Conn().WaitForNotification(ctx)
						if err != nil {
							break
						}
						select {
						case ch <- n.Payload:
						case <-ctx.Done():
						}
					}
				}
				// A connection that listened goes back closed, so that
				// its LISTEN does not follow it into the pool.
				conn.Conn().Close(context.Background())
				conn.Release()
			}
			select {
			case <-ctx.Done():
			case <-time.After(every):
			}
		}
	}()
	return ch
}
