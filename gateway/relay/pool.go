package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway/tlsroute"
	"github.com/conduit-gateway/conduit/keys"
)

// The relay's connection cache, after Postfix's (smtp_connection_cache_on_demand,
// smtp_connection_cache_time_limit, smtp_connection_reuse_time_limit): a
// session to a partner gateway that delivered an item is kept open for a
// short idle time, and the next item for the same destination goes over it
// after an RSET, instead of a new TCP connection, STARTTLS handshake and
// EHLO. Every session in the cache was verified when it was made, exactly
// as a one-shot session is (tlsroute.ClientConfig: TLS 1.2 or later, the agencies' CA or
// the route's SPKI pin, this gateway's client certificate for mutual TLS);
// none is ever kept in clear.
const (
	// sessionIdle is how long an unused session stays open.
	sessionIdle = 5 * time.Second
	// sessionMaxAge bounds a session's life however busy it is, so that
	// a long burst still reconnects (and re-verifies) now and then.
	sessionMaxAge = 5 * time.Minute
	// sessionMaxTransactions bounds the items sent over one session.
	sessionMaxTransactions = 50
	// sessionCommandBudget bounds the MAIL, RCPT and DATA commands of one
	// session well below the receiving gateway's per-session limit
	// (limits.commands, default 200), which answers 421 past it.
	sessionCommandBudget = 100
	// maxIdleTotal bounds the idle sessions of the whole cache.
	maxIdleTotal = 32
	// probeTimeout bounds the first command (MAIL) on a cached session
	// used again: a peer that has gone quiet is given up quickly, and the
	// package goes over a new session.
	probeTimeout = 10 * time.Second
	// commandTimeout bounds every other command.
	commandTimeout = 5 * time.Minute
	// quitTimeout bounds the QUIT that closes a session, so that a
	// wedged peer cannot hold up the gateway's shutdown.
	quitTimeout = 2 * time.Second
	// maxDialsPerDest bounds a destination's connection set-ups at once,
	// well under a receiving gateway's default of 10 unproven
	// connections from one address.
	maxDialsPerDest = 4
)

// sessionKey names what a cached session was established under. A session
// is only reused for the same key, so that a change to the directory (the
// gateway's address, its TLS pin, its mutual-TLS flag), to this gateway's
// TLS identity or CA (a new client configuration is a new *tls.Config;
// it is never changed in place), or to the partner keys in force (an
// approved key change swaps the set) never sends an item over a session
// made under the old settings.
type sessionKey struct {
	dest, addr, host, pin string
	mutual                bool
	tls                   *tls.Config
	partners              *keys.Partners
}

func (r *Relay) sessionKey(a *config.Agency, addr, host string) sessionKey {
	return sessionKey{dest: a.ID, addr: addr, host: host, pin: a.TLSPin, mutual: a.MutualTLS,
		tls: r.clientTLS, partners: r.keys.Partners()}
}

// relaySession is one established, verified SMTP session to a partner
// gateway.
type relaySession struct {
	key     sessionKey
	c       *wireClient
	created time.Time
	idle    time.Time // when it was last put back
	txns    int       // transactions completed
	cmds    int       // MAIL, RCPT and DATA commands sent
}

// close ends the session: QUIT when the peer still answers, and the
// connection closed in every case.
func (s *relaySession) close() {
	s.c.Quit(quitTimeout)
}

// usable says whether the session may carry one more item of n recipients.
func (s *relaySession) usable(now time.Time, rcpts int) bool {
	return s.txns < sessionMaxTransactions && s.cmds+2+rcpts <= sessionCommandBudget &&
		now.Sub(s.created) < sessionMaxAge
}

// relayPool holds the idle sessions of one relay run. The relay makes it
// when it starts and closes it when it stops, so that Run returns with no
// session open and no goroutine of it left.
type relayPool struct {
	perDest  int           // idle sessions kept per destination
	idleTime time.Duration // how long an unused session stays open

	mu     sync.Mutex
	idle   map[sessionKey][]*relaySession // most recently used last
	total  int
	closed bool

	stop chan struct{}
	done chan struct{}
	// tickets holds TLS session tickets per key, so that a new
	// connection to a partner resumes TLS instead of a full handshake.
	tickets map[sessionKey]tls.ClientSessionCache
	// dials bounds the connection set-ups under way per destination.
	dials map[string]chan struct{}
}

func newRelayPool(perDest int, idle time.Duration) *relayPool {
	p := &relayPool{perDest: max(perDest, 1), idleTime: idle, idle: map[sessionKey][]*relaySession{},
		tickets: map[sessionKey]tls.ClientSessionCache{}, dials: map[string]chan struct{}{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.expire()
	return p
}

// get returns an idle session for the key that may carry an item of rcpts
// recipients, or nil. Sessions made under another key for the same
// destination are stale (the settings changed) and closed.
func (p *relayPool) get(key sessionKey, rcpts int) *relaySession {
	if p == nil {
		return nil
	}
	now := time.Now()
	var drop []*relaySession
	var found *relaySession
	p.mu.Lock()
	for k, ss := range p.idle {
		if k.dest == key.dest && k != key {
			drop = append(drop, ss...)
			p.total -= len(ss)
			delete(p.idle, k)
			delete(p.tickets, k)
		}
	}
	ss := p.idle[key]
	for len(ss) > 0 && found == nil {
		s := ss[len(ss)-1]
		ss = ss[:len(ss)-1]
		p.total--
		if s.usable(now, rcpts) && now.Sub(s.idle) < p.idleTime {
			found = s
		} else {
			drop = append(drop, s)
		}
	}
	p.setIdle(key, ss)
	p.mu.Unlock()
	closeAll(drop)
	return found
}

// setIdle records the idle sessions of a key (p.mu held).
func (p *relayPool) setIdle(k sessionKey, ss []*relaySession) {
	if len(ss) == 0 {
		delete(p.idle, k)
	} else {
		p.idle[k] = ss
	}
}

// put keeps a session that just completed a transaction, or closes it
// when the cache is full, closed, or the session used up.
func (p *relayPool) put(s *relaySession) {
	if p == nil {
		s.close()
		return
	}
	now := time.Now()
	s.idle = now
	p.mu.Lock()
	if p.closed || p.total >= maxIdleTotal || len(p.idle[s.key]) >= p.perDest || !s.usable(now, 1) {
		p.mu.Unlock()
		s.close()
		return
	}
	p.idle[s.key] = append(p.idle[s.key], s)
	p.total++
	p.mu.Unlock()
}

// dialSlot waits for one of the few connection set-ups a destination may
// have under way at once, and returns its release. A receiving gateway
// admits only a few connections from one address until they have proved
// who they are (limits.connections-per-address, 10 by default; a partner
// proves itself with its client certificate after STARTTLS): a relay whose
// concurrency grows under a backlog and opens its new sessions all at
// once is answered 421 for some of them, and those packages wait out a
// retry. Set-ups in turn, a few at a time, stay under that limit.
func (p *relayPool) dialSlot(ctx context.Context, dest string) (release func(), err error) {
	if p == nil {
		return func() {}, nil
	}
	p.mu.Lock()
	sem := p.dials[dest]
	if sem == nil {
		sem = make(chan struct{}, maxDialsPerDest)
		p.dials[dest] = sem
	}
	p.mu.Unlock()
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ticketCache is the TLS session cache for a key's new connections.
func (p *relayPool) ticketCache(key sessionKey) tls.ClientSessionCache {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.tickets[key]
	if c == nil {
		if len(p.tickets) >= maxIdleTotal {
			clear(p.tickets) // rare: many partners, or settings changing
		}
		c = tls.NewLRUClientSessionCache(8)
		p.tickets[key] = c
	}
	return c
}

// expire closes sessions idle for longer than idleTime until the pool is
// closed.
func (p *relayPool) expire() {
	defer close(p.done)
	t := time.NewTicker(p.idleTime / 5)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		var drop []*relaySession
		p.mu.Lock()
		for k, ss := range p.idle {
			keep := ss[:0]
			for _, s := range ss {
				if now.Sub(s.idle) >= p.idleTime {
					drop = append(drop, s)
				} else {
					keep = append(keep, s)
				}
			}
			p.total -= len(ss) - len(keep)
			p.setIdle(k, keep)
		}
		p.mu.Unlock()
		closeAll(drop)
	}
}

// close closes every idle session and stops the expiry; a session put back
// afterwards is closed at once.
func (p *relayPool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	var drop []*relaySession
	for _, ss := range p.idle {
		drop = append(drop, ss...)
	}
	p.idle, p.total = nil, 0
	p.mu.Unlock()
	close(p.stop)
	<-p.done
	closeAll(drop)
}

// closeAll closes sessions side by side and returns when all are closed.
func closeAll(ss []*relaySession) {
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(s.close)
	}
	wg.Wait()
}

// dialRelay establishes a verified session to an agency's gateway:
// STARTTLS is required and the certificate must verify against the
// agencies' CA for the host named in the directory (or match the route's
// pin). There is no plaintext fallback. Errors are relayErrors.
func (r *Relay) dialRelay(ctx context.Context, pool *relayPool, a *config.Agency, addr, host string, key sessionKey) (*relaySession, error) {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &relayError{err: fmt.Errorf("connect %s: %w", addr, err)}
	}
	tc := tlsroute.ClientConfig(r.clientTLS, r.directory, a, host)
	tc.ClientSessionCache = pool.ticketCache(key)
	c, err := dialWire(ctx, conn, tc, r.hostname, commandTimeout)
	if err != nil {
		conn.Close()
		var smtpErr *smtp.SMTPError
		if errors.As(err, &smtpErr) {
			return nil, classify(err)
		}
		return nil, &relayError{err: fmt.Errorf("%s: no TLS, so nothing was sent: %w", addr, err), alert: true}
	}
	if st, ok := c.TLSConnectionState(); !ok || st.Version < tls.VersionTLS12 {
		c.Close()
		return nil, &relayError{err: fmt.Errorf("TLS with %s is below 1.2; nothing was sent", addr), alert: true}
	}
	return &relaySession{key: key, c: c, created: time.Now()}, nil
}

// errStale marks a cached session that failed before it was given the
// item: nothing was handed over, and a new session may try at once.
var errStale = errors.New("cached session no longer usable")

// transact sends one item over an established session, for as long as ctx
// lasts. The error is a
// relayError, or wraps errStale when the item was not handed over and the
// session was one reused from the cache (a 421 or a broken connection
// before DATA: the peer closed it or ended the session). A failure to read
// the envelope is never errStale: another session would meet it too.
func (s *relaySession) transact(ctx context.Context, reused bool, mailFrom string, rcpts []string, env message) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", &relayError{err: err}
	}
	// A session that ended a transaction with a 250 is ready for the
	// next MAIL (RFC 5321 4.1.1.1), so on a cached session the MAIL is
	// the probe, under probeTimeout instead of the usual five minutes: a
	// peer that closed the session while it was idle, or answers 421,
	// fails there, before anything was handed over (errStale).
	first := commandTimeout
	if reused {
		first = probeTimeout
	}
	s.cmds += 2 + len(rcpts)
	text, before, err := s.c.transaction(ctx, mailFrom, rcpts, env, first)
	if err != nil {
		var se *smtp.SMTPError
		var be *bodyError
		if errors.As(err, &be) {
			return "", &relayError{err: err}
		}
		if before && reused && (!errors.As(err, &se) || se.Code == 421) {
			return "", fmt.Errorf("%w: %w", errStale, err)
		}
		return "", classify(err)
	}
	s.txns++
	return remoteQueueID(text), nil
}
