// Package admission is in charge of who gets a connection slot on a
// gateway's SMTP listeners, before any SMTP work is done for them: a cap on
// all connections, a cap per client address, slots kept for clients that
// have proved who they are (a partner gateway's verified client
// certificate, a member of staff's successful AUTH), and short deadlines
// for everyone else.
//
// It follows Postfix's anvil (smtpd_client_connection_count_limit: a
// per-address cap answered with "421 4.7.0") and postscreen (strangers are
// kept apart from the real SMTP service until they have shown they are
// worth it), and mox's short pre-authentication timeouts. Where those
// differ: when the strangers' share of the slots is full, the newest
// stranger is not turned away, the oldest stranger is dropped instead, so
// that no number of idle or slow connections can keep a newcomer (a partner
// about to present its certificate) from its banner.
package admission

import (
	"container/list"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults, chosen like Postfix's (smtpd_timeout 300s after login; its
// anvil default of 50 connections per client is for an open MX, a gateway
// between a few dozen agencies needs far fewer) and mox's pre-auth limits.
const (
	DefaultMax          = 100
	DefaultPerAddress   = 10
	DefaultReserved     = 20
	DefaultPreAuthIdle  = 20 * time.Second
	DefaultPreAuthTotal = 60 * time.Second
)

// Config bounds a listener.
type Config struct {
	// Max bounds all connections at once.
	Max int
	// PerAddress bounds the unproven connections from one client address
	// (an IPv4 address, or an IPv6 /64, as mox counts).
	PerAddress int
	// Reserved slots are held only by proven connections: strangers
	// never have more than Max-Reserved.
	Reserved int
	// PreAuthIdle bounds each wait for a command (and the TLS handshake)
	// before the connection is proven.
	PreAuthIdle time.Duration
	// PreAuthTotal bounds the whole time before the connection is proven,
	// however steadily a slow client trickles bytes (slow-loris).
	PreAuthTotal time.Duration
	// Refusal is the line written to a client turned away (an RFC 5321
	// section 3.1 / 4.2 reply with its CRLF); the default is a 421 4.7.0.
	Refusal func(Reason) string
}

func (c Config) withDefaults() Config {
	if c.Max <= 0 {
		c.Max = DefaultMax
	}
	if c.PerAddress <= 0 {
		c.PerAddress = DefaultPerAddress
	}
	if c.Reserved < 0 {
		c.Reserved = 0
	}
	if c.Reserved >= c.Max {
		c.Reserved = c.Max - 1
	}
	if c.PreAuthIdle <= 0 {
		c.PreAuthIdle = DefaultPreAuthIdle
	}
	if c.PreAuthTotal <= 0 {
		c.PreAuthTotal = DefaultPreAuthTotal
	}
	if c.Refusal == nil {
		c.Refusal = DefaultRefusal
	}
	return c
}

// Reason says why a connection was turned away or dropped.
type Reason int

const (
	// TooManyFromAddress: the client address holds its share already.
	TooManyFromAddress Reason = iota
	// Full: every slot is held by proven connections.
	Full
	// Evicted: the oldest unproven connection, dropped for a newcomer.
	Evicted
)

func (r Reason) String() string {
	switch r {
	case TooManyFromAddress:
		return "per-address"
	case Full:
		return "full"
	case Evicted:
		return "evicted"
	}
	return "unknown"
}

// DefaultRefusal is the greeting-time refusal, RFC 5321 section 3.1 (421
// closes the transmission channel) with RFC 3463 4.7.0, as Postfix's anvil
// answers.
func DefaultRefusal(r Reason) string {
	if r == TooManyFromAddress {
		return "421 4.7.0 Too many connections from your address; close some and try again later\r\n"
	}
	return "421 4.7.0 This gateway is busy; try again later\r\n"
}

// Stats are the listener's counts since it started, and its state now.
type Stats struct {
	Unproven, Proven int // connections open now
	Refused          map[Reason]int64
	Promoted         int64
}

// Listener wraps a net.Listener with admission control. Accept returns
// only admitted connections; turned-away clients get their 421 line here
// and never reach the SMTP server.
type Listener struct {
	net.Listener
	cfg Config

	mu       sync.Mutex
	unproven *list.List // of *Conn, oldest first
	proven   int
	perAddr  map[netip.Prefix]int
	refused  map[Reason]int64
	promoted int64
	// OnRefuse, when set, is told of every client turned away or dropped
	// (for metrics); it must not block.
	OnRefuse func(Reason, netip.Addr)
}

// Wrap puts admission control in front of l.
func Wrap(l net.Listener, cfg Config) *Listener {
	return &Listener{Listener: l, cfg: cfg.withDefaults(), unproven: list.New(),
		perAddr: map[netip.Prefix]int{}, refused: map[Reason]int64{}}
}

// Config returns the settings in force, defaults filled in.
func (l *Listener) Config() Config { return l.cfg }

// Accept waits for the next admitted connection.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if c := l.admit(nc); c != nil {
			return c, nil
		}
	}
}

func prefixOf(a net.Addr) netip.Prefix {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Prefix{}
	}
	ip := ap.Addr().Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64 // one customer's allocation, as mox counts IPv6 clients
	}
	p, _ := ip.Prefix(bits)
	return p
}

func (l *Listener) admit(nc net.Conn) *Conn {
	p := prefixOf(nc.RemoteAddr())
	now := time.Now()
	c := &Conn{Conn: nc, l: l, prefix: p, admitted: now}
	var evict *Conn
	l.mu.Lock()
	switch {
	case l.perAddr[p] >= l.cfg.PerAddress:
		l.mu.Unlock()
		l.refuse(nc, TooManyFromAddress, p)
		return nil
	case l.proven >= l.cfg.Max:
		l.mu.Unlock()
		l.refuse(nc, Full, p)
		return nil
	}
	if l.unproven.Len() >= min(l.cfg.Max-l.cfg.Reserved, l.cfg.Max-l.proven) {
		// The strangers' share is full: drop a stranger rather than keep
		// the newcomer waiting. A real client proves itself within a few
		// round trips after its banner; an idle one never does.
		if evict = l.victim(); evict != nil {
			l.unlink(evict)
			l.refused[Evicted]++
		}
	}
	c.elem = l.unproven.PushBack(c)
	l.perAddr[p]++
	l.mu.Unlock()
	// Every wait before the connection is proven is short: the banner
	// write and the first command read included.
	c.Conn.SetDeadline(c.clamp(time.Time{}))
	if evict != nil {
		if l.OnRefuse != nil {
			l.OnRefuse(Evicted, evict.prefix.Addr())
		}
		evict.evicted.Store(true)
		evict.Conn.Close()
	}
	return c
}

// victim picks the unproven connection to drop (l.mu held): the oldest
// of the address holding the most, so that a flood from a few addresses
// evicts itself before it evicts a partner's single new connection, and
// the oldest of all when every address holds as many.
func (l *Listener) victim() *Conn {
	most := 0
	for _, n := range l.perAddr {
		most = max(most, n)
	}
	for e := l.unproven.Front(); e != nil; e = e.Next() {
		if c := e.Value.(*Conn); l.perAddr[c.prefix] == most {
			return c
		}
	}
	if f := l.unproven.Front(); f != nil {
		return f.Value.(*Conn)
	}
	return nil
}

// refuse writes the refusal line and closes; it never waits more than a
// second on a client that does not read.
func (l *Listener) refuse(nc net.Conn, r Reason, p netip.Prefix) {
	l.mu.Lock()
	l.refused[r]++
	l.mu.Unlock()
	if l.OnRefuse != nil {
		l.OnRefuse(r, p.Addr())
	}
	nc.SetWriteDeadline(time.Now().Add(time.Second))
	nc.Write([]byte(l.cfg.Refusal(r)))
	nc.Close()
}

// unlink removes an unproven connection from the accounting (l.mu held).
func (l *Listener) unlink(c *Conn) {
	if c.elem == nil {
		return
	}
	l.unproven.Remove(c.elem)
	c.elem = nil
	if l.perAddr[c.prefix]--; l.perAddr[c.prefix] <= 0 {
		delete(l.perAddr, c.prefix)
	}
}

// Stats returns the counts.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := Stats{Unproven: l.unproven.Len(), Proven: l.proven, Refused: map[Reason]int64{}, Promoted: l.promoted}
	for k, v := range l.refused {
		s.Refused[k] = v
	}
	return s
}

// Conn is an admitted connection.
type Conn struct {
	net.Conn
	l        *Listener
	prefix   netip.Prefix
	admitted time.Time
	elem     *list.Element // in l.unproven while unproven
	proven   atomic.Bool
	evicted  atomic.Bool
	dropped  atomic.Bool
	fails    atomic.Int32
	once     sync.Once
}

// clamp shortens a deadline while the connection is unproven.
func (c *Conn) clamp(t time.Time) time.Time {
	if c.proven.Load() {
		return t
	}
	lim := time.Now().Add(c.l.cfg.PreAuthIdle)
	if end := c.admitted.Add(c.l.cfg.PreAuthTotal); end.Before(lim) {
		lim = end
	}
	if t.IsZero() || t.After(lim) {
		return lim
	}
	return t
}

// SetDeadline, SetReadDeadline and SetWriteDeadline apply the pre-auth
// bounds to whatever the SMTP server asks for (go-smtp renews its read
// deadline before every command).
func (c *Conn) SetDeadline(t time.Time) error { return c.Conn.SetDeadline(c.clamp(t)) }
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.dropped.Load() {
		return c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
	return c.Conn.SetReadDeadline(c.clamp(t))
}
func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(c.clamp(t))
}

// Fail counts a failure (a failed login) against the connection, across
// SMTP sessions (go-smtp starts a new one at each EHLO), and returns the
// count so far.
func Fail(nc net.Conn) int {
	c, err := Of(nc)
	if err != nil {
		return 0
	}
	return int(c.fails.Add(1))
}

// Drop ends a connection after the reply being written now: its next
// read fails at once, and the server then closes it. RFC 4954 section 4
// lets a server end the session after failed authentications.
func Drop(nc net.Conn) {
	c, err := Of(nc)
	if err != nil {
		nc.Close()
		return
	}
	c.dropped.Store(true)
	c.Conn.SetReadDeadline(time.Unix(1, 0))
}

// Evicted says whether the connection was dropped to make room.
func (c *Conn) Evicted() bool { return c.evicted.Load() }

// Proven says whether the connection was promoted.
func (c *Conn) Proven() bool { return c.proven.Load() }

// Close releases the slot.
func (c *Conn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.proven.Load() {
			c.l.proven--
		} else {
			c.l.unlink(c)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// ErrNotAdmitted: the connection did not come through an admission
// Listener.
var ErrNotAdmitted = errors.New("admission: not an admitted connection")

// Of finds the admitted connection under c, through a TLS layer (STARTTLS
// or implicit TLS wraps it).
func Of(c net.Conn) (*Conn, error) {
	for range 4 {
		switch v := c.(type) {
		case *Conn:
			return v, nil
		case *tls.Conn:
			c = v.NetConn()
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil, ErrNotAdmitted
		}
	}
	return nil, ErrNotAdmitted
}

// Promote moves a connection that has proved who it is into the proven
// slots: no per-address share, no pre-auth deadlines, and never evicted.
// It reports false when the connection is not an admitted one or the
// proven slots are all taken (the connection then stays as it was).
func Promote(nc net.Conn) bool {
	c, err := Of(nc)
	if err != nil {
		return false
	}
	if c.proven.Load() {
		return true
	}
	l := c.l
	l.mu.Lock()
	if c.elem == nil || l.proven >= l.cfg.Max {
		// Evicted or closed meanwhile, or no slot.
		l.mu.Unlock()
		return false
	}
	l.unlink(c)
	l.proven++
	l.promoted++
	c.proven.Store(true)
	l.mu.Unlock()
	// The clamped deadlines go; the server sets its own before its next
	// read and write.
	c.Conn.SetDeadline(time.Time{})
	return true
}
