package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/conduit-gateway/conduit/audit"
	"github.com/conduit-gateway/conduit/gateway/store"
	"github.com/conduit-gateway/conduit/metrics"
)

const (
	relayPoll = time.Second
	// relayLease is how long a claimed item is kept from other claimers.
	// It is short, and renewed while the delivery runs (holdLease), so that
	// items claimed by a gateway that crashed are due again within it.
	relayLease  = 30 * time.Second
	dialTimeout = 20 * time.Second
)

// runRelay delivers queued envelopes until ctx is done: it claims due
// items (immediate ones first), delivers each over SMTP with mandatory
// STARTTLS, and records the outcome. The claim writes the next attempt
// before delivery is tried, so a crash mid-delivery means a retry, never a
// loss.
func (g *Gateway) runRelay(ctx context.Context) {
	workers := g.cfg.Queue.Workers
	sem := make(chan struct{}, workers)
	// Closed last, once every worker is done: Run returns with no
	// session to a partner left open.
	pool := newRelayPool(workers, sessionIdle)
	defer pool.close()
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(relayPoll)
	defer t.Stop()
	for {
		free := workers - len(sem)
		if free > 0 {
			items, err := g.store.Claim(ctx, g.Now(), free, relayLease)
			if err != nil && ctx.Err() == nil {
				g.log.Error("queue claim failed", "err", err)
			}
			for _, it := range items {
				sem <- struct{}{}
				wg.Add(1)
				go func(it store.Item) {
					defer func() { <-sem; wg.Done(); g.nudge() }()
					g.deliverItem(ctx, pool, it)
				}(it)
			}
			if len(items) == free {
				continue // more may be due
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.wake:
		}
	}
}

// relayError says whether a failed delivery is worth retrying.
type relayError struct {
	err       error
	permanent bool // the destination refused it (5xx): retrying cannot help
	alert     bool // a security failure an administrator must see (no TLS, bad certificate)
}

func (e *relayError) Error() string { return e.err.Error() }
func (e *relayError) Unwrap() error { return e.err }

func (g *Gateway) deliverItem(ctx context.Context, pool *relayPool, it store.Item) {
	log := g.log.With("package", it.PackageID, "destination", it.Destination, "attempt", it.Attempts)
	it, ok := g.checkSealedTo(ctx, it)
	if !ok {
		return
	}
	release := g.holdLease(ctx, it)
	remoteID, err := g.send(ctx, pool, it)
	release()
	if err == nil {
		sent := audit.Event{Kind: audit.Sent, Package: it.PackageID, Destination: it.Destination, Detail: "accepted by the destination gateway: " + remoteID}
		if err := g.store.Bookkeep(ctx, func(tx store.Tx) error {
			if err := tx.MarkSent(it.ID, remoteID); err != nil {
				return err
			}
			return g.stage(tx, sent)
		}); err != nil {
			log.Error("sent but not recorded; it will be sent again and deduplicated by the receiver", "err", err)
			return
		}
		g.kickAudit()
		log.Info("package sent", "remote_id", remoteID)
		g.metrics.Delivery(it.Destination, metrics.Sent)
		return
	}
	var re *relayError
	if !errors.As(err, &re) {
		re = &relayError{err: err}
	}
	if re.alert {
		log.Error("admin alert: destination gateway failed a security check; nothing was sent", "err", err)
	}
	age := g.Now().Sub(it.Created)
	maxAge := time.Duration(g.cfg.Queue.MaxAge)
	if re.permanent || age > maxAge {
		reason := err.Error()
		if !re.permanent {
			reason = fmt.Sprintf("not delivered within %s: %s", maxAge, err)
		}
		failed := audit.Event{Kind: audit.Failed, Package: it.PackageID, Destination: it.Destination, Detail: reason}
		if ferr := g.store.Bookkeep(ctx, func(tx store.Tx) error {
			if err := tx.MarkFailed(it.ID, reason); err != nil {
				return err
			}
			return g.stage(tx, failed)
		}); ferr != nil {
			log.Error("failure not recorded", "err", ferr)
			return
		}
		g.kickAudit()
		log.Error("package failed", "reason", reason)
		g.metrics.Delivery(it.Destination, metrics.Failed)
		g.notifyFailure(it, reason)
		return
	}
	next := g.Now().Add(backoff(it.Attempts, time.Duration(g.cfg.Queue.RetryMin), time.Duration(g.cfg.Queue.RetryMax)))
	events := []audit.Event{{Kind: audit.Retried, Package: it.PackageID, Destination: it.Destination, Detail: err.Error()}}
	if re.alert {
		events = append(events, audit.Event{Kind: audit.Alert, Package: it.PackageID, Destination: it.Destination, Rule: "tls", Detail: err.Error()})
	}
	if rerr := g.store.Bookkeep(ctx, func(tx store.Tx) error {
		if err := tx.MarkRetry(it.ID, next, err.Error()); err != nil {
			return err
		}
		return g.stage(tx, events...)
	}); rerr != nil {
		log.Error("retry not recorded", "err", rerr)
		g.auditAll(ctx, events)
	} else {
		g.kickAudit()
	}
	log.Warn("delivery deferred", "err", err, "next", next.UTC().Format(time.RFC3339))
	g.metrics.Delivery(it.Destination, metrics.Deferred)
}

// holdLease renews an item's claim every third of the lease while it is
// being delivered (a large package on a slow link may take minutes), and
// stops when the returned function is called, before the outcome is
// recorded. A renewal is a MarkRetry that keeps the item's last error.
func (g *Gateway) holdLease(ctx context.Context, it store.Item) (release func()) {
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
				if err := g.store.Bookkeep(ctx, func(tx store.Tx) error {
					return tx.MarkRetry(it.ID, g.Now().Add(relayLease), it.LastError)
				}); err != nil && ctx.Err() == nil {
					g.log.Warn("queue lease not renewed; another worker may deliver it too (the receiver deduplicates)", "package", it.PackageID, "err", err)
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
func (g *Gateway) send(ctx context.Context, pool *relayPool, it store.Item) (string, error) {
	a := g.cfg.Directory.Agency(it.Destination)
	if a == nil || a.Gateway == "" {
		return "", &relayError{err: fmt.Errorf("%s has no gateway in the directory", it.Destination), permanent: true}
	}
	host, _, err := net.SplitHostPort(a.Gateway)
	if err != nil {
		return "", &relayError{err: fmt.Errorf("gateway address %q: %w", a.Gateway, err), permanent: true}
	}
	key := g.sessionKey(a, host)
	s := pool.get(key, len(it.Recipients))
	reused := s != nil
	for {
		if s == nil {
			if s, err = g.dialRelay(ctx, pool, a, host, key); err != nil {
				return "", err
			}
		}
		id, terr := s.transact(g.hostname(), reused, it.MailFrom, it.Recipients, it.Envelope)
		if terr == nil {
			pool.put(s)
			return id, nil
		}
		s.c.Close() // no QUIT: the session's state is not known
		if !errors.Is(terr, errStale) {
			return "", terr
		}
		g.log.Debug("cached relay session not usable; opening a new one", "destination", it.Destination, "err", terr)
		s, reused = nil, false
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
func (g *Gateway) notifyFailure(it store.Item, reason string) {
	if it.Submitter == "" {
		return
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Conduit gateway <%s>\r\nTo: <%s>\r\nSubject: [%s] Undelivered: package %s to %s\r\n",
		it.MailFrom, it.Submitter, it.Marking, it.PackageID, it.Destination)
	fmt.Fprintf(&b, "Date: %s\r\nAuto-Submitted: auto-replied\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", g.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Your package %s could not be delivered to %s.\r\n\r\nReason: %s\r\n\r\n", it.PackageID, it.Destination, reason)
	fmt.Fprintf(&b, "It was not sent anywhere else. Ask your Conduit administrator to check the queue:\r\n  conduit queue show %d\r\n", it.ID)
	if err := g.deliver(context.Background(), it.Submitter, g.cfg.Agency, "dsn-"+it.PackageID+"-"+it.Destination, nil, b.Bytes()); err != nil {
		g.log.Error("failure notice not delivered", "package", it.PackageID, "err", err)
	}
}
