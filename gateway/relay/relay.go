// Package relay is in charge of the outbound queue's delivery: it claims
// due items (immediate ones first, the next attempt written before
// delivery is tried), hands each to the destination agency's gateway over
// SMTP with mandatory, verified TLS (tlsroute), reuses verified sessions
// per destination (pool.go), and records the outcome: sent, retried with
// backoff, or failed with a notice to the submitter. It sleeps until the
// next item falls due, or until it is told work was added.
package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/config"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/keys"
	"github.com/conduit-gateway/conduit/metrics"
)

const (
	// relayLease is how long a claimed item is kept from other claimers.
	// It is short, and renewed while the delivery runs (holdLease), so that
	// items claimed by a gateway that crashed are due again within it.
	relayLease = 30 * time.Second
	// claimRetry is the wait after a claim that failed.
	claimRetry  = time.Second
	dialTimeout = 20 * time.Second
	// maxSleep bounds the relay's sleep when nothing is due: a backstop
	// for a change made where no wake-up reaches (the command line in
	// another process, when the store cannot report changes).
	maxSleep = time.Minute
)

// Queue is the store as the relay uses it.
type Queue interface {
	// Claim leaves the items' envelopes in the store: a delivery streams
	// its envelope (OpenEnvelope) as it sends it.
	Claim(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]store.Item, error)
	OpenEnvelope(ctx context.Context, id, size int64) (io.ReadCloser, error)
	NextDue(ctx context.Context) (time.Time, error)
	Bookkeep(ctx context.Context, f func(store.Tx) error) error
}

// Keys is the key ring as the relay uses it.
type Keys interface {
	// CheckSealedTo returns the item to send (sealed again to the
	// partner's key in force when it was held for it), or ok false when it
	// must not be sent now (it has been held with the reason). With an
	// item as stored it may return the envelope it opened for its look,
	// from the start, for the send to read (the caller closes it).
	CheckSealedTo(ctx context.Context, it store.Item) (store.Item, io.ReadCloser, bool)
	// Partners is the set of partner keys in force: a session made under
	// another set is not reused.
	Partners() *keys.Partners
}

// Auditor is the audit trail as the relay writes it.
type Auditor interface {
	Append(ctx context.Context, es ...audit.Event)
	Stage(tx audit.Stager, es ...audit.Event) error
	Kick()
}

// Notifier tells a submitter that their package failed (a notice in
// their own mailbox).
type Notifier interface {
	Deliver(ctx context.Context, mailbox, originator, pkgID string, extraHeader, msg []byte) error
}

// Config is what the relay is told.
type Config struct {
	Agency    string
	Queue     config.Queue
	Directory *config.Directory
	Hostname  string      // the name given in EHLO
	ClientTLS *tls.Config // this gateway's client identity and the agencies' CA
}

// Relay delivers queued envelopes to partner gateways.
type Relay struct {
	agency    string
	queue     config.Queue
	directory *config.Directory
	hostname  string
	clientTLS *tls.Config

	store   Queue
	keys    Keys
	audit   Auditor
	notify  Notifier
	metrics *metrics.Metrics
	log     *slog.Logger
	now     func() time.Time

	wake chan struct{}
	// inflight holds the ids of the items being delivered now.
	inflight sync.Map
}

// New returns a relay; Run starts it.
func New(c Config, st Queue, k Keys, a Auditor, n Notifier, m *metrics.Metrics, log *slog.Logger, now func() time.Time) *Relay {
	return &Relay{agency: c.Agency, queue: c.Queue, directory: c.Directory, hostname: c.Hostname, clientTLS: c.ClientTLS,
		store: st, keys: k, audit: a, notify: n, metrics: m, log: log, now: now, wake: make(chan struct{}, 1)}
}

// Nudge tells the relay that work may be due now (an item was queued,
// released or made due, a hold lifted).
func (r *Relay) Nudge() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run delivers queued envelopes until ctx is done: it claims due
// items (immediate ones first), delivers each over SMTP with mandatory
// STARTTLS, and records the outcome. The claim writes the next attempt
// before delivery is tried, so a crash mid-delivery means a retry, never a
// loss.
func (r *Relay) Run(ctx context.Context) {
	conc := newConcurrency(r.queue.Workers)
	sem := make(chan struct{}, conc.max)
	// Closed last, once every worker is done: Run returns with no
	// session to a partner left open.
	pool := newRelayPool(conc.max, sessionIdle)
	defer pool.close()
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		free := conc.current() - len(sem)
		if free > 0 {
			items, err := r.store.Claim(ctx, r.now(), free, relayLease)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				// The queue says work is due, and asking again at once
				// would fail again (another process holds the SQLite
				// store's claimer lock, the database is unreadable):
				// wait, so that the error is logged once a second, not
				// in a loop.
				r.log.Error("queue claim failed", "err", err)
				timer.Reset(claimRetry)
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
				continue
			}
			backlog := len(items) == free
			for _, it := range items {
				conc.sized(it.Size)
				sem <- struct{}{}
				wg.Add(1)
				go func(it store.Item) {
					r.inflight.Store(it.ID, struct{}{})
					defer func() { r.inflight.Delete(it.ID); <-sem; wg.Done(); r.Nudge() }()
					conc.record(r.deliverItem(ctx, pool, it), backlog)
				}(it)
			}
			if backlog {
				continue // more may be due
			}
		}
		if conc.current()-len(sem) <= 0 {
			// Every worker is busy: wait for one to finish (its Nudge).
			// Asking the store when work is due would answer "now" while
			// a backlog waits, and the loop would spin on that question.
			select {
			case <-ctx.Done():
				return
			case <-r.wake:
			}
			continue
		}
		// Sleep until the next item falls due (mox's queue: a timer reset
		// to the next work, and a kick when work is added).
		timer.Reset(r.untilDue(ctx))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-r.wake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
	}
}

// Delivering says whether an item is being delivered now: a receipt for
// a queued item is taken only then (the receiver seals its receipt before
// its 250 reaches us); for a queued item not in flight it waits until the
// item is sent.
func (r *Relay) Delivering(id int64) bool {
	_, ok := r.inflight.Load(id)
	return ok
}

// untilDue is how long the relay may sleep: until the earliest queued
// item is due, at most maxSleep.
func (r *Relay) untilDue(ctx context.Context) time.Duration {
	next, err := r.store.NextDue(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("queue: next due time not read", "err", err)
		}
		return time.Second
	}
	if next.IsZero() {
		return maxSleep
	}
	return min(max(next.Sub(r.now()), 0), maxSleep)
}

// relayError says whether a failed delivery is worth retrying.
type relayError struct {
	err       error
	permanent bool // the destination refused it (5xx): retrying cannot help
	alert     bool // a security failure an administrator must see (no TLS, bad certificate)
}

func (e *relayError) Error() string { return e.err.Error() }
func (e *relayError) Unwrap() error { return e.err }

func (r *Relay) deliverItem(ctx context.Context, pool *relayPool, it store.Item) outcome {
	log := r.log.With("package", it.PackageID, "destination", it.Destination, "attempt", it.Attempts)
	it, opened, ok := r.keys.CheckSealedTo(ctx, it)
	if !ok {
		return outcomeOther
	}
	first := &firstOpen{rc: opened}
	release := r.holdLease(ctx, it)
	remoteID, err := r.send(ctx, pool, it, first)
	release()
	first.close()
	if err == nil {
		sent := audit.Event{Kind: audit.Sent, Package: it.PackageID, Destination: it.Destination, Detail: r.sentDetail(it.Destination, remoteID)}
		if err := r.store.Bookkeep(ctx, func(tx store.Tx) error {
			if err := tx.MarkSent(it.ID, remoteID); err != nil {
				return err
			}
			return r.audit.Stage(tx, sent)
		}); err != nil {
			log.Error("sent but not recorded; it will be sent again and deduplicated by the receiver", "err", err)
			return outcomeOther
		}
		r.audit.Kick()
		log.Info("package sent", "remote_id", remoteID)
		r.metrics.Delivery(it.Destination, metrics.Sent)
		return outcomeSent
	}
	var re *relayError
	if !errors.As(err, &re) {
		re = &relayError{err: err}
	}
	if re.alert {
		log.Error("admin alert: destination gateway failed a security check; nothing was sent", "err", err)
	}
	age := r.now().Sub(it.Created)
	maxAge := time.Duration(r.queue.MaxAge)
	if re.permanent || age > maxAge {
		reason := err.Error()
		if !re.permanent {
			reason = fmt.Sprintf("not delivered within %s: %s", maxAge, err)
		}
		failed := audit.Event{Kind: audit.Failed, Package: it.PackageID, Destination: it.Destination, Detail: reason}
		if ferr := r.store.Bookkeep(ctx, func(tx store.Tx) error {
			if err := tx.MarkFailed(it.ID, reason); err != nil {
				return err
			}
			return r.audit.Stage(tx, failed)
		}); ferr != nil {
			log.Error("failure not recorded", "err", ferr)
			return outcomeOther
		}
		r.audit.Kick()
		log.Error("package failed", "reason", reason)
		r.metrics.Delivery(it.Destination, metrics.Failed)
		r.notifyFailure(it, reason)
		return outcomeOther
	}
	next := r.now().Add(backoff(it.Attempts, time.Duration(r.queue.RetryMin), time.Duration(r.queue.RetryMax)))
	events := []audit.Event{{Kind: audit.Retried, Package: it.PackageID, Destination: it.Destination, Detail: err.Error()}}
	if re.alert {
		events = append(events, audit.Event{Kind: audit.Alert, Package: it.PackageID, Destination: it.Destination, Rule: "tls", Detail: err.Error()})
	}
	if rerr := r.store.Bookkeep(ctx, func(tx store.Tx) error {
		if err := tx.MarkRetry(it.ID, next, err.Error()); err != nil {
			return err
		}
		return r.audit.Stage(tx, events...)
	}); rerr != nil {
		log.Error("retry not recorded", "err", rerr)
		r.audit.Append(ctx, events...)
	} else {
		r.audit.Kick()
	}
	log.Warn("delivery deferred", "err", err, "next", next.UTC().Format(time.RFC3339))
	r.metrics.Delivery(it.Destination, metrics.Deferred)
	return outcomeDeferred
}

// holdLease renews an item's claim every third of the lease while it is
// being delivered (a large package on a slow link may take minutes), and
// stops when the returned function is called, before the outcome is
// recorded. A renewal is a MarkRetry that keeps the item's last error.
func (r *Relay) holdLease(ctx context.Context, it store.Item) (release func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(relayLease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if err := r.store.Bookkeep(ctx, func(tx store.Tx) error {
					return tx.MarkRetry(it.ID, r.now().Add(relayLease), it.LastError)
				}); err != nil && ctx.Err() == nil {
					r.log.Warn("queue lease not renewed; another worker may deliver it too (the receiver deduplicates)", "package", it.PackageID, "err", err)
				}
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// backoff doubles from min per attempt up to max, with ±25% jitter so
// that a recovering destination is not hit by every gateway at once.
func backoff(attempts int, min, max time.Duration) time.Duration {
	d := min
	for i := 1; i < attempts && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	j := time.Duration(rand.Int64N(int64(d)/2+1)) - d/4
	return d + j
}

// send delivers one item over a verified session to the destination's
// gateway: one from the pool when an idle one made under the same settings
// is there, else a new one (dialRelay: STARTTLS required, the certificate
// verified for the directory's host; no plaintext fallback). A session
// that fails in any way is closed, never put back; one that completes the
// transaction goes back to the pool for the next item. A cached session
// that turns out dead before the item was handed over (the peer closed it
// while idle, or ended it with 421) is replaced by a new one at once.
// first, when it holds one, is the envelope's first opening (the key
// ring's); every other opening reads the store.
func (r *Relay) send(ctx context.Context, pool *relayPool, it store.Item, first *firstOpen) (string, error) {
	a := r.directory.Agency(it.Destination)
	if a == nil || len(a.GatewayHosts()) == 0 {
		return "", &relayError{err: fmt.Errorf("%s has no gateway in the directory", it.Destination), permanent: true}
	}
	// The agency's gateways in order of preference (RFC 5321 5.1: the
	// next MX when one cannot be reached). Only a gateway that could not
	// be reached or verified is passed over: once one has been handed the
	// item, its answer stands.
	var last error
	for _, addr := range a.GatewayHosts() {
		id, handed, err := r.sendTo(ctx, pool, a, addr, it, first)
		if err == nil || handed || ctx.Err() != nil {
			return id, err
		}
		var re *relayError
		if errors.As(err, &re) && re.permanent {
			return "", err
		}
		if len(a.GatewayHosts()) > 1 {
			r.log.Warn("partner gateway not reachable; trying the next", "destination", it.Destination, "gateway", addr, "err", err)
		}
		last = err
	}
	return "", last
}

// sendTo is send to one of the destination's gateways; handed says the
// gateway was reached and verified, so its answer stands.
func (r *Relay) sendTo(ctx context.Context, pool *relayPool, a *config.Agency, addr string, it store.Item, first *firstOpen) (string, bool, error) {
	// A gateway given without a port is reached on 25.
	host, addr := config.HostPort(addr)
	key := r.sessionKey(a, addr, host)
	s := pool.get(key, len(it.Recipients))
	reused := s != nil
	for {
		release := func() {}
		if s == nil {
			var err error
			if release, err = pool.dialSlot(ctx, a.ID); err != nil {
				return "", false, &relayError{err: err}
			}
			// A session another delivery put back meanwhile is taken
			// rather than a new one.
			if s = pool.get(key, len(it.Recipients)); s != nil {
				release()
				release, reused = func() {}, true
			} else if s, err = r.dialRelay(ctx, pool, a, addr, host, key); err != nil {
				release()
				return "", false, err
			}
		}
		// A new session holds its slot through its first transaction:
		// by then the peer has seen it proved (its certificate, its
		// first MAIL).
		id, terr := s.transact(ctx, reused, it.MailFrom, it.Recipients, r.envelope(ctx, it, first))
		release()
		if terr == nil {
			pool.put(s)
			return id, true, nil
		}
		s.c.Close() // no QUIT: the session's state is not known
		if !errors.Is(terr, errStale) || ctx.Err() != nil {
			return "", true, terr
		}
		r.log.Debug("cached relay session not usable; opening a new one", "destination", it.Destination, "err", terr)
		s, reused = nil, false
	}
}

// envelope is an item's envelope as a delivery sends it: streamed from
// the store a chunk at a time, never held whole; or, when the item carries
// it (one the key ring has just sealed again), from memory. Its first
// opening takes the reader the key ring's look began, if any; another (a
// stale session's retry, the next gateway host) reads from the store.
func (r *Relay) envelope(ctx context.Context, it store.Item, first *firstOpen) message {
	if it.Envelope != nil {
		return bytesMessage(it.Envelope)
	}
	return message{size: it.Size, open: func() (io.ReadCloser, error) {
		if rc := first.take(); rc != nil {
			return rc, nil
		}
		return r.store.OpenEnvelope(ctx, it.ID, it.Size)
	}}
}

// firstOpen holds an envelope already opened from its start, for the
// first send to take; one delivery's, used by its goroutine alone. A nil
// one holds nothing.
type firstOpen struct{ rc io.ReadCloser }

func (f *firstOpen) take() io.ReadCloser {
	if f == nil {
		return nil
	}
	rc := f.rc
	f.rc = nil
	return rc
}

// close closes the envelope if no send took it.
func (f *firstOpen) close() {
	if rc := f.take(); rc != nil {
		rc.Close()
	}
}

func remoteQueueID(text string) string {
	for _, f := range strings.Fields(text) {
		if strings.HasPrefix(f, "cdt-") {
			return f
		}
	}
	if len(text) > 120 {
		text = text[:120]
	}
	return text
}

// classify turns an SMTP client error into a relay error: a 5xx reply is
// permanent, anything else temporary.
func classify(err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return &relayError{err: fmt.Errorf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message),
			permanent: se.Code >= 500}
	}
	return &relayError{err: err}
}

// notifyFailure tells the submitter their package did not go, by a notice
// in their own mailbox (a delivery status notification in plain words; it
// names the package and destination, never the content).
func (r *Relay) notifyFailure(it store.Item, reason string) {
	if it.Submitter == "" {
		return
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Conduit gateway <%s>\r\nTo: <%s>\r\nSubject: [%s] Undelivered: package %s to %s\r\n",
		it.MailFrom, it.Submitter, it.Marking, it.PackageID, it.Destination)
	fmt.Fprintf(&b, "Date: %s\r\nAuto-Submitted: auto-replied\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", r.now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Your package %s could not be delivered to %s.\r\n\r\nReason: %s\r\n\r\n", it.PackageID, it.Destination, reason)
	fmt.Fprintf(&b, "It was not sent anywhere else. Ask your Conduit administrator to check the queue:\r\n  conduit queue show %d\r\n", it.ID)
	if err := r.notify.Deliver(context.Background(), it.Submitter, r.agency, "dsn-"+it.PackageID+"-"+it.Destination, nil, b.Bytes()); err != nil {
		r.log.Error("failure notice not delivered", "package", it.PackageID, "err", err)
	}
}

// sentDetail is the audit detail of a delivery the destination accepted. A
// partner without Conduit (directory envelope: pgp-mime) sends no receipt:
// the delivery is recorded as sent, with no receipt expected.
func (r *Relay) sentDetail(agency, remoteID string) string {
	if a := r.directory.Agency(agency); a != nil && a.PlainPGPMIME() {
		return "accepted by the destination's mail server: " + remoteID + "; sent, no receipt expected (a partner without Conduit)"
	}
	return "accepted by the destination gateway: " + remoteID
}
